//! Wiring: how `silo run` puts the process together. Nothing here decides anything about a
//! tenant; it connects the parts, once, in one place.
//!
//! [`silo_run`] serves metrics and health, checks the install (preflight), builds the AWS
//! clients, waits for the leader Lease and hands its write fence to the AWS clients, then runs
//! [`controllers`] until a signal arrives or the Lease is lost.
//!
//! [`controllers`] builds what every organization shares and runs, side by side:
//! - the Tenant watch and the Baseline revision watch (one cache each, read by every
//!   controller), the Baseline controller ([`baseline::controller::run`]), which counts every
//!   Tenant, and the fleet gauges ([`tenant::publish_fleet`]);
//! - the [`router`], which sends each Tenant's changes and wakes (a rollout admitted it, its
//!   Baseline's spec changed, its organization freed a creation slot) to the controllers of
//!   its organization only;
//! - [`organization`] for the default organization: the [`Organization`] (index, creation
//!   slots, Organizations budget), the Tenant controller ([`tenant::controller`]), the
//!   AccountPool controller ([`pool::controller::run`]) and the orphan gauge
//!   ([`takeover::orphans::publish`]); the same for each Organization object
//!   ([`organizations`]), and Tenants of an organization nobody serves are reported.
//!
//! An organization's parts live exactly as long as its Tenant controller: when it stops
//! (shutdown, or a lost Lease), its engine and gauges stop with it.

