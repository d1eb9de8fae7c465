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
//!
//! ## Shape
//! Observe, decide, act. [`decide`] (pure, table-tested) reads the [`ClosureFacts`] gathered
//! so far and names either the one [`Call`] whose answer it needs next or how this look ends;
//! the driver makes that call, adds its answer, and asks again. So every call is made in the
//! order of the rails and only once the rails before it are passed. A look ends
//! [`Deletion::Finished`] (the finalizer may go) or [`Deletion::Wait`] (reported in the status,
//! looked at again later): a wait is an outcome, not an error.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::ConfigMap,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::{events::EventType, reflector::ObjectRef},
};
use tracing::info;

use super::{
    Context, Error, RECHECK_STALLED,
    status::{Progress, StatusWriter},
};
use crate::{
    api::{DeletionPolicy, Tenant},
    aws::{
        Priority, SessionKey,
        organizations::{CloseRefusal, CreationState},
        stack_answers::{SessionRefusal, session_refusal},
    },
    baseline::stack::{POLL_BOUNDS, request_token},
    conditions::StepOutcome,
    contract::{
        TENANT_UID_TAG,
        annotations::CLOSE_ADOPTED_ACCOUNT,
        ownership::{Claim, claim},
    },
    metrics::METRICS,
};

/// Name of the ConfigMap that records the default organization's recent closures, in the
/// controller's namespace; another organization's is this name, `-`, and its name.
pub const LEDGER_NAME: &str = "silo-account-closures";

/// The closure ledger's name for an organization (`None`: the default one).
pub fn ledger_name(organization: Option<&str>) -> String {
    organization.map_or_else(|| LEDGER_NAME.to_string(), |org| format!("{LEDGER_NAME}-{org}"))
}
const DAY: SignedDuration = SignedDuration::from_hours(24);
/// AWS counts closures over a rolling 30 days.
const AWS_WINDOW: SignedDuration = SignedDuration::from_hours(30 * 24);
/// How long Silo waits after AWS refused a closure for quota reasons.
const QUOTA_BACKOFF: Duration = Duration::from_secs(4 * 3600);
const POLL: Duration = Duration::from_secs(10);
/// The Stalled reason while a baseline stack of a closing Tenant is DELETE_FAILED.
const DELETE_FAILED_REASON: &str = "BaselineDeleteFailed";
/// How soon a tenant whose baseline stacks are being deleted looks again.
const DELETION_POLL: Duration = POLL_BOUNDS.0;

/// AWS's closure quota for an organization with `members` member accounts: 10% of them, at
/// least 10 and at most 1,000, in any 30 days. Pure.
pub fn aws_closure_quota(members: usize) -> usize {
    (members / 10).clamp(10, 1000)
}

/// The ledger's answer: whether a closure may go ahead now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerAnswer {
    /// Recorded (or already recorded): close it.
    Proceed,
    /// Silo's own daily budget is spent; the next slot opens at this time.
    DailyBudget { next_slot: Timestamp },
    /// AWS's 30-day quota would refuse it; the next slot opens at this time.
    AwsQuota { next_slot: Timestamp, quota: usize },
}

/// Judges a closure against the ledger's entries (account id -> when its closure was
/// recorded). Pure: returns the decision and the entries to store (the last 30 days).
pub fn judge_ledger(
    entries: &BTreeMap<String, Timestamp>,
    account_id: &str,
    now: Timestamp,
    per_day: u32,
    members: usize,
) -> (LedgerAnswer, BTreeMap<String, Timestamp>) {
    let mut kept: BTreeMap<String, Timestamp> =
        entries.iter().filter(|(_, at)| now.duration_since(**at) < AWS_WINDOW).map(|(k, v)| (k.clone(), *v)).collect();
    if kept.contains_key(account_id) {
        return (LedgerAnswer::Proceed, kept);
    }
    let quota = aws_closure_quota(members);
    if kept.len() >= quota {
        let oldest = kept.values().min().copied().unwrap_or(now);
        return (LedgerAnswer::AwsQuota { next_slot: oldest.checked_add(AWS_WINDOW).unwrap_or(oldest), quota }, kept);
    }
    let today: Vec<Timestamp> = kept.values().filter(|at| now.duration_since(**at) < DAY).copied().collect();
    if today.len() >= per_day as usize {
        let oldest = today.iter().min().copied().unwrap_or(now);
        return (LedgerAnswer::DailyBudget { next_slot: oldest.checked_add(DAY).unwrap_or(oldest) }, kept);
    }
    kept.insert(account_id.to_string(), now);
    (LedgerAnswer::Proceed, kept)
}

/// The record of recent closures, kept in a ConfigMap so it outlives the controller process.
pub struct ClosureLedger {
    api: Api<ConfigMap>,
    name: String,
    per_day: u32,
    /// The organization, in metrics.
    label: crate::metrics::OrganizationLabels,
}

