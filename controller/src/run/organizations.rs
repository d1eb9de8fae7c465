//! The Organizations (silo.dev) this process serves, each with its own controllers.
//!
//! Every Organization object gets what the default organization gets from the flags: its own
//! AWS clients (its management role, Region and budgets), engine (index, creation slots),
//! closure ledger, Tenant and AccountPool controllers, fed only its own Tenants by the
//! [`Router`](super::router::Router). A changed spec restarts them, only once the ones before
//! have stopped (reconciles in flight finish first), so an organization never has two sets of
//! controllers at once; a deleted Organization stops them.

use std::{collections::BTreeMap, pin::pin, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt, channel::oneshot, future::BoxFuture, stream::FuturesUnordered};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tracing::{info, warn};

use super::{AwsSource, Leases, Shared, organization, router::Router};
use crate::{
    api::{CreationQueueStatus, Organization, OrganizationSpec, OrganizationStatus, Tenant},
    aws::AwsConfig,
    aws::Fence,
    conditions::{self, Conditions},
    config::Config,
    contract::FIELD_MANAGER,
    leader::{
        Leadership,
        share::{self, Presence, Step},
    },
    metrics::{METRICS, OrganizationLabels},
};

/// One organization this process leads, or is trying to: the spec its controllers run
/// with, and how to stop them.
struct Served {
    spec: OrganizationSpec,
    stop: Option<oneshot::Sender<()>>,
}

/// Why an organization's controllers were stopped: what happens once they have.
#[derive(PartialEq)]
enum Stopping {
    /// Its spec changed: start again at once, with the new one.
    Restart,
    /// Deleted, or handed over to another replica: not again until a look says so.
    Leave,
}

