//! The Tenant controller.
//!
//! One reconcile of one Tenant is a pipeline of steps, each returning one
//! [`StepOutcome`](crate::conditions::StepOutcome) (done, wait with when to look again, or
//! stalled with when to retry) that becomes a condition:
//!
//! 1. [`identity`]: the account name and email, fixed before any AWS call.
//! 2. [`account`]: create or adopt the account (`AccountReady`), and keep Silo's tags on it.
//! 3. [`placement`]: move it into the requested OU (`PlacementReady`).
//! 4. [`account_settings`]: the account's name, alternate contacts and service control policies
//!    (`SettingsReady`).
//! 5. [`bootstrap`]: run the Baseline's stack in every region of the account (`BaselineReady`);
//!    then [`pool_stacks`]: delete the stacks a pool left in a claimed account that the
//!    Baseline does not use (`BaselineReady` until they are gone); then, on its schedule, look
//!    for drift in the stacks ([`bootstrap::drift`], `BaselineDrifted`).
//! 6. [`status`]: derive `Ready`, `Reconciling`, `Stalled` and write the status once.
//!
//! A step runs only when the steps before it are done. [`schedule`] says what a reconcile is
//! for (converge, verify, or nothing until the next verification), and the pipeline owns the
//! requeue: the first step that is not done says when to look again; a Ready tenant is looked
//! at again at its next verification.
//!
//! ## What triggers a reconcile
//! A change of a Tenant's generation (spec), deletion, finalizers or Silo's annotations; a
//! change of a Baseline's spec, for the Tenants that use it; a tenant's own timer; and the
//! organization waking a tenant (its creation ended, or a creation slot is its turn). Silo's
//! own status writes trigger nothing.
//!
//! ## Guarantees
//! - Both entry points ([`apply`] and [`cleanup`]) are idempotent: a controller killed at any
//!   line resumes from what the status records, without repeating AWS work. Where an AWS
//!   call creates something, the intent is written to the status before the call and the
//!   result right after it (see [`account`]).
//! - A paused Tenant makes no AWS call.
//! - Throttling and transient AWS errors never reach the conditions: the Tenant is retried
//!   with jittered backoff ([`error_policy`]).

pub mod account;
pub mod account_settings;
pub mod bootstrap;
pub mod closure;
pub mod identity;
pub mod placement;
pub mod pool_stacks;
pub mod schedule;
pub mod status;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{
    StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, PredicateConfig, WatchStreamExt,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder},
        finalizer::{self, Event as FinalizerEvent},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{debug, info, warn};

use crate::{
    api::{AccountPool, Baseline, DeletionPolicy, Tenant},
    aws::{Aws, AwsError, AwsErrorKind},
    conditions::{self, StepOutcome},
    config::Config,
    contract::{FINALIZER, GROUP},
    metrics::{METRICS, MilestoneLabels, PhaseLabels, ReasonLabels},
    org::Organization,
    retry::{Backoff, jittered},
};
use account::AccountStep;
use account_settings::SettingsStep;
use bootstrap::BaselineStep;
use placement::PlacementStep;
use schedule::{Mode, Verification};
use status::{Progress, StatusWriter};

/// How a failed reconcile is retried: 5 s doubling, at most 5 minutes.
const RECONCILE_BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub aws: Aws,
    /// The organization: its index, its creation slots, its Organizations budget.
    pub org: Arc<Organization>,
    pub config: Config,
    pub recorder: Recorder,
    pub closures: closure::ClosureLedger,
    /// Baselines, from the watch cache.
    pub baselines: Store<Baseline>,
    /// Baseline revisions (their content), from the watch cache.
    pub revisions: Store<k8s_openapi::api::apps::v1::ControllerRevision>,
    /// The Baseline and revision caches hold their first listing.
    pub caches_ready: [crate::caches::Ready; 2],
    /// The Baseline rollouts as this process last decided them.
    pub rollouts: Arc<crate::baseline::rollout::Rollouts>,
    /// Every Tenant, from the controller's own watch (which accounts the statuses name).
    pub tenants: Store<Tenant>,
    pub tenants_ready: crate::caches::Ready,
    /// AccountPools, from the pool controller's watch, and its first listing.
    pub pools: Store<AccountPool>,
    pub pools_ready: crate::caches::Ready,
    /// Wakes a pool a Tenant took an account from, so it refills at once.
    pub pool_wake: UnboundedSender<ObjectRef<AccountPool>>,
    /// Consecutive failed reconciles per Tenant, for exponential backoff.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// Every organization Silo serves, read-only: which one has an account this one has not.
    pub neighbours: Arc<crate::org::neighbours::Neighbours>,
}