impl ClosureLedger {
    /// The ledger of `organization` (`None`: the default one), in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, organization: Option<&str>, per_day: u32) -> Self {
        let label = crate::metrics::OrganizationLabels::of(organization);
        METRICS.account_closures_per_day.get_or_create(&label).set(i64::from(per_day));
        Self { api: Api::namespaced(client, namespace), name: ledger_name(organization), per_day, label }
    }

    /// How many closures the ledger records in the 24 hours before `now`.
    pub async fn closed_within_a_day(&self, now: Timestamp) -> Result<usize, kube::Error> {
        let existing = self.api.get_opt(&self.name).await?;
        let data = existing.and_then(|cm| cm.data).unwrap_or_default();
        Ok(data.values().filter_map(|v| v.parse::<Timestamp>().ok()).filter(|at| now.duration_since(*at) < DAY).count())
    }

    /// Records the closure of `account_id` if both budgets allow. Writes use the ConfigMap's
    /// resourceVersion, so two reconciles cannot both take the last slot: the loser gets a
    /// conflict and is retried.
    pub async fn reserve(&self, account_id: &str, now: Timestamp, members: usize) -> Result<LedgerAnswer, kube::Error> {
        let existing = self.api.get_opt(&self.name).await?;
        let entries: BTreeMap<String, Timestamp> = existing
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .map(|data| data.iter().filter_map(|(k, v)| Some((k.clone(), v.parse().ok()?))).collect())
            .unwrap_or_default();
        let (decision, keep) = judge_ledger(&entries, account_id, now, self.per_day, members);
        let today = keep.values().filter(|at| now.duration_since(**at) < DAY).count();
        METRICS.account_closures_recorded.get_or_create(&self.label).set(i64::try_from(today).unwrap_or(i64::MAX));
        if keep != entries || existing.is_none() {
            let data = keep.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            let mut cm = existing.clone().unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                ..Default::default()
            });
            cm.data = Some(data);
            match existing {
                Some(_) => self.api.replace(&self.name, &PostParams::default(), &cm).await?,
                None => self.api.create(&PostParams::default(), &cm).await?,
            };
        }
        Ok(decision)
    }
}

/// How one look at a deleted Tenant's account ended. A wait is an outcome, not an error: the
/// caller keeps the finalizer and looks again after `retry_after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Nothing more to do on AWS: the finalizer may go.
    Finished,
    /// The deletion waits; its reason is reported in the status.
    Wait { reason: String, retry_after: Duration },
}

/// What a deleted Tenant's account is, as far as Silo can find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Account(String),
    /// No account was ever made for it.
    Nothing,
    /// Its CreateAccount request is still in progress.
    CreationInFlight,
    /// Only the intent was recorded, and the organization index has not been read in full
    /// yet: a miss would prove nothing.
    IndexIncomplete,
}

/// The account as AWS describes it now (never as the index remembers it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Described {
    NotInOrganization,
    /// PENDING_CLOSURE, SUSPENDED or CLOSED.
    ClosingOrClosed {
        state: String,
    },
    Open,
}

/// The ledger's answer, and the instant it was asked: the clock of everything after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub answer: LedgerAnswer,
    pub at: Timestamp,
}

/// What the deletion of the baseline stacks reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StacksLeft {
    None,
    /// Still being deleted, or blocked: this is why.
    Some(StepOutcome),
}

/// What Silo knows of a deleted Tenant's account. The first fields are known before any
/// call; each answer after them is `None` until [`decide`] asks for it, and it asks for one
/// only when the answers before it do not settle the deletion. So the calls are made one at a
/// time, in the order of the rails, and nothing is asked (or recorded, or destroyed) that a
/// rail before it forbids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClosureFacts {
    pub policy: DeletionPolicy,
    /// This Tenant's UID: the value its account's ownership tag must carry.
    pub uid: String,
    /// `--allow-account-closure`.
    pub closure_allowed: bool,
    /// `--max-account-closures-per-day`, for the message of a queued closure.
    pub closures_per_day: u32,
    /// The account was adopted, not created by Silo.
    pub adopted: bool,
    /// The annotation `silo.dev/close-adopted-account`: the account its owner agreed to close.
    pub consent: Option<String>,
    /// `status.nextClosureAttempt`: the end of a back-off after AWS refused a closure.
    pub next_closure_attempt: Option<Timestamp>,
    /// The message of the recorded `Ready` condition, reused while that back-off runs.
    pub recorded_message: String,

    /// [`Call::FindAccount`].
    pub found: Option<Found>,
    /// [`Call::DescribeAccount`].
    pub described: Option<Described>,
    /// [`Call::ListTags`]: the account's tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// [`Call::ReadOrganization`]: the organization's management account.
    pub management_account: Option<String>,
    /// [`Call::ReserveSlot`].
    pub reservation: Option<Reservation>,
    /// [`Call::DeleteStacks`].
    pub stacks: Option<StacksLeft>,
    /// [`Call::CloseAccount`]: what CloseAccount answered.
    pub closed: Option<Result<(), CloseRefusal>>,
}