/// Serves the Organization objects until `shutdown` completes, then waits for their
/// controllers to stop: every one of them without `leases`; with them, this replica's fair
/// share ([`share::step`], looked at every fifth of a lease), each behind its own Lease.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    client: Client,
    source: &AwsSource,
    config: Config,
    aws: AwsConfig,
    shared: Arc<Shared>,
    leases: Option<Leases>,
    leading_default: tokio::sync::watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let events = watcher(Api::<Organization>::all(client.clone()), watcher::Config::default()).default_backoff();
    let mut events = pin!(events.take_until(shutdown.clone()));
    let mut running: FuturesUnordered<BoxFuture<'static, String>> = FuturesUnordered::new();
    let mut served: BTreeMap<String, Served> = BTreeMap::new();
    let mut stopping: BTreeMap<String, Stopping> = BTreeMap::new();
    // The latest spec of each Organization, started once its earlier controllers stopped.
    let mut wanted: BTreeMap<String, Organization> = BTreeMap::new();
    let mut relisted: Option<Vec<String>> = None;
    let lease_api = leases.as_ref().map(|l| share::leases(client.clone(), &l.namespace));
    let _presence = leases.as_ref().zip(lease_api.clone()).map(|(l, api)| Presence::start(api, &l.identity, l.seconds));
    // A fifth of a lease: an organization whose leader died is taken soon after its Lease
    // expires. One LIST of the namespace's Leases per look.
    let look_every = leases.as_ref().map_or(Duration::MAX, |l| Duration::from_secs(l.seconds).div_f64(5.0));
    let mut looks = tokio::time::interval(look_every.min(Duration::from_secs(3600)));
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // An organization to look at again, and whether its controllers may start here now.
        let change: Option<(String, bool)> = tokio::select! {
            event = events.next() => match event {
                None => break,
                Some(Ok(watcher::Event::Apply(org) | watcher::Event::InitApply(org))) => {
                    let name = org.name_any();
                    if let Some(listed) = relisted.as_mut() {
                        listed.push(name.clone());
                    }
                    // Every replica can ask every organization whether it has an account
                    // (clients made again only when the spec changes, not at status writes).
                    if wanted.get(&name).map(|known| &known.spec) != Some(&org.spec) {
                        let (_, read_only) = clients_of(&client, source, &config, &aws, &org, Fence::closed()).await;
                        shared.neighbours.set(&name, read_only.organizations);
                    }
                    wanted.insert(name.clone(), org);
                    // With Leases, a new organization starts here only when a look says so.
                    Some((name, leases.is_none()))
                }
                Some(Ok(watcher::Event::Delete(org))) => {
                    wanted.remove(&org.name_any());
                    shared.neighbours.remove(&org.name_any());
                    // Nobody leads it any more, and nobody should: no series says otherwise.
                    METRICS.organization_leader.remove(&OrganizationLabels::of(Some(&org.name_any())));
                    Some((org.name_any(), false))
                }
                Some(Ok(watcher::Event::Init)) => {
                    relisted = Some(vec![]);
                    None
                }
                // Organizations deleted while the watch was down.
                Some(Ok(watcher::Event::InitDone)) => {
                    let listed = relisted.take().unwrap_or_default();
                    wanted.retain(|name, _| listed.contains(name));
                    for name in served.keys().filter(|n| !wanted.contains_key(*n)).cloned().collect::<Vec<_>>() {
                        stop(&mut served, &mut stopping, &name, Stopping::Leave);
                    }
                    None
                }
                Some(Err(err)) => {
                    warn!(%err, "the Organization watch failed; it retries");
                    None
                }
            },
            Some(name) = running.next(), if !running.is_empty() => {
                served.remove(&name);
                if !wanted.contains_key(&name) {
                    METRICS.organization_leader.remove(&OrganizationLabels::of(Some(&name)));
                }
                info!(organization = %name, "the organization's controllers stopped");
                match stopping.remove(&name) {
                    Some(Stopping::Restart) => Some((name, true)),
                    _ => None,
                }
            }
            _ = looks.tick(), if leases.is_some() => {
                let (Some(l), Some(api)) = (&leases, &lease_api) else { continue };
                let view = match share::look(api, &l.identity, &l.main, k8s_openapi::jiff::Timestamp::now()).await {
                    Ok(view) => view,
                    Err(err) => {
                        warn!(%err, "cannot read the Leases; the organizations stay as they are");
                        continue;
                    }
                };
                let organizations = wanted.keys().cloned().collect();
                let leading = served.keys().filter(|n| !stopping.contains_key(*n)).cloned().collect();
                match share::step(&l.identity, &organizations, &leading, *leading_default.borrow(), &view) {
                    Step::Take(name) => Some((name, true)),
                    Step::HandOver(name) => {
                        info!(organization = %name, replicas = view.replicas, "handing the organization over");
                        stop(&mut served, &mut stopping, &name, Stopping::Leave);
                        None
                    }
                    Step::Stay => None,
                }
            }
        };
        let Some((name, may_start)) = change else { continue };
        match (wanted.get(&name), served.get(&name)) {
            (Some(org), Some(now)) if now.spec == org.spec => {}
            // A new spec: the controllers running now stop first; they start again when done.
            (Some(_), Some(_)) => stop(&mut served, &mut stopping, &name, Stopping::Restart),
            (None, Some(_)) => stop(&mut served, &mut stopping, &name, Stopping::Leave),
            (Some(org), None) if may_start => {
                let (stop_tx, stopped) = oneshot::channel::<()>();
                let run = Box::pin(lead(
                    client.clone(),
                    source.clone(),
                    config.clone(),
                    aws.clone(),
                    shared.clone(),
                    leases.clone(),
                    org.clone(),
                    stopped,
                    shutdown.clone(),
                ));
                let done = name.clone();
                running.push(run.map(move |()| done).boxed());
                served.insert(name, Served { spec: org.spec.clone(), stop: Some(stop_tx) });
            }
            (_, None) => {}
        }
    }
    // Shutdown: every organization's controllers see it and finish their reconciles.
    while running.next().await.is_some() {}
}

