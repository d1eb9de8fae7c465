//! The Tenant controller.
//!
//! One reconcile of one Tenant is a pipeline of steps, each reporting a
//! [`StepOutcome`](crate::conditions::StepOutcome) that becomes a condition:
//!
//! 1. [`identity`]: fix the account name and email before any AWS call.
//! 2. [`account`]: create or adopt the account (`AccountReady`), and keep Silo's tags on it.
//! 3. [`placement`]: move it into the requested OU (`PlacementReady`).
//! 4. [`bootstrap`]: run the Baseline's stack in every region of the account (`BaselineReady`).
//! 5. [`status`]: derive `Ready`, `Reconciling`, `Stalled` and write the status once.
//!
//! A step runs only when the steps before it are done.
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
pub mod bootstrap;
pub mod closure;
pub mod identity;
pub mod placement;
pub mod status;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        finalizer::{self, Event as FinalizerEvent},
        reflector::ObjectRef,
        watcher,
    },
};
use rand::Rng;
use tracing::{info, warn};

use crate::{
    api::{Baseline, DeletionPolicy, Tenant},
    aws::{Aws, AwsError},
    conditions::StepOutcome,
    metrics::{METRICS, MilestoneLabels},
};

/// The finalizer that guards every Tenant until its AWS side is settled.
pub const FINALIZER: &str = "silo.dev/account";

/// The field manager of every write Silo makes.
pub const FIELD_MANAGER: &str = "silo";