impl Context {
    /// The external id a Baseline names (`spec.externalId`): the `key` of Secret `name` in the
    /// external-id namespace, the only Secrets Silo can read. `None` when either is missing.
    pub async fn external_id(&self, name: &str, key: &str) -> Result<Option<String>, kube::Error> {
        crate::baseline::external_id::read(&self.client, &self.config.external_id_namespace, name, key).await
    }

    /// Publishes a Kubernetes Event about a tenant; failures are logged, never fatal.
    pub async fn event(&self, tenant: &Tenant, type_: EventType, reason: &str, note: String) {
        METRICS.milestones.get_or_create(&MilestoneLabels { milestone: reason.to_string() }).inc();
        let event =
            KubeEvent { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
        if let Err(err) = self.recorder.publish(&event, &tenant.object_ref(&())).await {
            warn!(tenant = %tenant.name_any(), %err, "could not publish event");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Deletion waits (for a person, a budget or AWS); the conditions say why.
    #[error("deletion waits: {reason}")]
    DeletionPending { reason: String, retry_after: Duration },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// A watch cache this reconcile reads was dropped (the process is stopping).
    #[error(transparent)]
    CacheGone(#[from] crate::caches::CacheGone),
}

impl Error {
    /// A short, stable label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self.innermost() {
            Error::Kube(_) | Error::CacheGone(_) => "kube",
            err if err.is_deferred() => "deferred",
            Error::Aws(err) if err.is_retryable() => "aws_retryable",
            Error::Aws(_) => "aws_terminal",
            Error::DeletionPending { .. } => "deletion_pending",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// Nothing was sent to AWS: its budget was busy with user work, or this replica cannot
    /// confirm it leads. Normal weather, retried quietly.
    fn is_deferred(&self) -> bool {
        matches!(self.innermost(), Error::Aws(err) if err.kind == AwsErrorKind::Busy)
    }

    /// A finalizer patch refused because the copy it was made from is out of date.
    fn is_stale_finalizer_patch(&self) -> bool {
        let Error::Finalizer(inner) = self else { return false };
        match inner.as_ref() {
            finalizer::Error::AddFinalizer(kube::Error::Api(status))
            | finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) => {
                status.is_invalid() || status.is_conflict()
            }
            _ => false,
        }
    }

    fn innermost(&self) -> &Error {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(err) | finalizer::Error::CleanupFailed(err) => err.innermost(),
                _ => self,
            },
            _ => self,
        }
    }
}

/// The Tenant watch: a cache of every Tenant, and the stream of changes that trigger a
/// reconcile. Created by [`crate::run`] so the Baseline controller can count from the cache.
pub fn watch(
    client: &Client,
    mut recounts: crate::baseline::recount::Asks,
) -> (Store<Tenant>, impl futures::Stream<Item = Result<Tenant, watcher::Error>> + use<>) {
    let (store, writer) = reflector::store();
    // Paged (500 Tenants a page, read at the latest version) rather than `any_semantic`: the
    // API server answers "any version" from its cache in one response, which for a fleet of
    // thousands means holding every Tenant's JSON and its parsed copy at once on each start.
    let stream = watcher(Api::<Tenant>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        // The cache of a fleet of thousands holds what reconciles read, not the field history.
        .modify(|tenant: &mut Tenant| tenant.managed_fields_mut().clear())
        .reflect(writer)
        // The Baselines whose counts a change makes stale, once the cache holds it.
        .inspect(move |event| {
            if let Ok(event) = event {
                recounts.observe(event);
            }
        })
        .applied_objects()
        // Silo's own status writes change none of this, so they trigger nothing.
        .predicate_filter(changes, PredicateConfig::default().ttl(Duration::from_secs(7 * 24 * 3600)));
    (store, stream)
}

/// What a reconcile reacts to: the spec (generation), deletion, finalizers, and Silo's own
/// annotations (`silo.dev/...`, such as the verify annotation).
fn changes(tenant: &Tenant) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = tenant.meta();
    let annotations: BTreeMap<&String, &String> =
        tenant.annotations().iter().filter(|(k, _)| k.starts_with(GROUP)).collect();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (meta.generation, meta.deletion_timestamp.as_ref().map(|t| t.0.as_second()), &meta.finalizers, annotations)
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs the Tenant controller of one organization until `shutdown` completes; reconciles in
/// flight finish first. A Tenant is reconciled when it changes (see [`watch`]), and when it is
/// woken (`woken`: its Baseline's spec changed, a rollout admitted it, the organization freed
/// a creation slot for it).
pub async fn controller(
    ctx: Arc<Context>,
    tenants: Store<Tenant>,
    changes: impl futures::Stream<Item = Result<Tenant, watcher::Error>> + Send + 'static,
    woken: UnboundedReceiver<ObjectRef<Tenant>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let concurrency = ctx.config.concurrency;
    info!(concurrency, "starting the Tenant controller");
    Controller::for_stream(changes, tenants)
        .reconcile_on(woken)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // Normal weather, retried quietly by `error_policy`.
                Err(kube::runtime::controller::Error::ReconcilerFailed(err, obj))
                    if err.is_stale_finalizer_patch() || err.is_deferred() =>
                {
                    debug!(tenant = %obj.name, label = err.metric_label(), "{err}");
                }
                Err(kube::runtime::controller::Error::ReconcilerFailed(err, obj)) => {
                    info!(tenant = %obj.name, label = err.metric_label(), "{err}");
                }
                Err(err) => warn!(%err, "controller error"),
            }
        })
        .await;
}

