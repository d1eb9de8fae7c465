//! Closing a Tenant's account when a `Close` Tenant is deleted.
//!
//! Closing an account is slow to undo (90 days of support tickets) and AWS lets an
//! organization close only a few per month. The real danger is a GitOps accident: a prune
//! that deletes thousands of Tenants at once. Two rails stand in the way:
//!
//! 1. Nothing is closed unless the controller runs with `--allow-account-closure`. Without
//!    it, deleted `Close` Tenants wait, `Stalled` with `AccountClosureDisabled`.
//! 2. At most `--max-account-closures-per-day` accounts are closed in any 24 hours. The
//!    closures are recorded in a ConfigMap ([`ClosureLedger`]) before CloseAccount is sent, so
//!    the budget survives restarts and a crash-looping controller cannot reset it. Closures
//!    over the budget wait in a queue, `Reconciling` with `ClosureQueued`.
//!
//! The finalizer goes only once AWS reports the account PENDING_CLOSURE or SUSPENDED.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::ConfigMap,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::events::EventType,
};
use tracing::info;

use super::{
    Context, Error,
    account::{Claim, TENANT_UID_TAG, claim},
    status::{Progress, StatusWriter},
};
use crate::{
    api::Tenant,
    aws::{
        Priority,
        organizations::{CloseRefusal, CreationState},
    },
    conditions::StepOutcome,
    metrics::METRICS,
};

/// Name of the ConfigMap that records recent closures, in the controller's namespace.
pub const LEDGER_NAME: &str = "silo-account-closures";
const WINDOW: SignedDuration = SignedDuration::from_hours(24);
/// How long Silo waits after AWS refused a closure for quota reasons.
const QUOTA_BACKOFF: Duration = Duration::from_secs(4 * 3600);
const POLL: Duration = Duration::from_secs(10);

/// Whether a closure may go ahead now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Recorded (or already recorded): close it.
    Proceed,
    /// The budget for the last 24 hours is spent; the next slot opens at this time.
    Queued { next_slot: Timestamp },
}

/// Decides a closure against the ledger's entries (account id -> when its closure was
/// recorded). Pure: returns the decision and the entries to store.
pub fn decide(
    entries: &BTreeMap<String, Timestamp>,
    account_id: &str,
    now: Timestamp,
    per_day: u32,
) -> (Decision, BTreeMap<String, Timestamp>) {
    let mut recent: BTreeMap<String, Timestamp> =
        entries.iter().filter(|(_, at)| now.duration_since(**at) < WINDOW).map(|(k, v)| (k.clone(), *v)).collect();
    if recent.contains_key(account_id) {
        return (Decision::Proceed, recent);
    }
    if recent.len() >= per_day as usize {
        let oldest = recent.values().min().copied().unwrap_or(now);
        return (Decision::Queued { next_slot: oldest.checked_add(WINDOW).unwrap_or(oldest) }, recent);
    }
    recent.insert(account_id.to_string(), now);
    (Decision::Proceed, recent)
}

/// The record of recent closures, kept in a ConfigMap so it outlives the controller process.
pub struct ClosureLedger {
    api: Api<ConfigMap>,
    per_day: u32,
}

impl ClosureLedger {
    pub fn new(client: kube::Client, namespace: &str, per_day: u32) -> Self {
        Self { api: Api::namespaced(client, namespace), per_day }
    }

