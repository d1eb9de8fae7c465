//! The Baseline controller: publishes each Baseline's revision and how many of its tenants
//! are current, in progress and failed. It changes nothing in AWS; tenants apply baselines.
//!
//! Counts come from the Tenant controller's watch cache, never from a LIST. A tenant whose
//! baseline state changed asks for a recount of its Baseline (debounced, so a rollout of
//! thousands of tenants collapses into a few recounts); a Baseline is also recounted every
//! few minutes.

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
    tenants: Store<Tenant>,
}

/// How often a Baseline is recounted without being asked.
const RECOUNT: Duration = Duration::from_secs(300);

/// Runs the Baseline controller until `shutdown` completes. `tenants` is the Tenant
/// controller's cache; `recounts` names Baselines whose tenants changed.
pub async fn run(
    client: Client,
    tenants: Store<Tenant>,
    recounts: UnboundedReceiver<ObjectRef<Baseline>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context { client: client.clone(), tenants });
    let (store, writer) = reflector::store();
    // Its own status writes do not trigger a recount: only spec changes and tenants do.
    let changes = watcher(Api::<Baseline>::all(client), watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    Controller::for_stream(changes, store)
        .reconcile_on(recounts)
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
    let tenants = ctx.tenants.state();
    let counts = count(baseline, &revision, tenants.iter().map(|t| t.as_ref()));

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
    Ok(Action::requeue(RECOUNT))
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
