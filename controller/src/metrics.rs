//! Prometheus metrics and health endpoints: `/metrics`, `/healthz`, `/readyz`.
//!
//! What a platform team watches: reconciles by outcome and how long they take, AWS requests
//! and errors by operation (throttling is expected weather; a rising `terminal` count is
//! not), the account milestones (created, adopted, closure requested), the fleet by phase,
//! the creation queue and slots, the organization index, the closure budget, and whether
//! this replica leads.

use std::sync::{
    Arc, LazyLock,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsErrorLabels {
    pub operation: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsRequestLabels {
    pub service: &'static str,
    pub operation: &'static str,
    /// The organization the request was made for (`default`: the flags' one).
    pub organization: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MilestoneLabels {
    pub milestone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BaselineLabels {
    pub baseline: String,
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BaselineNameLabels {
    pub baseline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub baseline: String,
    pub phase: &'static str,
}

/// Tenants per Baseline revision: a gauge family whose label sets come and go with the
/// revisions tenants run.
#[derive(Default)]
pub struct PerRevision {
    family: Family<BaselineLabels, Gauge>,
    shown: std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>>,
}

impl PerRevision {
    /// Shows exactly these counts for `baseline`, removing revisions no tenant runs any more.
    pub fn replace(&self, baseline: &str, counts: std::collections::BTreeMap<String, i64>) {
        let mut shown = self.shown.lock().expect("metrics lock");
        for revision in shown.remove(baseline).unwrap_or_default() {
            self.family.remove(&BaselineLabels { baseline: baseline.into(), revision });
        }
        for (revision, count) in &counts {
            self.family
                .get_or_create(&BaselineLabels { baseline: baseline.into(), revision: revision.clone() })
                .set(*count);
        }
        shown.insert(baseline.into(), counts.into_keys().collect());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: &'static str,
}

/// How a Tenant came to its account, in `silo_tenant_ready_seconds{path}`.
pub const READY_PATHS: [&str; 3] = ["pool", "create", "adopt"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolNameLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrphanLabels {
    pub organization: String,
    pub kind: &'static str,
}

/// One organization: an Organization's name, or `default` for the one the flags describe.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrganizationLabels {
    pub organization: String,
}

/// The `organization` label of the default organization (the flags'); no Organization may
/// take this name.
pub const DEFAULT_ORGANIZATION: &str = "default";

impl OrganizationLabels {
    /// The label of `organization` (`None`: the default one).
    pub fn of(organization: Option<&str>) -> Self {
        Self { organization: organization.unwrap_or(DEFAULT_ORGANIZATION).to_string() }
    }
}

impl Default for OrganizationLabels {
    fn default() -> Self {
        Self::of(None)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Every phase a Tenant reports; all are exported from the start, at 0 when empty.
/// The kinds in `silo_aws_errors_total{kind}`.
pub const AWS_ERROR_KINDS: [&str; 3] = ["throttled", "transient", "terminal"];

/// The results in `silo_reconciles_total{result}` (see `tenant::Error::metric_label`); the
/// Baseline controller's are the first three.
pub const RECONCILE_RESULTS: [&str; 7] =
    ["ok", "aws_retryable", "kube", "aws_terminal", "deferred", "deletion_pending", "finalizer"];

pub const PHASES: [&str; 7] = ["Pending", "Creating", "Provisioning", "Ready", "Stalled", "Paused", "Deleting"];

/// Every metric Silo exports. One per process ([`METRICS`]).
pub struct Metrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ReconcileLabels, Histogram>,
    pub aws_errors: Family<AwsErrorLabels, Counter>,
    pub milestones: Family<MilestoneLabels, Counter>,
    pub aws_requests: Family<AwsRequestLabels, Counter>,
    pub tenants: Family<PhaseLabels, Gauge>,
    pub tenants_stalled: Family<ReasonLabels, Gauge>,
    pub creation_queue_length: Family<OrganizationLabels, Gauge>,
    pub creation_slots_in_use: Family<OrganizationLabels, Gauge>,
    pub creation_slots: Family<OrganizationLabels, Gauge>,
    pub index_accounts: Family<OrganizationLabels, Gauge>,
    pub index_complete: Family<OrganizationLabels, Gauge>,
    pub index_sweeps: Family<OrganizationLabels, Counter>,
    pub leader: Gauge,
    pub organization_leader: Family<OrganizationLabels, Gauge>,
    pub account_closures_recorded: Family<OrganizationLabels, Gauge>,
    pub account_closures_per_day: Family<OrganizationLabels, Gauge>,
    pub baseline_tenants: PerRevision,
    pub rollout_phase: Family<RolloutLabels, Gauge>,
    pub rollout_failures: Family<BaselineLabels, Gauge>,
    pub rollout_rollbacks: Family<BaselineLabels, Counter>,
    pub baseline_drifted_tenants: Family<BaselineNameLabels, Gauge>,
    pub orphan_accounts: Family<OrphanLabels, Gauge>,
    pub pool_accounts: Family<PoolLabels, Gauge>,
    pub pool_size: Family<PoolNameLabels, Gauge>,
    pub tenant_ready_seconds: Family<PathLabels, Histogram>,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("silo");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_seconds = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        // Every result of every controller shows from the start, rare ones too.
        for (controller, results) in [("tenant", &RECONCILE_RESULTS[..]), ("baseline", &RECONCILE_RESULTS[..3])] {
            for &result in results {
                let _ = reconciles.get_or_create(&ReconcileLabels { controller, result });
                let _ = reconcile_seconds.get_or_create(&ReconcileLabels { controller, result });
            }
        }
        let aws_errors = Family::<AwsErrorLabels, Counter>::default();
        let milestones = Family::<MilestoneLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by controller and result", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", reconcile_seconds.clone());
        registry.register(
            "aws_errors",
            "AWS errors that outlived the SDK's retries, by operation and kind (throttled, transient, terminal)",
            aws_errors.clone(),
        );
        registry.register(
            "milestones",
            "Account milestones: the reasons of the Events Silo publishes (AccountCreated, ClosureRequested, ...)",
            milestones.clone(),
        );
        let aws_requests = Family::<AwsRequestLabels, Counter>::default();
        registry.register(
            "aws_requests",
            "AWS requests sent (every page of a listing counts), by service and operation",
            aws_requests.clone(),
        );
        let tenants = Family::<PhaseLabels, Gauge>::default();
        for phase in PHASES {
            tenants.get_or_create(&PhaseLabels { phase }).set(0);
        }
        registry.register("tenants", "Tenants by phase", tenants.clone());
        let tenants_stalled = Family::<ReasonLabels, Gauge>::default();
        registry.register("tenants_stalled", "Stalled Tenants by reason", tenants_stalled.clone());
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let per_organization = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<OrganizationLabels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let creation_queue_length =
            per_organization(&mut registry, "creation_queue_length", "Tenants waiting for a CreateAccount slot");
        let creation_slots_in_use = per_organization(
            &mut registry,
            "creation_slots_in_use",
            "CreateAccount requests reserved or in progress in the organization (Silo's and others' it saw)",
        );
        let creation_slots = per_organization(
            &mut registry,
            "creation_slots",
            "CreateAccount requests AWS runs at once (--max-concurrent-creations)",
        );
        let index_accounts = per_organization(&mut registry, "index_accounts", "Accounts in the organization index");
        let index_complete =
            per_organization(&mut registry, "index_complete", "1 once a sweep of the whole organization has completed");
        let index_sweeps = Family::<OrganizationLabels, Counter>::default();
        registry.register("index_sweeps", "Completed sweeps of the organization", index_sweeps.clone());
        let leader = gauge(
            &mut registry,
            "leader",
            "1 while this replica holds the main Lease: it runs the Baseline controller and the default organization",
        );
        let organization_leader = per_organization(
            &mut registry,
            "organization_leader",
            "1 while this replica holds the organization's Lease and runs its controllers",
        );
        let account_closures_recorded = per_organization(
            &mut registry,
            "account_closures_recorded",
            "Account closures recorded in the ledger in the last 24 hours",
        );
        let account_closures_per_day = per_organization(
            &mut registry,
            "account_closures_per_day",
            "The closure budget (--max-account-closures-per-day, or the Organization's spec.closure.maxPerDay)",
        );
        let baseline_tenants = PerRevision::default();
        registry.register(
            "baseline_tenants",
            "Tenants of each Baseline by the revision they are admitted to",
            baseline_tenants.family.clone(),
        );
        let rollout_phase = Family::<RolloutLabels, Gauge>::default();
        registry.register("rollout_phase", "1 for the phase each Baseline's rollout is in", rollout_phase.clone());
        let rollout_failures = Family::<BaselineLabels, Gauge>::default();
        registry.register(
            "rollout_failures",
            "Tenants that failed the revision a Baseline is rolling out",
            rollout_failures.clone(),
        );
        let rollout_rollbacks = Family::<BaselineLabels, Counter>::default();
        registry.register(
            "rollout_rollbacks",
            "Rollbacks started (spec.rollout.onFailure Rollback), by Baseline and the revision rolled back",
            rollout_rollbacks.clone(),
        );
        let baseline_drifted_tenants = Family::<BaselineNameLabels, Gauge>::default();
        registry.register(
            "baseline_drifted_tenants",
            "Tenants of a Baseline whose last drift check found resources changed outside CloudFormation",
            baseline_drifted_tenants.clone(),
        );
        let orphan_accounts = Family::<OrphanLabels, Gauge>::default();
        registry.register(
            "orphan_accounts",
            "Active accounts no Tenant has, by kind: tagged_without_tenant (Silo's UID tag of a Tenant that is gone), untracked_in_tenant_ou (in a --tenant-ou-root without a Tenant)",
            orphan_accounts.clone(),
        );
        let pool_accounts = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_accounts",
            "Accounts of each AccountPool by state: ready (to be claimed), creating, claimed (held by a Tenant)",
            pool_accounts.clone(),
        );
        let pool_size = Family::<PoolNameLabels, Gauge>::default();
        registry.register("pool_size", "Each AccountPool's spec.size: the ready accounts it keeps", pool_size.clone());
        let tenant_ready_seconds = Family::<PathLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0])
        });
        for path in READY_PATHS {
            let _ = tenant_ready_seconds.get_or_create(&PathLabels { path });
        }
        registry.register(
            "tenant_ready_seconds",
            "From a Tenant's creation to its first Ready, by how it came to its account: pool (taken from an AccountPool), create, adopt",
            tenant_ready_seconds.clone(),
        );
        Self {
            orphan_accounts,
            pool_accounts,
            pool_size,
            tenant_ready_seconds,
            baseline_tenants,
            rollout_phase,
            rollout_failures,
            rollout_rollbacks,
            baseline_drifted_tenants,
            reconciles,
            reconcile_seconds,
            aws_errors,
            milestones,
            aws_requests,
            tenants,
            tenants_stalled,
            creation_queue_length,
            creation_slots_in_use,
            creation_slots,
            index_accounts,
            index_complete,
            index_sweeps,
            leader,
            organization_leader,
            account_closures_recorded,
            account_closures_per_day,
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Shows 0 for every kind of error of an operation from its first request on, so
    /// dashboards and alerts on rare errors see a series, not "no data".
    pub fn aws_operation_seen(&self, operation: &'static str) {
        for kind in AWS_ERROR_KINDS {
            let _ = self.aws_errors.get_or_create(&AwsErrorLabels { operation, kind });
        }
    }

    /// Removes an organization's series of its quotas, index and closure ledger, on a replica
    /// that stops leading it: dashboards and alerts then see only its leader's values, never a
    /// former leader's last ones. `silo_organization_leader` stays, at 0.
    pub fn forget_organization(&self, organization: &str) {
        let labels = OrganizationLabels { organization: organization.to_string() };
        for family in [
            &self.creation_queue_length,
            &self.creation_slots_in_use,
            &self.creation_slots,
            &self.index_accounts,
            &self.index_complete,
            &self.account_closures_recorded,
            &self.account_closures_per_day,
        ] {
            family.remove(&labels);
        }
        self.index_sweeps.remove(&labels);
    }

    /// Records one finished reconcile.
    pub fn reconciled(&self, controller: &'static str, result: &'static str, seconds: f64) {
        let labels = ReconcileLabels { controller, result };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_seconds.get_or_create(&labels).observe(seconds);
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Whether the controllers are running (for `/readyz`).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `address` until the process ends.
pub async fn serve(address: std::net::SocketAddr, readiness: Readiness) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|| async { METRICS.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(ready): State<Readiness>| async move {
                if ready.0.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(readiness);
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_the_text_format() {
        METRICS.reconciled("tenant", "ok", 0.2);
        METRICS.aws_errors.get_or_create(&AwsErrorLabels { operation: "CreateAccount", kind: "throttled" }).inc();
        let text = METRICS.render();
        assert!(text.contains("silo_reconciles_total{controller=\"tenant\",result=\"ok\"}"), "{text}");
        assert!(text.contains("silo_aws_errors_total{operation=\"CreateAccount\",kind=\"throttled\"}"), "{text}");
        assert!(text.contains("silo_reconcile_duration_seconds_bucket"), "{text}");
    }

    #[test]
    fn rare_label_sets_show_before_they_happen() {
        METRICS.aws_operation_seen("MoveAccount");
        let text = METRICS.render();
        assert!(text.contains("silo_reconciles_total{controller=\"tenant\",result=\"finalizer\"} 0"), "{text}");
        assert!(text.contains("silo_reconciles_total{controller=\"baseline\",result=\"kube\"} 0"), "{text}");
        for kind in AWS_ERROR_KINDS {
            let line = format!("silo_aws_errors_total{{operation=\"MoveAccount\",kind=\"{kind}\"}} 0");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
}
