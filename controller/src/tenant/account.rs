//! Step 2: the account. This is where an AWS account is created or adopted.
//!
//! ## Exactly one account per Tenant
//! CreateAccount has no idempotency token, so a retried or repeated call makes a second
//! account. Silo therefore:
//! 1. records the account name and email in the status before any AWS call (step 1);
//! 2. before creating, looks for work already done: an account of the organization with this
//!    email, or an in-progress CreateAccount request with this account name;
//! 3. tags the account at creation with the Tenant's name and UID, so an account found by
//!    email is adopted only if it carries this Tenant's UID;
//! 4. writes the request id to the status right after CreateAccount returns;
//! 5. polls the request by requeueing, never by blocking a worker.
//!
//! A controller killed between CreateAccount and the status write finds its account again
//! through (2) on the next reconcile.
//!
//! The decision of what to do next is the pure [`plan`]; [`run`] carries it out.

use std::{collections::BTreeMap, time::Duration};

use kube::{ResourceExt, runtime::events::EventType};
use tracing::info;

use super::{Context, Error, identity::Identity, status::Report};
use crate::{
    api::{Tenant, TenantStatus},
    aws::organizations::{Account, CreationState},
    conditions::StepOutcome,
};

/// Tag carrying the Tenant's name on its account.
pub const TENANT_TAG: &str = "silo.dev/tenant";
/// Tag carrying the Tenant's UID on its account: the proof that an account is this Tenant's.
pub const TENANT_UID_TAG: &str = "silo.dev/tenant-uid";

/// How often an in-progress CreateAccount request is polled.
const POLL_CREATION: Duration = Duration::from_secs(10);
/// How old a shared listing of accounts or creation requests may be when looking for
/// earlier work. Requests this process sends are added to the snapshot at once.
const LISTING_MAX_AGE: Duration = Duration::from_secs(60);
/// AWS runs at most this many CreateAccount requests of an organization at once.
const MAX_CONCURRENT_CREATIONS: usize = 5;
/// After EMAIL_ALREADY_EXISTS, how long the account may stay missing from ListAccounts
/// (which is eventually consistent) before Silo concludes it lies outside the organization.
const EMAIL_OWNER_GRACE: Duration = Duration::from_secs(300);
/// How soon a Stalled account step is looked at again, in case the world changed.
const RECHECK_STALLED: Duration = Duration::from_secs(600);

/// What the account step does next, decided from the spec and the recorded status alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountPlan {
    /// The account is known: check it is still there and active.
    Verify { account_id: String },
    /// `spec.accountId` names an existing account to adopt.
    Adopt { account_id: String },
    /// A CreateAccount request was sent: ask how it is going.
    Poll { request_id: String },
    /// Nothing is recorded: look for earlier work, then create.
    FindOrCreate,
}

/// Decides the next account action. Pure.
pub fn plan(tenant: &Tenant) -> AccountPlan {
    let status = tenant.status.clone().unwrap_or_default();
    if let Some(account_id) = status.account_id {
        return AccountPlan::Verify { account_id };
    }
    if let Some(account_id) = &tenant.spec.account_id {
        return AccountPlan::Adopt { account_id: account_id.clone() };
    }
    match status.create_account_request_id {
        Some(request_id) => AccountPlan::Poll { request_id },
        None => AccountPlan::FindOrCreate,
    }
}

/// What a CreateAccount failure reason means for the tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureResponse {
    /// The email belongs to an account already: adopt it if it is this Tenant's.
    LookUpByEmail,
    /// Retry the creation later, after forgetting the failed request.
    RetryLater(Duration),
    /// The organization cannot take more accounts; a person must raise the quota.
    AccountLimit,
    /// A person must look.
    Stalled,
}

/// Maps AWS's CreateAccount failure reasons to Silo's response. Pure.
pub fn on_failure(reason: &str) -> FailureResponse {
    match reason {
        "EMAIL_ALREADY_EXISTS" => FailureResponse::LookUpByEmail,
        "CONCURRENT_ACCOUNT_MODIFICATION" | "INTERNAL_FAILURE" => FailureResponse::RetryLater(Duration::from_secs(30)),
        "ACCOUNT_LIMIT_EXCEEDED" => FailureResponse::AccountLimit,
        _ => FailureResponse::Stalled,
    }
}