/// Asks an organization's controllers to stop (once), saying what comes after.
fn stop(served: &mut BTreeMap<String, Served>, stopping: &mut BTreeMap<String, Stopping>, name: &str, then: Stopping) {
    if let Some(stop) = served.get_mut(name).and_then(|s| s.stop.take()) {
        let _ = stop.send(());
    }
    if served.contains_key(name) {
        // A restart asked for after a hand-over does not undo it.
        let after = stopping.entry(name.to_string()).or_insert(Stopping::Restart);
        if then == Stopping::Leave {
            *after = Stopping::Leave;
        }
    }
}

/// Leads one organization: takes its Lease (with `leases`; gives up when another replica
/// holds it), then runs its controllers behind the Lease's fence until `stopped`, shutdown
/// or the Lease is lost, then releases the Lease.
#[allow(clippy::too_many_arguments)]
async fn lead(
    client: Client,
    source: AwsSource,
    config: Config,
    aws: AwsConfig,
    shared: Arc<Shared>,
    leases: Option<Leases>,
    org: Organization,
    mut stopped: oneshot::Receiver<()>,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let name = org.name_any();
    let mut leadership = match &leases {
        None => None,
        Some(l) => {
            let lease = share::lease_name(&name);
            let seconds = l.seconds;
            let within = Duration::from_secs(seconds);
            let taken = Leadership::try_acquire(client.clone(), &l.namespace, &lease, &l.identity, seconds, within);
            // Stopped or shut down while waiting: nothing was started, nothing to hand over.
            let taken = tokio::select! {
                taken = taken => taken,
                _ = &mut stopped => None,
                () = shutdown.clone() => None,
            };
            let Some(leadership) = taken else { return };
            Some(leadership)
        }
    };
    let fence = leadership.as_ref().map_or_else(Fence::open, Leadership::fence);
    let (org_config, clients) = clients_of(&client, &source, &config, &aws, &org, fence).await;
    let feed = shared.router.serve(&name);
    let (lost, lost_rx) = oneshot::channel::<()>();
    let until = async move {
        tokio::select! {
            () = shutdown => {}
            _ = stopped => {}
            _ = lost_rx => {}
        }
    }
    .shared();
    info!(organization = %name, "starting the organization's controllers");
    let labels = OrganizationLabels::of(Some(&name));
    METRICS.organization_leader.get_or_create(&labels).set(1);
    let engine = super::engine(&clients, &org_config, shared.router.clone());
    let status = publish_status(client.clone(), &org, engine.clone(), &org_config);
    let controllers =
        Box::pin(organization(client.clone(), clients, org_config, shared.clone(), feed, engine, until.clone()));
    let run = {
        let until = until.clone();
        async move {
            tokio::select! {
                () = controllers => {}
                () = async { status.await; until.await } => {}
            }
        }
    };
    let lease = async {
        match leadership.as_mut() {
            Some(leadership) => leadership.lost().await,
            None => std::future::pending().await,
        }
        let _ = lost.send(());
    };
    // A lost Lease stops the controllers (through `until`); they finish either way.
    let mut run = pin!(run);
    tokio::select! {
        () = &mut run => {}
        () = lease => run.await,
    }
    shared.router.stop(&name);
    METRICS.organization_leader.get_or_create(&labels).set(0);
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
}

/// The configuration and AWS clients of the Organization `org` (its management role, with the
/// external id its Secret holds), writing only while `fence` allows.
async fn clients_of(
    client: &Client,
    source: &AwsSource,
    config: &Config,
    aws: &AwsConfig,
    org: &Organization,
    fence: Fence,
) -> (Config, crate::aws::Aws) {
    let external_id = match &org.spec.external_id {
        Some(secret) => {
            let read =
                crate::baseline::external_id::read(client, &config.external_id_namespace, &secret.name, &secret.key);
            read.await.unwrap_or_else(|err| {
                warn!(organization = %org.name_any(), %err, "cannot read the management role's external id");
                None
            })
        }
        None => None,
    };
    let (org_config, org_aws) = config.for_organization(aws, org, external_id);
    let clients = source.clients(&org_aws, fence).await;
    (org_config, clients)
}