/// The one call [`decide`] needs made before it can say more; its answer joins the facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Find the account: recorded, from its request, or in the organization index.
    FindAccount,
    /// DescribeAccount, fresh from AWS.
    DescribeAccount,
    /// ListTagsForResource on the account.
    ListTags,
    /// The organization's description (cached after its first read).
    ReadOrganization,
    /// Record the closure in the [`ClosureLedger`], if both budgets allow.
    ReserveSlot,
    /// Delete the baseline stacks in every region.
    DeleteStacks,
    /// CloseAccount.
    CloseAccount,
}

/// A Normal Event about the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub reason: &'static str,
    pub note: String,
}

/// What [`decide`] says of the facts so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClosureDecision {
    /// Make this call, add its answer to the facts, and decide again.
    Next(Call),
    /// Nothing more to do on AWS: publish the Event, if any, and let the finalizer go.
    Finished { event: Option<Note> },
    /// The deletion waits: publish the Event, if any, record `next_closure_attempt` when set,
    /// and report `outcome` in the status.
    Wait { outcome: StepOutcome, event: Option<Note>, next_closure_attempt: Option<Timestamp> },
}

impl ClosureDecision {
    fn wait(outcome: StepOutcome) -> Self {
        Self::Wait { outcome, event: None, next_closure_attempt: None }
    }
}

/// Decides what becomes of a deleted Tenant's account from the facts so far: the next call,
/// or how this look ends. Pure. The rails of the module's doc comment, in their order.
pub fn decide(facts: &ClosureFacts) -> ClosureDecision {
    use ClosureDecision::{Finished, Next};
    let Some(found) = &facts.found else { return Next(Call::FindAccount) };
    let account_id = match found {
        Found::Account(account_id) => account_id,
        Found::Nothing => return Finished { event: None },
        Found::CreationInFlight => {
            return ClosureDecision::wait(StepOutcome::wait(
                "WaitingForCreation",
                "The account is still being created; the deletion policy applies to it once it exists",
                POLL,
            ));
        }
        Found::IndexIncomplete => {
            return ClosureDecision::wait(StepOutcome::wait(
                "LookingForEarlierWork",
                "Silo may have sent CreateAccount for this tenant just before it stopped; it looks for that account \
                 once it has read the organization",
                Duration::from_secs(5),
            ));
        }
    };
    if facts.policy == DeletionPolicy::Retain {
        let note = format!("Account {account_id} is retained");
        return Finished { event: Some(Note { reason: "AccountRetained", note }) };
    }

    // 1. Enabled.
    if !facts.closure_allowed {
        return ClosureDecision::wait(StepOutcome::stalled(
            "AccountClosureDisabled",
            format!(
                "deletionPolicy is Close, but the controller runs without --allow-account-closure: \
                 restart it with the flag to close account {account_id}, or set spec.deletionPolicy to Retain \
                 to keep the account and let the Tenant go"
            ),
            Duration::from_secs(3600),
        ));
    }

    // 2. Owned: read fresh from AWS, never from the index.
    let Some(described) = &facts.described else { return Next(Call::DescribeAccount) };
    match described {
        Described::NotInOrganization => return Finished { event: None },
        Described::ClosingOrClosed { state } => {
            let note = format!("Account {account_id} is {state}");
            return Finished { event: Some(Note { reason: "AccountClosed", note }) };
        }
        Described::Open => {}
    }
    let Some(tags) = &facts.tags else { return Next(Call::ListTags) };
    let Some(management_account) = &facts.management_account else { return Next(Call::ReadOrganization) };
    if account_id == management_account || claim(tags, &facts.uid) != Claim::ThisTenant {
        return ClosureDecision::wait(StepOutcome::stalled(
            "AccountNotOwned",
            format!(
                "Account {account_id} does not carry this Tenant's {TENANT_UID_TAG} tag, so Silo will not close it: \
                 set spec.deletionPolicy to Retain, or restore the tag if the account is this Tenant's"
            ),
            Duration::from_secs(3600),
        ));
    }
    if facts.adopted && facts.consent.as_ref() != Some(account_id) {
        return ClosureDecision::wait(StepOutcome::stalled(
            "AdoptedAccountCloseNeedsConsent",
            format!(
                "Account {account_id} was adopted, not created by Silo: closing it needs the annotation \
                 {CLOSE_ADOPTED_ACCOUNT}: \"{account_id}\" on the Tenant; or set spec.deletionPolicy to Retain"
            ),
            Duration::from_secs(3600),
        ));
    }

    // 3. Budgeted: recorded before anything is destroyed.
    let Some(Reservation { answer, at: now }) = &facts.reservation else { return Next(Call::ReserveSlot) };
    let now = *now;
    let queued = match answer {
        LedgerAnswer::Proceed => None,
        LedgerAnswer::DailyBudget { next_slot } => Some((
            next_slot,
            format!(
                "Silo closes at most {} accounts in 24 hours (--max-account-closures-per-day)",
                facts.closures_per_day
            ),
        )),
        LedgerAnswer::AwsQuota { next_slot, quota } => Some((
            next_slot,
            format!("AWS lets this organization close at most {quota} accounts in 30 days (10% of its members)"),
        )),
    };
    if let Some((next_slot, why)) = queued {
        let wait = Duration::try_from(next_slot.duration_since(now)).unwrap_or(POLL).max(POLL);
        return ClosureDecision::wait(StepOutcome::wait(
            "ClosureQueued",
            format!(
                "{why}; account {account_id} is queued and closes at about {next_slot}; its baseline stays until then"
            ),
            wait,
        ));
    }
    // AWS refused for quota reasons not long ago: wait out the back-off without asking again.
    if let Some(outcome) = quota_backoff(facts.next_closure_attempt, &facts.recorded_message, now) {
        return ClosureDecision::wait(outcome);
    }

    // 4. The baseline stacks, in every region, while the account can still be entered; then
    //    the account.
    let Some(stacks) = &facts.stacks else { return Next(Call::DeleteStacks) };
    if let StacksLeft::Some(deleting) = stacks {
        return ClosureDecision::wait(deleting.clone());
    }
    let Some(closed) = &facts.closed else { return Next(Call::CloseAccount) };
    match closed {
        Ok(()) | Err(CloseRefusal::AlreadyClosed) => ClosureDecision::Wait {
            outcome: StepOutcome::wait("ClosingAccount", format!("AWS is closing account {account_id}"), POLL),
            event: Some(Note {
                reason: "ClosureRequested",
                note: format!("Requested closure of account {account_id}"),
            }),
            next_closure_attempt: None,
        },
        Err(CloseRefusal::Quota(why)) => {
            let next =
                now.checked_add(SignedDuration::try_from(QUOTA_BACKOFF).expect("a few hours fit")).unwrap_or(now);
            ClosureDecision::Wait {
                outcome: StepOutcome::wait(
                    "ClosureQuotaExceeded",
                    format!("AWS refused to close account {account_id} ({why}); the next try is at about {next}"),
                    QUOTA_BACKOFF,
                ),
                event: None,
                next_closure_attempt: Some(next),
            }
        }
    }
}

