//! Sharing the organizations between replicas: each replica leads up to a fair share of them,
//! and every organization has exactly one leader.
//!
//! - Every replica announces itself with a presence Lease, `silo-replica-<identity>` (label
//!   `silo.dev/replica`), renewed every ninth of a lease and lasting a third of one
//!   ([`Presence`]). A presence not renewed for that long is a replica gone (or cut off): its
//!   presence ends before its organizations' Leases expire, so the others count it out in
//!   time to take them over. Presence only shapes the fair share; the Leases alone decide
//!   who writes.
//! - Every organization has its own Lease: `silo-org-<name>` for an Organization object
//!   ([`lease_name`]), `--lease-name` for the default organization (the one the flags
//!   describe; its leader also runs the Baseline controller). Its holder is the one replica
//!   that acts for it, behind its own write fence ([`super::Leadership`]).
//! - A replica's fair share is the organizations (the default one included) divided by the
//!   live replicas, rounded up. Below it, a replica takes a free organization: one whose Lease
//!   nobody holds, or whose holder let it expire. Above it (a replica joined), it hands one
//!   over: its controllers stop, then its Lease is released. One step per look ([`step`]), so
//!   the replicas converge without a coordinator; when two race for one Lease, the Lease
//!   decides.
//!
//! What each replica sees of the others comes from one LIST of the Leases in Silo's namespace
//! per look ([`look`]).
//!
//! A Silo from before per-organization Leases, holding the main Lease, acts for every
//! organization and writes no presence: while one leads (an upgrade's first minutes, or a
//! rollback), the others take no organization and hand back those they lead.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::Lease,
    apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use tracing::warn;

use crate::contract::FIELD_MANAGER;

/// The label on every presence Lease.
pub const REPLICA_LABEL: &str = "silo.dev/replica";
/// What starts the name of every organization's Lease.
const ORGANIZATION_LEASE_PREFIX: &str = "silo-org-";

/// The Lease of the Organization object `organization`.
pub fn lease_name(organization: &str) -> String {
    format!("{ORGANIZATION_LEASE_PREFIX}{organization}")
}

/// What a replica sees at one look.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct View {
    /// Live replicas (their presence renewed within a lease duration), this one included.
    pub replicas: usize,
    /// The Organization objects whose Lease a replica holds and renews; the others are free.
    pub held: BTreeMap<String, String>,
    /// The main Lease is held by a replica that has no presence Lease: a Silo from before
    /// per-organization Leases, which runs every organization itself (during an upgrade, or
    /// after a rollback). While it leads, no other replica may act for any organization.
    pub older_leader: Option<String>,
}

/// What a replica should do after a look.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Try to take this organization's Lease.
    Take(String),
    /// Stop this organization's controllers and release its Lease.
    HandOver(String),
    Stay,
}

/// The organizations each replica should lead at most: all of them (the default one
/// included) over the live replicas, rounded up.
pub fn fair_share(organizations: usize, replicas: usize) -> usize {
    (organizations + 1).div_ceil(replicas.max(1))
}

/// The next step of replica `identity`. `organizations`: the Organization objects;
/// `leading`: those it leads or is taking; `leads_default`: whether it holds the default
/// organization's Lease. Pure.
pub fn step(
    identity: &str,
    organizations: &BTreeSet<String>,
    leading: &BTreeSet<String>,
    leads_default: bool,
    view: &View,
) -> Step {
    if view.older_leader.is_some() {
        // It acts for every organization: hand them all back, one per look.
        return leading.last().map_or(Step::Stay, |name| Step::HandOver(name.clone()));
    }
    let share = fair_share(organizations.len(), view.replicas);
    let held = leading.len() + usize::from(leads_default);
    if held > share {
        // The last by name: the one a replica with room takes last, so nothing flips back.
        return leading.last().map_or(Step::Stay, |name| Step::HandOver(name.clone()));
    }
    if held < share {
        let free = organizations
            .iter()
            .filter(|name| !leading.contains(*name))
            .filter(|name| view.held.get(*name).is_none_or(|holder| holder == identity));
        // Each replica prefers its own order of the free ones, so replicas looking at once
        // mostly try different Leases.
        let preferred = free.min_by_key(|name| {
            let mut hasher = DefaultHasher::new();
            (identity, name).hash(&mut hasher);
            hasher.finish()
        });
        if let Some(name) = preferred {
            return Step::Take(name.clone());
        }
    }
    Step::Stay
}

