//! Which organization's controllers hear of a Tenant.
//!
//! One watch reads every Tenant (the Baseline controller counts them all); each organization
//! served in this process has its own Tenant controller, fed by a [`Router`]: a Tenant's
//! changes and wakes go to the controller of the organization its `spec.organization` names
//! (the default organization's when it names none), and nowhere else, so no controller ever
//! acts on another organization's Tenant. An organization added later first hears of its
//! Tenants already in the cache.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::Tenant;

/// The organization a Tenant belongs to: its `spec.organization`, or `""` for the default one.
pub fn organization_of(tenant: &Tenant) -> &str {
    tenant.spec.organization.as_deref().unwrap_or("")
}

/// What one organization's Tenant controller is fed.
pub struct Feed {
    /// Its Tenants' changes (those the Tenant watch passes on).
    pub changes: UnboundedReceiver<Tenant>,
    /// Its Tenants to reconcile now (a rollout admitted them, a creation slot freed).
    pub wakes: UnboundedReceiver<ObjectRef<Tenant>>,
}

struct Route {
    changes: UnboundedSender<Tenant>,
    wakes: UnboundedSender<ObjectRef<Tenant>>,
}

/// Sends each Tenant's changes and wakes to its organization's controller. Cheap to share.
pub struct Router {
    tenants: Store<Tenant>,
    routes: RwLock<BTreeMap<String, Route>>,
}

impl Router {
    /// A router reading Tenants' organizations from the cache of the Tenant watch.
    pub fn new(tenants: Store<Tenant>) -> Arc<Self> {
        Arc::new(Self { tenants, routes: RwLock::default() })
    }

    /// Serves `organization` (`""`: the default one) from now on: its Tenants already in the
    /// cache first, then every change. Replaces an earlier feed of the same organization.
    pub fn serve(&self, organization: &str) -> Feed {
        let (changes, changes_rx) = unbounded();
        let (wakes, wakes_rx) = unbounded();
        let mut routes = self.routes.write().expect("the routes lock is never poisoned");
        for tenant in self.tenants.state().into_iter().filter(|t| organization_of(t) == organization) {
            let _ = changes.unbounded_send(tenant.as_ref().clone());
        }
        routes.insert(organization.to_string(), Route { changes, wakes });
        Feed { changes: changes_rx, wakes: wakes_rx }
    }

    /// Stops serving `organization`: its Tenants' changes and wakes go nowhere.
    pub fn stop(&self, organization: &str) {
        self.routes.write().expect("the routes lock is never poisoned").remove(organization);
    }

    /// A Tenant changed: its organization's controller hears of it, if one is served here.
    pub fn changed(&self, tenant: Tenant) {
        let routes = self.routes.read().expect("the routes lock is never poisoned");
        if let Some(route) = routes.get(organization_of(&tenant)) {
            let _ = route.changes.unbounded_send(tenant);
        }
    }

    /// Wakes a Tenant by name, in its organization's controller (a Tenant not in the cache
    /// yet is woken by its first change instead).
    pub fn wake(&self, tenant: ObjectRef<Tenant>) {
        let Some(cached) = self.tenants.get(&tenant) else { return };
        let routes = self.routes.read().expect("the routes lock is never poisoned");
        if let Some(route) = routes.get(organization_of(&cached)) {
            let _ = route.wakes.unbounded_send(tenant);
        }
    }

    /// The organizations of cached Tenants that no controller here serves, with their Tenants
    /// (from the cache).
    pub fn unserved(&self) -> BTreeMap<String, Vec<Arc<Tenant>>> {
        let routes = self.routes.read().expect("the routes lock is never poisoned");
        let mut unserved: BTreeMap<String, Vec<Arc<Tenant>>> = BTreeMap::new();
        for tenant in self.tenants.state() {
            let organization = organization_of(&tenant);
            if !routes.contains_key(organization) {
                unserved.entry(organization.to_string()).or_default().push(tenant);
            }
        }
        unserved
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher::Event};

    use super::*;
    use crate::api::TenantSpec;

    fn tenant(name: &str, organization: Option<&str>) -> Tenant {
        Tenant::new(name, TenantSpec { organization: organization.map(str::to_string), ..Default::default() })
    }

    fn drain<T>(receiver: &mut UnboundedReceiver<T>, name: impl Fn(T) -> String) -> Vec<String> {
        let mut names = vec![];
        while let Ok(item) = receiver.try_recv() {
            names.push(name(item));
        }
        names.sort();
        names
    }

    fn unserved(router: &Router) -> BTreeMap<String, Vec<String>> {
        let names =
            |tenants: Vec<Arc<Tenant>>| tenants.iter().map(|t| kube::ResourceExt::name_any(t.as_ref())).collect();
        router.unserved().into_iter().map(|(org, tenants)| (org, names(tenants))).collect()
    }

    fn changes(feed: &mut Feed) -> Vec<String> {
        drain(&mut feed.changes, |t| kube::ResourceExt::name_any(&t))
    }

    fn wakes(feed: &mut Feed) -> Vec<String> {
        drain(&mut feed.wakes, |r| r.name)
    }

    #[test]
    fn each_tenant_reaches_only_its_organizations_controller() {
        let (store, mut writer) = reflector::store::<Tenant>();
        for t in [tenant("a", None), tenant("b", Some("eu")), tenant("c", Some("us"))] {
            writer.apply_watcher_event(&Event::Apply(t));
        }
        let router = Router::new(store);
        let mut default = router.serve("");
        let mut eu = router.serve("eu");
        assert_eq!((changes(&mut default), changes(&mut eu)), (vec!["a".into()], vec!["b".into()]), "the cache first");

        for t in [tenant("a", None), tenant("b", Some("eu")), tenant("c", Some("us"))] {
            router.changed(t);
        }
        for name in ["a", "b", "c", "unknown"] {
            router.wake(ObjectRef::new(name));
        }
        assert_eq!((changes(&mut default), wakes(&mut default)), (vec!["a".into()], vec!["a".into()]));
        assert_eq!((changes(&mut eu), wakes(&mut eu)), (vec!["b".into()], vec!["b".into()]));
        assert_eq!(unserved(&router), BTreeMap::from([("us".to_string(), vec!["c".to_string()])]));

        // An organization served later hears of its Tenants at once; one stopped, no more.
        let mut us = router.serve("us");
        assert_eq!(changes(&mut us), ["c"]);
        router.stop("eu");
        router.changed(tenant("b", Some("eu")));
        router.wake(ObjectRef::new("b"));
        assert_eq!((changes(&mut eu), wakes(&mut eu)), (vec![], vec![]));
        assert_eq!(unserved(&router), BTreeMap::from([("eu".to_string(), vec!["b".to_string()])]));
    }
}