/// The quota back-off still running, from `status.nextClosureAttempt`: the recorded
/// condition is reused as it is, so the status does not change while Silo waits. Pure.
fn quota_backoff(next_attempt: Option<Timestamp>, recorded_message: &str, now: Timestamp) -> Option<StepOutcome> {
    let wait = Duration::try_from(next_attempt?.duration_since(now)).ok().filter(|w| !w.is_zero())?;
    Some(StepOutcome::wait("ClosureQuotaExceeded", recorded_message, wait))
}

impl ClosureFacts {
    /// What is known before any call: the Tenant, its status and the controller's flags.
    fn of(tenant: &Tenant, policy: DeletionPolicy, ctx: &Context) -> Self {
        let status = tenant.status.as_ref();
        Self {
            policy,
            uid: tenant.uid().unwrap_or_default(),
            closure_allowed: ctx.config.allow_account_closure,
            closures_per_day: ctx.config.max_account_closures_per_day,
            adopted: status.is_some_and(|s| s.adopted),
            consent: tenant.annotations().get(CLOSE_ADOPTED_ACCOUNT).cloned(),
            next_closure_attempt: status.and_then(|s| s.next_closure_attempt.as_deref()?.parse().ok()),
            recorded_message: status
                .and_then(|s| crate::conditions::find(&s.conditions, crate::conditions::READY))
                .map(|c| c.message.clone())
                .unwrap_or_default(),
            found: None,
            described: None,
            tags: None,
            management_account: None,
            reservation: None,
            stacks: None,
            closed: None,
        }
    }

    /// The account [`decide`] found, for the calls that need it.
    fn account_id(&self) -> &str {
        match &self.found {
            Some(Found::Account(account_id)) => account_id,
            _ => unreachable!("decide asks about an account only once it has found one"),
        }
    }

    /// Makes one call and records its answer.
    async fn learn(&mut self, call: Call, tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
        let org = &ctx.org;
        match call {
            Call::FindAccount => self.found = Some(find_account(tenant, ctx).await?),
            Call::DescribeAccount => {
                self.described = Some(match org.describe_account_fresh(self.account_id()).await? {
                    None => Described::NotInOrganization,
                    Some(account) if account.is_closing_or_closed() => {
                        Described::ClosingOrClosed { state: account.state }
                    }
                    Some(_) => Described::Open,
                });
            }
            Call::ListTags => self.tags = Some(org.tags(self.account_id(), Priority::User).await?),
            Call::ReadOrganization => self.management_account = Some(org.info().await?.management_account_id),
            Call::ReserveSlot => {
                let at = Timestamp::now();
                let members = org.index.account_count().saturating_sub(1);
                let answer = ctx.closures.reserve(self.account_id(), at, members).await?;
                self.reservation = Some(Reservation { answer, at });
            }
            Call::DeleteStacks => {
                self.stacks = Some(match delete_stacks(tenant, ctx).await? {
                    None => StacksLeft::None,
                    Some(deleting) => StacksLeft::Some(deleting),
                });
            }
            Call::CloseAccount => {
                let closed = org.close_account(self.account_id()).await?;
                if matches!(closed, Ok(()) | Err(CloseRefusal::AlreadyClosed)) {
                    info!(tenant = %tenant.name_any(), account = %self.account_id(), "account closure requested");
                }
                self.closed = Some(closed);
            }
        }
        Ok(())
    }
}