/// How often Tenants of organizations nobody serves are looked for.
const UNSERVED_EVERY: Duration = Duration::from_secs(30);

/// Marks the Tenants whose `spec.organization` names no Organization: Stalled with reason
/// `OrganizationNotFound` (nothing in AWS is done for them). Their organization's controllers
/// take them over once it exists. An organization whose object exists but whose controllers
/// are still starting is left alone.
pub(super) async fn report_unserved(client: Client, router: Arc<Router>, shutdown: impl Future<Output = ()>) {
    let organizations = Api::<Organization>::all(client.clone());
    let tenants = Api::<Tenant>::all(client);
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(UNSERVED_EVERY) => {}
        }
        let unserved = router.unserved();
        reported.retain(|name, organization| {
            unserved.get(organization).is_some_and(|tenants| tenants.iter().any(|t| &t.name_any() == name))
        });
        if unserved.is_empty() {
            continue;
        }
        // Which of them exist (a LIST: RBAC grants Silo no GET of Organizations).
        let existing: Vec<String> = match organizations.list(&kube::api::ListParams::default()).await {
            Ok(list) => list.items.iter().map(ResourceExt::name_any).collect(),
            Err(err) => {
                warn!(%err, "cannot list the Organizations");
                continue;
            }
        };
        for (organization, unserved_tenants) in unserved {
            if existing.contains(&organization) {
                continue;
            }
            // From the cache: RBAC grants Silo no GET of Tenants.
            for tenant in unserved_tenants {
                let name = tenant.name_any();
                if reported.get(&name) == Some(&organization) {
                    continue;
                }
                let mut status = tenant.status.clone().unwrap_or_default();
                let message = format!(
                    "spec.organization names Organization {organization}, which does not exist (kubectl get \
                     organizations): create it, or create this tenant again in an existing organization \
                     (spec.organization cannot change). Nothing is done in AWS meanwhile"
                );
                let mut conds = Conditions::new(
                    &mut status.conditions,
                    tenant.metadata.generation,
                    k8s_openapi::jiff::Timestamp::now(),
                );
                conds.set(conditions::READY, false, "OrganizationNotFound", &message);
                conds.set(conditions::RECONCILING, false, "OrganizationNotFound", "");
                conds.set(conditions::STALLED, true, "OrganizationNotFound", &message);
                let patch = serde_json::json!({"apiVersion": "silo.dev/v1alpha1", "kind": "Tenant",
                    "status": {"phase": "Pending", "conditions": status.conditions}});
                let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
                match tenants.patch_status(&name, &params, &kube::api::Patch::Apply(&patch)).await {
                    Ok(_) => {
                        reported.insert(name, organization.clone());
                    }
                    Err(err) => warn!(tenant = %name, %err, "cannot report the missing Organization"),
                }
            }
        }
    }
}

/// How often an Organization's status is published.
const STATUS_EVERY: Duration = Duration::from_secs(15);