/// The tags every Silo account carries, plus the tenant's own.
pub fn desired_tags(tenant: &Tenant) -> BTreeMap<String, String> {
    let mut tags = tenant.spec.tags.clone();
    tags.insert(TENANT_TAG.into(), tenant.name_any());
    tags.insert(TENANT_UID_TAG.into(), tenant.uid().unwrap_or_default());
    tags
}

/// Who an account belongs to, judged by its tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    ThisTenant,
    OtherTenant(String),
    Nobody,
}

/// Reads the Silo claim on an account from its tags. Pure.
pub fn claim(tags: &BTreeMap<String, String>, tenant_uid: &str) -> Claim {
    match tags.get(TENANT_UID_TAG) {
        Some(uid) if uid == tenant_uid => Claim::ThisTenant,
        Some(_) => Claim::OtherTenant(tags.get(TENANT_TAG).cloned().unwrap_or_else(|| "unknown".into())),
        None => Claim::Nobody,
    }
}

/// Runs the account step; returns when to come back if it is not done.
pub async fn run(
    tenant: &Tenant,
    identity: &Identity,
    report: &mut Report<'_>,
    ctx: &Context,
) -> Result<Duration, Error> {
    match plan(tenant) {
        AccountPlan::Verify { account_id } => verify(tenant, &account_id, report, ctx).await,
        AccountPlan::Adopt { account_id } => adopt(tenant, &account_id, report, ctx).await,
        AccountPlan::Poll { request_id } => poll(tenant, identity, &request_id, report, ctx).await,
        AccountPlan::FindOrCreate => find_or_create(tenant, identity, report, ctx).await,
    }
}

async fn verify(tenant: &Tenant, account_id: &str, report: &mut Report<'_>, ctx: &Context) -> Result<Duration, Error> {
    let Some(account) = ctx.aws.organizations.describe_account(account_id).await? else {
        report.account = StepOutcome::stalled(
            "AccountNotInOrganization",
            format!("Account {account_id} is no longer in the organization; it was removed outside Silo"),
        );
        return Ok(RECHECK_STALLED);
    };
    if !account.is_active() {
        report.account = not_active(&account);
        return Ok(RECHECK_STALLED);
    }
    ensure_tags(tenant, &account, report, ctx, TagRepair::Report).await?;
    report.account = StepOutcome::done("AccountActive", format!("Account {} is active", account.id));
    Ok(Duration::MAX)
}

async fn adopt(tenant: &Tenant, account_id: &str, report: &mut Report<'_>, ctx: &Context) -> Result<Duration, Error> {
    let Some(account) = ctx.aws.organizations.describe_account(account_id).await? else {
        report.account = StepOutcome::stalled(
            "AccountNotInOrganization",
            format!(
                "spec.accountId {account_id} is not an account of this organization; invite it first or fix the id"
            ),
        );
        return Ok(RECHECK_STALLED);
    };
    if !account.is_active() {
        report.account = not_active(&account);
        return Ok(RECHECK_STALLED);
    }
    let tags = ctx.aws.organizations.list_tags(account_id).await?;
    if let Claim::OtherTenant(other) = claim(&tags, &tenant.uid().unwrap_or_default()) {
        report.account = claimed_by(&account.id, &other);
        return Ok(RECHECK_STALLED);
    }
    record_account(report, &account);
    report.write(ctx).await?;
    ensure_tags(tenant, &account, report, ctx, TagRepair::Silent).await?;
    ctx.event(tenant, EventType::Normal, "AccountAdopted", format!("Adopted account {}", account.id)).await;
    report.account = StepOutcome::done("AccountAdopted", format!("Account {} was adopted", account.id));
    Ok(Duration::MAX)
}

