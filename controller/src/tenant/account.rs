//! Step 2: the account. This is where an AWS account is created or adopted.
//!
//! ## Exactly one account per Tenant
//! CreateAccount has no idempotency token, so a repeated call makes a second account. Silo:
//! 1. takes one of the organization's creation slots ([`crate::org::creations`]), then
//!    records the account name and email in the status (the *intent*) before CreateAccount;
//! 2. tags the account at creation with the Tenant's name and UID;
//! 3. records the request id right after CreateAccount answers.
//!
//! A tenant with no intent recorded has never had a CreateAccount sent and needs no lookup
//! at all: an email someone else uses comes back as EMAIL_ALREADY_EXISTS. Only a tenant with
//! intent and no request id (a controller killed during CreateAccount) looks for earlier
//! work: an account with its email, or a creation request with its account name, in the
//! organization index once the index's first sweep is complete. A request found that way is
//! followed until it ends and adopted only if its account has this tenant's email and no
//! other Tenant's UID; only requests this tenant sent itself are recorded in its status.
//!
//! ## Never an account that is not provably this Tenant's
//! Every path that takes or keeps an account goes through [`judge_account`]:
//! - the organization's management account is never a tenant's;
//! - an account carrying another Tenant's `silo.dev/tenant-uid` tag is never taken, and the tag
//!   is never overwritten, unless it is exactly the UID this Tenant had before a restore
//!   (annotation `silo.dev/previous-uid`);
//! - an account without the tag is taken only with the owner's consent: the annotation
//!   `silo.dev/adopt-account` naming that very account;
//! - two Tenants taking one account at once cannot both win: the organization index keeps one
//!   claim per account, taken atomically before any tag is written.
//!
//! ## Shape
//! [`situation`] (pure, from the spec and the recorded status) picks what to look at; each
//! situation observes (the index, the creation slots, AWS), decides with a pure function
//! ([`judge_account`], [`judge_request`], [`judge_email_owner`], [`judge_earlier_work`],
//! each table-tested) and acts.

use std::{collections::BTreeMap, time::Duration};

use kube::{
    ResourceExt,
    runtime::{events::EventType, reflector::ObjectRef},
};
use tracing::info;

use super::{
    Context, Error, RECHECK_STALLED,
    identity::Identity,
    schedule::{self, DriftCheck, Mode, Verification},
    status::{Progress, StatusWriter, trusted},
};
use crate::{
    api::{PoolStacks, Tenant},
    aws::{
        Priority,
        organizations::{Account, CreateRequest, CreationState},
    },
    conditions::{self, StepOutcome},
    contract::{
        POOL_TAG, TENANT_TAG, TENANT_UID_TAG,
        annotations::{ADOPT_ACCOUNT, PREVIOUS_UID},
        ownership::{Claim, TenantClaims, claim, tagged_uid},
    },
    org::{Applicant, NotYet, index::QuotaUsage},
};

/// How soon a tenant whose creation is in flight looks again by itself (the creation
/// tracker wakes it as soon as AWS is done).
const CREATION_FALLBACK: Duration = Duration::from_secs(60);
/// How soon a tenant waiting for a creation slot looks again by itself (it is woken when a
/// slot is its turn).
const SLOT_FALLBACK: Duration = Duration::from_secs(120);
/// After EMAIL_ALREADY_EXISTS, how long the account may stay missing from the index
/// (listings are eventually consistent) before Silo concludes it lies outside the organization.
const EMAIL_OWNER_GRACE: Duration = Duration::from_secs(300);

/// What the account step looks at, decided from the spec and the recorded status alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Situation {
    /// The account is known: check it is still there, active and tagged.
    Known { account_id: String },
    /// `spec.accountId` names an existing account to adopt.
    Adopt { account_id: String },
    /// This tenant sent a CreateAccount request: follow it.
    Requested { request_id: String },
    /// The intent was recorded, but no request id: a CreateAccount may have been sent by a
    /// controller that died before recording it. Look for earlier work.
    Unsure,
    /// Nothing was ever sent for this tenant: create.
    New,
}

/// How a reconcile came to an account it takes or keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The status records it: keep it (verify it, repair its tags).
    Recorded,
    /// `spec.accountId` names it.
    SpecAccountId,
    /// Found by this tenant's email (after a crash, or after AWS said the email is taken).
    FoundByEmail,
    /// Taken from the AccountPool `spec.pool` names.
    FromPool,
}

/// Decides what to look at. `own_request` is the request this process sent for the tenant,
/// for a reconcile that runs on a cached Tenant from before the request id was written. Pure.
///
/// A creation under way wins over a `spec.accountId` added since: following it to its end
/// is what keeps a tenant from getting two accounts (the account it gets is then reported as
/// not the one `spec.accountId` names).
pub fn situation(tenant: &Tenant, own_request: Option<String>) -> Situation {
    let status = tenant.status.clone().unwrap_or_default();
    if let Some(account_id) = status.account_id {
        return Situation::Known { account_id };
    }
    if let Some(request_id) = status.create_account_request_id.or(own_request) {
        return Situation::Requested { request_id };
    }
    if status.email.is_some() {
        return Situation::Unsure;
    }
    match &tenant.spec.account_id {
        Some(account_id) => Situation::Adopt { account_id: account_id.clone() },
        None => Situation::New,
    }
}

/// The tags every Silo account carries, plus the tenant's own.
pub fn desired_tags(tenant: &Tenant) -> BTreeMap<String, String> {
    let mut tags = tenant.spec.tags.clone();
    tags.insert(TENANT_TAG.into(), tenant.name_any());
    tags.insert(TENANT_UID_TAG.into(), tenant.uid().unwrap_or_default());
    tags
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

/// What a person said about ownership, and what this process knows of claims: the inputs of
/// [`judge_account`] besides the account itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    /// This Tenant's UID.
    pub uid: String,
    /// The organization's management account: never a tenant's.
    pub management_account: String,
    /// `silo.dev/adopt-account`: the account the owner consented to take without a UID tag.
    pub consent: Option<String>,
    /// `silo.dev/previous-uid`: the UID this Tenant had before a restore.
    pub previous_uid: Option<String>,
    /// The Tenant (UID) this process already let claim the account, if another one.
    pub claimed_by: Option<String>,
    /// The AccountPool the status records the account was claimed from.
    pub from_pool: Option<String>,
}

/// How an account is this tenant's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Title {
    /// It carries this Tenant's UID.
    Tagged,
    /// It carries no UID, and the owner consented (`silo.dev/adopt-account`).
    Consented,
    /// It carries this Tenant's UID from before a restore (`silo.dev/previous-uid`).
    Reclaimed,
    /// It carries no UID but the tag of the pool the status records it was claimed from: a
    /// claim that stopped before the Tenant's tag was written.
    FromPool,
}

