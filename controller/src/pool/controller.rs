//! The AccountPool controller: keeps `spec.size` accounts ready in the pool's OU.
//!
//! One reconcile of a pool:
//! 1. drops from the ready list every account a Tenant now holds (a Tenant names it in its
//!    status, or carries its UID tag; a claim the index gave but no status records yet does
//!    not count), every account no longer ACTIVE or no longer tagged as the pool's (as the
//!    index last saw it), and the surplus of a pool that shrank; counts the Tenants holding
//!    one of its accounts;
//! 2. moves each creation along: follow the CreateAccount request, record the account, place it
//!    in the pool's OU, make `spec.baseline`'s stacks in it ([`super::bootstrap`]), and only
//!    then list it as ready;
//! 3. refills, once no Tenant that names the pool is still deciding where its account comes
//!    from ([`tenants_deciding`]: signups racing for the last ready accounts must not find
//!    their creation slots taken by the refill), and while the organization has room below its
//!    account limit less the headroom kept for Tenants (`--account-limit`,
//!    `--pool-account-headroom`): takes a creation slot behind every Tenant
//!    ([`Applicant::refill`]), records the creation (index, name, email) in the status,
//!    **then** sends CreateAccount, then records the request id.
//!
//! ## Crash safety
//! A creation is in the status before its CreateAccount, so a controller killed during the
//! call finds it on its next look: the account by its email in the index, or the request by
//! its account name (the same look for earlier work as a Tenant's,
//! [`judge_earlier_work`]). Nothing found means the call never reached AWS: the creation is
//! dropped, and its index (and email) is never used again.
//!
//! ## What a pool never does
//! It never closes an account (a smaller `size` leaves the surplus ready; a deleted pool leaves
//! its accounts tagged as the pool's, and `silo orphans` lists them), never takes a creation
//! slot ahead of a Tenant, and never creates in an OU outside `--tenant-ou-root`.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, channel::mpsc::UnboundedReceiver};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, PredicateConfig, WatchStreamExt,
        controller::Action,
        predicates,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::info;

use super::{
    Error, Refill,
    bootstrap::{Bootstrap, Sources, bootstrap},
    identity, plan_refill, pool_tags, room_below_headroom, tenants_deciding, unusable, waits_in,
};
use crate::{
    api::{AccountPool, AccountPoolStatus, PoolAccount, PoolCreation, Tenant},
    aws::{AwsErrorKind, Priority},
    caches::Ready,
    conditions::{self, Conditions},
    config::Config,
    contract::{FIELD_MANAGER, ownership::TenantClaims},
    metrics::{METRICS, PoolLabels, PoolNameLabels},
    org::{Applicant, NotYet, Organization, Resolved, Target},
    retry::{Backoff, jittered},
    tenant::{
        account::{EarlierWork, RequestVerdict, judge_earlier_work, judge_request},
        placement::target_allowed,
    },
};

/// How soon a pool with creations in flight looks again by itself.
const WHILE_CREATING: Duration = Duration::from_secs(5);
/// How soon a full pool looks again by itself (a Tenant that takes an account wakes it).
const WHILE_FULL: Duration = Duration::from_secs(300);
/// How long refills wait after AWS answered ACCOUNT_LIMIT_EXCEEDED.
const AFTER_ACCOUNT_LIMIT: Duration = Duration::from_secs(3600);
/// How soon a pool that cannot be served (its OU is missing or not allowed, or the
/// organization is at the headroom below its account limit) looks again.
const RECHECK_STALLED: Duration = Duration::from_secs(600);
/// After EMAIL_ALREADY_EXISTS, how long the account may stay missing from the index.
const EMAIL_OWNER_GRACE: Duration = Duration::from_secs(300);
const RECONCILE_BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));

/// What the pool controller works with.
pub struct Context {
    /// The AWS clients, the Baselines and their revisions, for a pool's Baseline.
    pub baselines: Sources,
    pub client: Client,
    pub org: Arc<Organization>,
    /// Every Tenant, from the Tenant controller's watch, and its first listing.
    pub tenants: Store<Tenant>,
    pub tenants_ready: Ready,
    pub config: Config,
}

