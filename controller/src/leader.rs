//! Leader election: with several replicas, exactly one runs the controllers, and a leader
//! that cannot prove it still leads stops writing to AWS.
//!
//! Two controllers acting at once could both send CreateAccount for the same Tenant, or move
//! and tag the same account, so `silo run` first takes a Lease (`--lease-name` in the
//! controller's namespace) through `kube-lease-manager`, and runs the controllers only while
//! it holds it.
//!
//! ## Guarantees
//! - A replica that loses the Lease stops its controllers (letting in-flight reconciles
//!   finish) and exits, so its pod restarts as a clean follower.
//! - A leader cut off from the API server does not learn that it lost the Lease (it cannot
//!   read it), while another replica takes over once the Lease expires. So Silo keeps its own
//!   proof: it reads its Lease every [`CONFIRM_EVERY`] of the lease duration, and each time
//!   the renewal time changes, it knows the renewal happened after the previous read began.
//!   From that moment, no other replica can take over for a lease duration; the [`Fence`]
//!   allows AWS writes until then, less [`SAFETY_MARGIN`]. When the API server is
//!   unreachable, the proof is not renewed and every AWS write stops before another replica
//!   can start. A new leader writes from the first renewal it sees (half a lease after it
//!   took the Lease).
//! - How the fence holds writes back (checked before and after the wait for a budget
//!   permit) is [`crate::aws::fence`]'s guarantee; this module only decides until when it is
//!   open.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::aws::Fence;

/// How often, as a fraction of the lease duration, Silo reads its own Lease.
const CONFIRM_EVERY: u32 = 10;
/// Writes stop this long (at most a fifth of the lease) before another replica could take
/// over: room for a write already on its way.
const SAFETY_MARGIN: Duration = Duration::from_secs(1);

fn margin(duration: Duration) -> Duration {
    SAFETY_MARGIN.min(duration / 5)
}

/// A held Lease. Completes [`Leadership::lost`] when it is lost.
pub struct Leadership {
    state: watch::Receiver<bool>,
    fence: Fence,
    confirm: tokio::task::JoinHandle<()>,
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
        let manager = LeaseManagerBuilder::new(client.clone(), lease_name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(lease_seconds)
            // Renew at half the lease, so the fence below never closes between renewals.
            .with_grace(lease_seconds.div_ceil(2).max(1))
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
        // Closed until the first renewal Silo sees (half a lease after taking it): when the
        // Lease was taken is not known precisely enough to write before that.
        let fence = Fence::closed();
        let duration = Duration::from_secs(lease_seconds);
        let leases = Api::<Lease>::namespaced(client, namespace);
        let confirm =
            tokio::spawn(confirm(leases, lease_name.to_string(), identity.to_string(), duration, fence.clone()));
        Ok(Self { state, fence, confirm })
    }

    /// The fence every AWS write checks while this replica leads.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Completes when the Lease is lost (or its manager stops).
    pub async fn lost(mut self) {
        loop {
            if self.state.changed().await.is_err() || !*self.state.borrow_and_update() {
                info!("lost the leader Lease");
                self.fence.close();
                self.confirm.abort();
                crate::metrics::METRICS.leader.set(0);
                // Keep the receiver alive a moment so the manager does not release a Lease
                // it no longer holds before we stop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return;
            }
        }
    }
}

/// Reads the Lease again and again; each new renewal this replica made extends the fence to
/// a lease duration after the read before it began.
async fn confirm(leases: Api<Lease>, name: String, identity: String, duration: Duration, fence: Fence) {
    let every = (duration / CONFIRM_EVERY).max(Duration::from_millis(100));
    let margin = margin(duration);
    let mut last_renewal: Option<String> = None;
    let mut previous_read: Option<Instant> = None;
    loop {
        let began = Instant::now();
        match leases.get_opt(&name).await {
            Ok(Some(lease)) => {
                let spec = lease.spec.unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                    warn!(holder = ?spec.holder_identity, "the Lease names another holder: AWS writes stop");
                    fence.close();
                } else {
                    let renewal = spec.renew_time.map(|t| t.0.to_string());
                    if renewal != last_renewal {
                        // Renewed after the previous read began (or, first, after we began).
                        if let Some(bound) = previous_read {
                            fence.allow_until(bound + duration - margin);
                        }
                        last_renewal = renewal;
                    }
                }
                previous_read = Some(began);
            }
            Ok(None) => fence.close(),
            // Unreachable: the proof is not renewed, and the fence closes on time by itself.
            Err(err) => warn!(%err, "cannot read the Lease; AWS writes stop when the lease would expire"),
        }
        tokio::time::sleep(every).await;
    }
}