/// Reads what replica `identity` needs for a [`step`]: the presences and the organizations'
/// Leases in `namespace`, at `now`.
pub async fn look(leases: &Api<Lease>, identity: &str, main: &str, now: Timestamp) -> kube::Result<View> {
    let list = leases.list(&ListParams::default()).await?;
    Ok(view_of(&list.items, identity, main, now))
}

/// The [`View`] from the Leases of Silo's namespace (`main`: the main Lease's name). Pure.
pub fn view_of(leases: &[Lease], identity: &str, main: &str, now: Timestamp) -> View {
    // This replica counts even before its presence is written (or while it cannot renew it).
    let mut view = View { replicas: 1, held: BTreeMap::new(), older_leader: None };
    let mut present = std::collections::BTreeSet::from([identity.to_string()]);
    let mut main_holder = None;
    for lease in leases {
        let Some(spec) = &lease.spec else { continue };
        let Some(holder) = spec.holder_identity.clone() else { continue };
        let alive = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => {
                renewed.0.checked_add(jiff_seconds(seconds)).is_ok_and(|expiry| expiry > now)
            }
            _ => false,
        };
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        let is_presence = lease.metadata.labels.as_ref().is_some_and(|l| l.contains_key(REPLICA_LABEL));
        if is_presence {
            if alive && holder != identity {
                view.replicas += 1;
            }
            // Any presence, even one not renewed lately: a replica of this version that
            // cannot reach the API server for a moment is not an older Silo.
            present.insert(holder);
        } else if name == main {
            main_holder = alive.then_some(holder);
        } else if let Some(organization) = name.strip_prefix(ORGANIZATION_LEASE_PREFIX)
            && alive
        {
            view.held.insert(organization.to_string(), holder);
        }
    }
    view.older_leader = main_holder.filter(|holder| !present.contains(holder));
    view
}

fn jiff_seconds(seconds: i32) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(i64::from(seconds))
}

/// This replica's presence Lease, renewed until dropped. Owned by the replica's Pod (when
/// `POD_UID` is set), so Kubernetes deletes it with the Pod.
pub struct Presence {
    task: tokio::task::JoinHandle<()>,
}

impl Presence {
    pub fn start(leases: Api<Lease>, identity: &str, lease_seconds: u64) -> Self {
        let name = format!("silo-replica-{identity}");
        let owner = std::env::var("POD_UID").ok().map(|uid| OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: identity.to_string(),
            uid,
            ..Default::default()
        });
        let identity = identity.to_string();
        let lasts = Duration::from_secs(lease_seconds).div_f64(3.0).max(Duration::from_secs(1));
        let every = lasts.div_f64(3.0);
        let task = tokio::spawn(async move {
            loop {
                let lease = serde_json::json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "labels": {REPLICA_LABEL: "true"}, "ownerReferences": owner.iter().collect::<Vec<_>>()},
                    "spec": {
                        "holderIdentity": identity,
                        "leaseDurationSeconds": i32::try_from(lasts.as_secs()).unwrap_or(i32::MAX),
                        "renewTime": MicroTime(Timestamp::now()),
                    },
                });
                let params = PatchParams::apply(FIELD_MANAGER).force();
                if let Err(err) = leases.patch(&name, &params, &Patch::Apply(&lease)).await {
                    warn!(%err, "cannot renew this replica's presence Lease");
                }
                tokio::time::sleep(every).await;
            }
        });
        Self { task }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Leases API of Silo's namespace.