/// The AccountPool watch: a cache every Tenant reconcile reads (the ready accounts), and the
/// changes of spec that trigger a pool reconcile.
pub fn watch(
    client: &Client,
    organization: &str,
) -> (Store<AccountPool>, impl futures::Stream<Item = Result<AccountPool, watcher::Error>> + use<>) {
    let (store, writer) = reflector::store();
    // Only the organization's pools (`""`: the default organization's, without spec.organization).
    let config = watcher::Config::default().any_semantic().fields(&format!("spec.organization={organization}"));
    let stream = watcher(Api::<AccountPool>::all(client.clone()), config)
        .default_backoff()
        .reflect(writer)
        .inspect(|event| {
            if let Ok(watcher::Event::Delete(pool)) = event {
                forget(&pool.name_any());
            }
        })
        .applied_objects()
        // Silo's own status writes trigger nothing; Tenants that take an account wake the pool.
        .predicate_filter(predicates::generation, PredicateConfig::default());
    (store, stream)
}

/// Runs the pool controller until `shutdown` completes. `woken` names pools a Tenant took an
/// account from.
pub async fn run(
    ctx: Arc<Context>,
    pools: Store<AccountPool>,
    changes: impl futures::Stream<Item = Result<AccountPool, watcher::Error>> + Send + 'static,
    woken: UnboundedReceiver<ObjectRef<AccountPool>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::for_stream(changes, pools)
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                info!(%err, "pool reconcile failed; retrying");
            }
        })
        .await;
}

/// Removes the series of every pool in `pools`, on a replica that stops leading their
/// organization: another replica publishes them now, or none.
pub fn forget_all(pools: &Store<AccountPool>) {
    for pool in pools.state() {
        forget(&pool.name_any());
    }
}

fn error_policy(_pool: Arc<AccountPool>, err: &Error, _ctx: Arc<Context>) -> Action {
    let pause = match err {
        Error::Aws(err) if err.kind == AwsErrorKind::Busy => Duration::from_secs(1),
        _ => RECONCILE_BACKOFF.pause(1),
    };
    Action::requeue(jittered(pause))
}

/// Why the pool is not full, for its conditions.
struct Shortfall {
    reason: &'static str,
    message: String,
    stalled: bool,
    look_again: Duration,
}

impl Shortfall {
    fn waiting(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), stalled: false, look_again: WHILE_CREATING }
    }

    fn stalled(reason: &'static str, message: impl Into<String>, look_again: Duration) -> Self {
        Self { reason, message: message.into(), stalled: true, look_again }
    }
}

/// Where one creation stands after a look.
enum Advance {
    /// Still on its way (AWS is creating it, or it is being placed); `why` when it is held
    /// up by something a person should fix.
    Waiting(Option<Shortfall>),
    /// Created and in the pool's OU: ready to be claimed.
    Ready(PoolAccount),
    /// Ended without an account; `why` when a person should know.
    Dropped(Option<Shortfall>),
}

