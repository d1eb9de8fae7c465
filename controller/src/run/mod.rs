//! Wiring: how `silo run` puts the process together. Nothing here decides anything about a
//! tenant; it connects the parts, once, in one place.
//!
//! [`silo_run`] serves metrics and health, checks the install (preflight), builds the AWS
//! clients, waits for the leader Lease and hands its write fence to the AWS clients, then runs
//! [`controllers`] until a signal arrives or the Lease is lost.
//!
//! [`controllers`] builds what the controllers share and runs, side by side:
//! - the Tenant watch and the Baseline revision watch (one cache each, read by both
//!   controllers);
//! - the [`Organization`] (index, creation slots, Organizations budget), which wakes tenants;
//! - the Tenant controller ([`tenant::controller`]), the Baseline controller
//!   ([`baseline::controller::run`]) and the AccountPool controller
//!   ([`pool::controller::run`]);
//! - the fleet gauges ([`tenant::publish_fleet`]) and the orphan gauge
//!   ([`takeover::orphans::publish`]).
//!
//! Everything lives exactly as long as the Tenant controller: when it stops (shutdown, or a
//! lost Lease), the organization and the gauges stop with it.

pub mod router;

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::{
    Api, Client,
    runtime::{
        PredicateConfig, WatchStreamExt,
        events::{Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tracing::info;

use crate::{
    api::Baseline,
    aws::Aws,
    baseline, caches,
    config::{Config, RunArgs},
    leader::Leadership,
    metrics::{self, METRICS, Readiness},
    org::{OrgConfig, Organization},
    pool, preflight, takeover, telemetry,
    tenant::{self, Context, closure::ClosureLedger},
};

/// `silo run`: the controller process, until SIGTERM or SIGINT, or until the Lease is lost
/// (the pod then restarts as a clean follower).
pub async fn silo_run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let config = args.config()?;
    let aws_config = args.aws();
    let readiness = Readiness::default();
    let server = tokio::spawn(metrics::serve(args.metrics_address, readiness.clone()));
    let client = preflight::kube_client().await?;
    let role = aws_config.management_role_arn.as_deref();
    preflight::check(&client, &config.namespace, &args.lease_name, role).await?;
    let aws = Aws::from_env(&aws_config).await;
    readiness.set_ready();
    let result = if args.leader_election {
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("silo-{}", std::process::id()));
        let namespace = config.namespace.clone();
        let leadership = tokio::select! {
            leadership = Leadership::acquire(client.clone(), &namespace, &args.lease_name, &identity, args.lease_seconds) => leadership?,
            _ = shutdown_signal() => return Ok(()),
        };
        let aws = aws.fenced(leadership.fence());
        let stop = async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = leadership.lost() => {}
            }
        };
        controllers(client, aws, config, stop).await
    } else {
        METRICS.leader.set(1);
        controllers(client, aws, config, shutdown_signal()).await
    };
    METRICS.leader.set(0);
    server.abort();
    result
}

/// Completes on SIGINT or SIGTERM (what Kubernetes sends before killing a pod).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs the Tenant and Baseline controllers, and what they share, until `shutdown` completes;
/// reconciles in flight finish first.
pub async fn controllers(
    client: Client,
    aws: Aws,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let (recount, recounts) = futures::channel::mpsc::unbounded();
    let (tenants, tenant_changes) = tenant::watch(&client, baseline::recount::Asks::new(recount));
    let (revisions, revision_changes) = baseline::controller::watch_revisions(&client, &config.namespace);
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let (pools, pool_changes) = pool::controller::watch(&client);
    let pools_ready = caches::Ready::of(&pools);
    let (pool_wake, pools_woken) = futures::channel::mpsc::unbounded();
    let shared = baseline::controller::Shared {
        tenants_ready: caches::Ready::of(&tenants),
        revisions_ready: caches::Ready::of(&revisions),
        tenants: tenants.clone(),
        revisions,
        rollouts: Arc::default(),
        wake: wake.clone(),
    };
    let baselines = baseline::controller::run(
        client.clone(),
        aws.config.clone(),
        config.namespace.clone(),
        shared.clone(),
        recounts,
        shutdown.clone(),
    );

    let org = Arc::new(Organization::new(
        aws.organizations.clone(),
        OrgConfig { refresh_period: config.index_refresh_period, creation_slots: config.creation_slots },
        move |name| {
            let _ = wake.unbounded_send(ObjectRef::new(&name));
        },
    ));
    let (baseline_store, baseline_writer) = reflector::store();
    let baseline_changes = watcher(Api::<Baseline>::all(client.clone()), watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(baseline_writer)
        .applied_objects()
        // A Baseline's status writes change no stack: only its spec matters to tenants.
        .predicate_filter(predicates::generation, PredicateConfig::default());
    let orphans = takeover::orphans::publish(
        org.clone(),
        tenants.clone(),
        shared.tenants_ready.clone(),
        pools.clone(),
        pools_ready.clone(),
        config.tenant_ou_roots.clone(),
    );
    let reporter = Reporter { controller: "silo".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        closures: ClosureLedger::new(client.clone(), &config.namespace, config.max_account_closures_per_day),
        client,
        aws,
        org: org.clone(),
        caches_ready: [caches::Ready::of(&baseline_store), shared.revisions_ready.clone()],
        baselines: baseline_store,
        revisions: shared.revisions.clone(),
        rollouts: shared.rollouts.clone(),
        tenants: tenants.clone(),
        tenants_ready: shared.tenants_ready.clone(),
        pools_ready,
        pools: pools.clone(),
        pool_wake,
        config: config.clone(),
        failures: Default::default(),
    });
    let pool_controller = pool::controller::run(
        Arc::new(pool::controller::Context {
            baselines: pool::bootstrap::Sources {
                client: ctx.client.clone(),
                aws: ctx.aws.clone(),
                baselines: ctx.baselines.clone(),
                revisions: ctx.revisions.clone(),
                caches_ready: ctx.caches_ready.clone(),
                rollouts: ctx.rollouts.clone(),
                namespace: ctx.config.namespace.clone(),
                external_id_namespace: ctx.config.external_id_namespace.clone(),
            },
            client: ctx.client.clone(),
            org: org.clone(),
            tenants: tenants.clone(),
            tenants_ready: shared.tenants_ready.clone(),
            config,
        }),
        pools,
        pool_changes,
        pools_woken,
        shutdown.clone(),
    );
    let tenant_controller = {
        let shutdown = shutdown.clone();
        let tenants = tenants.clone();
        async move {
            tenant::controller(ctx, tenants, tenant_changes, baseline_changes, woken, shutdown).await;
            info!("controller stopped");
        }
    };
    // The organization and the gauges live exactly as long as the Tenant controller.
    let tenants_and_org = async {
        tokio::select! {
            () = tenant_controller => {}
            () = org.run() => {}
            () = tenant::publish_fleet(tenants.clone()) => {}
            () = orphans => {}
            () = pool_controller => {}
        }
    };
    // The revision cache stays current while the stream is polled.
    let revisions = revision_changes.take_until(shutdown).for_each(|()| async {});
    tokio::join!(tenants_and_org, baselines, revisions);
    Ok(())
}
