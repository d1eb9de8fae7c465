//! Prometheus metrics and health endpoints: `/metrics`, `/healthz`, `/readyz`.
//!
//! What a platform team watches: reconciles by outcome and how long they take, AWS errors by
//! operation and kind (throttling is expected weather; a rising `terminal` count is not), and
//! the account milestones (created, adopted, closure requested).

use std::sync::{
    Arc, LazyLock,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
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
pub struct MilestoneLabels {
    pub milestone: String,
}

/// Every metric Silo exports. One per process ([`METRICS`]).
pub struct Metrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ReconcileLabels, Histogram>,
    pub aws_errors: Family<AwsErrorLabels, Counter>,
    pub milestones: Family<MilestoneLabels, Counter>,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("silo");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_seconds = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
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
        Self { reconciles, reconcile_seconds, aws_errors, milestones, registry }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
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
}