async fn reconcile(pool: Arc<AccountPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.tenants_ready.wait().await?;
    let mut writer = PoolStatus::new(&pool, ctx.client.clone());
    let mut status = pool.status.clone().unwrap_or_default();
    let name = pool.name_any();

    // 1. Accounts a Tenant holds are no longer the pool's to hand out.
    let tenants = ctx.tenants.state();
    let claims = TenantClaims::of(tenants.iter().map(|t| t.as_ref()));
    // Only what outlives this process counts: a claim in memory alone may never be recorded
    // (the Tenant is stopped, or takes another account), and the account would be lost.
    let held = |id: &str| claims.naming(id).is_some() || ctx.org.index.recorded_claimant(id).is_some();
    status.accounts.retain(|a| !held(&a.account_id));
    // An account closed or suspended out of band, or whose tags no longer say it waits here,
    // is never handed out.
    let pool_uid = pool.uid().unwrap_or_default();
    let spoilt = |id: &str| ctx.org.index.account(id).is_some_and(|known| unusable(&known, &pool_uid));
    status.accounts.retain(|a| !spoilt(&a.account_id));
    // A pool that shrank keeps its oldest accounts; the surplus stays tagged as the pool's
    // (never closed) and `silo orphans` lists it.
    let size = usize::try_from(pool.spec.size).unwrap_or(usize::MAX);
    if status.accounts.len() > size {
        let surplus: Vec<String> = status.accounts.split_off(size).into_iter().map(|a| a.account_id).collect();
        info!(pool = %name, ?surplus, "the pool shrank: surplus accounts left to silo orphans");
    }
    status.claimed = u32::try_from(
        tenants
            .iter()
            .filter(|t| t.status.as_ref().and_then(|s| s.claimed_from_pool.as_deref()) == Some(name.as_str()))
            .count(),
    )
    .unwrap_or(u32::MAX);

    // The pool's OU must be one tenant accounts may go to: otherwise nothing is created.
    let target = Target::parse(&pool.spec.organizational_unit);
    let shortfall = if target_allowed(&ctx.org, &target, &ctx.config.tenant_ou_roots).await? {
        // 2. Creations move along.
        let mut shortfall = None;
        let mut kept = vec![];
        for mut creation in std::mem::take(&mut status.creations) {
            match advance(&pool, &mut creation, &target, &ctx).await? {
                Advance::Waiting(why) => {
                    shortfall = why.or(shortfall);
                    kept.push(creation);
                }
                Advance::Ready(account) => {
                    info!(pool = %name, account = %account.account_id, "pool account ready");
                    status.accounts.push(account);
                }
                Advance::Dropped(why) => shortfall = why.or(shortfall),
            }
        }
        status.creations = kept;
        writer.write(&status, None).await?;
        // 3. Refill, unless the organization is full or a creation failed for a person to fix.
        match shortfall.or_else(|| recent_account_limit(&pool)) {
            Some(shortfall) => Some(shortfall),
            None => refill(&pool, &mut status, &mut writer, &ctx).await?,
        }
    } else {
        Some(Shortfall::stalled(
            "OrganizationalUnitNotAllowed",
            format!(
                "spec.organizationalUnit {} is outside the OUs this controller places tenant accounts in ({}); \
                 nothing was created: name an OU at or below one of them",
                pool.spec.organizational_unit,
                ctx.config.tenant_ou_roots.join(", ")
            ),
            RECHECK_STALLED,
        ))
    };

    status.ready = u32::try_from(status.accounts.len()).unwrap_or(u32::MAX);
    status.creating = u32::try_from(status.creations.len()).unwrap_or(u32::MAX);
    publish(&name, pool.spec.size, &status);
    let look_again = shortfall
        .as_ref()
        .map_or(if status.creations.is_empty() { WHILE_FULL } else { WHILE_CREATING }, |s| s.look_again);
    writer.write(&status, Some(shortfall.as_ref())).await?;
    Ok(Action::requeue(look_again))
}

/// A pool stalled on ACCOUNT_LIMIT_EXCEEDED less than an hour ago (same generation) waits.
fn recent_account_limit(pool: &AccountPool) -> Option<Shortfall> {
    let status = pool.status.as_ref()?;
    let stalled = conditions::find(&status.conditions, conditions::STALLED)?;
    let since: Timestamp = stalled.last_transition_time.0;
    let age = Timestamp::now().duration_since(since);
    let recent = Duration::try_from(age).is_ok_and(|age| age < AFTER_ACCOUNT_LIMIT);
    (stalled.status == "True"
        && stalled.reason == "OrganizationAccountLimit"
        && stalled.observed_generation == pool.metadata.generation
        && recent)
        .then(|| Shortfall::stalled("OrganizationAccountLimit", stalled.message.clone(), AFTER_ACCOUNT_LIMIT))
}

