//! Leader election: with several replicas, exactly one runs the controllers.
//!
//! Two controllers acting at once could both send CreateAccount for the same Tenant, so
//! `silo run` first takes a Lease (`--lease-name` in the controller's namespace) through
//! `kube-lease-manager`, and runs the controllers only while it holds it.
//!
//! ## Guarantee
//! A replica that loses the Lease stops its controllers (letting in-flight reconciles finish)
//! and exits, so its pod restarts as a clean follower. The Lease lasts `--lease-seconds`;
//! a new leader can only take it once the old holder stopped renewing it.

use std::time::Duration;

use anyhow::Context as _;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::info;

/// A held Lease. Completes [`Leadership::lost`] when it is lost.
pub struct Leadership {
    state: watch::Receiver<bool>,
}

impl Leadership {
    /// Waits until this replica holds the Lease.
    pub async fn acquire(
        client: kube::Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        lease_seconds: u64,
    ) -> anyhow::Result<Self> {
        let manager = LeaseManagerBuilder::new(client, lease_name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(lease_seconds)
            .with_grace(lease_seconds.div_ceil(3).max(1))
            .build()
            .await
            .context("set up the leader-election Lease")?;
        let (mut state, _task) = manager.watch().await;
        info!(lease = lease_name, identity, "waiting to become the leader");
        while !*state.borrow_and_update() {
            state.changed().await.context("the lease manager stopped")?;
        }
        info!(lease = lease_name, identity, "became the leader");
        crate::metrics::METRICS.leader.set(1);
        Ok(Self { state })
    }

    /// Completes when the Lease is lost (or its manager stops).
    pub async fn lost(mut self) {
        loop {
            if self.state.changed().await.is_err() || !*self.state.borrow_and_update() {
                info!("lost the leader Lease");
                crate::metrics::METRICS.leader.set(0);
                // Keep the receiver alive a moment so the manager does not release a Lease
                // it no longer holds before we stop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return;
            }
        }
    }
}
