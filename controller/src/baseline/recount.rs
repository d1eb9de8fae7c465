//! Every Baseline's tenants as its count reads them, kept from the Tenant watch, and which
//! Baselines to count again.
//!
//! A Baseline's status counts its tenants; a rollout admits the next tenant only once that
//! count says a slot is free. [`Asks::observe`] looks at each watch event after the cache took
//! it and keeps the [`Roster`]: for each Baseline, what its count reads of each of its tenants
//! (a [`Member`]: the rollout's [`TenantView`], drift, the last preview), sorted by name. A
//! recount reads its Baseline's members from there, so it costs no copy of any Tenant's
//! status and no pass over the other Baselines' tenants; a member changes only when its
//! tenant's watch event changes what the count reads. The recount is asked for then: a
//! tenant's revisions or baseline conditions changed, it moved to another Baseline, appeared
//! or is gone. A tenant whose stack work ended (a slot freed) asks for it [`Ask::now`], so
//! the next tenant is admitted without waiting for the pace of other asks.
//!
//! Asking from the watch rather than from the Tenant controller's status write matters: a
//! recount asked right after the write could read the cache before the watch delivered it,
//! and then nothing would ask again.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::channel::mpsc::UnboundedSender;
use kube::{
    ResourceExt,
    runtime::{reflector::ObjectRef, watcher},
};

use super::rollout::{State, TenantView};
use crate::{
    api::{Baseline, Tenant},
    conditions,
};

/// What a Baseline's count reads of one of its tenants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub view: TenantView,
    /// Its `BaselineDrifted` condition is True.
    pub drifted: bool,
    /// The revision of its last preview.
    pub previewed: Option<String>,
}

impl Member {
    /// The tenant's Baseline and what its count reads of it; `None` without a Baseline.
    pub fn of(tenant: &Tenant) -> Option<(String, Self)> {
        let baseline = tenant.spec.baseline.as_ref()?.name.clone();
        let status = tenant.status.as_ref();
        let drifted = status.is_some_and(|s| conditions::is_true(&s.conditions, conditions::BASELINE_DRIFTED));
        let previewed =
            status.and_then(|s| s.baseline.as_ref()?.preview.as_ref()).map(|preview| preview.revision.clone());
        let member = Self { view: view(tenant, &baseline), drifted, previewed };
        Some((baseline, member))
    }
}

/// One Baseline's members: tenant name to member, sorted by name.
type Members = BTreeMap<String, Arc<Member>>;

/// Every Baseline's members, by name. Cheap to clone; shared by the Tenant watch, which
/// keeps it, and the Baseline controller, which reads it.
#[derive(Clone, Default)]
pub struct Roster(Arc<Mutex<HashMap<String, Members>>>);

impl Roster {
    /// The members of `baseline`, sorted by name.
    pub fn of(&self, baseline: &str) -> Vec<Arc<Member>> {
        let roster = self.0.lock().expect("roster lock");
        roster.get(baseline).map(|members| members.values().cloned().collect()).unwrap_or_default()
    }

    fn set(&self, baseline: &str, tenant: &str, member: Option<Arc<Member>>) {
        let mut roster = self.0.lock().expect("roster lock");
        match member {
            Some(member) => {
                roster.entry(baseline.to_string()).or_default().insert(tenant.to_string(), member);
            }
            None => {
                if let Some(members) = roster.get_mut(baseline) {
                    members.remove(tenant);
                    if members.is_empty() {
                        roster.remove(baseline);
                    }
                }
            }
        }
    }
}

/// A Baseline to count again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub baseline: ObjectRef<Baseline>,
    /// A tenant's stack work ended (a slot in the window is free): count at once, ahead of
    /// the pace.
    pub now: bool,
}

/// What the watch has shown of each tenant that uses a Baseline, and where to ask.
pub struct Asks {
    recount: UnboundedSender<Ask>,
    roster: Roster,
    /// Tenant name: its Baseline and member, as last put in the roster.
    seen: HashMap<String, (String, Arc<Member>)>,
    /// The tenants a relisting has shown so far (between `Init` and `InitDone`).
    relisted: Option<HashSet<String>>,
}