/// Creates what the pool is missing, one creation slot at a time, behind every Tenant.
async fn refill(
    pool: &AccountPool,
    status: &mut AccountPoolStatus,
    writer: &mut PoolStatus,
    ctx: &Context,
) -> Result<Option<Shortfall>, Error> {
    let deciding = tenants_deciding(ctx.tenants.state().iter().map(|t| t.as_ref()), &pool.name_any());
    if deciding > 0 {
        let message = format!(
            "{deciding} Tenants that name this pool have no account yet: they take creation slots before a refill"
        );
        return Ok(Some(Shortfall::waiting("WaitingForTenants", message)));
    }
    if ctx.config.account_limit.is_some() && !ctx.org.index.is_complete() {
        let message = "Counting the organization's accounts against --account-limit before refilling";
        return Ok(Some(Shortfall::waiting("WaitingForIndex", message)));
    }
    let usage = ctx.org.index.quota_usage();
    let in_flight = ctx.org.creations.in_use();
    let (limit, headroom) = (ctx.config.account_limit, ctx.config.pool_account_headroom);
    let room = room_below_headroom(limit, headroom, usage.members, in_flight);
    let plan = plan_refill(pool.spec.size, pool.spec.paused, status.accounts.len(), status.creations.len(), room);
    let missing = match plan {
        Refill::Full => return Ok(None),
        Refill::Paused => return Ok(Some(Shortfall::waiting("Paused", "spec.paused is true: nothing is created"))),
        Refill::AtHeadroom => {
            let message = format!(
                "Refills stop {headroom} accounts short of the organization's account limit ({limit}, \
                 --account-limit), the room kept for Tenants: {} accounts count against it ({} of them closed, \
                 which count for 90 days after their closure) and {in_flight} creations are in flight. Raise the \
                 quota in Service Quotas (us-east-1, \"Default maximum number of accounts\") and --account-limit \
                 with it",
                usage.members,
                usage.closed,
                limit = limit.unwrap_or_default(),
            );
            return Ok(Some(Shortfall::stalled("AccountLimitHeadroom", message, RECHECK_STALLED)));
        }
        Refill::Create(missing) => missing,
    };
    let uid = pool.uid().unwrap_or_default();
    for _ in 0..missing {
        let index = status.next_index;
        let applicant = Applicant {
            name: pool.name_any(),
            uid: format!("{uid}/{index}"),
            created: pool.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
            refill: true,
        };
        match ctx.org.reserve(&applicant) {
            Ok(()) => {}
            Err(NotYet::Starting) => {
                return Ok(Some(Shortfall::waiting("WaitingForCreationSlot", "Reading the creations in flight")));
            }
            Err(NotYet::InLine { position, in_use }) => {
                let message = format!(
                    "Refilling behind every Tenant that needs an account: {in_use} creation slots in use, number \
                     {position} in line"
                );
                return Ok(Some(Shortfall::waiting("WaitingForCreationSlot", message)));
            }
        }
        let (account_name, email) = identity(pool, index);
        // The creation is recorded, with its index spent, before CreateAccount.
        status.next_index = index + 1;
        status.creations.push(PoolCreation {
            index,
            email: email.clone(),
            account_name: account_name.clone(),
            ..Default::default()
        });
        if let Err(err) = writer.write(status, None).await {
            ctx.org.creations.release(&applicant.uid);
            return Err(err.into());
        }
        let request = ctx.org.create_account(&applicant, &account_name, &email, &pool_tags(pool)).await?;
        if let Some(creation) = status.creations.iter_mut().find(|c| c.index == index) {
            creation.request_id = Some(request.id.clone());
        }
        writer.write(status, None).await?;
        info!(pool = %pool.name_any(), index, request = %request.id, "pool account requested");
    }
    Ok(Some(Shortfall::waiting("Refilling", "AWS is creating accounts for the pool")))
}