mod organizations;
pub mod router;

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        PredicateConfig, WatchStreamExt,
        events::{Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    api::Baseline,
    aws::{Aws, AwsConfig, Fence},
    baseline, caches,
    config::{Config, RunArgs},
    leader::Leadership,
    metrics::{self, METRICS, Readiness},
    org::{OrgConfig, Organization},
    pool, preflight,
    run::router::{Feed, Router},
    takeover, telemetry,
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
    let base = Aws::env_config().await;
    readiness.set_ready();
    let result = if args.leader_election {
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("silo-{}", std::process::id()));
        let namespace = config.namespace.clone();
        let leadership = tokio::select! {
            leadership = Leadership::acquire(client.clone(), &namespace, &args.lease_name, &identity, args.lease_seconds) => leadership?,
            _ = shutdown_signal() => return Ok(()),
        };
        let source = AwsSource { base, fence: leadership.fence() };
        let stop = async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = leadership.lost() => {}
            }
        };
        controllers(client, source, aws_config, config, stop).await
    } else {
        METRICS.leader.set(1);
        controllers(client, AwsSource { base, fence: Fence::open() }, aws_config, config, shutdown_signal()).await
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

/// Where every organization's AWS clients come from: the controller's own configuration, and
/// the write fence of its Lease.
pub struct AwsSource {
    pub base: aws_config::SdkConfig,
    pub fence: Fence,
}

impl AwsSource {
    /// The clients of the organization `aws` describes.
    pub async fn clients(&self, aws: &AwsConfig) -> Aws {
        Aws::from_base(&self.base, aws).await.fenced(self.fence.clone())
    }
}

/// Runs the Tenant and Baseline controllers, and what they share, until `shutdown` completes;
/// reconciles in flight finish first. `aws` and `config`: the default organization's, which
/// the Organization objects' take where their specs say nothing.
pub async fn controllers(
    client: Client,
    source: AwsSource,
    aws_config: AwsConfig,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let aws = source.clients(&aws_config).await;
    // What every organization shares: the Tenant, Baseline and revision caches, and the
    // Baseline controller, which counts every Tenant.
    let (recount, recounts) = futures::channel::mpsc::unbounded();
    let (tenants, tenant_changes) = tenant::watch(&client, baseline::recount::Asks::new(recount));
    let router = Router::new(tenants.clone());
    let (revisions, revision_changes) = baseline::controller::watch_revisions(&client, &config.namespace);
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let (baseline_store, baseline_writer) = reflector::store();
    let baseline_changes = watcher(Api::<Baseline>::all(client.clone()), watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(baseline_writer)
        .applied_objects()
        // A Baseline's status writes change no stack: only its spec matters to tenants.
        .predicate_filter(predicates::generation, PredicateConfig::default());
    let shared = baseline::controller::Shared {
        tenants_ready: caches::Ready::of(&tenants),
        revisions_ready: caches::Ready::of(&revisions),
        tenants: tenants.clone(),
        revisions,
        rollouts: Arc::default(),
        wake,
    };
    let baselines = baseline::controller::run(
        client.clone(),
        aws.config.clone(),
        config.namespace.clone(),
        shared.clone(),
        recounts,
        shutdown.clone(),
    );

    // Each Tenant's changes, the rollout's wakes and its Baseline's spec changes reach the
    // controllers of its organization only.
    let route_changes = tenant_changes.take_until(shutdown.clone()).for_each(|change| {
        match change {
            Ok(tenant) => router.changed(tenant),
            Err(err) => warn!(%err, "the Tenant watch failed; it retries"),
        }
        futures::future::ready(())
    });
    let route_wakes = woken.take_until(shutdown.clone()).for_each(|tenant| {
        router.wake(tenant);
        futures::future::ready(())
    });
    let route_baselines = baseline_changes.take_until(shutdown.clone()).for_each(|change| {
        if let Ok(baseline) = change {
            let name = baseline.name_any();
            let users =
                tenants.state().into_iter().filter(|t| t.spec.baseline.as_ref().is_some_and(|b| b.name == name));
            for user in users {
                router.wake(ObjectRef::from_obj(user.as_ref()));
            }
        }
        futures::future::ready(())
    });
    let shared = Arc::new(Shared { baselines: baseline_store, baseline: shared, router: router.clone() });

    // The default organization, the one the flags describe, and every Organization object.
    let default_engine = engine(&aws, &config, router.clone());
    let feed = router.serve("");
    let default =
        organization(client.clone(), aws, config.clone(), shared.clone(), feed, default_engine, shutdown.clone());
    let others = organizations::serve(client.clone(), source, config, aws_config, shared, shutdown.clone());
    let unserved = organizations::report_unserved(client, router.clone(), shutdown.clone());
    // The fleet gauges count every organization's Tenants, once.
    let fleet = {
        let shutdown = shutdown.clone();
        let tenants = tenants.clone();
        async move {
            tokio::select! {
                () = tenant::publish_fleet(tenants) => {}
                () = shutdown => {}
            }
        }
    };
    // The revision cache stays current while the stream is polled.
    let revisions = revision_changes.take_until(shutdown).for_each(|()| async {});
    tokio::join!(default, others, unserved, fleet, baselines, revisions, route_changes, route_wakes, route_baselines);
    Ok(())
}

/// The engine of one organization (index, creation slots, Organizations budget), which wakes
/// its Tenants through the router.
fn engine(aws: &Aws, config: &Config, router: Arc<Router>) -> Arc<Organization> {
    Arc::new(Organization::new(
        aws.organizations.clone(),
        OrgConfig {
            refresh_period: config.index_refresh_period,
            creation_slots: config.creation_slots,
            label: crate::metrics::OrganizationLabels::of(config.organization.as_deref()),
        },
        move |name| router.wake(ObjectRef::new(&name)),
    ))
}

/// What the controllers of every organization share.
struct Shared {
    baselines: Store<Baseline>,
    baseline: baseline::controller::Shared,
    router: Arc<Router>,
}

/// Runs the controllers of one organization (its engine, Tenants, AccountPools and gauges)
/// until `shutdown` completes.
async fn organization(
    client: Client,
    aws: Aws,
    config: Config,
    shared: Arc<Shared>,
    feed: Feed,
    org: Arc<Organization>,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let tenants = shared.baseline.tenants.clone();
    let (pools, pool_changes) = pool::controller::watch(&client, config.organization.as_deref().unwrap_or(""));
    let pools_ready = caches::Ready::of(&pools);
    let (pool_wake, pools_woken) = futures::channel::mpsc::unbounded();
    let orphans = takeover::orphans::publish(
        org.clone(),
        tenants.clone(),
        shared.baseline.tenants_ready.clone(),
        pools.clone(),
        pools_ready.clone(),
        config.tenant_ou_roots.clone(),
    );
    let reporter = Reporter { controller: "silo".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        closures: ClosureLedger::new(
            client.clone(),
            &config.namespace,
            config.organization.as_deref(),
            config.max_account_closures_per_day,
        ),
        client,
        aws,
        org: org.clone(),
        caches_ready: [caches::Ready::of(&shared.baselines), shared.baseline.revisions_ready.clone()],
        baselines: shared.baselines.clone(),
        revisions: shared.baseline.revisions.clone(),
        rollouts: shared.baseline.rollouts.clone(),
        tenants: tenants.clone(),
        tenants_ready: shared.baseline.tenants_ready.clone(),
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
            tenants_ready: shared.baseline.tenants_ready.clone(),
            config,
        }),
        pools,
        pool_changes,
        pools_woken,
        shutdown.clone(),
    );
    let tenant_controller = {
        let tenants = tenants.clone();
        let changes = feed.changes.map(Ok);
        async move {
            tenant::controller(ctx, tenants, changes, feed.wakes, shutdown).await;
            info!("controller stopped");
        }
    };
    // The organization and the gauges live exactly as long as the Tenant controller.
    tokio::select! {
        () = tenant_controller => {}
        () = org.run() => {}
        () = orphans => {}
        () = pool_controller => {}
    }
}