    /// Records the closure of `account_id` if the budget allows. Writes use the ConfigMap's
    /// resourceVersion, so two reconciles cannot both take the last slot: the loser gets a
    /// conflict and is retried.
    pub async fn reserve(&self, account_id: &str, now: Timestamp) -> Result<Decision, kube::Error> {
        let existing = self.api.get_opt(LEDGER_NAME).await?;
        let entries: BTreeMap<String, Timestamp> = existing
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .map(|data| data.iter().filter_map(|(k, v)| Some((k.clone(), v.parse().ok()?))).collect())
            .unwrap_or_default();
        let (decision, keep) = decide(&entries, account_id, now, self.per_day);
        METRICS.account_closures_recorded.set(i64::try_from(keep.len()).unwrap_or(i64::MAX));
        METRICS.account_closures_per_day.set(i64::from(self.per_day));
        if keep != entries || existing.is_none() {
            let data = keep.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            let mut cm = existing.clone().unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta { name: Some(LEDGER_NAME.into()), ..Default::default() },
                ..Default::default()
            });
            cm.data = Some(data);
            match existing {
                Some(_) => self.api.replace(LEDGER_NAME, &PostParams::default(), &cm).await?,
                None => self.api.create(&PostParams::default(), &cm).await?,
            };
        }
        Ok(decision)
    }
}

/// Cleanup of a deleted `Close` Tenant. `Ok` lets the finalizer go; `Err(DeletionPending)`
/// keeps it and comes back after the given delay.
pub async fn close(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    let mut report = Pending { progress: Progress::new(tenant), writer: StatusWriter::new(tenant, ctx.client.clone()) };
    report.progress.phase = Some("Deleting");
    let status = tenant.status.clone().unwrap_or_default();
    let org = &ctx.org;

    let account_id = match (&status.account_id, &status.create_account_request_id) {
        (Some(id), _) => id.clone(),
        // Only an account that carries this Tenant's UID is ever closed (checked below), so a
        // request of a shared account name that was another tenant's is never closed here.
        (None, Some(request_id)) => match org.creation(request_id).await?.state {
            CreationState::Succeeded { account_id } => account_id,
            CreationState::Failed { .. } => return Ok(()),
            CreationState::InProgress => {
                let outcome = StepOutcome::wait(
                    "WaitingForCreation",
                    "The account is still being created; it is closed once it exists",
                    POLL,
                );
                return report.wait(outcome).await;
            }
        },
        (None, None) => return Ok(()),
    };

    if !ctx.settings.allow_account_closure {
        let outcome = StepOutcome::stalled(
            "AccountClosureDisabled",
            format!(
                "deletionPolicy is Close, but the controller runs without --allow-account-closure: \
                 restart it with the flag to close account {account_id}, or set spec.deletionPolicy to Retain \
                 to keep the account and let the Tenant go"
            ),
            Duration::from_secs(3600),
        );
        return report.wait(outcome).await;
    }

    // The baseline stacks go first, in every region, while the account can still be entered.
    if let Some(deleting) = super::bootstrap::delete_stacks(tenant, ctx).await? {
        return report.wait(deleting).await;
    }

    match org.describe_account_fresh(&account_id).await? {
        None => return Ok(()),
        Some(account) if account.is_closing_or_closed() => {
            ctx.event(tenant, EventType::Normal, "AccountClosed", format!("Account {account_id} is {}", account.state))
                .await;
            return Ok(());
        }
        Some(_) => {}
    }

    // The last rail: never close an account that is not provably this Tenant's.
    let tags = org.tags(&account_id, Priority::User).await?;
    if claim(&tags, &tenant.uid().unwrap_or_default()) != Claim::ThisTenant {
        let outcome = StepOutcome::stalled(
            "AccountNotOwned",
            format!(
                "Account {account_id} does not carry this Tenant's {TENANT_UID_TAG} tag, so Silo will not close it: \
                 set spec.deletionPolicy to Retain, or restore the tag if the account is this Tenant's"
            ),
            Duration::from_secs(3600),
        );
        return report.wait(outcome).await;
    }

    let now = Timestamp::now();
    if let Decision::Queued { next_slot } = ctx.closures.reserve(&account_id, now).await? {
        let wait = Duration::try_from(next_slot.duration_since(now)).unwrap_or(POLL).max(POLL);
        let outcome = StepOutcome::wait(
            "ClosureQueued",
            format!(
                "Silo closes at most {} accounts in 24 hours (--max-account-closures-per-day); \
                 account {account_id} is queued and closes at about {next_slot}",
                ctx.settings.max_account_closures_per_day
            ),
            wait,
        );
        return report.wait(outcome).await;
    }

    // AWS refused for quota reasons not long ago: wait out the back-off without asking again.
    // The recorded condition is reused as it is, so the status does not change.
    if let Some(outcome) = quota_backoff(tenant, now) {
        return report.wait(outcome).await;
    }

    match org.close_account(&account_id).await? {
        Ok(()) | Err(CloseRefusal::AlreadyClosed) => {
            info!(tenant = %tenant.name_any(), account = %account_id, "account closure requested");
            ctx.event(
                tenant,
                EventType::Normal,
                "ClosureRequested",
                format!("Requested closure of account {account_id}"),
            )
            .await;
            let outcome = StepOutcome::wait("ClosingAccount", format!("AWS is closing account {account_id}"), POLL);
            report.wait(outcome).await
        }
        Err(CloseRefusal::Quota(why)) => {
            let next =
                now.checked_add(SignedDuration::try_from(QUOTA_BACKOFF).expect("a few hours fit")).unwrap_or(now);
            report.progress.status.next_closure_attempt = Some(next.to_string());
            let outcome = StepOutcome::wait(
                "ClosureQuotaExceeded",
                format!("AWS refused to close account {account_id} ({why}); the next try is at about {next}"),
                QUOTA_BACKOFF,
            );
            report.wait(outcome).await
        }
    }
}

