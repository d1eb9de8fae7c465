//! Leader election: for each organization, exactly one replica acts, and a leader that
//! cannot prove it still leads stops writing to AWS.
//!
//! Two controllers acting at once could both send CreateAccount for the same Tenant, or move
//! and tag the same account, so every organization has a Lease (in the controller's
//! namespace, through `kube-lease-manager`): `--lease-name` for the default organization and
//! the Baseline controller, `silo-org-<name>` for each Organization object. A replica runs an
//! organization's controllers only while it holds its Lease ([`Leadership`]); how replicas
//! share the organizations is [`share`]'s.
//!
//! ## Guarantees
//! - A replica that loses a Lease stops that organization's controllers (letting in-flight
//!   reconciles finish); one that loses the main Lease stops everything and exits, so its pod
//!   restarts as a clean follower. A replica handing an organization over stops its
//!   controllers first, then releases the Lease ([`Leadership::release`]).
//! - A leader cut off from the API server does not learn that it lost the Lease (it cannot
//!   read it), while another replica takes over once the Lease expires. So Silo keeps its own
//!   proof: it reads its Lease every [`CONFIRM_EVERY`] of the lease duration, and each time
//!   the renewal time changes, it knows the renewal happened after the previous read began.
//!   From that moment, no other replica can take over for a lease duration; the [`Fence`]
//!   allows AWS writes until then, less [`SAFETY_MARGIN`]. When the API server is
//!   unreachable, the proof is not renewed and every AWS write stops before another replica
//!   can start. A new leader whose Lease shows a renewal time (written by itself, from its own
//!   clock) after it began waiting writes at once, until a lease duration after the wait
//!   began: the same proof. Otherwise (a long wait, or the Lease its identity held before a
//!   restart) it writes from the first renewal it sees (half a lease after it took the Lease).
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

pub mod share;

use crate::aws::Fence;

/// How often, as a fraction of the lease duration, Silo reads its own Lease.
const CONFIRM_EVERY: u32 = 10;
/// Writes stop this long (at most a fifth of the lease) before another replica could take
/// over: room for a write already on its way.
const SAFETY_MARGIN: Duration = Duration::from_secs(1);

fn margin(duration: Duration) -> Duration {
    SAFETY_MARGIN.min(duration / 5)
}

/// A held Lease. Completes [`Leadership::lost`] when it is lost; [`Leadership::release`]
/// hands it over.
pub struct Leadership {
    name: String,
    state: watch::Receiver<bool>,
    fence: Fence,
    confirm: tokio::task::JoinHandle<()>,
    manager: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
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
        // When the wait began, by both clocks: a Lease this replica wrote after it cannot be
        // taken by another replica for a lease duration from then.
        let (began, began_wall) = (Instant::now(), k8s_openapi::jiff::Timestamp::now());
        let manager = LeaseManagerBuilder::new(client.clone(), lease_name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(lease_seconds)
            // Renew at half the lease, so the fence below never closes between renewals.
            .with_grace(lease_seconds.div_ceil(2).max(1))
            .build()
            .await
            .context("set up the leader-election Lease")?;
        let (mut state, manager) = manager.watch().await;
        info!(lease = lease_name, identity, "waiting to become the leader");
        while !*state.borrow_and_update() {
            state.changed().await.context("the lease manager stopped")?;
        }
        info!(lease = lease_name, identity, "became the leader");
        let duration = Duration::from_secs(lease_seconds);
        let fence = Fence::closed();
        let leases = Api::<Lease>::namespaced(client, namespace);
        // When the Lease was written (taken, or renewed) by this process after the wait began
        // (its renewal time, from this process's own clock, says so), no other replica can take
        // it before a lease duration after that: writes may start now. Otherwise (a Lease this
        // identity held before a restart, or a long wait), the fence opens at the first renewal
        // Silo sees, half a lease later.
        let written_since = |lease: Option<Lease>| {
            lease.and_then(|l| l.spec).is_some_and(|spec| {
                spec.holder_identity.as_deref() == Some(identity) && spec.renew_time.is_some_and(|t| t.0 >= began_wall)
            })
        };
        if written_since(leases.get_opt(lease_name).await.ok().flatten()) {
            fence.allow_until(began + duration - margin(duration));
        }
        let confirm =
            tokio::spawn(confirm(leases, lease_name.to_string(), identity.to_string(), duration, fence.clone()));
        Ok(Self { name: lease_name.to_string(), state, fence, confirm, manager })
    }

    /// [`Leadership::acquire`], giving up after `within` (the Lease stays another's).
    pub async fn try_acquire(
        client: kube::Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        lease_seconds: u64,
        within: Duration,
    ) -> Option<Self> {
        let acquire = Self::acquire(client, namespace, lease_name, identity, lease_seconds);
        match tokio::time::timeout(within, acquire).await {
            Ok(Ok(leadership)) => Some(leadership),
            Ok(Err(err)) => {
                warn!(lease = lease_name, err = format!("{err:#}"), "cannot take the Lease");
                None
            }
            // Dropping the attempt stops its lease manager, which never held the Lease.
            Err(_) => None,
        }
    }

    /// The fence every AWS write checks while this replica leads.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Completes when the Lease is lost (or its manager stops); AWS writes stop first.
    pub async fn lost(&mut self) {
        loop {
            if self.state.changed().await.is_err() || !*self.state.borrow_and_update() {
                info!(lease = %self.name, "lost the Lease");
                self.fence.close();
                self.confirm.abort();
                return;
            }
        }
    }

    /// Hands the Lease over: AWS writes stop, then the Lease is released (its holder
    /// cleared), so another replica may take it at once rather than after it expires.
    pub async fn release(self) {
        self.fence.close();
        self.confirm.abort();
        drop(self.state);
        // The manager sees its last receiver gone, releases the Lease and stops.
        match tokio::time::timeout(RELEASE_WITHIN, self.manager).await {
            Ok(Ok(Ok(_))) => info!(lease = %self.name, "released the Lease"),
            Ok(Ok(Err(err))) => warn!(lease = %self.name, %err, "cannot release the Lease; it expires instead"),
            Ok(Err(_)) | Err(_) => warn!(lease = %self.name, "cannot release the Lease in time; it expires instead"),
        }
    }
}

/// How long a release may take before the Lease is left to expire.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

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