async fn poll(
    tenant: &Tenant,
    identity: &Identity,
    request_id: &str,
    report: &mut Report<'_>,
    ctx: &Context,
) -> Result<Duration, Error> {
    let request = ctx.aws.organizations.describe_create_request(request_id).await?;
    {
        let mut creations = ctx.creations.lock().expect("creations lock");
        match request.state {
            CreationState::InProgress => {
                creations.entry(request_id.to_string()).or_insert_with(std::time::Instant::now);
            }
            _ => {
                creations.remove(request_id);
            }
        }
    }
    match request.state {
        CreationState::InProgress => {
            report.account = StepOutcome::in_progress(
                "CreatingAccount",
                format!("AWS is creating account {:?} (request {request_id})", identity.account_name),
            );
            Ok(POLL_CREATION)
        }
        CreationState::Succeeded { account_id } => {
            let Some(account) = ctx.aws.organizations.describe_account(&account_id).await? else {
                // Listed as created but not yet visible: AWS is eventually consistent here.
                report.account =
                    StepOutcome::in_progress("CreatingAccount", format!("Waiting for account {account_id} to appear"));
                return Ok(POLL_CREATION);
            };
            // A request of the same name found by `find_or_create` may be another tenant's:
            // it is ours only with our email and without another Tenant's UID on the account.
            let tags = ctx.aws.organizations.list_tags(&account.id).await?;
            let others = matches!(claim(&tags, &tenant.uid().unwrap_or_default()), Claim::OtherTenant(_));
            if !account.email.eq_ignore_ascii_case(&identity.email) || others {
                ctx.foreign_requests.lock().expect("foreign requests lock").insert(request_id.to_string());
                report.status.create_account_request_id = None;
                report.account = StepOutcome::in_progress("Pending", "Looking for this tenant's account");
                return Ok(Duration::from_secs(1));
            }
            record_account(report, &account);
            report.write(ctx).await?;
            ensure_tags(tenant, &account, report, ctx, TagRepair::Silent).await?;
            info!(tenant = %tenant.name_any(), account = %account.id, "account created");
            ctx.event(tenant, EventType::Normal, "AccountCreated", format!("Created account {}", account.id)).await;
            report.account = StepOutcome::done("AccountCreated", format!("Account {} was created", account.id));
            Ok(Duration::MAX)
        }
        CreationState::Failed { reason, failed_for } => {
            on_creation_failed(tenant, identity, &reason, failed_for, report, ctx).await
        }
    }
}

async fn on_creation_failed(
    tenant: &Tenant,
    identity: &Identity,
    reason: &str,
    failed_for: Option<Duration>,
    report: &mut Report<'_>,
    ctx: &Context,
) -> Result<Duration, Error> {
    match on_failure(reason) {
        FailureResponse::LookUpByEmail => {
            // The truth, not a snapshot: AWS just said an account has this email.
            let accounts = ctx.aws.organizations.accounts(Duration::ZERO).await?;
            if let Some(account) = accounts.iter().find(|a| a.email.eq_ignore_ascii_case(&identity.email)) {
                report.status.create_account_request_id = None;
                return adopt_found(tenant, account, report, ctx).await;
            }
            if failed_for.is_some_and(|age| age < EMAIL_OWNER_GRACE) {
                // Keep the failed request in the status: its age bounds the wait.
                report.account = StepOutcome::in_progress(
                    "LookingForEmailOwner",
                    format!("AWS says {} is in use; looking for that account in the organization", identity.email),
                );
                return Ok(Duration::from_secs(15));
            }
            report.status.create_account_request_id = None;
            // AWS refused the email: it was never used for this tenant, so it may change.
            report.status.email = None;
            report.account = StepOutcome::stalled(
                "EmailInUse",
                format!(
                    "AWS refused the email {}: it belongs to an account outside this organization or to a closed \
                     account, and an email can never be reused. If spec.email is unset, set it to a new address; \
                     otherwise create a new Tenant with another email",
                    identity.email
                ),
            );
            Ok(RECHECK_STALLED)
        }
        FailureResponse::RetryLater(after) => {
            report.status.create_account_request_id = None;
            report.account = StepOutcome::in_progress("RetryingCreation", format!("AWS answered {reason}; retrying"));
            Ok(after)
        }
        FailureResponse::AccountLimit => {
            report.status.create_account_request_id = None;
            report.account = StepOutcome::stalled(
                "OrganizationAccountLimit",
                "The organization has reached its account quota (ACCOUNT_LIMIT_EXCEEDED): ask AWS to raise it; \
                 Silo retries every hour",
            );
            Ok(Duration::from_secs(3600))
        }
        FailureResponse::Stalled => {
            report.status.create_account_request_id = None;
            report.account = StepOutcome::stalled(
                "AccountCreationFailed",
                format!("AWS could not create the account: {reason}; fix the cause, then touch the Tenant to retry"),
            );
            Ok(RECHECK_STALLED)
        }
    }
}

