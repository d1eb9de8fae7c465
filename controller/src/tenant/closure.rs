//! What happens to a deleted Tenant's account: kept (`Retain`), or closed (`Close`).
//!
//! Closing an account is slow to undo (90 days of support tickets) and AWS lets an
//! organization close only a few per month. The real danger is a GitOps accident: a prune
//! that deletes thousands of Tenants at once. So a closure passes four rails, in this order,
//! and nothing is destroyed before all four are passed:
//!
//! 1. **Enabled**: nothing is closed unless the controller runs with
//!    `--allow-account-closure`; without it, deleted `Close` Tenants wait, `Stalled` with
//!    `AccountClosureDisabled`.
//! 2. **Owned**: the account, read fresh from AWS, carries this Tenant's
//!    `silo.dev/tenant-uid` tag (else `AccountNotOwned`); an adopted account also needs the
//!    annotation `silo.dev/close-adopted-account` naming it (else
//!    `AdoptedAccountCloseNeedsConsent`).
//! 3. **Budgeted**: the closure is recorded in a ConfigMap ([`ClosureLedger`]) before anything
//!    is destroyed, within two budgets: at most `--max-account-closures-per-day` in any 24
//!    hours, and AWS's own quota of 10% of the member accounts (at least 10, at most 1,000)
//!    in any 30 days. Closures over either wait, `ClosureQueued`, with the date their slot
//!    opens. The ledger survives restarts, so a crash-looping controller cannot reset it.
//! 4. Only then the baseline stacks are deleted in every region, then CloseAccount is sent.
//!
//! The finalizer goes once AWS reports the account PENDING_CLOSURE or SUSPENDED. A Tenant
//! deleted while its account was being created (its intent recorded, maybe no request id)
//! first looks for that account, and its deletion policy applies to what it finds.

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
    status::{Progress, StatusWriter},
};
use crate::{
    api::Tenant,
    aws::{
        Priority,
        organizations::{CloseRefusal, CreationState},
    },
    conditions::StepOutcome,
    contract::{
        TENANT_UID_TAG,
        annotations::CLOSE_ADOPTED_ACCOUNT,
        ownership::{Claim, claim},
    },
    metrics::METRICS,
};

/// Name of the ConfigMap that records recent closures, in the controller's namespace.
pub const LEDGER_NAME: &str = "silo-account-closures";
const DAY: SignedDuration = SignedDuration::from_hours(24);
/// AWS counts closures over a rolling 30 days.
const AWS_WINDOW: SignedDuration = SignedDuration::from_hours(30 * 24);
/// How long Silo waits after AWS refused a closure for quota reasons.
const QUOTA_BACKOFF: Duration = Duration::from_secs(4 * 3600);
const POLL: Duration = Duration::from_secs(10);

/// AWS's closure quota for an organization with `members` member accounts: 10% of them, at
/// least 10 and at most 1,000, in any 30 days. Pure.
pub fn aws_closure_quota(members: usize) -> usize {
    (members / 10).clamp(10, 1000)
}

/// Whether a closure may go ahead now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Recorded (or already recorded): close it.
    Proceed,
    /// Silo's own daily budget is spent; the next slot opens at this time.
    DailyBudget { next_slot: Timestamp },
    /// AWS's 30-day quota would refuse it; the next slot opens at this time.
    AwsQuota { next_slot: Timestamp, quota: usize },
}

/// Decides a closure against the ledger's entries (account id -> when its closure was
/// recorded). Pure: returns the decision and the entries to store (the last 30 days).
pub fn decide(
    entries: &BTreeMap<String, Timestamp>,
    account_id: &str,
    now: Timestamp,
    per_day: u32,
    members: usize,
) -> (Decision, BTreeMap<String, Timestamp>) {
    let mut kept: BTreeMap<String, Timestamp> =
        entries.iter().filter(|(_, at)| now.duration_since(**at) < AWS_WINDOW).map(|(k, v)| (k.clone(), *v)).collect();
    if kept.contains_key(account_id) {
        return (Decision::Proceed, kept);
    }
    let quota = aws_closure_quota(members);
    if kept.len() >= quota {
        let oldest = kept.values().min().copied().unwrap_or(now);
        return (Decision::AwsQuota { next_slot: oldest.checked_add(AWS_WINDOW).unwrap_or(oldest), quota }, kept);
    }
    let today: Vec<Timestamp> = kept.values().filter(|at| now.duration_since(**at) < DAY).copied().collect();
    if today.len() >= per_day as usize {
        let oldest = today.iter().min().copied().unwrap_or(now);
        return (Decision::DailyBudget { next_slot: oldest.checked_add(DAY).unwrap_or(oldest) }, kept);
    }
    kept.insert(account_id.to_string(), now);
    (Decision::Proceed, kept)
}

/// The record of recent closures, kept in a ConfigMap so it outlives the controller process.
pub struct ClosureLedger {
    api: Api<ConfigMap>,
    per_day: u32,
}