/// Moves one creation along: its request, its account, its placement.
async fn advance(
    pool: &AccountPool,
    creation: &mut PoolCreation,
    target: &Target,
    ctx: &Context,
) -> Result<Advance, Error> {
    let org = &ctx.org;
    if creation.account_id.is_none() {
        match find_account(pool, creation, ctx).await? {
            Found::Account(id) => creation.account_id = Some(id),
            Found::Waiting => return Ok(Advance::Waiting(None)),
            Found::Nothing(why) => return Ok(Advance::Dropped(why)),
        }
    }
    let account_id = creation.account_id.clone().unwrap_or_default();
    let ou = match org.resolve(target, ctx.config.create_missing_ous).await? {
        Resolved::Parent(ou) => ou,
        // The account exists: the creation stays, to be placed once the OU does.
        Resolved::NotFound => {
            return Ok(Advance::Waiting(Some(Shortfall::stalled(
                "OrganizationalUnitNotFound",
                format!(
                    "Organizational unit {} does not exist: create it, fix spec.organizationalUnit, or run the \
                     controller with --create-missing-ous",
                    pool.spec.organizational_unit
                ),
                RECHECK_STALLED,
            ))));
        }
    };
    org.place(&account_id, &ou).await?;
    if let Some(wanted) = &pool.spec.baseline {
        let made = bootstrap(pool, wanted, &account_id, &creation.account_name, &ctx.baselines).await?;
        match made {
            Bootstrap::Done => creation.baseline = None,
            Bootstrap::Waiting(message) => {
                creation.baseline = Some(message);
                return Ok(Advance::Waiting(None));
            }
            Bootstrap::Stalled { reason, message } => {
                creation.baseline = Some(message.clone());
                return Ok(Advance::Waiting(Some(Shortfall::stalled(reason, message, RECHECK_STALLED))));
            }
        }
    }
    Ok(Advance::Ready(PoolAccount {
        account_id,
        index: creation.index,
        email: creation.email.clone(),
        account_name: creation.account_name.clone(),
    }))
}

enum Found {
    Account(String),
    Waiting,
    Nothing(Option<Shortfall>),
}

/// The account a creation made, from its request, or after a crash from the organization.
async fn find_account(pool: &AccountPool, creation: &mut PoolCreation, ctx: &Context) -> Result<Found, Error> {
    let org = &ctx.org;
    let Some(request_id) = creation.request_id.clone() else {
        // Recorded, but no request id: CreateAccount may have been sent by a controller that
        // stopped before recording it.
        let by_email = org.index.account_by_email(&creation.email);
        let named = if org.index.is_complete() && by_email.is_none() {
            let mut named = vec![];
            for request in org.requests_named(&creation.account_name, Priority::User).await? {
                let account = match &request.state {
                    crate::aws::organizations::CreationState::Succeeded { account_id } => {
                        org.account(account_id, Priority::User).await?.map(|a| a.account)
                    }
                    _ => None,
                };
                named.push((request, account));
            }
            named
        } else {
            vec![]
        };
        let earlier =
            judge_earlier_work(org.index.is_complete(), by_email.as_ref().map(|a| &a.account), &named, &creation.email);
        return Ok(match earlier {
            EarlierWork::WaitForIndex => Found::Waiting,
            EarlierWork::AccountWithEmail { account_id } => own_account(pool, &account_id, ctx).await?,
            EarlierWork::Follow { request_id } => {
                creation.request_id = Some(request_id);
                Found::Waiting
            }
            // CreateAccount never reached AWS: the index is spent, a new creation replaces it.
            EarlierWork::Nothing => Found::Nothing(None),
        });
    };
    let request = org.creation(&request_id).await?;
    Ok(match judge_request(&request.state) {
        RequestVerdict::InProgress => Found::Waiting,
        RequestVerdict::Created { account_id } => {
            org.record_created(&account_id, &creation.account_name, &creation.email, &pool_tags(pool)).await?;
            Found::Account(account_id)
        }
        RequestVerdict::LookUpByEmail { failed_for } => match org.index.account_by_email(&creation.email) {
            Some(found) => own_account(pool, &found.account.id, ctx).await?,
            None if failed_for.is_none_or(|age| age < EMAIL_OWNER_GRACE) => {
                org.request_refresh();
                Found::Waiting
            }
            None => Found::Nothing(Some(Shortfall::waiting(
                "EmailInUse",
                format!(
                    "AWS refused {}: the email is used outside the organization; the next index is used",
                    creation.email
                ),
            ))),
        },
        RequestVerdict::Retry { .. } => Found::Nothing(None),
        RequestVerdict::AccountLimit => Found::Nothing(Some(Shortfall::stalled(
            "OrganizationAccountLimit",
            format!(
                "The organization is at its account quota (ACCOUNT_LIMIT_EXCEEDED, {} accounts count against it): \
                 the pool waits, and tries again in an hour; Tenants still create accounts when a slot frees",
                org.index.quota_usage().members
            ),
            AFTER_ACCOUNT_LIMIT,
        ))),
        RequestVerdict::Failed { reason } => Found::Nothing(Some(Shortfall::stalled(
            "AccountCreationFailed",
            format!("AWS could not create the pool's account {}: {reason}", creation.account_name),
            RECHECK_STALLED,
        ))),
    })
}