/// Finds the account of a deleted Tenant: recorded, from its request, or, when only the
/// intent was recorded (a controller killed during CreateAccount), by its email or account
/// name in the organization index.
async fn find_account(tenant: &Tenant, ctx: &Context) -> Result<Found, Error> {
    let status = tenant.status.clone().unwrap_or_default();
    if let Some(id) = status.account_id {
        return Ok(Found::Account(id));
    }
    let org = &ctx.org;
    let request =
        status.create_account_request_id.or_else(|| org.creations.request_of(&tenant.uid().unwrap_or_default()));
    if let Some(request_id) = request {
        return Ok(match org.creation(&request_id).await?.state {
            CreationState::Succeeded { account_id } => Found::Account(account_id),
            CreationState::Failed { .. } => Found::Nothing,
            CreationState::InProgress => Found::CreationInFlight,
        });
    }
    let (Some(email), Some(name)) = (status.email, status.account_name) else { return Ok(Found::Nothing) };
    if !org.index.is_complete() {
        return Ok(Found::IndexIncomplete);
    }
    if let Some(found) = org.index.account_by_email(&email) {
        return Ok(Found::Account(found.account.id));
    }
    for request in org.requests_named(&name, Priority::User).await? {
        match request.state {
            CreationState::InProgress => return Ok(Found::CreationInFlight),
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
pub async fn retain(tenant: &Tenant, ctx: &Context) -> Result<Deletion, Error> {
    settle(tenant, DeletionPolicy::Retain, ctx).await
}

/// Cleanup of a deleted `Close` Tenant: the account is closed once it passes every rail of
/// the module's doc comment.
pub async fn close(tenant: &Tenant, ctx: &Context) -> Result<Deletion, Error> {
    settle(tenant, DeletionPolicy::Close, ctx).await
}

/// Observe, decide, act: makes the calls [`decide`] asks for, one at a time, until it says
/// how this look ends; then publishes its Event and, for a wait, reports it in the status.
async fn settle(tenant: &Tenant, policy: DeletionPolicy, ctx: &Context) -> Result<Deletion, Error> {
    let mut facts = ClosureFacts::of(tenant, policy, ctx);
    loop {
        match decide(&facts) {
            ClosureDecision::Next(call) => facts.learn(call, tenant, ctx).await?,
            ClosureDecision::Finished { event } => {
                publish(tenant, ctx, event).await;
                return Ok(Deletion::Finished);
            }
            ClosureDecision::Wait { outcome, event, next_closure_attempt } => {
                publish(tenant, ctx, event).await;
                return report_wait(tenant, ctx, outcome, next_closure_attempt).await;
            }
        }
    }
}

async fn publish(tenant: &Tenant, ctx: &Context, event: Option<Note>) {
    if let Some(Note { reason, note }) = event {
        ctx.event(tenant, EventType::Normal, reason, note).await;
    }
}

/// Reports why deletion waits, in the status, and says when to look again.
async fn report_wait(
    tenant: &Tenant,
    ctx: &Context,
    outcome: StepOutcome,
    next_closure_attempt: Option<Timestamp>,
) -> Result<Deletion, Error> {
    let mut progress = Progress::new(tenant);
    progress.phase = Some("Deleting");
    if let Some(next) = next_closure_attempt {
        progress.status.next_closure_attempt = Some(next.to_string());
    }
    let reason = outcome.reason().to_string();
    let retry_after = outcome.look_again().unwrap_or(POLL);
    progress.account = Some(outcome);
    StatusWriter::new(tenant, ctx.client.clone()).write(&progress).await?;
    Ok(Deletion::Wait { reason, retry_after })
}

/// Deletes the tenant's baseline stacks in every region, before its account is closed.
/// Returns `None` once none is left, or what is going on while they are being deleted.
async fn delete_stacks(tenant: &Tenant, ctx: &Context) -> Result<Option<StepOutcome>, Error> {
    let Some(applied) = tenant.status.as_ref().and_then(|s| s.baseline.clone()) else { return Ok(None) };
    let Some(account_id) = tenant.status.as_ref().and_then(|s| s.account_id.clone()) else { return Ok(None) };
    let baseline = ctx.baselines.get(&ObjectRef::new(&applied.name));
    let (role_name, session_policy, external_id, stack_name) = match &baseline {
        Some(b) => {
            let external_id = match &b.spec.external_id {
                Some(r) => ctx.external_id(&r.name, &r.key).await?,
                None => None,
            };
            (b.spec.role_name.clone(), b.spec.session_policy.clone(), external_id, b.spec.stack_name.clone())
        }
        None => ("OrganizationAccountAccessRole".to_string(), None, None, "silo-baseline".to_string()),
    };
    let key = SessionKey {
        tenant_uid: tenant.uid().unwrap_or_default(),
        account_id: account_id.clone(),
        role_name,
        external_id,
        session_policy,
    };
    let credentials = match ctx.aws.tenants.credentials(&key, &tenant.name_any(), Priority::User).await {
        Ok(credentials) => credentials,
        Err(err) if session_refusal(&err) == SessionRefusal::RoleRefused => {
            return Ok(Some(StepOutcome::stalled(
                "BaselineDeletionBlocked",
                format!(
                    "Cannot assume {} in account {account_id} to delete the baseline stacks: {}",
                    key.role_name, err.message
                ),
                RECHECK_STALLED,
            )));
        }
        Err(err) => return Err(err.into()),
    };
    // A deletion that failed is not sent again on every look: the Tenant stalls naming the
    // stack, and each stalled recheck sends one more DeleteStack (someone may have removed
    // what blocked it).
    let rechecking = tenant
        .status
        .as_ref()
        .and_then(|s| crate::conditions::find(&s.conditions, crate::conditions::STALLED))
        .is_some_and(|c| c.status == "True" && c.reason == DELETE_FAILED_REASON);
    let (mut remaining, mut failed) = (vec![], vec![]);
    for entry in &applied.stacks {
        let stacks = ctx.aws.stacks(&account_id, credentials.clone(), &entry.region, Priority::User);
        let name = entry.stack_id.clone().unwrap_or_else(|| stack_name.clone());
        let Some(stack) = stacks.describe(&name).await? else { continue };
        match stack.status.as_str() {
            "DELETE_COMPLETE" => continue,
            "DELETE_IN_PROGRESS" => {}
            "DELETE_FAILED" if !rechecking => {
                let why = stack.reason.as_deref().unwrap_or("CloudFormation gave no reason");
                failed.push(format!("{stack_name} in {} ({why})", entry.region));
                continue;
            }
            _ => stacks.delete(&stack, &request_token("delete", &applied.revision, stack.changed_at)).await?,
        }
        remaining.push(entry.region.clone());
    }
    if !failed.is_empty() {
        return Ok(Some(StepOutcome::stalled(
            DELETE_FAILED_REASON,
            format!(
                "The baseline stack could not be deleted, so account {account_id} stays open: {}. Remove what \
                 blocks the deletion (or delete the stack yourself, with RetainResources for what must stay); \
                 Silo tries the deletion again at every recheck",
                failed.join("; ")
            ),
            RECHECK_STALLED,
        )));
    }
    if remaining.is_empty() {
        return Ok(None);
    }
    Ok(Some(StepOutcome::wait(
        "DeletingBaseline",
        format!("Deleting the baseline stacks in {} before the account is closed", remaining.join(", ")),
        DELETION_POLL,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + hours * 3600).unwrap()
    }

    const ACCOUNT: &str = "111111111111";
    const MANAGEMENT: &str = "999999999999";

    /// A deleted `Close` Tenant, nothing asked yet.
    fn deleted() -> ClosureFacts {
        ClosureFacts {
            policy: DeletionPolicy::Close,
            uid: "uid-1".into(),
            closure_allowed: true,
            closures_per_day: 2,
            recorded_message: "AWS refused to close account 111111111111 (quota)".into(),
            ..ClosureFacts::default()
        }
    }

    /// The facts of a closure that passed every rail so far, up to `answers` answers.
    fn answered(answers: usize) -> ClosureFacts {
        let mut facts = deleted();
        let steps: [&dyn Fn(&mut ClosureFacts); 6] = [
            &|f| f.found = Some(Found::Account(ACCOUNT.into())),
            &|f| f.described = Some(Described::Open),
            &|f| f.tags = Some(BTreeMap::from([(TENANT_UID_TAG.to_string(), "uid-1".to_string())])),
            &|f| f.management_account = Some(MANAGEMENT.into()),
            &|f| f.reservation = Some(Reservation { answer: LedgerAnswer::Proceed, at: at(0) }),
            &|f| f.stacks = Some(StacksLeft::None),
        ];
        for step in &steps[..answers] {
            step(&mut facts);
        }
        facts
    }

    /// A decision in a few words: the call, or how it ends, its reason and its Event.
    fn summary(decision: &ClosureDecision) -> String {
        match decision {
            ClosureDecision::Next(call) => format!("call {call:?}"),
            ClosureDecision::Finished { event: None } => "finished".into(),
            ClosureDecision::Finished { event: Some(e) } => format!("finished, Event {}", e.reason),
            ClosureDecision::Wait { outcome, event, next_closure_attempt } => {
                let kind = if matches!(outcome, StepOutcome::Stalled { .. }) { "stalled" } else { "wait" };
                let event = event.as_ref().map(|e| format!(", Event {}", e.reason)).unwrap_or_default();
                let next = next_closure_attempt.map(|_| ", next attempt recorded").unwrap_or_default();
                format!("{kind} {}{event}{next}", outcome.reason())
            }
        }
    }

    #[test]
    fn each_deletion_is_decided_by_the_rails_in_order() {
        let with = |answers: usize, change: &dyn Fn(&mut ClosureFacts)| {
            let mut facts = answered(answers);
            change(&mut facts);
            facts
        };
        let found = |what: Found| with(0, &move |f| f.found = Some(what.clone()));
        let tags = |pairs: &[(&str, &str)]| {
            let tags: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            with(4, &move |f| f.tags = Some(tags.clone()))
        };
        let table: Vec<(&str, ClosureFacts, &str)> = vec![
            ("nothing asked yet: find the account", deleted(), "call FindAccount"),
            ("no account was ever made", found(Found::Nothing), "finished"),
            ("its creation is in flight", found(Found::CreationInFlight), "wait WaitingForCreation"),
            ("the index is not read yet", found(Found::IndexIncomplete), "wait LookingForEarlierWork"),
            (
                "Retain keeps the account, whatever the flags",
                with(1, &|f| (f.policy, f.closure_allowed) = (DeletionPolicy::Retain, false)),
                "finished, Event AccountRetained",
            ),
            (
                "Retain with no account",
                with(0, &|f| (f.policy, f.found) = (DeletionPolicy::Retain, Some(Found::Nothing))),
                "finished",
            ),
            (
                "1. without the flag nothing is asked of AWS",
                with(1, &|f| f.closure_allowed = false),
                "stalled AccountClosureDisabled",
            ),
            ("2. the account is described fresh", answered(1), "call DescribeAccount"),
            ("gone from the organization", with(2, &|f| f.described = Some(Described::NotInOrganization)), "finished"),
            (
                "already closing",
                with(2, &|f| f.described = Some(Described::ClosingOrClosed { state: "SUSPENDED".into() })),
                "finished, Event AccountClosed",
            ),
            ("open: its tags next", answered(2), "call ListTags"),
            ("then who manages the organization", answered(3), "call ReadOrganization"),
            (
                "the management account, even tagged",
                with(4, &|f| f.management_account = Some(ACCOUNT.into())),
                "stalled AccountNotOwned",
            ),
            ("another Tenant's tag", tags(&[(TENANT_UID_TAG, "uid-2")]), "stalled AccountNotOwned"),
            ("no tag", tags(&[("team", "a")]), "stalled AccountNotOwned"),
            ("adopted, no consent", with(4, &|f| f.adopted = true), "stalled AdoptedAccountCloseNeedsConsent"),
            (
                "adopted, consent for another account",
                with(4, &|f| (f.adopted, f.consent) = (true, Some("222222222222".into()))),
                "stalled AdoptedAccountCloseNeedsConsent",
            ),
            (
                "adopted, consent for this one",
                with(4, &|f| (f.adopted, f.consent) = (true, Some(ACCOUNT.into()))),
                "call ReserveSlot",
            ),
            ("3. owned: a slot in the ledger", answered(4), "call ReserveSlot"),
            (
                "over the daily budget",
                with(5, &|f| {
                    f.reservation =
                        Some(Reservation { answer: LedgerAnswer::DailyBudget { next_slot: at(3) }, at: at(0) })
                }),
                "wait ClosureQueued",
            ),
            (
                "over AWS's quota",
                with(5, &|f| {
                    let answer = LedgerAnswer::AwsQuota { next_slot: at(30 * 24), quota: 10 };
                    f.reservation = Some(Reservation { answer, at: at(0) });
                }),
                "wait ClosureQueued",
            ),
            (
                "AWS refused for its quota an hour ago",
                with(5, &|f| f.next_closure_attempt = Some(at(3))),
                "wait ClosureQuotaExceeded",
            ),
            (
                "4. granted: the stacks go first",
                with(5, &|f| f.next_closure_attempt = Some(at(0))),
                "call DeleteStacks",
            ),
            (
                "stacks still being deleted",
                with(6, &|f| {
                    let deleting = StepOutcome::wait("DeletingBaseline", "Deleting the baseline stacks", POLL);
                    f.stacks = Some(StacksLeft::Some(deleting));
                }),
                "wait DeletingBaseline",
            ),
            ("no stack left: close the account", answered(6), "call CloseAccount"),
            ("AWS accepted", with(6, &|f| f.closed = Some(Ok(()))), "wait ClosingAccount, Event ClosureRequested"),
            (
                "closed already",
                with(6, &|f| f.closed = Some(Err(CloseRefusal::AlreadyClosed))),
                "wait ClosingAccount, Event ClosureRequested",
            ),
            (
                "AWS refused for its quota",
                with(6, &|f| f.closed = Some(Err(CloseRefusal::Quota("CLOSE_ACCOUNT_QUOTA_EXCEEDED".into())))),
                "wait ClosureQuotaExceeded, next attempt recorded",
            ),
        ];
        for (case, facts, expected) in table {
            assert_eq!(summary(&decide(&facts)), expected, "{case}");
        }
    }

    #[test]
    fn waits_say_when_to_look_again_and_what_to_do() {
        let queued = ClosureFacts {
            reservation: Some(Reservation { answer: LedgerAnswer::DailyBudget { next_slot: at(3) }, at: at(0) }),
            ..answered(5)
        };
        let ClosureDecision::Wait { outcome, .. } = decide(&queued) else { panic!("a queued closure waits") };
        assert_eq!(outcome.look_again(), Some(Duration::from_secs(3 * 3600)), "until its slot opens");
        assert!(outcome.message().starts_with("Silo closes at most 2 accounts in 24 hours"), "{}", outcome.message());

        let backing_off = ClosureFacts { next_closure_attempt: Some(at(3)), ..answered(5) };
        let ClosureDecision::Wait { outcome, .. } = decide(&backing_off) else { panic!("a back-off waits") };
        assert_eq!(outcome.message(), backing_off.recorded_message, "the recorded condition, unchanged");
        assert_eq!(outcome.look_again(), Some(Duration::from_secs(3 * 3600)));

        let refused = ClosureFacts { closed: Some(Err(CloseRefusal::Quota("quota".into()))), ..answered(6) };
        let ClosureDecision::Wait { outcome, next_closure_attempt, .. } = decide(&refused) else {
            panic!("a refused closure waits")
        };
        assert_eq!(next_closure_attempt, Some(at(4)), "four hours after the ledger's answer");
        assert_eq!(outcome.look_again(), Some(QUOTA_BACKOFF));

        let retained = ClosureFacts { policy: DeletionPolicy::Retain, ..answered(1) };
        let note = Note { reason: "AccountRetained", note: format!("Account {ACCOUNT} is retained") };
        assert_eq!(decide(&retained), ClosureDecision::Finished { event: Some(note) });
    }

    #[test]
    fn closures_within_budget_are_recorded() {
        let (decision, kept) = judge_ledger(&BTreeMap::new(), "111111111111", at(0), 2, 100);
        assert_eq!(decision, LedgerAnswer::Proceed);
        assert_eq!(kept.get("111111111111"), Some(&at(0)));
    }

    #[test]
    fn over_the_daily_budget_closures_queue_until_the_oldest_of_the_day_expires() {
        let entries = BTreeMap::from([("a".to_string(), at(0)), ("b".to_string(), at(5))]);
        let (decision, _) = judge_ledger(&entries, "c", at(6), 2, 100);
        assert_eq!(decision, LedgerAnswer::DailyBudget { next_slot: at(24) });
    }

    #[test]
    fn aws_lets_an_organization_close_ten_percent_of_its_members_in_thirty_days() {
        assert_eq!(aws_closure_quota(5), 10, "at least 10");
        assert_eq!(aws_closure_quota(250), 25);
        assert_eq!(aws_closure_quota(50_000), 1000, "at most 1,000");
        // Ten closed over the last 30 days, one a day: the eleventh waits for the oldest to age out.
        let entries: BTreeMap<String, Timestamp> = (0..10).map(|d| (format!("a{d}"), at(d * 24))).collect();
        let (decision, kept) = judge_ledger(&entries, "b", at(10 * 24), 100, 50);
        assert_eq!(decision, LedgerAnswer::AwsQuota { next_slot: at(30 * 24), quota: 10 });
        assert_eq!(kept.len(), 10, "a queued closure is not recorded");
    }

    #[test]
    fn a_recorded_closure_proceeds_again_after_a_crash() {
        let entries = BTreeMap::from([("a".to_string(), at(0)), ("b".to_string(), at(1))]);
        let (decision, kept) = judge_ledger(&entries, "a", at(2), 2, 100);
        assert_eq!(decision, LedgerAnswer::Proceed, "the account's own slot is still its own");
        assert_eq!(kept, entries);
    }

    #[test]
    fn entries_are_kept_for_thirty_days_and_count_for_a_day() {
        let entries = BTreeMap::from([("a".to_string(), at(0))]);
        let (decision, kept) = judge_ledger(&entries, "b", at(25), 1, 100);
        assert_eq!(decision, LedgerAnswer::Proceed, "yesterday's closure no longer counts for the daily budget");
        assert!(kept.contains_key("a"), "but it still counts for AWS's 30 days");
        let (_, kept) = judge_ledger(&entries, "c", at(31 * 24), 1, 100);
        assert!(!kept.contains_key("a"), "older than 30 days: forgotten");
    }
}