impl ClosureLedger {
    pub fn new(client: kube::Client, namespace: &str, per_day: u32) -> Self {
        METRICS.account_closures_per_day.set(i64::from(per_day));
        Self { api: Api::namespaced(client, namespace), per_day }
    }

    /// Records the closure of `account_id` if both budgets allow. Writes use the ConfigMap's
    /// resourceVersion, so two reconciles cannot both take the last slot: the loser gets a
    /// conflict and is retried.
    pub async fn reserve(&self, account_id: &str, now: Timestamp, members: usize) -> Result<Decision, kube::Error> {
        let existing = self.api.get_opt(LEDGER_NAME).await?;
        let entries: BTreeMap<String, Timestamp> = existing
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .map(|data| data.iter().filter_map(|(k, v)| Some((k.clone(), v.parse().ok()?))).collect())
            .unwrap_or_default();
        let (decision, keep) = decide(&entries, account_id, now, self.per_day, members);
        let today = keep.values().filter(|at| now.duration_since(**at) < DAY).count();
        METRICS.account_closures_recorded.set(i64::try_from(today).unwrap_or(i64::MAX));
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

/// What a deleted Tenant's account is, as far as Silo can find it.
enum Found {
    Account(String),
    /// No account was ever made for it.
    Nothing,
    /// Not known yet (a creation in flight, the organization not read yet).
    Wait(StepOutcome),
}

/// Finds the account of a deleted Tenant: recorded, from its request, or, when only the
/// intent was recorded (a controller killed during CreateAccount), by its email or account
/// name in the organization index.
async fn find_account(tenant: &Tenant, ctx: &Context) -> Result<Found, Error> {
    let status = tenant.status.clone().unwrap_or_default();
    if let Some(id) = status.account_id {
        return Ok(Found::Account(id));
    }
    let in_flight = || {
        Found::Wait(StepOutcome::wait(
            "WaitingForCreation",
            "The account is still being created; the deletion policy applies to it once it exists",
            POLL,
        ))
    };
    let org = &ctx.org;
    let request =
        status.create_account_request_id.or_else(|| org.creations.request_of(&tenant.uid().unwrap_or_default()));
    if let Some(request_id) = request {
        return Ok(match org.creation(&request_id).await?.state {
            CreationState::Succeeded { account_id } => Found::Account(account_id),
            CreationState::Failed { .. } => Found::Nothing,
            CreationState::InProgress => in_flight(),
        });
    }
    let (Some(email), Some(name)) = (status.email, status.account_name) else { return Ok(Found::Nothing) };
    if !org.index.is_complete() {
        return Ok(Found::Wait(StepOutcome::wait(
            "LookingForEarlierWork",
            "Silo may have sent CreateAccount for this tenant just before it stopped; it looks for that account once \
             it has read the organization",
            Duration::from_secs(5),
        )));
    }
    if let Some(found) = org.index.account_by_email(&email) {
        return Ok(Found::Account(found.account.id));
    }
    for request in org.creations.named(&name) {
        match request.state {
            CreationState::InProgress => return Ok(in_flight()),
            CreationState::Succeeded { account_id } => {
                let account = org.account(&account_id, Priority::User).await?;
                if account.is_some_and(|a| a.account.email.eq_ignore_ascii_case(&email)) {
                    return Ok(Found::Account(account_id));
                }
            }
            CreationState::Failed { .. } => {}
        }
    }
    Ok(Found::Nothing)
}

/// Cleanup of a deleted `Retain` Tenant: its account (if it has one) stays as it is.
pub async fn retain(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    let mut report = Pending::new(tenant, ctx);
    match find_account(tenant, ctx).await? {
        Found::Account(account_id) => {
            ctx.event(tenant, EventType::Normal, "AccountRetained", format!("Account {account_id} is retained")).await;
            Ok(())
        }
        Found::Nothing => Ok(()),
        Found::Wait(outcome) => report.wait(outcome).await,
    }
}

/// Cleanup of a deleted `Close` Tenant. `Ok` lets the finalizer go; `Err(DeletionPending)`
/// keeps it and comes back later.
pub async fn close(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    let mut report = Pending::new(tenant, ctx);
    let account_id = match find_account(tenant, ctx).await? {
        Found::Account(account_id) => account_id,
        Found::Nothing => return Ok(()),
        Found::Wait(outcome) => return report.wait(outcome).await,
    };
    let org = &ctx.org;

    // 1. Enabled.
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

    // 2. Owned: read fresh from AWS, never from the index.
    match org.describe_account_fresh(&account_id).await? {
        None => return Ok(()),
        Some(account) if account.is_closing_or_closed() => {
            ctx.event(tenant, EventType::Normal, "AccountClosed", format!("Account {account_id} is {}", account.state))
                .await;
            return Ok(());
        }
        Some(_) => {}
    }
    let tags = org.tags(&account_id, Priority::User).await?;
    let management = org.info().await?.management_account_id;
    if account_id == management || claim(&tags, &tenant.uid().unwrap_or_default()) != Claim::ThisTenant {
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
    let adopted = tenant.status.as_ref().is_some_and(|s| s.adopted);
    let consent = tenant.annotations().get(CLOSE_ADOPTED_ACCOUNT);
    if adopted && consent != Some(&account_id) {
        let outcome = StepOutcome::stalled(
            "AdoptedAccountCloseNeedsConsent",
            format!(
                "Account {account_id} was adopted, not created by Silo: closing it needs the annotation \
                 {CLOSE_ADOPTED_ACCOUNT}: \"{account_id}\" on the Tenant; or set spec.deletionPolicy to Retain"
            ),
            Duration::from_secs(3600),
        );
        return report.wait(outcome).await;
    }

    // 3. Budgeted: recorded before anything is destroyed.
    let now = Timestamp::now();
    let members = org.index.account_count().saturating_sub(1);
    let queued = match ctx.closures.reserve(&account_id, now, members).await? {
        Decision::Proceed => None,
        Decision::DailyBudget { next_slot } => Some((
            next_slot,
            format!(
                "Silo closes at most {} accounts in 24 hours (--max-account-closures-per-day)",
                ctx.settings.max_account_closures_per_day
            ),
        )),
        Decision::AwsQuota { next_slot, quota } => Some((
            next_slot,
            format!("AWS lets this organization close at most {quota} accounts in 30 days (10% of its members)"),
        )),
    };
    if let Some((next_slot, why)) = queued {
        let wait = Duration::try_from(next_slot.duration_since(now)).unwrap_or(POLL).max(POLL);
        let outcome = StepOutcome::wait(
            "ClosureQueued",
            format!(
                "{why}; account {account_id} is queued and closes at about {next_slot}; its baseline stays until then"
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

    // 4. The baseline stacks, in every region, while the account can still be entered; then
    //    the account.
    if let Some(deleting) = super::bootstrap::delete_stacks(tenant, ctx).await? {
        return report.wait(deleting).await;
    }
    match org.close_account(&account_id).await? {
        Ok(()) | Err(CloseRefusal::AlreadyClosed) => {
            info!(tenant = %tenant.name_any(), account = %account_id, "account closure requested");
            let note = format!("Requested closure of account {account_id}");
            ctx.event(tenant, EventType::Normal, "ClosureRequested", note).await;
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
    fn new(tenant: &Tenant, ctx: &Context) -> Self {
        let mut progress = Progress::new(tenant);
        progress.phase = Some("Deleting");
        Self { progress, writer: StatusWriter::new(tenant, ctx.client.clone()) }
    }

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
        let (decision, kept) = decide(&BTreeMap::new(), "111111111111", at(0), 2, 100);
        assert_eq!(decision, Decision::Proceed);
        assert_eq!(kept.get("111111111111"), Some(&at(0)));
    }

    #[test]
    fn over_the_daily_budget_closures_queue_until_the_oldest_of_the_day_expires() {
        let entries = BTreeMap::from([("a".to_string(), at(0)), ("b".to_string(), at(5))]);
        let (decision, _) = decide(&entries, "c", at(6), 2, 100);
        assert_eq!(decision, Decision::DailyBudget { next_slot: at(24) });
    }

    #[test]
    fn aws_lets_an_organization_close_ten_percent_of_its_members_in_thirty_days() {
        assert_eq!(aws_closure_quota(5), 10, "at least 10");
        assert_eq!(aws_closure_quota(250), 25);
        assert_eq!(aws_closure_quota(50_000), 1000, "at most 1,000");
        // Ten closed over the last 30 days, one a day: the eleventh waits for the oldest to age out.
        let entries: BTreeMap<String, Timestamp> = (0..10).map(|d| (format!("a{d}"), at(d * 24))).collect();
        let (decision, kept) = decide(&entries, "b", at(10 * 24), 100, 50);
        assert_eq!(decision, Decision::AwsQuota { next_slot: at(30 * 24), quota: 10 });
        assert_eq!(kept.len(), 10, "a queued closure is not recorded");
    }

    #[test]
    fn a_recorded_closure_proceeds_again_after_a_crash() {
        let entries = BTreeMap::from([("a".to_string(), at(0)), ("b".to_string(), at(1))]);
        let (decision, kept) = decide(&entries, "a", at(2), 2, 100);
        assert_eq!(decision, Decision::Proceed, "the account's own slot is still its own");
        assert_eq!(kept, entries);
    }

    #[test]
    fn entries_are_kept_for_thirty_days_and_count_for_a_day() {
        let entries = BTreeMap::from([("a".to_string(), at(0))]);
        let (decision, kept) = decide(&entries, "b", at(25), 1, 100);
        assert_eq!(decision, Decision::Proceed, "yesterday's closure no longer counts for the daily budget");
        assert!(kept.contains_key("a"), "but it still counts for AWS's 30 days");
        let (_, kept) = decide(&entries, "c", at(31 * 24), 1, 100);
        assert!(!kept.contains_key("a"), "older than 30 days: forgotten");
    }
}