/// An account found by a creation's email is the pool's only if it carries the pool's UID.
async fn own_account(pool: &AccountPool, account_id: &str, ctx: &Context) -> Result<Found, Error> {
    let tags = ctx.org.tags(account_id, Priority::User).await?;
    Ok(if waits_in(&tags, &pool.uid().unwrap_or_default()) {
        Found::Account(account_id.to_string())
    } else {
        Found::Nothing(Some(Shortfall::waiting(
            "EmailInUse",
            format!(
                "Account {account_id} has the email of a pool account but is not the pool's; the next index is used"
            ),
        )))
    })
}

/// The `state` label of `silo_pool_accounts`.
const POOL_STATES: [&str; 3] = ["ready", "creating", "claimed"];

/// Publishes `silo_pool_accounts{pool,state}` and `silo_pool_size{pool}`.
fn publish(pool: &str, size: u32, status: &AccountPoolStatus) {
    METRICS.pool_size.get_or_create(&PoolNameLabels { pool: pool.to_string() }).set(i64::from(size));
    for (state, count) in POOL_STATES.into_iter().zip([status.ready, status.creating, status.claimed]) {
        METRICS.pool_accounts.get_or_create(&PoolLabels { pool: pool.to_string(), state }).set(i64::from(count));
    }
}

/// Removes a deleted pool's series, so dashboards and the empty-pool alert forget it.
fn forget(pool: &str) {
    METRICS.pool_size.remove(&PoolNameLabels { pool: pool.to_string() });
    for state in POOL_STATES {
        METRICS.pool_accounts.remove(&PoolLabels { pool: pool.to_string(), state });
    }
}

/// Writes one pool's status, only when it changed.
struct PoolStatus {
    api: Api<AccountPool>,
    name: String,
    generation: Option<i64>,
    written: Option<AccountPoolStatus>,
}

impl PoolStatus {
    fn new(pool: &AccountPool, client: Client) -> Self {
        Self {
            api: Api::all(client),
            name: pool.name_any(),
            generation: pool.metadata.generation,
            written: pool.status.clone(),
        }
    }

    /// Writes the status; with `summary`, the conditions too (`Some(None)`: full).
    async fn write(
        &mut self,
        status: &AccountPoolStatus,
        summary: Option<Option<&Shortfall>>,
    ) -> Result<(), kube::Error> {
        let mut status = status.clone();
        if let Some(shortfall) = summary {
            status.observed_generation = self.generation;
            let mut conditions = Conditions::new(&mut status.conditions, self.generation, Timestamp::now());
            match shortfall {
                None => {
                    conditions.set(conditions::READY, true, "Full", "The pool holds spec.size accounts");
                    conditions.set(conditions::RECONCILING, false, "Full", "");
                    conditions.set(conditions::STALLED, false, "Full", "");
                }
                Some(s) => {
                    conditions.set(conditions::READY, false, s.reason, &s.message);
                    conditions.set(
                        conditions::RECONCILING,
                        !s.stalled,
                        s.reason,
                        if s.stalled { "" } else { &s.message },
                    );
                    conditions.set(conditions::STALLED, s.stalled, s.reason, if s.stalled { &s.message } else { "" });
                }
            }
        } else if let Some(written) = &self.written {
            status.conditions = written.conditions.clone();
            status.observed_generation = written.observed_generation;
        }
        if self.written.as_ref() == Some(&status) {
            return Ok(());
        }
        let patch = serde_json::json!({"apiVersion": "silo.dev/v1alpha1", "kind": "AccountPool", "status": status});
        self.api.patch_status(&self.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        self.written = Some(status);
        Ok(())
    }
}