impl Asks {
    /// Asks on `recount`, keeping `roster`.
    pub fn new(recount: UnboundedSender<Ask>, roster: Roster) -> Self {
        Self { recount, roster, seen: HashMap::new(), relisted: None }
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
        let counted = Member::of(tenant).map(|(baseline, member)| (baseline, Arc::new(member)));
        let unchanged = match (self.seen.get(&name), &counted) {
            (Some(before), Some(now)) => before == now,
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            return;
        }
        let before = self.seen.remove(&name);
        // Its old Baseline, when it moved to another or dropped it, counts it no more.
        if let Some((old, member)) = &before
            && counted.as_ref().is_none_or(|(baseline, _)| baseline != old)
        {
            self.roster.set(old, &name, None);
            self.ask(old, member.view.state == State::InFlight);
        }
        if let Some((baseline, member)) = counted {
            let was_in_flight =
                before.is_some_and(|(old, before)| old == baseline && before.view.state == State::InFlight);
            self.roster.set(&baseline, &name, Some(member.clone()));
            self.ask(&baseline, was_in_flight && member.view.state != State::InFlight);
            self.seen.insert(name, (baseline, member));
        }
    }

    fn gone(&mut self, name: &str) {
        if let Some((baseline, member)) = self.seen.remove(name) {
            self.roster.set(&baseline, name, None);
            self.ask(&baseline, member.view.state == State::InFlight);
        }
    }

    fn ask(&self, baseline: &str, now: bool) {
        let _ = self.recount.unbounded_send(Ask { baseline: ObjectRef::new(baseline), now });
    }
}

/// What the rollout needs to know of one tenant, from its status. Pure.
pub fn view(tenant: &Tenant, baseline: &str) -> TenantView {
    let status = tenant.status.as_ref();
    let own = status.and_then(|s| s.baseline.as_ref()).filter(|b| b.name == baseline);
    let admitted = own.and_then(|b| b.admitted_revision.clone());
    let rolled_back = own.and_then(|b| b.rolled_back.clone());
    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let ready = conditions::find(conditions, conditions::BASELINE_READY);
    let stalled = conditions::find(conditions, conditions::STALLED).filter(|c| c.status == "True");
    let state = match (ready, stalled) {
        (Some(ready), _) if ready.status == "True" => State::Current,
        // Stalled by the baseline step itself (not by an earlier step).
        (Some(ready), Some(stalled)) if stalled.reason == ready.reason => {
            State::Failed { reason: ready.message.clone() }
        }
        _ => State::InFlight,
    };
    TenantView { name: tenant.name_any(), labels: tenant.labels().clone(), admitted, state, rolled_back }
}