async fn find_or_create(
    tenant: &Tenant,
    identity: &Identity,
    report: &mut Report<'_>,
    ctx: &Context,
) -> Result<Duration, Error> {
    let org = &ctx.aws.organizations;

    // Earlier work, first: an account with this email (created before a crash)...
    let accounts = org.accounts(LISTING_MAX_AGE).await?;
    if let Some(account) = accounts.iter().find(|a| a.email.eq_ignore_ascii_case(&identity.email)) {
        return adopt_found(tenant, account, report, ctx).await;
    }
    // ... or a request for this account name. Names are not unique: a succeeded request is
    // this tenant's only if its account has this tenant's email; one still in progress
    // cannot be told apart yet, so it is followed until it ends (see `poll`).
    let requests = org.open_create_requests(LISTING_MAX_AGE).await?;
    let foreign = ctx.foreign_requests.lock().expect("foreign requests lock").clone();
    for request in requests.iter().filter(|r| r.account_name == identity.account_name && !foreign.contains(&r.id)) {
        match &request.state {
            CreationState::InProgress => {
                report.status.create_account_request_id = Some(request.id.clone());
                report.write(ctx).await?;
                return poll(tenant, identity, &request.id, report, ctx).await;
            }
            CreationState::Succeeded { account_id } => {
                if let Some(account) = org.describe_account(account_id).await?
                    && account.email.eq_ignore_ascii_case(&identity.email)
                {
                    return adopt_found(tenant, &account, report, ctx).await;
                }
            }
            CreationState::Failed { .. } => {}
        }
    }

    if in_flight_creations(ctx) >= MAX_CONCURRENT_CREATIONS {
        report.account = StepOutcome::in_progress(
            "WaitingForCreationSlot",
            format!("AWS creates at most {MAX_CONCURRENT_CREATIONS} accounts at once; this one is next in line"),
        );
        return Ok(POLL_CREATION);
    }

    // Nothing found. The identity is in the status before the call...
    report.account = StepOutcome::in_progress("CreatingAccount", "Requesting a new account");
    report.write(ctx).await?;
    let request = org.create_account(&identity.account_name, &identity.email, &desired_tags(tenant)).await?;
    ctx.creations.lock().expect("creations lock").insert(request.id.clone(), std::time::Instant::now());
    // ... and the request id right after it.
    report.status.create_account_request_id = Some(request.id.clone());
    report.status.applied_tag_keys = desired_tags(tenant).into_keys().collect();
    report.account = StepOutcome::in_progress(
        "CreatingAccount",
        format!("AWS is creating account {:?} (request {})", identity.account_name, request.id),
    );
    report.write(ctx).await?;
    info!(tenant = %tenant.name_any(), request = %request.id, "account creation requested");
    ctx.event(
        tenant,
        EventType::Normal,
        "AccountCreationRequested",
        format!("Requested account {:?}", identity.account_name),
    )
    .await;
    Ok(POLL_CREATION)
}

/// Creations this process saw in progress recently. Entries older than an hour are not
/// counted: a Tenant deleted while its account was being created never polls again.
fn in_flight_creations(ctx: &Context) -> usize {
    let mut creations = ctx.creations.lock().expect("creations lock");
    creations.retain(|_, seen| seen.elapsed() < Duration::from_secs(3600));
    creations.len()
}