/// How the controller behaves; set from `silo run` flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Email for tenants without `spec.email`; `{tenant}` is replaced by metadata.name.
    pub email_template: String,
    /// Create OUs named in a path that do not exist yet.
    pub create_missing_ous: bool,
    /// How often a Ready tenant is verified against AWS.
    pub resync_period: Duration,
    /// Tenants reconciled at once.
    pub concurrency: u16,
    /// Close accounts of deleted `Close` Tenants. Off by default: see [`closure`].
    pub allow_account_closure: bool,
    /// At most this many closures in any 24 hours.
    pub max_account_closures_per_day: u32,
    /// The controller's namespace, where the closure ledger lives.
    pub namespace: String,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub aws: Aws,
    pub settings: Settings,
    pub recorder: Recorder,
    pub closures: closure::ClosureLedger,
    /// CreateAccount requests this process saw in progress, and since when; AWS allows 5.
    pub creations: Mutex<HashMap<String, std::time::Instant>>,
    /// Requests of a shared account name that turned out to be other tenants'.
    pub foreign_requests: Mutex<HashSet<String>>,
    /// OU paths and ids already resolved, shared by the fleet (see `placement`).
    pub ous: Mutex<HashMap<String, String>>,
    /// Consecutive failed reconciles per Tenant, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, aws: Aws, settings: Settings) -> Self {
        let reporter = Reporter { controller: "silo".into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        let closures =
            closure::ClosureLedger::new(client.clone(), &settings.namespace, settings.max_account_closures_per_day);
        Self {
            client,
            aws,
            settings,
            recorder,
            closures,
            creations: Mutex::default(),
            foreign_requests: Mutex::default(),
            ous: Mutex::default(),
            failures: Mutex::default(),
        }
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
    DeletionPending { reason: &'static str, retry_after: Duration },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A short, stable label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Aws(err) if err.is_retryable() => "aws_retryable",
            Error::Aws(_) => "aws_terminal",
            Error::DeletionPending { .. } => "deletion_pending",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(err) | finalizer::Error::CleanupFailed(err) => err.metric_label(),
                _ => "finalizer",
            },
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

/// Runs the Tenant controller until `shutdown` completes; reconciles in flight finish first.
pub async fn run(
    client: Client,
    aws: Aws,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let tenants = Api::<Tenant>::all(client.clone());
    tenants.list(&Default::default()).await.map_err(|err| {
        anyhow::anyhow!("cannot list Tenants ({err}); are the CRDs installed (`silo crd | kubectl apply -f -`)?")
    })?;
    let concurrency = settings.concurrency;
    let ctx = Arc::new(Context::new(client.clone(), aws, settings));
    info!(concurrency, "starting the Tenant controller");
    let controller = Controller::new(tenants, watcher::Config::default().any_semantic());
    let store = controller.store();
    // A changed Baseline reconciles every Tenant that uses it.
    let uses = move |baseline: Baseline| {
        let name = baseline.name_any();
        store
            .state()
            .into_iter()
            .filter(|t| t.spec.baseline.as_ref().is_some_and(|b| b.name == name))
            .map(|t| ObjectRef::from_obj(t.as_ref()))
            .collect::<Vec<_>>()
    };
    controller
        .watches(Api::<Baseline>::all(client.clone()), watcher::Config::default().any_semantic(), uses)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                Err(kube::runtime::controller::Error::ReconcilerFailed(err, obj)) => {
                    info!(tenant = %obj.name, label = err.metric_label(), "{err}");
                }
                Err(err) => warn!(%err, "controller error"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

/// Reconciles one Tenant: adds the finalizer first, then applies or cleans up.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = Api::<Tenant>::all(ctx.client.clone());
    let name = tenant.name_any();
    let started = std::time::Instant::now();
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

/// Retries a failed reconcile with jittered exponential backoff (5 s doubling to 5 min).
/// AWS throttling and faults are weather, not failures: nothing is shown to the user.
pub fn error_policy(tenant: Arc<Tenant>, err: &Error, ctx: Arc<Context>) -> Action {
    if let Error::DeletionPending { retry_after, .. } = err.innermost() {
        return Action::requeue(jittered(*retry_after / 2).min(*retry_after + Duration::from_secs(60)));
    }
    let attempt = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let count = failures.entry(tenant.name_any()).or_default();
        *count = count.saturating_add(1);
        *count
    };
    let base = Duration::from_secs(5).saturating_mul(1 << attempt.min(6)) / 2;
    let delay = jittered(base).min(Duration::from_secs(300));
    match err.innermost() {
        Error::Aws(aws) if aws.is_retryable() => {
            info!(tenant = %tenant.name_any(), error = %err, attempt, "AWS asked to slow down or failed transiently; retrying");
        }
        _ => warn!(tenant = %tenant.name_any(), error = %err, attempt, "reconcile failed; retrying"),
    }
    Action::requeue(delay)
}

/// `base` stretched by a random factor in [1, 2), so a fleet retrying together spreads out.
pub fn jittered(base: Duration) -> Duration {
    base.mul_f64(1.0 + rand::rng().random::<f64>())
}

/// Brings the AWS side of one tenant in line with its spec.
async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let mut report = status::Report::new(tenant);

    if tenant.spec.paused {
        report.paused();
        report.write(ctx).await?;
        return Ok(Action::await_change());
    }

    let identity = match identity::plan(tenant, &ctx.settings.email_template) {
        Ok(identity) => identity,
        Err(stalled) => {
            report.account = stalled;
            report.write(ctx).await?;
            return Ok(Action::await_change());
        }
    };
    report.record_identity(&identity);
    // Until a step has run, it counts as not done: a write in the middle of a step (intent
    // before an AWS call) must never report Ready.
    report.fill_unreached();

    let mut next = match surface(account::run(tenant, &identity, &mut report, ctx).await)? {
        Ok(after) => after,
        Err(refused) => {
            report.account = refused;
            REFUSED_RETRY
        }
    };
    if report.account.is_done() {
        report.placement = Some(StepOutcome::in_progress("Placing", "Placing the account"));
        match surface(placement::run(tenant, &mut report, ctx).await)? {
            Ok(after) => next = next.min(after),
            Err(refused) => report.placement = Some(refused),
        }
    }
    if report.placement.as_ref().is_some_and(StepOutcome::is_done) {
        report.baseline = Some(StepOutcome::in_progress("ApplyingBaseline", "Applying the baseline"));
        match surface(bootstrap::run(tenant, &mut report, ctx).await)? {
            Ok(after) => next = next.min(after),
            Err(refused) => report.baseline = Some(refused),
        }
    }
    report.fill_unreached();
    report.write(ctx).await?;

    let requeue = if report.all_done() { jittered(ctx.settings.resync_period) } else { next };
    Ok(Action::requeue(requeue))
}

/// How soon a step AWS refused is tried again.
const REFUSED_RETRY: Duration = Duration::from_secs(600);

/// Sorts a step's error: a terminal AWS refusal becomes the step's `Stalled` outcome, so a
/// person sees AWS's words in the conditions; throttling, transient faults and Kubernetes
/// errors go on to the error policy and are retried quietly.
fn surface(result: Result<Duration, Error>) -> Result<Result<Duration, StepOutcome>, Error> {
    match result {
        Ok(after) => Ok(Ok(after)),
        Err(Error::Aws(err)) if !err.is_retryable() => Ok(Err(StepOutcome::stalled(
            "AwsRequestRefused",
            format!(
                "AWS refused {} ({}): {}; fix the cause (often an IAM permission), Silo retries every 10 minutes",
                err.operation,
                err.code.as_deref().unwrap_or("no code"),
                err.message
            ),
        ))),
        Err(other) => Err(other),
    }
}

/// Settles the AWS side of a deleted Tenant before its finalizer goes.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    match tenant.spec.deletion_policy {
        DeletionPolicy::Retain => {
            if let Some(account_id) = tenant.status.as_ref().and_then(|s| s.account_id.as_ref()) {
                ctx.event(tenant, EventType::Normal, "AccountRetained", format!("Account {account_id} is retained"))
                    .await;
            }
        }
        DeletionPolicy::Close if tenant.spec.paused => {
            // Paused means no AWS calls, deletion included.
            let mut report = status::Report::new(tenant);
            report.phase = Some("Deleting");
            report.paused();
            report.write(ctx).await?;
            return Err(Error::DeletionPending { reason: "Paused", retry_after: Duration::from_secs(3600) });
        }
        DeletionPolicy::Close => closure::close(tenant, ctx).await?,
    }
    Ok(Action::await_change())
}
