//! Wiring: how `silo run` puts the process together. Nothing here decides anything about a
//! tenant; it connects the parts, once, in one place.
//!
//! [`silo_run`] serves metrics and health, checks the install (preflight), builds the AWS
//! configuration, then runs [`controllers`] until a signal arrives or the main Lease is lost.
//!
//! [`controllers`] builds what every replica keeps, and runs, side by side:
//! - the Tenant, Baseline and revision watches (one cache each, read by every controller);
//! - the [`router`], which sends each Tenant's changes and wakes (a rollout admitted it, its
//!   Baseline's spec changed, its organization freed a creation slot) to the controllers of
//!   its organization only, if this replica leads it;
//! - [`main`], once this replica holds the main Lease (`--lease-name`): the Baseline
//!   controller ([`baseline::controller::run`]), which counts every Tenant, the fleet gauges
//!   ([`tenant::publish_fleet`]), the report of Tenants of missing organizations, and
//!   [`organization`] for the default organization: the [`Organization`] engine (index,
//!   creation slots, Organizations budget), the Tenant controller ([`tenant::controller`]),
//!   the AccountPool controller ([`pool::controller::run`]) and the orphan gauge
//!   ([`takeover::orphans::publish`]);
//! - [`organizations::serve`]: the same [`organization`] for each Organization object this
//!   replica leads, each behind its own Lease, up to its fair share
//!   ([`crate::leader::share`]).
//!
//! An organization's parts live exactly as long as its Tenant controller: when it stops
//! (shutdown, a hand-over, or a lost Lease), its engine and gauges stop with it.

mod organizations;
pub mod router;

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    api::{Baseline, Tenant},
    aws::{Aws, AwsConfig, Fence},
    baseline, caches,
    config::{Config, RunArgs},
    leader::Leadership,
    metrics::{self, METRICS, Readiness},
    org::{OrgConfig, Organization, neighbours::Neighbours},
    pool, preflight,
    run::router::{Feed, Router},
    takeover, telemetry,
    tenant::{self, Context, closure::ClosureLedger},
};

/// `silo run`: the controller process, until SIGTERM or SIGINT, or until the main Lease is
/// lost (the pod then restarts as a clean follower).
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
    let leases = args.leader_election.then(|| Leases {
        namespace: config.namespace.clone(),
        identity: crate::config::replica_identity(),
        main: args.lease_name.clone(),
        seconds: args.lease_seconds,
    });
    let result = controllers(client, AwsSource { base }, aws_config, config, leases, shutdown_signal()).await;
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

/// Where every organization's AWS clients come from: the controller's own configuration.
#[derive(Clone)]
pub struct AwsSource {
    pub base: aws_config::SdkConfig,
}

impl AwsSource {
    /// The clients of the organization `aws` describes, writing only while `fence` allows.
    pub async fn clients(&self, aws: &AwsConfig, fence: Fence) -> Aws {
        Aws::from_base(&self.base, aws).await.fenced(fence)
    }
}

/// How replicas share the work: the Leases, in `namespace`, that say which replica leads
/// what. Without them (`--leader-election false`), this process leads everything, alone.
#[derive(Clone)]
pub struct Leases {
    pub namespace: String,
    pub identity: String,
    /// The main Lease (`--lease-name`): the Baseline controller and the default organization.
    pub main: String,
    pub seconds: u64,
}