/// Adopts an account found by this tenant's email, if its tags say it is this tenant's.
async fn adopt_found(
    tenant: &Tenant,
    account: &Account,
    report: &mut Report<'_>,
    ctx: &Context,
) -> Result<Duration, Error> {
    let tags = ctx.aws.organizations.list_tags(&account.id).await?;
    match claim(&tags, &tenant.uid().unwrap_or_default()) {
        Claim::ThisTenant => {
            record_account(report, account);
            report.write(ctx).await?;
            ensure_tags(tenant, account, report, ctx, TagRepair::Silent).await?;
            ctx.event(tenant, EventType::Normal, "AccountAdopted", format!("Found and adopted account {}", account.id))
                .await;
            report.account = StepOutcome::done("AccountAdopted", format!("Account {} was adopted", account.id));
            Ok(Duration::MAX)
        }
        Claim::OtherTenant(other) => {
            report.status.email = None;
            report.account = StepOutcome::stalled(
                "EmailInUse",
                format!(
                    "The email {} belongs to account {}, which is Tenant {other:?}'s (tag {TENANT_UID_TAG}); \
                     give this Tenant another spec.email",
                    account.email, account.id
                ),
            );
            Ok(RECHECK_STALLED)
        }
        Claim::Nobody => {
            report.status.email = None;
            report.account = StepOutcome::stalled(
                "EmailInUse",
                format!(
                    "Account {} already uses the email {} and does not belong to this Tenant; \
                     set spec.accountId: {} to adopt it, or set spec.email to a new address",
                    account.id, account.email, account.id
                ),
            );
            Ok(RECHECK_STALLED)
        }
    }
}

/// Whether a tag repair is news: on an account that was already Ready it is drift.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TagRepair {
    Silent,
    Report,
}