/// What the account and its tags say, for a known account or one to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountVerdict {
    NotInOrganization,
    /// Not in the tenant's organization, but in another that Silo serves (`""`: the default).
    InAnotherOrganization {
        organization: String,
    },
    NotActive {
        state: String,
    },
    /// The organization's management account: never a tenant's, never tagged.
    ManagementAccount,
    /// Another Tenant's UID tag is on it (or another Tenant claimed it first): never
    /// overwritten.
    ClaimedBy {
        tenant: String,
    },
    /// No UID tag and no consent: Silo cannot tell it is this Tenant's.
    Unproven,
    /// The account is this tenant's; set and remove these tags.
    Fine {
        title: Title,
        to_set: BTreeMap<String, String>,
        to_remove: Vec<String>,
    },
}

/// Judges an account (`None`: not in the organization) and its tags against what the owner
/// said. Pure.
pub fn judge_account(
    account: Option<&Account>,
    tags: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
    applied: &[String],
    ownership: &Ownership,
) -> AccountVerdict {
    let Some(account) = account else { return AccountVerdict::NotInOrganization };
    if account.id == ownership.management_account {
        return AccountVerdict::ManagementAccount;
    }
    if !account.is_active() {
        return AccountVerdict::NotActive { state: account.state.clone() };
    }
    let title = match claim(tags, &ownership.uid) {
        Claim::ThisTenant => Title::Tagged,
        Claim::OtherTenant(tenant) => {
            let tagged_uid = tagged_uid(tags);
            if tagged_uid.is_none() || tagged_uid != ownership.previous_uid.as_deref() {
                return AccountVerdict::ClaimedBy { tenant };
            }
            Title::Reclaimed
        }
        Claim::Nobody if ownership.consent.as_deref() == Some(account.id.as_str()) => Title::Consented,
        Claim::Nobody if ownership.from_pool.is_some() && tags.get(POOL_TAG) == ownership.from_pool.as_ref() => {
            Title::FromPool
        }
        Claim::Nobody => return AccountVerdict::Unproven,
    };
    if let Some(other) = &ownership.claimed_by
        && other != &ownership.uid
        && Some(other.as_str()) != ownership.previous_uid.as_deref()
    {
        return AccountVerdict::ClaimedBy { tenant: format!("with UID {other}") };
    }
    let (to_set, to_remove) = plan_tags(desired, tags, applied);
    AccountVerdict::Fine { title, to_set, to_remove }
}

/// What a CreateAccount request's state means for the tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestVerdict {
    InProgress,
    Created {
        account_id: String,
    },
    /// EMAIL_ALREADY_EXISTS: the email belongs to an account already; find it.
    LookUpByEmail {
        failed_for: Option<Duration>,
    },
    /// A passing failure: send a new request after this long.
    Retry {
        reason: String,
        after: Duration,
    },
    /// ACCOUNT_LIMIT_EXCEEDED: a person must raise the organization's quota.
    AccountLimit,
    /// Anything else: a person must look.
    Failed {
        reason: String,
    },
}

/// Maps a request's state (and AWS's failure reasons) to Silo's response. Pure.
pub fn judge_request(state: &CreationState) -> RequestVerdict {
    match state {
        CreationState::InProgress => RequestVerdict::InProgress,
        CreationState::Succeeded { account_id } => RequestVerdict::Created { account_id: account_id.clone() },
        CreationState::Failed { reason, failed_for } => match reason.as_str() {
            "EMAIL_ALREADY_EXISTS" => RequestVerdict::LookUpByEmail { failed_for: *failed_for },
            // A request AWS does not know made no account: send a new one.
            "CONCURRENT_ACCOUNT_MODIFICATION" | "INTERNAL_FAILURE" | crate::org::REQUEST_NOT_FOUND => {
                RequestVerdict::Retry { reason: reason.clone(), after: Duration::from_secs(30) }
            }
            "ACCOUNT_LIMIT_EXCEEDED" => RequestVerdict::AccountLimit,
            _ => RequestVerdict::Failed { reason: reason.clone() },
        },
    }
}

/// After AWS said the email is taken: what the index knows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmailOwner {
    /// An account has it: take it if it is this tenant's ([`judge_account`] decides).
    Found { account_id: String },
    /// Not found yet: listings lag, look again.
    Looking,
    /// Not found for longer than listings lag: the email is used outside the organization.
    Outside,
}

/// Judges the owner of an email AWS refused, from what the index found. Pure.
pub fn judge_email_owner(found: Option<&Account>, failed_for: Option<Duration>) -> EmailOwner {
    match found {
        Some(account) => EmailOwner::Found { account_id: account.id.clone() },
        None if failed_for.is_none_or(|age| age < EMAIL_OWNER_GRACE) => EmailOwner::Looking,
        None => EmailOwner::Outside,
    }
}

/// What a tenant in the crash window finds of earlier work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EarlierWork {
    /// The index is not complete yet: a miss would prove nothing.
    WaitForIndex,
    /// An account with this email: adopt it if its tags say it is this tenant's.
    AccountWithEmail { account_id: String },
    /// A request with this account name is still in progress: follow it until it ends.
    Follow { request_id: String },
    /// Nothing: CreateAccount never reached AWS. Create.
    Nothing,
}

/// Judges the look for earlier work: the account found by email (from the index), and the
/// requests of this account name with, for those that succeeded, their account. Pure.
pub fn judge_earlier_work(
    index_complete: bool,
    by_email: Option<&Account>,
    named: &[(CreateRequest, Option<Account>)],
    email: &str,
) -> EarlierWork {
    if !index_complete {
        return EarlierWork::WaitForIndex;
    }
    if let Some(account) = by_email {
        return EarlierWork::AccountWithEmail { account_id: account.id.clone() };
    }
    for (request, account) in named {
        match (&request.state, account) {
            (CreationState::InProgress, _) => return EarlierWork::Follow { request_id: request.id.clone() },
            // Names are not unique: a succeeded request is this tenant's only with its email.
            (CreationState::Succeeded { .. }, Some(account)) if account.email.eq_ignore_ascii_case(email) => {
                return EarlierWork::AccountWithEmail { account_id: account.id.clone() };
            }
            _ => {}
        }
    }
    EarlierWork::Nothing
}

/// Everything the account step works with in one reconcile.
pub struct AccountStep<'a> {
    pub tenant: &'a Tenant,
    pub identity: &'a Identity,
    pub mode: Mode,
    pub ctx: &'a Context,
}

