//! The Tenant controller.
//!
//! One reconcile of one Tenant is a pipeline of steps, each reporting a
//! [`StepOutcome`](crate::conditions::StepOutcome) that becomes a condition:
//!
//! 1. [`identity`]: fix the account name and email before any AWS call.
//! 2. [`account`]: create or adopt the account (`AccountReady`), and keep Silo's tags on it.
//! 3. [`placement`]: move it into the requested OU (`PlacementReady`).
//! 4. baseline: bootstrap the baseline stack (`BaselineReady`).
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
pub mod identity;
pub mod placement;
pub mod status;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        finalizer::{self, Event as FinalizerEvent},
        watcher,
    },
};
use rand::Rng;
use tracing::{info, warn};

use crate::{
    api::{DeletionPolicy, Tenant},
    aws::{Aws, AwsError},
    conditions::StepOutcome,
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
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub aws: Aws,
    pub settings: Settings,
    pub recorder: Recorder,
}

impl Context {
    pub fn new(client: Client, aws: Aws, settings: Settings) -> Self {
        let reporter = Reporter { controller: "silo".into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, aws, settings, recorder }
    }

    /// Publishes a Kubernetes Event about a tenant; failures are logged, never fatal.
    pub async fn event(&self, tenant: &Tenant, type_: EventType, reason: &str, note: String) {
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
    /// Deletion waits for a person; the Stalled condition says what to do.
    #[error("deletion of tenant is blocked: {0}")]
    DeletionBlocked(String),
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
            Error::DeletionBlocked(_) => "deletion_blocked",
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
    let ctx = Arc::new(Context::new(client, aws, settings));
    info!(concurrency, "starting the Tenant controller");
    Controller::new(tenants, watcher::Config::default().any_semantic())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!(%err, "reconcile failed");
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

/// Reconciles one Tenant: adds the finalizer first, then applies or cleans up.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = Api::<Tenant>::all(ctx.client.clone());
    finalizer::finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            FinalizerEvent::Apply(tenant) => apply(&tenant, &ctx).await,
            FinalizerEvent::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)))
}

/// Retries a failed reconcile. AWS throttling and faults are weather, not failures: the
/// tenant is retried after a jittered delay and nothing is shown to the user.
pub fn error_policy(tenant: Arc<Tenant>, err: &Error, _ctx: Arc<Context>) -> Action {
    let base = match err.innermost() {
        Error::Aws(aws) if aws.is_retryable() => Duration::from_secs(5),
        Error::DeletionBlocked(_) => Duration::from_secs(300),
        Error::Aws(_) => Duration::from_secs(60),
        _ => Duration::from_secs(5),
    };
    warn!(tenant = %tenant.name_any(), error = %err, label = err.metric_label(), "reconcile failed, retrying");
    Action::requeue(jittered(base))
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

    let mut next = account::run(tenant, &identity, &mut report, ctx).await?;
    if report.account.is_done() {
        next = next.min(placement::run(tenant, &mut report, ctx).await?);
    }
    if report.placement.as_ref().is_some_and(StepOutcome::is_done) {
        report.baseline = Some(baseline_outcome(tenant));
    }
    report.fill_unreached();
    report.write(ctx).await?;

    let requeue = if report.all_done() { jittered(ctx.settings.resync_period) } else { next };
    Ok(Action::requeue(requeue))
}

/// Baselines are bootstrapped by a later version of Silo; until then a Tenant that asks for
/// one says so plainly instead of pretending.
fn baseline_outcome(tenant: &Tenant) -> StepOutcome {
    match &tenant.spec.baseline {
        None => StepOutcome::done("NoBaseline", "No baseline requested"),
        Some(baseline) => StepOutcome::stalled(
            "BaselinesNotSupported",
            format!(
                "This version of Silo cannot bootstrap baselines yet; remove spec.baseline ({}) or upgrade Silo",
                baseline.name
            ),
        ),
    }
}

/// Settles the AWS side of a deleted Tenant before its finalizer goes.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let status = tenant.status.clone().unwrap_or_default();
    let touched_aws = status.account_id.is_some() || status.create_account_request_id.is_some();
    match tenant.spec.deletion_policy {
        DeletionPolicy::Retain => {
            if let Some(account_id) = &status.account_id {
                ctx.event(tenant, EventType::Normal, "AccountRetained", format!("Account {account_id} is retained"))
                    .await;
            }
            Ok(Action::await_change())
        }
        DeletionPolicy::Close if !touched_aws => Ok(Action::await_change()),
        DeletionPolicy::Close => {
            let message = "deletionPolicy is Close, and this version of Silo does not close accounts: \
                           set spec.deletionPolicy to Retain to let the Tenant go and close the account by hand";
            let mut report = status::Report::new(tenant);
            report.account = StepOutcome::stalled("AccountClosureDisabled", message);
            report.phase = Some("Deleting");
            report.write(ctx).await?;
            Err(Error::DeletionBlocked(message.into()))
        }
    }
}