/// Runs the controllers, and what they share, until `shutdown` completes (or the main Lease
/// is lost); reconciles in flight finish first. `aws` and `config`: the default
/// organization's, which the Organization objects' take where their specs say nothing.
///
/// Every replica keeps the caches and leads its share of the Organization objects
/// ([`organizations::serve`]); the one holding the main Lease also runs the Baseline
/// controller, the default organization and the fleet-wide reports ([`main`]).
pub async fn controllers(
    client: Client,
    source: AwsSource,
    aws_config: AwsConfig,
    config: Config,
    leases: Option<Leases>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    // Losing the main Lease stops everything: the pod restarts as a clean follower.
    let (main_lost, main_lost_rx) = futures::channel::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            _ = main_lost_rx => {}
        }
    }
    .shared();
    // What every organization shares: the Tenant, Baseline and revision caches.
    let (recount, recounts) = futures::channel::mpsc::unbounded();
    let roster = baseline::recount::Roster::default();
    let (tenants, tenant_changes) = tenant::watch(&client, baseline::recount::Asks::new(recount, roster.clone()));
    let router = Router::new(tenants.clone());
    let (revisions, revision_changes) = baseline::controller::watch_revisions(&client, &config.namespace);
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let (baseline_store, baseline_writer) = reflector::store();
    let baseline_changes = watcher(Api::<Baseline>::all(client.clone()), watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(baseline_writer)
        .applied_objects();
    let shared = Arc::new(Shared {
        baselines: baseline_store,
        baseline: baseline::controller::Shared {
            tenants_ready: caches::Ready::of(&tenants),
            revisions_ready: caches::Ready::of(&revisions),
            tenants: tenants.clone(),
            roster,
            revisions,
            rollouts: Arc::default(),
            wake,
        },
        router: router.clone(),
        neighbours: Arc::default(),
    });
    let default_read_only = source.clients(&aws_config, Fence::closed()).await;
    shared.neighbours.set("", default_read_only.organizations);
    let (leads_default, leading_default) = tokio::sync::watch::channel(false);

    // Each Tenant's changes, the rollout's wakes and its Baseline's changes reach the
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
    let route_baselines = {
        let mut seen = BaselinesSeen::default();
        let leading_default = leading_default.clone();
        let router = router.clone();
        baseline_changes.take_until(shutdown.clone()).for_each(move |change| {
            if let Ok(baseline) = change {
                let woken = seen.wakes(&baseline, &tenants, *leading_default.borrow());
                for tenant in woken {
                    router.wake(tenant);
                }
            }
            futures::future::ready(())
        })
    };

    // Boxed, as every organization's parts are: their futures are large, and a debug build
    // moves them on the stack as they are built.
    let main = Box::pin(main(
        client.clone(),
        &source,
        aws_config.clone(),
        config.clone(),
        leases.clone(),
        shared.clone(),
        recounts,
        leads_default,
        shutdown.clone(),
    ));
    let main = async move {
        if let Err(err) = main.await {
            warn!(err = format!("{err:#}"), "the main Lease cannot be taken");
        }
        // Lost, failed or shut down: everything stops.
        let _ = main_lost.send(());
    };
    let others =
        organizations::serve(client, &source, config, aws_config, shared, leases, leading_default, shutdown.clone());
    // The revision cache stays current while the stream is polled.
    let revisions = revision_changes.take_until(shutdown).for_each(|()| async {});
    tokio::join!(main, others, revisions, route_changes, route_wakes, route_baselines);
    Ok(())
}