pub fn leases(client: Client, namespace: &str) -> Api<Lease> {
    Api::namespaced(client, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn view(replicas: usize, held: &[(&str, &str)]) -> View {
        View { replicas, held: held.iter().map(|(o, h)| (o.to_string(), h.to_string())).collect(), older_leader: None }
    }

    #[test]
    fn a_replica_takes_free_organizations_up_to_its_share() {
        let orgs = names(&["eu", "us"]);
        // Alone: everything is its share.
        assert!(matches!(step("a", &orgs, &names(&[]), true, &view(1, &[])), Step::Take(_)));
        assert!(
            matches!(step("a", &orgs, &names(&["eu"]), true, &view(1, &[("eu", "a")])), Step::Take(n) if n == "us")
        );
        assert_eq!(step("a", &orgs, &names(&["eu", "us"]), true, &view(1, &[("eu", "a"), ("us", "a")])), Step::Stay);
        // Three replicas, three organizations: one each. The default's leader takes no more.
        assert_eq!(step("a", &orgs, &names(&[]), true, &view(3, &[])), Step::Stay);
        // Another holds eu: b takes us, never eu.
        assert_eq!(step("b", &orgs, &names(&[]), false, &view(3, &[("eu", "c")])), Step::Take("us".into()));
        assert_eq!(step("b", &orgs, &names(&[]), false, &view(3, &[("eu", "c"), ("us", "a")])), Step::Stay);
    }

    #[test]
    fn a_replica_above_its_share_hands_one_over() {
        let orgs = names(&["eu", "us"]);
        // b led everything alone; a and c joined: b keeps one.
        let all = view(3, &[("eu", "b"), ("us", "b")]);
        assert_eq!(step("b", &orgs, &names(&["eu", "us"]), true, &all), Step::HandOver("us".into()));
        assert_eq!(step("b", &orgs, &names(&["eu"]), true, &view(3, &[("eu", "b")])), Step::HandOver("eu".into()));
        // Two replicas, three organizations: two at most each.
        assert_eq!(step("b", &orgs, &names(&["eu"]), true, &view(2, &[("eu", "b")])), Step::Stay);
    }

    #[test]
    fn replicas_reach_one_leader_per_organization_and_a_fair_share() {
        // Three replicas look in turn, each step applied at once (Leases taken are held),
        // from every start: each ends with one organization, and none is led twice.
        let orgs = names(&["eu", "staging", "us"]);
        let replicas = ["r0", "r1", "r2", "r3"];
        let mut leading: BTreeMap<&str, BTreeSet<String>> = replicas.iter().map(|r| (*r, BTreeSet::new())).collect();
        // r0 led every organization and the default alone.
        leading.insert("r0", orgs.clone());
        for _ in 0..10 {
            for replica in replicas {
                let held: BTreeMap<String, String> =
                    leading.iter().flat_map(|(r, os)| os.iter().map(|o| (o.clone(), r.to_string()))).collect();
                let view = View { replicas: replicas.len(), held, older_leader: None };
                match step(replica, &orgs, &leading[replica], replica == "r0", &view) {
                    Step::Take(name) => {
                        assert!(!view.held.contains_key(&name), "{replica} takes a held {name}");
                        leading.get_mut(replica).unwrap().insert(name);
                    }
                    Step::HandOver(name) => {
                        leading.get_mut(replica).unwrap().remove(&name);
                    }
                    Step::Stay => {}
                }
            }
        }
        let counts: Vec<usize> = replicas.iter().map(|r| leading[r].len() + usize::from(*r == "r0")).collect();
        assert_eq!(counts, vec![1, 1, 1, 1], "{leading:?}");
    }

    /// A Lease held by `holder`, renewed at `renewed` for 15 s; a presence Lease if `presence`.
    fn lease_at(name: &str, holder: &str, renewed: Timestamp, presence: bool) -> Lease {
        Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                labels: presence.then(|| [(REPLICA_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_view_counts_live_replicas_and_held_organizations() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let lease = |name: &str, holder: &str, renewed_ago: i64, presence: bool| {
            lease_at(name, holder, now - k8s_openapi::jiff::SignedDuration::from_secs(renewed_ago), presence)
        };
        let leases = vec![
            lease("silo-replica-a", "a", 1, true),
            lease("silo-replica-b", "b", 5, true),
            lease("silo-replica-gone", "gone", 60, true),
            lease("silo-org-eu", "b", 2, false),
            lease("silo-org-us", "gone", 60, false),
            lease("silo-controller", "a", 1, false),
        ];
        let view = view_of(&leases, "a", "silo-controller", now);
        assert_eq!(view.replicas, 2);
        assert_eq!(view.held, [("eu".to_string(), "b".to_string())].into());
        assert_eq!(view.older_leader, None, "the main Lease's holder announces itself");
        // A replica whose presence is not written yet still counts itself.
        assert_eq!(view_of(&leases, "new", "silo-controller", now).replicas, 3);
    }

    #[test]
    fn an_older_silo_holding_the_main_lease_leads_every_organization_alone() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let lease = |name: &str, holder: &str, presence: bool| lease_at(name, holder, now, presence);
        // The main Lease's holder writes no presence: an older Silo, during an upgrade.
        let leases = vec![lease("silo-controller", "old-0", false), lease("silo-replica-new-1", "new-1", true)];
        let view = view_of(&leases, "new-1", "silo-controller", now);
        assert_eq!(view.older_leader.as_deref(), Some("old-0"));
        let orgs = names(&["eu", "us"]);
        assert_eq!(step("new-1", &orgs, &names(&[]), false, &view), Step::Stay, "it takes nothing");
        let leading = names(&["eu", "us"]);
        assert_eq!(step("new-1", &orgs, &leading, false, &view), Step::HandOver("us".into()), "and hands back");
    }
}
