//! Which Baselines to count again, from the Tenant watch.
//!
//! A Baseline's status counts its tenants from the Tenant cache; a rollout admits the next
//! tenant only once that count says a slot is free. So a recount is asked as soon as the
//! cache holds a change the count reads: a tenant's revisions or baseline conditions, a tenant
//! that moved to another Baseline, appeared or is gone. [`Asks::observe`] looks at each watch
//! event after the cache took it, so the recount it asks for always reads the change.
//!
//! Asking from the watch rather than from the Tenant controller's status write matters: a
//! recount asked right after the write could read the cache before the watch delivered it,
//! and then nothing would ask again.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
};

use futures::channel::mpsc::UnboundedSender;
use kube::{
    ResourceExt,
    runtime::{reflector::ObjectRef, watcher},
};

use crate::{
    api::{Baseline, Tenant},
    conditions,
};

/// What the watch has shown of each tenant that uses a Baseline, and where to ask.
pub struct Asks {
    recount: UnboundedSender<ObjectRef<Baseline>>,
    /// Tenant name: its Baseline, and a hash of what the count reads of it.
    seen: HashMap<String, (String, u64)>,
    /// The tenants a relisting has shown so far (between `Init` and `InitDone`).
    relisted: Option<HashSet<String>>,
}

impl Asks {
    pub fn new(recount: UnboundedSender<ObjectRef<Baseline>>) -> Self {
        Self { recount, seen: HashMap::new(), relisted: None }
    }

    /// Looks at one watch event, after the cache took it.
    pub fn observe(&mut self, event: &watcher::Event<Tenant>) {
        match event {
            watcher::Event::Apply(tenant) => self.now(tenant),
            watcher::Event::InitApply(tenant) => {
                self.relisted.get_or_insert_with(HashSet::new).insert(tenant.name_any());
                self.now(tenant);
            }
            watcher::Event::Delete(tenant) => self.gone(&tenant.name_any()),
            watcher::Event::Init => self.relisted = Some(HashSet::new()),
            // Tenants deleted while the watch was down: the relisting did not show them.
            watcher::Event::InitDone => {
                let listed = self.relisted.take().unwrap_or_default();
                let missing: Vec<String> = self.seen.keys().filter(|n| !listed.contains(*n)).cloned().collect();
                for name in missing {
                    self.gone(&name);
                }
            }
        }
    }

    fn now(&mut self, tenant: &Tenant) {
        let name = tenant.name_any();
        let counted = counted(tenant);
        let before = match &counted {
            Some(now) => self.seen.insert(name, now.clone()),
            None => self.seen.remove(&name),
        };
        if before == counted {
            return;
        }
        // Both Baselines, when the tenant moved from one to the other.
        let baselines: HashSet<&String> = before.iter().chain(counted.iter()).map(|(b, _)| b).collect();
        for baseline in baselines {
            self.ask(baseline);
        }
    }

    fn gone(&mut self, name: &str) {
        if let Some((baseline, _)) = self.seen.remove(name) {
            self.ask(&baseline);
        }
    }

    fn ask(&self, baseline: &str) {
        let _ = self.recount.unbounded_send(ObjectRef::new(baseline));
    }
}

/// The tenant's Baseline and a hash of what the Baseline's count reads of it: its revisions
/// (applied, admitted, previewed) and its baseline conditions. `None` without a Baseline.
fn counted(tenant: &Tenant) -> Option<(String, u64)> {
    let baseline = tenant.spec.baseline.as_ref()?.name.clone();
    let status = tenant.status.clone().unwrap_or_default();
    let condition = |type_| conditions::find(&status.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()));
    let applied = status.baseline.as_ref();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        applied.map(|b| (&b.name, &b.revision, &b.admitted_revision)),
        applied.and_then(|b| b.preview.as_ref()).map(|p| &p.revision),
        condition(conditions::BASELINE_READY),
        condition(conditions::STALLED),
        condition(conditions::BASELINE_DRIFTED),
    )
        .hash(&mut hasher);
    Some((baseline, hasher.finish()))
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc;
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
        jiff::Timestamp,
    };

    use super::*;
    use crate::api::{BaselineRef, TenantBaselineStatus, TenantSpec, TenantStatus};

    fn tenant(name: &str, baseline: &str, revision: &str, ready: &str) -> Tenant {
        let spec = TenantSpec {
            baseline: Some(BaselineRef { name: baseline.into(), ..Default::default() }),
            ..Default::default()
        };
        let mut t = Tenant::new(name, spec);
        t.status = Some(TenantStatus {
            baseline: Some(TenantBaselineStatus {
                name: baseline.into(),
                revision: revision.into(),
                ..Default::default()
            }),
            conditions: vec![Condition {
                type_: conditions::BASELINE_READY.into(),
                status: ready.into(),
                reason: "StackReady".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::now()),
            }],
            ..Default::default()
        });
        t
    }

    /// The Baselines asked for after each event, in order.
    fn asked(events: Vec<watcher::Event<Tenant>>) -> Vec<Vec<String>> {
        let (sender, mut receiver) = mpsc::unbounded();
        let mut asks = Asks::new(sender);
        events
            .into_iter()
            .map(|event| {
                asks.observe(&event);
                let mut names = Vec::new();
                while let Ok(ask) = receiver.try_recv() {
                    names.push(ask.name);
                }
                names.sort();
                names
            })
            .collect()
    }

    #[test]
    fn a_recount_is_asked_only_when_what_it_counts_changed() {
        use watcher::Event::*;
        let mut unrelated = tenant("a", "std", "r1", "True");
        unrelated.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
        assert_eq!(
            asked(vec![
                Apply(tenant("a", "std", "r1", "False")),
                Apply(tenant("a", "std", "r1", "False")),
                Apply(tenant("a", "std", "r1", "True")),
                Apply(unrelated),
                Apply(tenant("a", "edge", "r1", "True")),
                Delete(tenant("a", "edge", "r1", "True")),
            ]),
            vec![vec!["std"], vec![], vec!["std"], vec![], vec!["edge", "std"], vec!["edge"]],
            "new, unchanged, ready, a change the count does not read, moved, deleted"
        );
    }

    #[test]
    fn a_relisting_asks_for_the_tenants_deleted_while_the_watch_was_down() {
        use watcher::Event::*;
        assert_eq!(
            asked(vec![
                Apply(tenant("a", "std", "r1", "True")),
                Apply(tenant("b", "edge", "r1", "True")),
                Init,
                InitApply(tenant("a", "std", "r1", "True")),
                InitDone,
            ]),
            vec![vec!["std"], vec!["edge"], vec![], vec![], vec!["edge"]]
        );
    }
}