/// What to change so the account carries the desired tags. Pure.
///
/// Only keys Silo applied before (`previously_applied`) are ever removed; tags someone else
/// put on the account are never touched.
pub fn plan_tags(
    desired: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
    previously_applied: &[String],
) -> (BTreeMap<String, String>, Vec<String>) {
    let to_set =
        desired.iter().filter(|(k, v)| current.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let to_remove =
        previously_applied.iter().filter(|k| !desired.contains_key(*k) && current.contains_key(*k)).cloned().collect();
    (to_set, to_remove)
}

/// Puts Silo's tags and `spec.tags` on the account, and removes only keys Silo applied.
async fn ensure_tags(
    tenant: &Tenant,
    account: &Account,
    report: &mut Report<'_>,
    ctx: &Context,
    repair: TagRepair,
) -> Result<(), Error> {
    let desired = desired_tags(tenant);
    let current = ctx.aws.organizations.list_tags(&account.id).await?;
    let (to_set, to_remove) = plan_tags(&desired, &current, &report.status.applied_tag_keys);
    if !to_set.is_empty() {
        ctx.aws.organizations.tag_account(&account.id, &to_set).await?;
    }
    if !to_remove.is_empty() {
        ctx.aws.organizations.untag_account(&account.id, &to_remove).await?;
    }
    report.status.applied_tag_keys = desired.into_keys().collect();
    if repair == TagRepair::Report && (!to_set.is_empty() || !to_remove.is_empty()) {
        let changed: Vec<&str> =
            to_set.keys().map(String::as_str).chain(to_remove.iter().map(String::as_str)).collect();
        ctx.event(
            tenant,
            EventType::Normal,
            "TagsRepaired",
            format!("Set or removed tags {changed:?} on account {}", account.id),
        )
        .await;
    }
    Ok(())
}

fn record_account(report: &mut Report<'_>, account: &Account) {
    let status: &mut TenantStatus = &mut report.status;
    status.account_id = Some(account.id.clone());
    status.account_arn = Some(account.arn.clone());
}

fn not_active(account: &Account) -> StepOutcome {
    StepOutcome::stalled(
        "AccountNotActive",
        format!("Account {} is {}, not ACTIVE; it was suspended or closed outside Silo", account.id, account.state),
    )
}

fn claimed_by(account_id: &str, other: &str) -> StepOutcome {
    StepOutcome::stalled(
        "AccountClaimedByAnotherTenant",
        format!(
            "Account {account_id} belongs to Tenant {other:?} (tag {TENANT_UID_TAG}); a tenant's account is never shared"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TenantSpec;

    fn tenant() -> Tenant {
        let mut t = Tenant::new("acme", TenantSpec::default());
        t.metadata.uid = Some("uid-1".into());
        t
    }

    #[test]
    fn a_new_tenant_looks_for_earlier_work_before_creating() {
        assert_eq!(plan(&tenant()), AccountPlan::FindOrCreate);
    }

    #[test]
    fn a_recorded_request_is_polled_not_resent() {
        let mut t = tenant();
        t.status = Some(TenantStatus { create_account_request_id: Some("car-1".into()), ..Default::default() });
        assert_eq!(plan(&t), AccountPlan::Poll { request_id: "car-1".into() });
    }

    #[test]
    fn a_known_account_is_verified_and_an_account_id_is_adopted() {
        let mut t = tenant();
        t.spec.account_id = Some("111122223333".into());
        assert_eq!(plan(&t), AccountPlan::Adopt { account_id: "111122223333".into() });
        t.status = Some(TenantStatus { account_id: Some("111122223333".into()), ..Default::default() });
        assert_eq!(plan(&t), AccountPlan::Verify { account_id: "111122223333".into() });
    }

    #[test]
    fn failure_reasons_map_to_responses() {
        assert_eq!(on_failure("EMAIL_ALREADY_EXISTS"), FailureResponse::LookUpByEmail);
        assert_eq!(on_failure("ACCOUNT_LIMIT_EXCEEDED"), FailureResponse::AccountLimit);
        assert!(matches!(on_failure("CONCURRENT_ACCOUNT_MODIFICATION"), FailureResponse::RetryLater(_)));
        assert!(matches!(on_failure("INTERNAL_FAILURE"), FailureResponse::RetryLater(_)));
        assert_eq!(on_failure("INVALID_EMAIL"), FailureResponse::Stalled);
    }

    #[test]
    fn claims_are_read_from_the_uid_tag() {
        let mut tags = BTreeMap::new();
        assert_eq!(claim(&tags, "uid-1"), Claim::Nobody);
        tags.insert(TENANT_UID_TAG.to_string(), "uid-1".to_string());
        assert_eq!(claim(&tags, "uid-1"), Claim::ThisTenant);
        tags.insert(TENANT_TAG.to_string(), "globex".to_string());
        assert_eq!(claim(&tags, "uid-2"), Claim::OtherTenant("globex".into()));
    }

    #[test]
    fn only_tags_silo_applied_are_removed() {
        let desired = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let current = BTreeMap::from([
            ("team".to_string(), "b".to_string()),
            ("old".to_string(), "x".to_string()),
            ("foreign".to_string(), "y".to_string()),
        ]);
        let (set, remove) = plan_tags(&desired, &current, &["team".to_string(), "old".to_string()]);
        assert_eq!(set, desired, "drifted values are set back");
        assert_eq!(remove, vec!["old".to_string()], "a key Silo applied and no longer wants goes");
        let (set, remove) = plan_tags(&desired, &BTreeMap::from([("team".into(), "a".into())]), &[]);
        assert!(set.is_empty() && remove.is_empty(), "nothing to do when the account matches");
    }

    #[test]
    fn desired_tags_carry_the_tenant_name_and_uid() {
        let mut t = tenant();
        t.spec.tags.insert("team".into(), "payments".into());
        let tags = desired_tags(&t);
        assert_eq!(tags.get(TENANT_TAG).map(String::as_str), Some("acme"));
        assert_eq!(tags.get(TENANT_UID_TAG).map(String::as_str), Some("uid-1"));
        assert_eq!(tags.get("team").map(String::as_str), Some("payments"));
    }
}