/// Keeps `silo_tenants{phase}` and `silo_tenants_stalled{reason}` current, from the cache.
pub async fn publish_fleet(store: Store<Tenant>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    loop {
        ticker.tick().await;
        let mut phases: BTreeMap<&'static str, i64> = crate::metrics::PHASES.iter().map(|p| (*p, 0)).collect();
        let mut stalled: BTreeMap<String, i64> = BTreeMap::new();
        for tenant in store.state() {
            let status = tenant.status.clone().unwrap_or_default();
            let phase = if tenant.metadata.deletion_timestamp.is_some() {
                "Deleting"
            } else {
                crate::metrics::PHASES
                    .iter()
                    .find(|p| status.phase.as_deref() == Some(**p))
                    .copied()
                    .unwrap_or("Pending")
            };
            *phases.entry(phase).or_default() += 1;
            if let Some(c) = conditions::find(&status.conditions, conditions::STALLED).filter(|c| c.status == "True") {
                *stalled.entry(c.reason.clone()).or_default() += 1;
            }
        }
        for (phase, count) in phases {
            METRICS.tenants.get_or_create(&PhaseLabels { phase }).set(count);
        }
        METRICS.tenants_stalled.clear();
        for (reason, count) in stalled {
            METRICS.tenants_stalled.get_or_create(&ReasonLabels { reason }).set(count);
        }
    }
}

/// Reconciles one Tenant: adds the finalizer first, then applies or cleans up.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = Api::<Tenant>::all(ctx.client.clone());
    let name = tenant.name_any();
    let started = std::time::Instant::now();
    // Decisions read the Baseline and revision caches: never before their first listing (a
    // tenant judged against an empty cache would report its Baseline missing).
    for ready in &ctx.caches_ready {
        ready.wait().await?;
    }
    let result = finalizer::finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            FinalizerEvent::Apply(tenant) => apply(&tenant, &ctx).await,
            FinalizerEvent::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)));
    if result.is_ok() {
        ctx.failures.lock().expect("failures lock").remove(&name);
    }
    let label = result.as_ref().map_or_else(Error::metric_label, |_| "ok");
    METRICS.reconciled("tenant", label, started.elapsed().as_secs_f64());
    result
}

