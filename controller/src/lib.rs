//! Silo: a Kubernetes operator that gives every tenant its own AWS account.
//!
//! Where things live:
//! - [`api`]: the `Tenant` resource, its validation rules and the CRD generator.
//! - [`tenant`]: the Tenant controller, a pipeline of steps (account -> placement ->
//!   baseline -> status); [`tenant::account`] is where an account is created or adopted.
//! - [`aws`]: the one client layer every AWS call goes through, one request budget per
//!   service, and the classification of AWS errors into throttled, transient and terminal.
//! - [`org`]: the one owner of the organization's quotas: the Organizations budget, the
//!   creation slots and the organization index.
//! - [`baseline`]: the Baseline API's logic: revisions, parameters, the stack state machine,
//!   and the Baseline controller.
//! - [`conditions`]: kstatus-style conditions that keep their transition times.
//! - [`takeover`]: taking over an existing organization: `silo import`, `silo orphans`, and
//!   the controller's orphan gauge.

pub mod api;
pub mod aws;
pub mod baseline;
pub mod caches;
pub mod conditions;
pub mod leader;
pub mod metrics;
pub mod org;
pub mod preflight;
pub mod takeover;
pub mod telemetry;
pub mod tenant;

pub use api::{Baseline, Tenant, TenantSpec, TenantStatus};

use futures::FutureExt;

/// Runs the Tenant and Baseline controllers until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    aws: aws::Aws,
    settings: tenant::Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let shutdown = shutdown.shared();
    let (tenants, tenant_changes) = tenant::watch(&client);
    let (revisions, revision_changes) = baseline::controller::watch_revisions(&client, &settings.namespace);
    let (recount, recounts) = futures::channel::mpsc::unbounded();
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let shared = baseline::controller::Shared {
        tenants_ready: caches::Ready::of(&tenants),
        revisions_ready: caches::Ready::of(&revisions),
        tenants,
        revisions,
        rollouts: std::sync::Arc::default(),
        wake,
    };
    let baselines = baseline::controller::run(
        client.clone(),
        aws.config.clone(),
        settings.namespace.clone(),
        shared.clone(),
        recounts,
        shutdown.clone(),
    );
    let tenants = tenant::run(client, aws, settings, shared, tenant_changes, (recount, woken), shutdown.clone());
    // The revision cache stays current while the stream is polled.
    let revisions = revision_changes.take_until(shutdown).for_each(|()| async {});
    let (result, (), ()) = tokio::join!(tenants, baselines, revisions);
    result
}