/// Publishes what the organization's controllers know in its Organization's status, until it
/// cannot (the returned future then ends; the controllers go on).
fn publish_status(
    client: Client,
    object: &Organization,
    engine: Arc<crate::org::Organization>,
    config: &Config,
) -> impl Future<Output = ()> + Send + 'static {
    let name = object.name_any();
    let generation = object.metadata.generation;
    let ledger = crate::tenant::closure::ClosureLedger::new(
        client.clone(),
        &config.namespace,
        config.organization.as_deref(),
        config.max_account_closures_per_day,
    );
    let account_limit = config.account_limit;
    let api = Api::<Organization>::all(client);
    let leader = crate::config::replica_identity();
    async move {
        let mut conditions_now = vec![];
        let mut published: Option<OrganizationStatus> = None;
        loop {
            let now = k8s_openapi::jiff::Timestamp::now();
            let closed = ledger.closed_within_a_day(now).await.ok();
            let seen = Seen {
                members: engine.index.is_complete().then(|| engine.index.quota_usage().members),
                swept_at: engine.index.swept_at(),
                in_flight: engine.creations.in_use(),
                waiting: engine.creations.waiting(),
                closed,
            };
            let status = status_of(&seen, account_limit, &leader, generation, &mut conditions_now, now);
            if published.as_ref() != Some(&status) {
                let patch =
                    serde_json::json!({"apiVersion": "silo.dev/v1alpha1", "kind": "Organization", "status": status});
                let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
                match api.patch_status(&name, &params, &kube::api::Patch::Apply(&patch)).await {
                    Ok(_) => published = Some(status),
                    Err(kube::Error::Api(err)) if err.code == 404 => return,
                    Err(err) => warn!(organization = %name, %err, "cannot publish the Organization's status"),
                }
            }
            tokio::time::sleep(STATUS_EVERY).await;
        }
    }
}

/// What the controllers of an organization know of it at one moment.
struct Seen {
    /// Accounts counting against the quota, once the index has read the organization.
    members: Option<usize>,
    swept_at: Option<k8s_openapi::jiff::Timestamp>,
    in_flight: usize,
    waiting: usize,
    closed: Option<usize>,
}

/// The Organization's status from what its controllers know. `conditions` keeps transition
/// times between calls. Pure.
fn status_of(
    seen: &Seen,
    account_limit: Option<u32>,
    leader: &str,
    generation: Option<i64>,
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    now: k8s_openapi::jiff::Timestamp,
) -> OrganizationStatus {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut conds = Conditions::new(conditions, generation, now);
    match seen.members {
        Some(members) => {
            let message = format!("Silo acts for this organization: {members} accounts, read from AWS");
            conds.set(conditions::READY, true, "Serving", &message);
            conds.set(conditions::STALLED, false, "Serving", "");
        }
        None => {
            let message = "Silo is reading the organization's accounts for the first time; if this lasts, check \
                           that it can assume spec.managementRoleArn (its log says why not)";
            conds.set(conditions::READY, false, "Reading", message);
            conds.set(conditions::STALLED, false, "Reading", "");
        }
    }
    OrganizationStatus {
        members: seen.members.map(count),
        account_limit,
        index_refreshed_time: seen.swept_at.map(|t| t.to_string()),
        creations: CreationQueueStatus { in_flight: count(seen.in_flight), waiting: count(seen.waiting) },
        closed_last_day: seen.closed.map(count),
        leader: Some(leader.to_string()),
        observed_generation: generation,
        conditions: conditions.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_organization_is_ready_once_its_accounts_are_read() {
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let mut conditions = vec![];
        let reading = Seen { members: None, swept_at: None, in_flight: 0, waiting: 2, closed: Some(0) };
        let status = status_of(&reading, Some(10), "silo-0", Some(3), &mut conditions, now);
        let ready = conditions::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Reading"));
        assert_eq!((status.members, status.creations.waiting, status.observed_generation), (None, 2, Some(3)));

        let read = Seen { members: Some(7), swept_at: Some(now), in_flight: 1, waiting: 0, closed: Some(1) };
        let status = status_of(&read, Some(10), "silo-0", Some(3), &mut conditions, now);
        let ready = conditions::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Serving"));
        assert!(ready.message.contains("7 accounts"), "{}", ready.message);
        assert_eq!((status.members, status.account_limit, status.closed_last_day), (Some(7), Some(10), Some(1)));
        assert_eq!((status.creations.in_flight, status.leader.as_deref()), (1, Some("silo-0")));
        assert_eq!(status.index_refreshed_time, Some(now.to_string()));
    }
}