/// Retries a failed reconcile with jittered exponential backoff ([`RECONCILE_BACKOFF`]).
/// AWS throttling and faults are weather, not failures: nothing is shown to the user.
pub fn error_policy(tenant: Arc<Tenant>, err: &Error, ctx: Arc<Context>) -> Action {
    match err.innermost() {
        Error::DeletionPending { retry_after, .. } => {
            let retry_after = ctx.config.max_stalled_retry.map_or(*retry_after, |cap| cap.min(*retry_after));
            return Action::requeue(jittered(retry_after / 2).min(retry_after + Duration::from_secs(60)));
        }
        // A verification found AWS's budget busy with user work: it waits its turn, quietly.
        err if err.is_deferred() => return Action::requeue(jittered(Duration::from_secs(10))),
        // The finalizer patch tests the list of finalizers it read; read from a cache a moment
        // behind a write (a reconcile that started before the first one added it), the test
        // fails. The watch brings the newer object: try again soon, quietly.
        err if err.is_stale_finalizer_patch() => {
            debug!(tenant = %tenant.name_any(), error = %err, "finalizer patch on a stale copy; retrying");
            return Action::requeue(jittered(Duration::from_secs(1)));
        }
        _ => {}
    }
    let attempt = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let count = failures.entry(tenant.name_any()).or_default();
        *count = count.saturating_add(1);
        *count
    };
    let delay = RECONCILE_BACKOFF.pause(attempt);
    match err.innermost() {
        Error::Aws(aws) if aws.is_retryable() => {
            info!(tenant = %tenant.name_any(), error = %err, attempt, "AWS asked to slow down or failed transiently; retrying");
        }
        _ => warn!(tenant = %tenant.name_any(), error = %err, attempt, "reconcile failed; retrying"),
    }
    Action::requeue(delay)
}

/// How soon a Stalled step is looked at again by itself, in case the world changed (a person
/// fixed the cause); `--max-stalled-retry-seconds` shortens it. A step AWS refused too.
pub const RECHECK_STALLED: Duration = Duration::from_secs(600);

/// Brings the AWS side of one tenant in line with its spec.
async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let mut progress = Progress::new(tenant);
    let mut writer = StatusWriter::new(tenant, ctx.client.clone());
    let uid = tenant.uid().unwrap_or_default();

    if tenant.spec.paused {
        ctx.org.creations.leave(&uid);
        progress.paused = true;
        writer.write(&progress).await?;
        // Unpausing changes the spec, which triggers a reconcile.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let baseline_changed = bootstrap::baseline_changed(tenant, ctx);
    let mode = match schedule::mode(tenant, now, ctx.config.resync_period, baseline_changed) {
        Mode::Idle(wait) => return Ok(Action::requeue(wait)),
        mode => mode,
    };
    tracing::debug!(tenant = %tenant.name_any(), ?mode, baseline_changed, "reconciling");

    progress.start_steps();
    let identity = match identity::plan(tenant, &ctx.config.email_template) {
        Ok(identity) => identity,
        Err(stalled) => {
            progress.account = Some(stalled);
            return finish(tenant, mode, progress, writer, ctx).await;
        }
    };

    let step = AccountStep { tenant, identity: &identity, mode, ctx };
    progress.account = Some(surface(step.run(&mut progress, &mut writer).await)?);
    if progress.account.as_ref().is_some_and(StepOutcome::is_done) {
        let step = PlacementStep { tenant, mode, ctx };
        progress.placement = Some(surface(step.run(&mut progress).await)?);
    }
    if progress.placement.as_ref().is_some_and(StepOutcome::is_done) {
        let step = SettingsStep { tenant, mode, ctx };
        progress.settings = Some(surface(step.run(&mut progress, &mut writer).await)?);
    }
    if progress.settings.as_ref().is_some_and(StepOutcome::is_done) {
        let step = BaselineStep { tenant, mode, ctx };
        progress.baseline = Some(surface(step.run(&mut progress, &mut writer).await)?);
    }
    if let Some(done) = progress.baseline.clone().filter(StepOutcome::is_done)
        && progress.status.pool_stacks.is_some()
    {
        let removing = surface(pool_stacks::remove(tenant, ctx, &mut progress).await)?;
        progress.baseline = Some(if removing.is_done() { done } else { removing });
    }
    // Drift is looked for in stacks that are done; a check that cannot go on now (AWS busy
    // with user work) waits for the next look without holding up the status.
    if progress.baseline.as_ref().is_some_and(StepOutcome::is_done) {
        let step = BaselineStep { tenant, mode, ctx };
        progress.look_again = match step.check_drift(&mut progress).await {
            Ok(after) => after,
            Err(err) => {
                debug!(tenant = %tenant.name_any(), %err, "drift check deferred");
                // Started again at the next look, even if this reconcile was a verification
                // a person asked for and the next one would not be.
                if let Some(applied) = progress.status.baseline.as_mut() {
                    applied.drift.get_or_insert_with(Default::default).recheck = true;
                }
                Some(Duration::from_secs(30))
            }
        };
    }
    finish(tenant, mode, progress, writer, ctx).await
}