impl AccountStep<'_> {
    fn uid(&self) -> String {
        self.tenant.uid().unwrap_or_default()
    }

    fn applicant(&self) -> Applicant {
        Applicant {
            name: self.tenant.name_any(),
            uid: self.uid(),
            created: self.tenant.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
            refill: false,
        }
    }

    /// Forgets a request that ended without an account, in the status and in this process's
    /// creation tracker, so the next attempt starts afresh.
    fn forget_request(&self, progress: &mut Progress) {
        progress.status.create_account_request_id = None;
        // No account was made with this email and name, so they may change (spec, or the template).
        progress.status.email = None;
        progress.status.account_name = None;
        progress.status.claimed_from_pool = None;
        self.ctx.org.creations.forget(&self.uid());
    }

    fn annotation(&self, key: &str) -> Option<String> {
        self.tenant.annotations().get(key).filter(|v| !v.is_empty()).cloned()
    }

    /// Runs the account step.
    pub async fn run(&self, progress: &mut Progress, writer: &mut StatusWriter) -> Result<StepOutcome, Error> {
        if let Some(trusted) = trusted(self.tenant, self.mode, conditions::ACCOUNT_READY) {
            return Ok(trusted);
        }
        let own_request = self.ctx.org.creations.request_of(&self.uid());
        let outcome = match situation(self.tenant, own_request) {
            Situation::Known { account_id } => self.settle(&account_id, Route::Recorded, progress, writer).await?,
            Situation::Adopt { account_id } => {
                self.ctx.org.creations.leave(&self.uid());
                self.settle(&account_id, Route::SpecAccountId, progress, writer).await?
            }
            Situation::Requested { request_id } => self.requested(&request_id, progress, writer).await?,
            Situation::Unsure => self.unsure(progress, writer).await?,
            Situation::New if self.annotation(PREVIOUS_UID).is_some() => {
                self.reclaim_by_email(progress, writer).await?
            }
            Situation::New => match &self.tenant.spec.pool {
                Some(pool) => self.claim_from_pool(pool, progress, writer).await?,
                None => self.create(progress, writer).await?,
            },
        };
        // The account this tenant has is not the one spec.accountId names (it was set while a
        // creation was under way): say so rather than take a second one.
        match (&self.tenant.spec.account_id, &progress.status.account_id) {
            (Some(wanted), Some(account_id)) if wanted != account_id => Ok(StepOutcome::stalled(
                "AccountIdMismatch",
                format!(
                    "spec.accountId is {wanted}, but this Tenant's account is {account_id} (created before \
                     spec.accountId was set); remove spec.accountId, or delete this Tenant with deletionPolicy \
                     Retain and create a new one to adopt {wanted}"
                ),
                RECHECK_STALLED,
            )),
            _ => Ok(outcome),
        }
    }

    /// Takes or keeps an account: observe it and its tags, judge who it belongs to, claim it,
    /// record it, tag it.
    async fn settle(
        &self,
        account_id: &str,
        route: Route,
        progress: &mut Progress,
        writer: &mut StatusWriter,
    ) -> Result<StepOutcome, Error> {
        let org = &self.ctx.org;
        let priority = schedule::priority(self.mode);
        let account = match (route, self.mode) {
            // Keeping a recorded account reads the index. Adopting the account spec.accountId
            // names reads it too once its sweep is complete (an account it lacks is read
            // through): whose the account is rests on its tags, read from AWS below, and on
            // the claim. Finding one by email, or a verification a person asked for, reads AWS.
            (Route::Recorded, Mode::Converge | Mode::Verify(Verification::Periodic)) => {
                org.account(account_id, priority).await?
            }
            (Route::SpecAccountId, Mode::Converge) if org.index.is_complete() => {
                org.account(account_id, Priority::User).await?
            }
            // The claim has just read the account and its tags from AWS.
            (Route::FromPool, _) => org.account(account_id, Priority::User).await?,
            _ => org.read_account(account_id, Priority::User).await?,
        };
        // A periodic verification reads the tags only in their turn (schedule::reads);
        // between turns, the tags Silo last read or wrote stand.
        let checks = schedule::drift_checks(self.tenant, &self.ctx.config.default_contacts);
        let read_tags = route != Route::FromPool
            && (self.mode != Mode::Verify(Verification::Periodic)
                || schedule::reads(self.mode, &checks, progress.status.verification_count, DriftCheck::Tags));
        let tags = match &account {
            Some(a) if a.account.is_active() => match &a.tags {
                Some(known) if !read_tags => known.clone(),
                _ => org.tags(account_id, priority).await?,
            },
            _ => BTreeMap::new(),
        };
        let info = org.info().await?;
        let ownership = Ownership {
            uid: self.uid(),
            management_account: info.management_account_id,
            consent: self.annotation(ADOPT_ACCOUNT),
            previous_uid: self.annotation(PREVIOUS_UID),
            claimed_by: org.index.claimant(account_id),
            from_pool: progress.status.claimed_from_pool.clone(),
        };
        let desired = desired_tags(self.tenant);
        let applied = &progress.status.applied_tag_keys;
        let verdict = judge_account(account.as_ref().map(|a| &a.account), &tags, &desired, applied, &ownership);
        let AccountVerdict::Fine { title, to_set, to_remove } = verdict else {
            // An account named by spec.accountId that another organization has: say which.
            let verdict = match verdict {
                AccountVerdict::NotInOrganization if route == Route::SpecAccountId => {
                    let own = self.tenant.spec.organization.as_deref().unwrap_or("");
                    match self.ctx.neighbours.holder(account_id, own).await {
                        Some(organization) => AccountVerdict::InAnotherOrganization { organization },
                        None => verdict,
                    }
                }
                verdict => verdict,
            };
            return Ok(self.refusal(&verdict, account_id, route, progress));
        };
        // One claim per account, taken atomically before any tag is written.
        let replacing = ownership.previous_uid.as_deref().filter(|_| title == Title::Reclaimed);
        if let Err(holder) = org.index.claim(account_id, &ownership.uid, replacing) {
            let verdict = AccountVerdict::ClaimedBy { tenant: format!("with UID {holder}") };
            return Ok(self.refusal(&verdict, account_id, route, progress));
        }
        if route != Route::Recorded {
            // The account is recorded as this tenant's before it is tagged.
            record_account(progress, account.as_ref().map(|a| &a.account));
            progress.status.create_account_request_id = None;
            progress.status.adopted = !matches!(title, Title::Tagged | Title::FromPool);
            writer.save_intent(progress, "TagResource").await?;
        }
        org.index.claim_recorded(account_id, &ownership.uid);
        org.change_tags(account_id, &to_set, &to_remove).await?;
        progress.status.applied_tag_keys = desired.into_keys().collect();
        record_account(progress, account.as_ref().map(|a| &a.account));
        org.creations.leave(&ownership.uid);

        let event = |reason: &'static str, note: String| self.ctx.event(self.tenant, EventType::Normal, reason, note);
        match (route, title) {
            (_, Title::Reclaimed) => {
                let note = format!(
                    "Took back account {account_id} from this Tenant's previous UID {}",
                    ownership.previous_uid.unwrap_or_default()
                );
                event("AccountReclaimed", note).await;
            }
            (Route::SpecAccountId, _) => event("AccountAdopted", format!("Adopted account {account_id}")).await,
            (Route::FoundByEmail, _) => {
                event("AccountAdopted", format!("Found and adopted account {account_id}")).await
            }
            // From the pool, or the same claim resumed after its tagging failed or the
            // controller stopped (the account still carries the pool's tags, not this Tenant's).
            (Route::FromPool, _) | (Route::Recorded, Title::FromPool) => {
                let pool = progress.status.claimed_from_pool.clone().unwrap_or_default();
                event("AccountClaimed", format!("Took account {account_id} from AccountPool {pool}")).await
            }
            (Route::Recorded, _)
                if matches!(self.mode, Mode::Verify(_)) && (!to_set.is_empty() || !to_remove.is_empty()) =>
            {
                let changed: Vec<&str> =
                    to_set.keys().map(String::as_str).chain(to_remove.iter().map(String::as_str)).collect();
                event("TagsRepaired", format!("Set or removed tags {changed:?} on account {account_id}")).await;
            }
            (Route::Recorded, _) => {}
        }
        Ok(match route {
            Route::Recorded => StepOutcome::done("AccountActive", format!("Account {account_id} is active")),
            Route::SpecAccountId | Route::FoundByEmail => {
                StepOutcome::done("AccountAdopted", format!("Account {account_id} was adopted"))
            }
            Route::FromPool => StepOutcome::done(
                "AccountClaimed",
                format!(
                    "Account {account_id} was taken from AccountPool {}",
                    progress.status.claimed_from_pool.as_deref().unwrap_or_default()
                ),
            ),
        })
    }

    /// The Stalled outcome for an account that cannot be this tenant's.
    fn refusal(
        &self,
        verdict: &AccountVerdict,
        account_id: &str,
        route: Route,
        progress: &mut Progress,
    ) -> StepOutcome {
        if route == Route::FoundByEmail {
            // The email is someone else's: nothing of this tenant's was made with it.
            self.forget_request(progress);
            let claim = match verdict {
                AccountVerdict::ClaimedBy { tenant } => Claim::OtherTenant(tenant.clone()),
                _ => Claim::Nobody,
            };
            return email_in_use(&self.identity.email, account_id, &claim);
        }
        let consent = format!("{ADOPT_ACCOUNT}: \"{account_id}\"");
        let (reason, message) = match verdict {
            AccountVerdict::NotInOrganization if route == Route::SpecAccountId => (
                "AccountNotInOrganization",
                format!(
                    "spec.accountId {account_id} is not an account of this organization; invite it first or fix the id"
                ),
            ),
            AccountVerdict::NotInOrganization => (
                "AccountNotInOrganization",
                format!("Account {account_id} is no longer in the organization; it was removed outside Silo"),
            ),
            AccountVerdict::InAnotherOrganization { organization } => {
                let there = match organization.as_str() {
                    "" => "the default organization (a Tenant without spec.organization)".to_string(),
                    name => format!("Organization {name} (spec.organization: {name})"),
                };
                (
                    "AccountInAnotherOrganization",
                    format!(
                        "spec.accountId {account_id} is an account of {there}, not of this Tenant's organization; an \
                         account changes organization only by leaving one and accepting the other's invitation, which \
                         Silo does not do. Create this Tenant again there (spec.organization cannot change), or fix the id"
                    ),
                )
            }
            AccountVerdict::NotActive { state } => (
                "AccountNotActive",
                format!("Account {account_id} is {state}, not ACTIVE; it was suspended or closed outside Silo"),
            ),
            AccountVerdict::ManagementAccount => (
                "AccountIsManagementAccount",
                format!(
                    "Account {account_id} is the organization's management account: it is never a tenant's account, \
                     and Silo does not tag it; fix spec.accountId"
                ),
            ),
            AccountVerdict::ClaimedBy { tenant } => (
                "AccountClaimedByAnotherTenant",
                format!(
                    "Account {account_id} belongs to Tenant {tenant} (tag {TENANT_UID_TAG}); a tenant's account is \
                     never shared. If this Tenant was restored from a backup, annotate it with {PREVIOUS_UID} and the \
                     UID it had before"
                ),
            ),
            AccountVerdict::Unproven if route == Route::SpecAccountId => (
                "AdoptionNeedsConsent",
                format!(
                    "Account {account_id} does not carry this Tenant's {TENANT_UID_TAG} tag: it may be another team's. \
                     If it is this Tenant's to adopt, annotate the Tenant with {consent}; nothing was changed"
                ),
            ),
            AccountVerdict::Unproven => (
                "AccountOwnershipUnproven",
                format!(
                    "Account {account_id} no longer carries this Tenant's {TENANT_UID_TAG} tag, so Silo cannot tell \
                     it is this Tenant's and does not put the tag back by itself: if it is, annotate the Tenant with \
                     {consent}"
                ),
            ),
            AccountVerdict::Fine { .. } => unreachable!("a fine account is not refused"),
        };
        StepOutcome::stalled(reason, message, RECHECK_STALLED)
    }

    /// A request this tenant sent: how is it going?
    async fn requested(
        &self,
        request_id: &str,
        progress: &mut Progress,
        writer: &mut StatusWriter,
    ) -> Result<StepOutcome, Error> {
        progress.status.create_account_request_id = Some(request_id.to_string());
        let request = self.ctx.org.creation(request_id).await?;
        match judge_request(&request.state) {
            RequestVerdict::InProgress => Ok(match &self.tenant.spec.pool {
                Some(pool) => StepOutcome::wait(
                    "CreatingAccountPoolEmpty",
                    format!(
                        "AccountPool {pool} had no ready account: AWS is creating account {:?} (request {request_id})",
                        self.identity.account_name
                    ),
                    CREATION_FALLBACK,
                ),
                None => StepOutcome::wait(
                    "CreatingAccount",
                    format!("AWS is creating account {:?} (request {request_id})", self.identity.account_name),
                    CREATION_FALLBACK,
                ),
            }),
            RequestVerdict::Created { account_id } => {
                // Tags set by CreateAccount are trusted; they are listed on verification.
                let desired = desired_tags(self.tenant);
                let account = self
                    .ctx
                    .org
                    .record_created(&account_id, &self.identity.account_name, &self.identity.email, &desired)
                    .await?;
                record_account(progress, Some(&account));
                progress.status.applied_tag_keys = desired.into_keys().collect();
                info!(tenant = %self.tenant.name_any(), account = %account_id, "account created");
                self.ctx
                    .event(self.tenant, EventType::Normal, "AccountCreated", format!("Created account {account_id}"))
                    .await;
                Ok(StepOutcome::done("AccountCreated", format!("Account {account_id} was created")))
            }
            RequestVerdict::LookUpByEmail { failed_for } => self.email_taken(failed_for, progress, writer).await,
            RequestVerdict::Retry { reason, after } => {
                self.forget_request(progress);
                Ok(StepOutcome::wait("RetryingCreation", format!("AWS answered {reason}; retrying"), after))
            }
            RequestVerdict::AccountLimit => {
                self.forget_request(progress);
                let usage = self.ctx.org.index.quota_usage();
                Ok(StepOutcome::stalled(
                    "OrganizationAccountLimit",
                    account_limit_message(usage),
                    Duration::from_secs(3600),
                ))
            }
            RequestVerdict::Failed { reason } => {
                self.forget_request(progress);
                Ok(StepOutcome::stalled(
                    "AccountCreationFailed",
                    format!("AWS could not create the account: {reason}; fix the cause, Silo retries every 10 minutes"),
                    RECHECK_STALLED,
                ))
            }
        }
    }

    /// AWS refused the email (EMAIL_ALREADY_EXISTS): the account is this tenant's own (made
    /// before a crash) only if it carries this tenant's UID.
    async fn email_taken(
        &self,
        failed_for: Option<Duration>,
        progress: &mut Progress,
        writer: &mut StatusWriter,
    ) -> Result<StepOutcome, Error> {
        let org = &self.ctx.org;
        let found = org.index.account_by_email(&self.identity.email);
        if found.is_none() {
            // The index may predate the account: have it refreshed soon.
            org.request_refresh();
        }
        match judge_email_owner(found.as_ref().map(|a| &a.account), failed_for) {
            EmailOwner::Found { account_id } => self.settle(&account_id, Route::FoundByEmail, progress, writer).await,
            EmailOwner::Looking => Ok(StepOutcome::wait(
                "LookingForEmailOwner",
                format!("AWS says {} is in use; looking for that account in the organization", self.identity.email),
                Duration::from_secs(15),
            )),
            EmailOwner::Outside => {
                self.forget_request(progress);
                Ok(StepOutcome::stalled(
                    "EmailInUse",
                    format!(
                        "AWS refused the email {}: it belongs to an account outside this organization or to a closed \
                         account, and an email can never be reused. If spec.email is unset, set it to a new address; \
                         otherwise create a new Tenant with another email",
                        self.identity.email
                    ),
                    RECHECK_STALLED,
                ))
            }
        }
    }

    /// The crash window: intent recorded, no request id. Look for earlier work.
    async fn unsure(&self, progress: &mut Progress, writer: &mut StatusWriter) -> Result<StepOutcome, Error> {
        let org = &self.ctx.org;
        let by_email = org.index.account_by_email(&self.identity.email);
        let mut named = vec![];
        // Only a complete index that misses the email needs AWS's list of requests.
        let requests = if org.index.is_complete() && by_email.is_none() {
            org.requests_named(&self.identity.account_name, Priority::User).await?
        } else {
            vec![]
        };
        for request in requests {
            let account = match &request.state {
                CreationState::Succeeded { account_id } => {
                    org.account(account_id, Priority::User).await?.map(|a| a.account)
                }
                _ => None,
            };
            named.push((request, account));
        }
        let earlier = judge_earlier_work(
            org.index.is_complete(),
            by_email.as_ref().map(|a| &a.account),
            &named,
            &self.identity.email,
        );
        match earlier {
            EarlierWork::WaitForIndex => Ok(StepOutcome::wait(
                "LookingForEarlierWork",
                "Silo may have sent CreateAccount for this tenant just before it stopped; it looks for that account \
                 once it has read the organization",
                Duration::from_secs(5),
            )),
            EarlierWork::AccountWithEmail { account_id } => {
                self.settle(&account_id, Route::FoundByEmail, progress, writer).await
            }
            EarlierWork::Follow { request_id } => {
                org.creations.follow(&self.uid(), &self.tenant.name_any(), &request_id);
                Ok(StepOutcome::wait(
                    "CreatingAccount",
                    format!(
                        "AWS is creating an account named {:?} (request {request_id}); Silo adopts it when it is done \
                         if it has this tenant's email",
                        self.identity.account_name
                    ),
                    CREATION_FALLBACK,
                ))
            }
            EarlierWork::Nothing => match &self.tenant.spec.account_id {
                // Nothing was made: spec.accountId, added since, can be honoured after all.
                Some(account_id) => {
                    progress.status.email = None;
                    progress.status.account_name = None;
                    self.settle(account_id, Route::SpecAccountId, progress, writer).await
                }
                None => self.create(progress, writer).await,
            },
        }
    }

    /// A new Tenant annotated with its previous UID (restored from a backup): its account is
    /// found by email, once the index is complete, and taken back; without one, it is created.
    /// An account taken from a pool kept the pool's email but took the Tenant's name: with
    /// `spec.pool`, it is found by name among the accounts carrying the previous UID.
    async fn reclaim_by_email(&self, progress: &mut Progress, writer: &mut StatusWriter) -> Result<StepOutcome, Error> {
        let org = &self.ctx.org;
        if !org.index.is_complete() {
            return Ok(StepOutcome::wait(
                "LookingForEarlierWork",
                "Looking for the account of this Tenant's previous UID once Silo has read the organization",
                Duration::from_secs(5),
            ));
        }
        if let Some(found) = org.index.account_by_email(&self.identity.email) {
            return self.settle(&found.account.id, Route::FoundByEmail, progress, writer).await;
        }
        if let Some(pool) = &self.tenant.spec.pool {
            let previous = self.annotation(PREVIOUS_UID);
            for named in org.index.accounts_named(&self.identity.account_name) {
                let tags = org.tags(&named.account.id, Priority::User).await?;
                if previous.is_some() && tagged_uid(&tags) == previous.as_deref() {
                    progress.status.email = Some(named.account.email.clone());
                    progress.status.claimed_from_pool = Some(pool.clone());
                    return self.settle(&named.account.id, Route::FoundByEmail, progress, writer).await;
                }
            }
        }
        self.create(progress, writer).await
    }

    /// A new Tenant with `spec.pool`: takes the pool's oldest ready account that no Tenant
    /// holds, or creates one as without a pool when there is none (a pool speeds a Tenant up,
    /// it never blocks it).
    ///
    /// The index's claim (one owner of claims in the process) gives the account to one Tenant;
    /// the statuses of every Tenant are checked too, for claims recorded before a restart.
    /// The account is recorded in the status (with `claimedFromPool`) before any AWS write:
    /// a controller stopped after that resumes the same claim ([`Title::FromPool`]).
    async fn claim_from_pool(
        &self,
        pool_name: &str,
        progress: &mut Progress,
        writer: &mut StatusWriter,
    ) -> Result<StepOutcome, Error> {
        let ctx = self.ctx;
        ctx.pools_ready.wait().await?;
        ctx.tenants_ready.wait().await?;
        let Some(pool) = ctx.pools.get(&ObjectRef::new(pool_name)) else {
            let note = format!("AccountPool {pool_name} does not exist: creating an account instead");
            return self.create_instead_of_pool(note, progress, writer).await;
        };
        // What the pool's Baseline left in its accounts that this Tenant's own would not
        // replace: recorded with the claim, deleted once the Tenant's baseline runs.
        let mut pool_stacks = None;
        if let Some(pool_baseline) = &pool.spec.baseline {
            let Some(made) = ctx.baselines.get(&ObjectRef::new(&pool_baseline.name)) else {
                let note = format!(
                    "AccountPool {pool_name} bootstraps its accounts with Baseline {}, which no longer exists, so \
                     what its accounts carry is unknown: creating an account instead",
                    pool_baseline.name
                );
                return self.create_instead_of_pool(note, progress, writer).await;
            };
            let made_regions = crate::baseline::regions(&made.spec.regions, &ctx.aws.region());
            let own = self.tenant.spec.baseline.as_ref().and_then(|b| ctx.baselines.get(&ObjectRef::new(&b.name)));
            let own_regions = own.as_ref().map(|b| crate::baseline::regions(&b.spec.regions, &ctx.aws.region()));
            let own_stacks =
                own.as_ref().zip(own_regions.as_ref()).map(|(b, r)| (b.spec.stack_name.as_str(), r.as_slice()));
            let regions = crate::pool::leftover_regions((&made.spec.stack_name, &made_regions), own_stacks);
            pool_stacks = (!regions.is_empty()).then(|| PoolStacks {
                baseline: pool_baseline.name.clone(),
                stack_name: made.spec.stack_name.clone(),
                regions,
            });
        }
        if !ctx.org.index.is_complete() {
            return Ok(StepOutcome::wait(
                "ClaimingFromPool",
                format!("Taking an account from AccountPool {pool_name} once Silo has read the organization"),
                Duration::from_secs(5),
            ));
        }
        let uid = self.uid();
        let name = self.tenant.name_any();
        let pool_uid = pool.uid().unwrap_or_default();
        let ready = pool.status.as_ref().map(|s| s.accounts.clone()).unwrap_or_default();
        let claims = TenantClaims::of(ctx.tenants.state().iter().map(|t| t.as_ref()));
        let mut passed = std::collections::BTreeSet::new();
        loop {
            let held = |id: &str| {
                passed.contains(id)
                    || claims.naming(id).is_some_and(|holder| holder != name)
                    || ctx.org.index.claimant(id).is_some_and(|holder| holder != uid)
                    || ctx.org.index.account(id).is_some_and(|known| crate::pool::unusable(&known, &pool_uid))
            };
            let Some(candidate) = crate::pool::candidate(&ready, held) else { break };
            let id = candidate.account_id.clone();
            passed.insert(id.clone());
            // Claimed in the index first (in memory, atomic), so that of the Tenants racing
            // for one account only the one that got it reads it from AWS. Then only an ACTIVE
            // account that still waits in this pool is taken. Until the status records the
            // claim, every other way out releases it: the account is another Tenant's to try
            // (one found unusable is known as such in the index now, and passed over).
            if ctx.org.index.claim(&id, &uid, None).is_err() {
                continue;
            }
            let account = match self.usable_pool_account(&id, &pool_uid).await {
                Ok(Some(account)) => account,
                Ok(None) => {
                    ctx.org.index.release_unrecorded(&id, &uid);
                    continue;
                }
                Err(err) => {
                    ctx.org.index.release_unrecorded(&id, &uid);
                    return Err(err);
                }
            };
            record_account(progress, Some(&account));
            progress.status.email = Some(account.email.clone());
            progress.status.account_name = Some(account.name.clone());
            progress.status.claimed_from_pool = Some(pool_name.to_string());
            progress.status.pool_stacks = pool_stacks;
            // The pool's tags were Silo's: the Tenant's replace them.
            progress.status.applied_tag_keys = crate::pool::pool_tags(&pool).into_keys().collect();
            writer.save_intent(progress, "TagResource").await?;
            // Recorded: the pool may drop the account from its ready list now.
            ctx.org.index.claim_recorded(&id, &uid);
            let _ = ctx.pool_wake.unbounded_send(ObjectRef::from_obj(pool.as_ref()));
            return self.settle(&id, Route::FromPool, progress, writer).await;
        }
        let note = format!("AccountPool {pool_name} has no ready account: creating one instead");
        self.create_instead_of_pool(note, progress, writer).await
    }

    /// The pool account `id` as AWS has it now (both reads recorded in the index), if it is
    /// ACTIVE and still waits in the pool whose UID is `pool_uid`.
    async fn usable_pool_account(&self, id: &str, pool_uid: &str) -> Result<Option<Account>, Error> {
        let org = &self.ctx.org;
        let Some(account) = org.describe_account_fresh(id).await?.filter(|a| a.is_active()) else {
            return Ok(None);
        };
        Ok(crate::pool::waits_in(&org.tags(id, Priority::User).await?, pool_uid).then_some(account))
    }

    /// The pool could not serve this Tenant: an Event says so, and the account is created.
    async fn create_instead_of_pool(
        &self,
        note: String,
        progress: &mut Progress,
        writer: &mut StatusWriter,
    ) -> Result<StepOutcome, Error> {
        self.ctx.event(self.tenant, EventType::Normal, "PoolEmpty", note).await;
        self.create(progress, writer).await
    }

    /// Takes a creation slot, records the intent, and sends CreateAccount.
    async fn create(&self, progress: &mut Progress, writer: &mut StatusWriter) -> Result<StepOutcome, Error> {
        let applicant = self.applicant();
        let org = &self.ctx.org;
        match org.reserve(&applicant) {
            Ok(()) => {}
            Err(NotYet::Starting) => {
                return Ok(StepOutcome::wait(
                    "WaitingForCreationSlot",
                    "Silo is reading which account creations are in flight in the organization",
                    Duration::from_secs(5),
                ));
            }
            Err(NotYet::InLine { position, in_use }) => {
                return Ok(StepOutcome::wait(
                    "WaitingForCreationSlot",
                    format!(
                        "AWS creates at most {} accounts of an organization at once ({in_use} in progress); this \
                         tenant is number {position} in line",
                        self.ctx.config.creation_slots
                    ),
                    SLOT_FALLBACK,
                ));
            }
        }
        // The intent first: a controller killed during CreateAccount looks for its account.
        progress.status.account_name = Some(self.identity.account_name.clone());
        progress.status.email = Some(self.identity.email.clone());
        progress.account = Some(StepOutcome::wait("CreatingAccount", "Requesting a new account", CREATION_FALLBACK));
        if let Err(err) = writer.save_intent(progress, "CreateAccount").await {
            org.creations.release(&applicant.uid);
            return Err(err);
        }
        let desired = desired_tags(self.tenant);
        let request =
            org.create_account(&applicant, &self.identity.account_name, &self.identity.email, &desired).await?;
        // ... and the request id right after it.
        progress.status.create_account_request_id = Some(request.id.clone());
        progress.status.applied_tag_keys = desired.into_keys().collect();
        writer.save_intent(progress, "recording the CreateAccount request").await?;
        info!(tenant = %self.tenant.name_any(), request = %request.id, "account creation requested");
        let note = format!("Requested account {:?}", self.identity.account_name);
        self.ctx.event(self.tenant, EventType::Normal, "AccountCreationRequested", note).await;
        self.requested(&request.id, progress, writer).await
    }
}