/// The quota back-off still running, from `status.nextClosureAttempt`: the recorded
/// condition is reused as it is, so the status does not change while Silo waits.
fn quota_backoff(tenant: &Tenant, now: Timestamp) -> Option<StepOutcome> {
    let status = tenant.status.as_ref()?;
    let next: Timestamp = status.next_closure_attempt.as_deref()?.parse().ok()?;
    let wait = Duration::try_from(next.duration_since(now)).ok().filter(|w| !w.is_zero())?;
    let message = crate::conditions::find(&status.conditions, crate::conditions::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    Some(StepOutcome::wait("ClosureQuotaExceeded", message, wait))
}

/// A deletion that waits: its progress, and the writer that reports it.
struct Pending {
    progress: Progress,
    writer: StatusWriter,
}

impl Pending {
    /// Reports why deletion waits, then keeps the finalizer until the outcome's time to look
    /// again.
    async fn wait(&mut self, outcome: StepOutcome) -> Result<(), Error> {
        let reason = outcome.reason().to_string();
        let retry_after = outcome.look_again().unwrap_or(POLL);
        self.progress.account = Some(outcome);
        self.writer.write(&self.progress).await?;
        Err(Error::DeletionPending { reason, retry_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + hours * 3600).unwrap()
    }

    #[test]
    fn closures_within_budget_are_recorded() {
        let (decision, kept) = decide(&BTreeMap::new(), "111111111111", at(0), 2);
        assert_eq!(decision, Decision::Proceed);
        assert_eq!(kept.get("111111111111"), Some(&at(0)));
    }

    #[test]
    fn over_budget_closures_queue_until_the_oldest_expires() {
        let entries = BTreeMap::from([("a".to_string(), at(0)), ("b".to_string(), at(5))]);
        let (decision, _) = decide(&entries, "c", at(6), 2);
        assert_eq!(decision, Decision::Queued { next_slot: at(24) });
    }

    #[test]
    fn a_recorded_closure_proceeds_again_after_a_crash() {
        let entries = BTreeMap::from([("a".to_string(), at(0)), ("b".to_string(), at(1))]);
        let (decision, kept) = decide(&entries, "a", at(2), 2);
        assert_eq!(decision, Decision::Proceed, "the account's own slot is still its own");
        assert_eq!(kept, entries);
    }

    #[test]
    fn entries_older_than_a_day_are_forgotten() {
        let entries = BTreeMap::from([("a".to_string(), at(0))]);
        let (decision, kept) = decide(&entries, "b", at(25), 1);
        assert_eq!(decision, Decision::Proceed);
        assert!(!kept.contains_key("a"));
    }
}
