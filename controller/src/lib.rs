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

pub mod api;
pub mod aws;
pub mod baseline;
pub mod conditions;
pub mod leader;
pub mod metrics;
pub mod org;
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
    let shutdown = shutdown.shared();
    let (store, changes) = tenant::watch(&client);
    let (recount, recounts) = futures::channel::mpsc::unbounded();
    let baselines = baseline::controller::run(client.clone(), store.clone(), recounts, shutdown.clone());
    let tenants = tenant::run(client, aws, settings, (store, changes), recount, shutdown);
    let (result, ()) = tokio::join!(tenants, baselines);
    result
}