fn record_account(progress: &mut Progress, account: Option<&Account>) {
    if let Some(account) = account {
        progress.status.account_id = Some(account.id.clone());
        progress.status.account_arn = Some(account.arn.clone());
    }
}

/// What a Tenant stalled on ACCOUNT_LIMIT_EXCEEDED says: what fills the quota (closed accounts
/// count for 90 days, which surprises people) and which quota to raise, where.
fn account_limit_message(usage: QuotaUsage) -> String {
    let closed = match usage.closed {
        0 => String::new(),
        n => format!(
            ", {n} of them closed: a closed account counts until AWS closes it permanently, 90 days after its closure"
        ),
    };
    let accounts = if usage.members == 1 { "1 account".to_string() } else { format!("{} accounts", usage.members) };
    format!(
        "The organization is at its account quota (ACCOUNT_LIMIT_EXCEEDED): it holds {accounts}{closed}. From the \
         management account, request an increase of the AWS Organizations quota \"Default maximum number of \
         accounts\" in Service Quotas (Region us-east-1); Silo tries again every hour"
    )
}

fn email_in_use(email: &str, account_id: &str, claim: &Claim) -> StepOutcome {
    let message = match claim {
        Claim::OtherTenant(other) => format!(
            "The email {email} belongs to account {account_id}, which is Tenant {other}'s (tag {TENANT_UID_TAG}); \
             give this Tenant another spec.email. If this Tenant was restored from a backup or moved from another \
             cluster, annotate it with {PREVIOUS_UID} and the UID it had before to take its account back"
        ),
        _ => format!(
            "Account {account_id} already uses the email {email} and does not belong to this Tenant; set \
             spec.accountId: {account_id} to adopt it, or set spec.email to a new address"
        ),
    };
    StepOutcome::stalled("EmailInUse", message, RECHECK_STALLED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TenantSpec, TenantStatus};

    fn tenant() -> Tenant {
        let mut t = Tenant::new("acme", TenantSpec::default());
        t.metadata.uid = Some("uid-1".into());
        t
    }

    fn account(id: &str, email: &str, state: &str) -> Account {
        Account { id: id.into(), arn: String::new(), name: id.into(), email: email.into(), state: state.into() }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_account_limit_message_names_the_quota_and_the_closed_accounts_that_fill_it() {
        let full = account_limit_message(QuotaUsage { members: 10, closed: 3 });
        assert!(full.contains("holds 10 accounts, 3 of them closed"), "{full}");
        assert!(full.contains("\"Default maximum number of accounts\" in Service Quotas (Region us-east-1)"), "{full}");
        let none_closed = account_limit_message(QuotaUsage { members: 10, closed: 0 });
        assert!(none_closed.contains("holds 10 accounts. From"), "{none_closed}");
    }

    #[test]
    fn the_situation_comes_from_the_spec_and_the_recorded_status() {
        let status = |s: TenantStatus| {
            let mut t = tenant();
            t.status = Some(s);
            t
        };
        let adopting = {
            let mut t = tenant();
            t.spec.account_id = Some("111122223333".into());
            t
        };
        let table: Vec<(&str, Tenant, Option<String>, Situation)> = vec![
            ("nothing recorded: create, no lookup", tenant(), None, Situation::New),
            (
                "intent without request id: the crash window",
                status(TenantStatus { email: Some("a@example.com".into()), ..Default::default() }),
                None,
                Situation::Unsure,
            ),
            (
                "a recorded request is followed, never resent",
                status(TenantStatus {
                    email: Some("a@example.com".into()),
                    create_account_request_id: Some("car-1".into()),
                    ..Default::default()
                }),
                None,
                Situation::Requested { request_id: "car-1".into() },
            ),
            (
                "a request this process sent counts even when the cached status predates it",
                status(TenantStatus { email: Some("a@example.com".into()), ..Default::default() }),
                Some("car-2".into()),
                Situation::Requested { request_id: "car-2".into() },
            ),
            ("spec.accountId adopts", adopting.clone(), None, Situation::Adopt { account_id: "111122223333".into() }),
            (
                "a creation under way wins over a spec.accountId added since",
                {
                    let mut t = adopting.clone();
                    t.status =
                        Some(TenantStatus { create_account_request_id: Some("car-1".into()), ..Default::default() });
                    t
                },
                None,
                Situation::Requested { request_id: "car-1".into() },
            ),
            (
                "so does a recorded intent",
                {
                    let mut t = adopting.clone();
                    t.status = Some(TenantStatus { email: Some("a@example.com".into()), ..Default::default() });
                    t
                },
                None,
                Situation::Unsure,
            ),
            (
                "a known account is verified",
                status(TenantStatus { account_id: Some("111122223333".into()), ..Default::default() }),
                Some("car-3".into()),
                Situation::Known { account_id: "111122223333".into() },
            ),
        ];
        for (case, tenant, own, expected) in table {
            assert_eq!(situation(&tenant, own), expected, "{case}");
        }
    }

    #[test]
    fn request_states_and_failure_reasons_map_to_responses() {
        let failed = |reason: &str| CreationState::Failed { reason: reason.into(), failed_for: None };
        assert_eq!(judge_request(&CreationState::InProgress), RequestVerdict::InProgress);
        assert_eq!(
            judge_request(&CreationState::Succeeded { account_id: "1".into() }),
            RequestVerdict::Created { account_id: "1".into() }
        );
        assert_eq!(judge_request(&failed("EMAIL_ALREADY_EXISTS")), RequestVerdict::LookUpByEmail { failed_for: None });
        assert_eq!(judge_request(&failed("ACCOUNT_LIMIT_EXCEEDED")), RequestVerdict::AccountLimit);
        assert!(matches!(judge_request(&failed("CONCURRENT_ACCOUNT_MODIFICATION")), RequestVerdict::Retry { .. }));
        assert!(matches!(judge_request(&failed("INTERNAL_FAILURE")), RequestVerdict::Retry { .. }));
        assert!(matches!(judge_request(&failed(crate::org::REQUEST_NOT_FOUND)), RequestVerdict::Retry { .. }));
        assert_eq!(judge_request(&failed("INVALID_EMAIL")), RequestVerdict::Failed { reason: "INVALID_EMAIL".into() });
    }

    #[test]
    fn accounts_are_judged_by_state_claim_and_consent() {
        let desired = tags(&[(TENANT_UID_TAG, "uid-1"), ("team", "a")]);
        let active = account("1", "a@example.com", "ACTIVE");
        let suspended = account("1", "a@example.com", "SUSPENDED");
        let management = account("123456789012", "root@example.com", "ACTIVE");
        let theirs = tags(&[(TENANT_UID_TAG, "uid-2"), (TENANT_TAG, "globex")]);
        let ours_drifted = tags(&[(TENANT_UID_TAG, "uid-1"), ("team", "b"), ("old", "x")]);
        let untagged = tags(&[("team", "a")]);
        let applied = vec!["old".to_string(), "team".to_string()];
        let own = Ownership { uid: "uid-1".into(), management_account: "123456789012".into(), ..Default::default() };
        let consented = Ownership { consent: Some("1".into()), ..own.clone() };
        let consented_elsewhere = Ownership { consent: Some("2".into()), ..own.clone() };
        let restored = Ownership { previous_uid: Some("uid-2".into()), ..own.clone() };
        let raced = Ownership { consent: Some("1".into()), claimed_by: Some("uid-9".into()), ..own.clone() };
        let from_pool = Ownership { from_pool: Some("warm".into()), ..own.clone() };
        let pooled = tags(&[(POOL_TAG, "warm"), ("team", "a")]);
        let set_uid = || tags(&[(TENANT_UID_TAG, "uid-1")]);
        let fine = |title, to_set, to_remove: &[&str]| AccountVerdict::Fine {
            title,
            to_set,
            to_remove: to_remove.iter().map(|k| k.to_string()).collect(),
        };
        type Case<'a> = (&'a str, Option<&'a Account>, BTreeMap<String, String>, &'a Ownership, AccountVerdict);
        let table: Vec<Case> = vec![
            ("not in the organization", None, BTreeMap::new(), &own, AccountVerdict::NotInOrganization),
            (
                "the management account, even with consent",
                Some(&management),
                BTreeMap::new(),
                &consented,
                AccountVerdict::ManagementAccount,
            ),
            (
                "suspended",
                Some(&suspended),
                BTreeMap::new(),
                &own,
                AccountVerdict::NotActive { state: "SUSPENDED".into() },
            ),
            (
                "another Tenant's UID is never overwritten",
                Some(&active),
                theirs.clone(),
                &consented,
                AccountVerdict::ClaimedBy { tenant: "globex".into() },
            ),
            (
                "unless it is this Tenant's UID before a restore",
                Some(&active),
                theirs.clone(),
                &restored,
                fine(Title::Reclaimed, tags(&[(TENANT_UID_TAG, "uid-1"), ("team", "a")]), &[]),
            ),
            (
                "this Tenant's, drifted: repaired, foreign keys kept",
                Some(&active),
                ours_drifted,
                &own,
                fine(Title::Tagged, tags(&[("team", "a")]), &["old"]),
            ),
            ("no UID and no consent: unproven", Some(&active), untagged.clone(), &own, AccountVerdict::Unproven),
            (
                "consent names another account",
                Some(&active),
                untagged.clone(),
                &consented_elsewhere,
                AccountVerdict::Unproven,
            ),
            (
                "no UID with consent: adopted",
                Some(&active),
                untagged.clone(),
                &consented,
                fine(Title::Consented, set_uid(), &[]),
            ),
            (
                "another Tenant claimed it first in this process",
                Some(&active),
                untagged,
                &raced,
                AccountVerdict::ClaimedBy { tenant: "with UID uid-9".into() },
            ),
            (
                "a claim from a pool that stopped before the Tenant's tag: resumed",
                Some(&active),
                pooled.clone(),
                &from_pool,
                fine(Title::FromPool, set_uid(), &[]),
            ),
            (
                "a pool's account the status does not claim: unproven",
                Some(&active),
                pooled.clone(),
                &own,
                AccountVerdict::Unproven,
            ),
            (
                "an account of another pool than the one claimed: unproven",
                Some(&active),
                tags(&[(POOL_TAG, "cold"), ("team", "a")]),
                &from_pool,
                AccountVerdict::Unproven,
            ),
        ];
        for (case, account, current, ownership, expected) in table {
            assert_eq!(judge_account(account, &current, &desired, &applied, ownership), expected, "{case}");
        }
    }

    #[test]
    fn an_email_owner_is_looked_for_while_listings_lag() {
        let found = account("1", "a@example.com", "ACTIVE");
        assert_eq!(judge_email_owner(Some(&found), None), EmailOwner::Found { account_id: "1".into() });
        assert_eq!(judge_email_owner(None, Some(Duration::from_secs(10))), EmailOwner::Looking, "listings lag");
        assert_eq!(judge_email_owner(None, None), EmailOwner::Looking);
        assert_eq!(judge_email_owner(None, Some(Duration::from_secs(600))), EmailOwner::Outside);
    }

    #[test]
    fn earlier_work_is_found_by_email_or_by_request_name() {
        let email = "a@example.com";
        let mine = account("1", email, "ACTIVE");
        let other = account("2", "someone@example.com", "ACTIVE");
        let in_progress = CreateRequest {
            id: "r1".into(),
            account_name: "acme".into(),
            state: CreationState::InProgress,
            took: None,
        };
        let succeeded = |id: &str| CreateRequest {
            id: "r2".into(),
            account_name: "acme".into(),
            state: CreationState::Succeeded { account_id: id.into() },
            took: None,
        };
        assert_eq!(
            judge_earlier_work(false, Some(&mine), &[], email),
            EarlierWork::WaitForIndex,
            "a miss proves nothing yet"
        );
        assert_eq!(
            judge_earlier_work(true, Some(&mine), &[], email),
            EarlierWork::AccountWithEmail { account_id: "1".into() }
        );
        assert_eq!(
            judge_earlier_work(true, None, &[(in_progress, None)], email),
            EarlierWork::Follow { request_id: "r1".into() }
        );
        assert_eq!(
            judge_earlier_work(true, None, &[(succeeded("2"), Some(other))], email),
            EarlierWork::Nothing,
            "a request of the same name with another email is someone else's"
        );
        assert_eq!(
            judge_earlier_work(true, None, &[(succeeded("1"), Some(mine))], email),
            EarlierWork::AccountWithEmail { account_id: "1".into() }
        );
        assert_eq!(judge_earlier_work(true, None, &[], email), EarlierWork::Nothing);
    }

    #[test]
    fn only_tags_silo_applied_are_removed() {
        let desired = tags(&[("team", "a")]);
        let current = tags(&[("team", "b"), ("old", "x"), ("foreign", "y")]);
        let (set, remove) = plan_tags(&desired, &current, &["team".to_string(), "old".to_string()]);
        assert_eq!(set, desired, "drifted values are set back");
        assert_eq!(remove, vec!["old".to_string()], "a key Silo applied and no longer wants goes");
        let (set, remove) = plan_tags(&desired, &tags(&[("team", "a")]), &[]);
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
