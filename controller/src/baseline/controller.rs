//! The Baseline controller: publishes each Baseline's revision and how many of its tenants
//! are current, in progress and failed. It changes nothing in AWS; tenants apply baselines.
//!
//! Tenant changes re-trigger the Baseline they use (debounced, so a rollout of thousands of
//! tenants collapses into a few recounts).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use tracing::warn;

use crate::{
    api::{Baseline, Tenant, TenantCounts},
    baseline,
    conditions::{self, Conditions},
    metrics::METRICS,
    tenant::FIELD_MANAGER,
};

struct Context {
    client: Client,
}

/// Runs the Baseline controller until `shutdown` completes.
pub async fn run(client: Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let ctx = Arc::new(Context { client: client.clone() });
    Controller::new(Api::<Baseline>::all(client.clone()), watcher::Config::default().any_semantic())
        .watches(Api::<Tenant>::all(client), watcher::Config::default().any_semantic(), |tenant| {
            tenant.spec.baseline.as_ref().map(|b| ObjectRef::<Baseline>::new(&b.name))
        })
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, |_, _: &kube::Error, _| Action::requeue(Duration::from_secs(10)), ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!(%err, "baseline reconcile failed");
            }
        })
        .await;
}

async fn reconcile(baseline: Arc<Baseline>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let started = std::time::Instant::now();
    let result = publish(&baseline, &ctx).await;
    METRICS.reconciled("baseline", if result.is_ok() { "ok" } else { "kube" }, started.elapsed().as_secs_f64());
    result
}

/// Recounts the Baseline's tenants and writes its status if it changed.
async fn publish(baseline: &Baseline, ctx: &Context) -> Result<Action, kube::Error> {
    let name = baseline.name_any();
    let revision = baseline::revision(&baseline.spec);
    let tenants = Api::<Tenant>::all(ctx.client.clone()).list(&Default::default()).await?;
    let counts = count(baseline, &revision, tenants.items.iter());

    let mut status = baseline.status.clone().unwrap_or_default();
    status.revision = Some(revision.clone());
    status.observed_generation = baseline.metadata.generation;
    status.tenants = counts.clone();
    let message = format!(
        "Revision {revision}: {} tenants current, {} in progress, {} failed",
        counts.current, counts.in_progress, counts.failed
    );
    Conditions::new(&mut status.conditions, baseline.metadata.generation, Timestamp::now()).set(
        conditions::READY,
        counts.in_progress == 0 && counts.failed == 0,
        if counts.failed > 0 {
            "TenantsFailed"
        } else if counts.in_progress > 0 {
            "RollingOut"
        } else {
            "AllCurrent"
        },
        &message,
    );
    if baseline.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({"apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "status": status});
        Api::<Baseline>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    Ok(Action::requeue(Duration::from_secs(3600)))
}

/// Sorts the tenants that use `baseline` by where their stacks stand. Pure.
fn count<'t>(baseline: &Baseline, revision: &str, tenants: impl Iterator<Item = &'t Tenant>) -> TenantCounts {
    let name = baseline.name_any();
    let mut counts = TenantCounts::default();
    for tenant in tenants.filter(|t| t.spec.baseline.as_ref().is_some_and(|b| b.name == name)) {
        let status = tenant.status.clone().unwrap_or_default();
        let account = status.account_id.clone().unwrap_or_default();
        let overrides = &tenant.spec.baseline.as_ref().expect("filtered").parameters;
        let expected = baseline::resolve_parameters(&baseline.spec, overrides, &tenant.name_any(), &account)
            .map(|params| baseline::tenant_revision(revision, &params));
        let applied = status.baseline.as_ref().map(|b| b.revision.clone());
        let ready = conditions::is_true(&status.conditions, conditions::BASELINE_READY);
        match (expected, ready) {
            (Ok(expected), true) if applied.as_deref() == Some(expected.as_str()) => counts.current += 1,
            _ if conditions::find(&status.conditions, conditions::BASELINE_READY).is_some_and(|c| {
                c.status == "False" && conditions::is_true(&status.conditions, conditions::STALLED)
            }) =>
            {
                counts.failed += 1
            }
            (Err(_), _) => counts.failed += 1,
            _ => counts.in_progress += 1,
        }
    }
    counts
}