/// What the holder of the main Lease runs: the Baseline controller (it counts every
/// organization's Tenants), the default organization, the fleet gauges and the report of
/// Tenants whose organization does not exist. Waits for the Lease first; returns when it is
/// lost or at shutdown.
#[allow(clippy::too_many_arguments)]
async fn main(
    client: Client,
    source: &AwsSource,
    aws_config: AwsConfig,
    config: Config,
    leases: Option<Leases>,
    shared: Arc<Shared>,
    mut recounts: futures::channel::mpsc::UnboundedReceiver<baseline::recount::Ask>,
    leads_default: tokio::sync::watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let mut leadership = match &leases {
        None => None,
        Some(l) => {
            let acquire = Leadership::acquire(client.clone(), &l.namespace, &l.main, &l.identity, l.seconds);
            // Until then, nobody here counts: the asks are dropped (the Baseline controller
            // counts every Baseline when it starts).
            let drop_asks = async { while recounts.next().await.is_some() {} };
            tokio::select! {
                leadership = acquire => Some(leadership?),
                () = shutdown.clone() => return Ok(()),
                () = drop_asks => return Ok(()),
            }
        }
    };
    METRICS.leader.set(1);
    let _ = leads_default.send(true);
    let fence = leadership.as_ref().map_or_else(Fence::open, Leadership::fence);
    let aws = source.clients(&aws_config, fence).await;
    let (lost, lost_rx) = futures::channel::oneshot::channel::<()>();
    let until = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                _ = lost_rx => {}
            }
        }
        .shared()
    };
    let baselines = Box::pin(baseline::controller::run(
        client.clone(),
        aws.config.clone(),
        config.namespace.clone(),
        shared.baseline.clone(),
        recounts,
        until.clone(),
    ));
    let default_engine = engine(&aws, &config, shared.router.clone());
    let feed = shared.router.serve("");
    let labels = metrics::OrganizationLabels::of(None);
    METRICS.organization_leader.get_or_create(&labels).set(1);
    let default =
        Box::pin(organization(client.clone(), aws, config, shared.clone(), feed, default_engine, until.clone()));
    let unserved = organizations::report_unserved(client, shared.router.clone(), until.clone());
    // The fleet gauges count every organization's Tenants, once.
    let fleet = {
        let until = until.clone();
        let tenants = shared.baseline.tenants.clone();
        async move {
            tokio::select! {
                () = tenant::publish_fleet(tenants) => {}
                () = until => {}
            }
        }
    };
    let parts = async { tokio::join!(default, unserved, fleet, baselines) };
    let lease = async {
        match leadership.as_mut() {
            Some(leadership) => leadership.lost().await,
            None => std::future::pending().await,
        }
        let _ = lost.send(());
    };
    // A lost Lease stops the parts (through `until`); they finish either way.
    let mut parts = std::pin::pin!(parts);
    tokio::select! {
        _ = &mut parts => {}
        () = lease => { parts.await; }
    }
    METRICS.organization_leader.get_or_create(&labels).set(0);
    METRICS.leader.set(0);
    let _ = leads_default.send(false);
    shared.router.stop("");
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    Ok(())
}

/// What the Baseline watch last showed of each Baseline, to wake only the Tenants a change
/// concerns.
#[derive(Default)]
struct BaselinesSeen(std::collections::HashMap<String, (Option<i64>, Option<crate::api::RolloutStatus>)>);

impl BaselinesSeen {
    /// The Tenants to wake for this version of `baseline`: all its Tenants when its spec
    /// changed; when only its rollout moved, those it now sends elsewhere, unless this process
    /// leads the rollout itself (`leads_rollouts`: its Baseline controller wakes them).
    fn wakes(&mut self, baseline: &Baseline, tenants: &Store<Tenant>, leads_rollouts: bool) -> Vec<ObjectRef<Tenant>> {
        let name = baseline.name_any();
        let rollout = baseline.status.as_ref().and_then(|s| s.rollout.clone());
        let before = self.0.insert(name.clone(), (baseline.metadata.generation, rollout.clone()));
        let (spec_changed, rollout_changed) = match &before {
            None => (true, false),
            Some((generation, seen)) => (*generation != baseline.metadata.generation, *seen != rollout),
        };
        let moved = rollout.as_ref().filter(|_| rollout_changed && !leads_rollouts);
        if !spec_changed && moved.is_none() {
            // Most events are the Baseline's counts changing: no Tenant is read for them.
            return vec![];
        }
        let users = tenants.state().into_iter().filter(|t| t.spec.baseline.as_ref().is_some_and(|b| b.name == name));
        let woken: Vec<Arc<Tenant>> = match moved {
            Some(rollout) if !spec_changed => {
                users.filter(|t| tenant::bootstrap::rollout_moves(t, &name, rollout)).collect()
            }
            _ => users.collect(),
        };
        woken.iter().map(|t| ObjectRef::from_obj(t.as_ref())).collect()
    }
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
    /// Every organization's Organizations API, read-only: who has an account.
    neighbours: Arc<Neighbours>,
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
    let label = metrics::OrganizationLabels::of(config.organization.as_deref()).organization;
    let (pools, pool_changes) = pool::controller::watch(&client, config.organization.as_deref().unwrap_or(""));
    let known_pools = pools.clone();
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
        neighbours: shared.neighbours.clone(),
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
    // Its series are its next leader's to publish.
    METRICS.forget_organization(&label);
    takeover::orphans::forget(&label);
    pool::controller::forget_all(&known_pools);
}