/// The end of the pipeline: records the verification, writes the status once, tells the
/// Baseline controller when this tenant's baseline changed, and says when to look again.
async fn finish(
    tenant: &Tenant,
    mode: Mode,
    mut progress: Progress,
    mut writer: StatusWriter,
    ctx: &Context,
) -> Result<Action, Error> {
    let now = Timestamp::now();
    let was_ready = tenant.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY));
    if let Some(requested) = schedule::requested_verification(tenant) {
        progress.status.verified_request = Some(requested);
    }
    // The first Ready (never verified before): how long it took from the Tenant's creation.
    let first_ready = progress.all_done() && tenant.status.as_ref().is_none_or(|s| s.last_verified_time.is_none());
    if first_ready && let Some(created) = &tenant.metadata.creation_timestamp {
        let path = match (&progress.status.claimed_from_pool, progress.status.adopted) {
            (Some(_), _) => "pool",
            (None, true) => "adopt",
            (None, false) => "create",
        };
        let seconds = now.duration_since(created.0).as_secs_f64().max(0.0);
        METRICS.tenant_ready_seconds.get_or_create(&crate::metrics::PathLabels { path }).observe(seconds);
    }
    // A tenant just brought in line, or verified, counts as verified now.
    if progress.all_done() && (matches!(mode, Mode::Verify(_)) || !was_ready) {
        progress.status.last_verified_time = Some(now.to_string());
    }
    // Each periodic verification reads the next part of the account (schedule::reads).
    if progress.all_done() && mode == Mode::Verify(Verification::Periodic) {
        progress.status.verification_count += 1;
    }
    writer.write(&progress).await?;
    let requeue = match progress.blocking().and_then(StepOutcome::look_again) {
        Some(after) if matches!(progress.blocking(), Some(StepOutcome::Stalled { .. })) => {
            ctx.config.max_stalled_retry.map_or(after, |cap| after.min(cap))
        }
        Some(after) => after,
        None => {
            let last = progress.status.last_verified_time.as_deref().and_then(|t| t.parse().ok()).unwrap_or(now);
            let due = schedule::next_verification(&tenant.uid().unwrap_or_default(), last, ctx.config.resync_period);
            let verify = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::from_secs(1));
            progress.look_again.map_or(verify, |sooner| sooner.min(verify))
        }
    };
    Ok(Action::requeue(requeue.max(Duration::from_millis(100))))
}

/// Sorts a step's error: a terminal AWS refusal becomes the step's `Stalled` outcome, so a
/// person sees AWS's words in the conditions; throttling, transient faults, a busy budget and
/// Kubernetes errors go on to the error policy and are retried quietly.
fn surface(result: Result<StepOutcome, Error>) -> Result<StepOutcome, Error> {
    match result {
        Err(Error::Aws(err)) if err.kind == AwsErrorKind::Terminal => Ok(StepOutcome::stalled(
            "AwsRequestRefused",
            format!(
                "AWS refused {} ({}): {}; fix the cause (often an IAM permission), Silo retries every 10 minutes",
                err.operation,
                err.code.as_deref().unwrap_or("no code"),
                err.message
            ),
            RECHECK_STALLED,
        )),
        other => other,
    }
}

/// Settles the AWS side of a deleted Tenant before its finalizer goes.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    ctx.org.creations.leave(&tenant.uid().unwrap_or_default());
    let deletion = match tenant.spec.deletion_policy {
        DeletionPolicy::Retain => closure::retain(tenant, ctx).await?,
        DeletionPolicy::Close if tenant.spec.paused => {
            // Paused means no AWS calls, deletion included.
            let mut progress = Progress::new(tenant);
            progress.phase = Some("Deleting");
            progress.paused = true;
            StatusWriter::new(tenant, ctx.client.clone()).write(&progress).await?;
            closure::Deletion::Wait { reason: "Paused".into(), retry_after: Duration::from_secs(3600) }
        }
        DeletionPolicy::Close => closure::close(tenant, ctx).await?,
    };
    match deletion {
        closure::Deletion::Finished => Ok(Action::await_change()),
        // kube-runtime's finalizer() removes the finalizer whenever cleanup returns Ok: a
        // deletion that waits keeps it by being an error, here and nowhere else.
        closure::Deletion::Wait { reason, retry_after } => Err(Error::DeletionPending { reason, retry_after }),
    }
}