#[cfg(test)]
pub(super) mod tests {
    use futures::channel::mpsc;
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
        jiff::Timestamp,
    };

    use super::*;
    use crate::api::{BaselineRef, TenantBaselineStatus, TenantSpec, TenantStatus};

    /// A condition set now, its message naming a failing resource after `reason`.
    pub(in crate::baseline) fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{reason}: Topic failed"),
            observed_generation: None,
            last_transition_time: Time(Timestamp::now()),
        }
    }

    /// A tenant of `baseline` admitted to `revision`, its BaselineReady condition `ready`.
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
                admitted_revision: Some(revision.into()),
                ..Default::default()
            }),
            conditions: vec![condition(conditions::BASELINE_READY, ready, "StackReady")],
            ..Default::default()
        });
        t
    }

    /// The asks after each event, in order (a Baseline's name, with `!` when asked now), and
    /// the roster's members of `std` and `edge` at the end.
    fn asked(events: Vec<watcher::Event<Tenant>>) -> (Vec<Vec<String>>, Vec<String>, Vec<String>) {
        let (sender, mut receiver) = mpsc::unbounded();
        let roster = Roster::default();
        let mut asks = Asks::new(sender, roster.clone());
        let asked = events
            .into_iter()
            .map(|event| {
                asks.observe(&event);
                let mut names = Vec::new();
                while let Ok(ask) = receiver.try_recv() {
                    names.push(format!("{}{}", ask.baseline.name, if ask.now { "!" } else { "" }));
                }
                names.sort();
                names
            })
            .collect();
        let members = |baseline| roster.of(baseline).iter().map(|m| m.view.name.clone()).collect();
        (asked, members("std"), members("edge"))
    }

    #[test]
    fn a_recount_is_asked_only_when_what_it_counts_changed() {
        use watcher::Event::*;
        let mut unrelated = tenant("a", "std", "r1", "True");
        unrelated.metadata.annotations = Some([("team".to_string(), "x".to_string())].into());
        let (asked, std, edge) = asked(vec![
            Apply(tenant("a", "std", "r1", "False")),
            Apply(tenant("a", "std", "r1", "False")),
            Apply(tenant("a", "std", "r1", "True")),
            Apply(unrelated),
            Apply(tenant("b", "std", "r1", "False")),
            Apply(tenant("a", "edge", "r1", "True")),
            Delete(tenant("a", "edge", "r1", "True")),
        ]);
        assert_eq!(
            asked,
            vec![vec!["std"], vec![], vec!["std!"], vec![], vec!["std"], vec!["edge", "std"], vec!["edge"]],
            "new, unchanged, its stack work done (a slot freed: at once), a change the count does not \
             read, another tenant, moved, deleted"
        );
        assert_eq!((std, edge), (vec!["b".to_string()], vec![]), "the roster follows");
    }

    #[test]
    fn a_tenant_gone_or_moved_with_stack_work_in_flight_frees_its_slot_at_once() {
        use watcher::Event::*;
        let (asked, std, edge) = asked(vec![
            Apply(tenant("a", "std", "r1", "False")),
            Apply(tenant("b", "std", "r1", "False")),
            Delete(tenant("a", "std", "r1", "False")),
            Apply(tenant("b", "edge", "r1", "False")),
        ]);
        assert_eq!(asked, vec![vec!["std"], vec!["std"], vec!["std!"], vec!["edge", "std!"]]);
        assert_eq!((std, edge), (vec![], vec!["b".to_string()]));
    }

    #[test]
    fn a_relisting_asks_for_the_tenants_deleted_while_the_watch_was_down() {
        use watcher::Event::*;
        let (asked, std, edge) = asked(vec![
            Apply(tenant("a", "std", "r1", "True")),
            Apply(tenant("c", "std", "r1", "True")),
            Apply(tenant("b", "edge", "r1", "True")),
            Init,
            InitApply(tenant("c", "std", "r1", "True")),
            InitApply(tenant("a", "std", "r1", "True")),
            InitDone,
        ]);
        assert_eq!(asked, vec![vec!["std"], vec!["std"], vec!["edge"], vec![], vec![], vec![], vec!["edge"]]);
        assert_eq!((std, edge), (vec!["a".to_string(), "c".to_string()], vec![]), "by name");
    }

    #[test]
    fn a_tenant_fails_a_revision_only_when_its_baseline_step_is_stalled() {
        let with = |conditions: Vec<Condition>| {
            let mut t = tenant("a", "std", "r1", "True");
            t.status.as_mut().unwrap().conditions = conditions;
            t
        };
        let current = with(vec![condition("BaselineReady", "True", "BaselineApplied")]);
        assert_eq!(view(&current, "std").state, State::Current);
        let failed = with(vec![
            condition("BaselineReady", "False", "StackUpdateRolledBack"),
            condition("Stalled", "True", "StackUpdateRolledBack"),
        ]);
        assert!(matches!(view(&failed, "std").state, State::Failed { .. }));
        // Stalled by placement: the baseline step never ran, so it did not fail the revision.
        let elsewhere = with(vec![
            condition("BaselineReady", "False", "WaitingForPlacement"),
            condition("Stalled", "True", "OrganizationalUnitNotAllowed"),
        ]);
        assert_eq!(view(&elsewhere, "std").state, State::InFlight);
        assert_eq!(view(&current, "other").admitted, None, "another Baseline's revision is not this one's");
    }
}
