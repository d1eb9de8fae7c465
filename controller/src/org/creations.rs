//! Creation slots: AWS runs at most 5 CreateAccount requests of an organization at once, and
//! refuses a sixth. This component owns those slots for the whole fleet.
//!
//! - Tenants that need an account wait in a FIFO ordered by their creation time; account
//!   pools refilling wait behind every Tenant ([`Applicant::refill`]): a user's Tenant always
//!   gets a slot before a refill.
//! - A slot is taken ([`Creations::reserve`]) before CreateAccount is sent, atomically with
//!   the count, so no CreateAccount is ever sent into a full quota by Silo itself.
//! - A slot is freed by the request's state in AWS, whichever code path sees it: the tracker,
//!   a tenant that asks, a listing ([`Creations::observe`]).
//! - Every request in flight is tracked here, Silo's own and those found in listings (another
//!   tool's, or this controller's before a restart); the tracker asks AWS about each one
//!   about when it should be done, learning how long creations take from AWS's own
//!   RequestedTimestamp and CompletedTimestamp.
//! - When a slot frees, the next tenants in line are woken at once.
//!
//! Pure bookkeeping: the AWS calls are made by [`super::Organization`], which also runs the
//! tracker loop.
//!
//! ## Guarantees
//! - At most `slots` requests are reserved or in flight at any time, counting requests found
//!   in listings that Silo did not send.
//! - Until the requests in flight after a restart are known ([`Creations::mark_ready`]),
//!   nothing is reserved.
//! - A tenant that leaves the line (deleted, paused, adopting instead) says so
//!   ([`Creations::leave`]); one that is woken for a slot and does not come to take it within
//!   [`WAKE_GRACE`] no longer holds the others back.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus_client::metrics::gauge::Gauge;

use crate::{
    aws::organizations::{CreateRequest, CreationState},
    metrics::{METRICS, OrganizationLabels},
};

/// A tenant woken for a free slot that has not come to take it after this long no longer
/// holds the others back (until it asks again).
pub const WAKE_GRACE: Duration = Duration::from_secs(15);
/// How long a finished request is remembered, for the tenant that owns it to read.
const FINISHED_MEMORY: Duration = Duration::from_secs(3600);
/// Before Silo has seen a creation finish, how long one is assumed to take.
const FIRST_GUESS: Duration = Duration::from_secs(5);
/// The first look at a request comes this long after it should be done.
const FIRST_CHECK_MARGIN: Duration = Duration::from_millis(20);
/// Checks of one request are never closer than this, nor further apart than `MAX_CHECK_GAP`.
const MIN_CHECK_GAP: Duration = Duration::from_millis(100);
const MAX_CHECK_GAP: Duration = Duration::from_secs(30);

/// A tenant that wants a slot: its name (to wake it), UID (its identity) and creation time
/// (its place in line); or an account pool refilling, behind every tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applicant {
    pub name: String,
    pub uid: String,
    /// Seconds since the epoch of the Tenant's creationTimestamp.
    pub created: i64,
    /// An account pool's refill (`name` is the pool's; pools are not woken, they look again
    /// by themselves), not a Tenant.
    pub refill: bool,
}

impl Applicant {
    /// The place in line: every Tenant before every refill, then by creation time.
    fn key(&self) -> (bool, i64, String) {
        (self.refill, self.created, self.uid.clone())
    }
}

/// Why a tenant cannot have a slot yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotYet {
    /// After a restart, the requests already in flight are not known yet.
    Starting,
    /// `ahead` tenants are before this one, and `in_use` of the slots are taken.
    InLine { position: usize, in_use: usize },
}

#[derive(Debug)]
struct Tracked {
    /// The tenant that owns the request, when known.
    owner: Option<String>,
    account_name: String,
    next_check: Instant,
    gap: Duration,
}

#[derive(Debug)]
struct Waiter {
    /// The Tenant to wake; `None` for a refill.
    name: Option<String>,
    last_asked: Instant,
    /// When it was last woken for a free slot.
    woken: Option<Instant>,
}

impl Waiter {
    /// Woken for a slot a while ago and never came: skipped until it asks again.
    fn gone(&self, now: Instant) -> bool {
        self.woken.is_some_and(|woken| self.last_asked < woken && now - woken > WAKE_GRACE)
    }
}

#[derive(Debug)]
struct Finished {
    request: CreateRequest,
    at: Instant,
}

#[derive(Debug, Default)]
struct Slots {
    ready: bool,
    /// Waiting applicants by (refill, creation time, uid).
    waiting: BTreeMap<(bool, i64, String), Waiter>,
    /// Applicants holding a slot before their CreateAccount is answered (uid -> name, or
    /// `None` for a refill: nobody to wake).
    reserved: HashMap<String, Option<String>>,
    in_flight: HashMap<String, Tracked>,
    finished: HashMap<String, Finished>,
    /// The request of each tenant (uid -> request id), for reconciles that run on a cached
    /// Tenant from before the request id was written.
    by_tenant: HashMap<String, String>,
    typical: Option<Duration>,
}

impl Slots {
    fn in_use(&self) -> usize {
        self.reserved.len() + self.in_flight.len()
    }

    fn publish(&self, capacity: usize, label: &OrganizationLabels) {
        let gauge = |family: &prometheus_client::metrics::family::Family<OrganizationLabels, Gauge>, n: usize| {
            family.get_or_create(label).set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        gauge(&METRICS.creation_slots_in_use, self.in_use());
        gauge(&METRICS.creation_queue_length, self.waiting.len());
        gauge(&METRICS.creation_slots, capacity);
    }

    fn first_check(&self, now: Instant) -> Instant {
        // `now` is when AWS's answer arrived, after AWS started the clock: a request is done
        // by `now + typical`, give or take the spread of creation times.
        now + self.typical.unwrap_or(FIRST_GUESS) + FIRST_CHECK_MARGIN
    }
}

/// The organization's creation slots and the requests in flight.
pub struct Creations {
    capacity: usize,
    /// The organization, in metrics.
    label: OrganizationLabels,
    slots: Mutex<Slots>,
    /// Wakes the tracker when a request is added.
    pub(super) changed: tokio::sync::Notify,
    /// Tenants to reconcile now (their request finished, or a slot is theirs).
    wake: Box<dyn Fn(String) + Send + Sync>,
}

impl Creations {
    /// `wake` is called with a Tenant's name when it should be reconciled now.
    pub fn new(capacity: usize, label: OrganizationLabels, wake: impl Fn(String) + Send + Sync + 'static) -> Self {
        let creations = Self {
            capacity,
            label,
            slots: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            wake: Box::new(wake),
        };
        creations.lock().publish(capacity, &creations.label);
        creations
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().expect("creation slots lock")
    }

    /// The requests in flight after a restart are known: slots may be handed out.
    pub fn mark_ready(&self) {
        let mut slots = self.lock();
        slots.ready = true;
        self.wake_next(&mut slots);
    }

    /// Slots taken: reserved, or with a CreateAccount in flight. Each will be an account.
    pub fn in_use(&self) -> usize {
        self.lock().in_use()
    }

    /// Tenants and pool refills waiting in line for a slot.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Takes a slot for `tenant` if it is its turn; otherwise keeps its place in line.
    pub fn reserve(&self, tenant: &Applicant) -> Result<(), NotYet> {
        let mut slots = self.lock();
        let now = Instant::now();
        let key = tenant.key();
        if slots.reserved.contains_key(&tenant.uid) {
            return Ok(());
        }
        let woken = slots.waiting.get(&key).and_then(|w| w.woken);
        let name = (!tenant.refill).then(|| tenant.name.clone());
        slots.waiting.insert(key.clone(), Waiter { name, last_asked: now, woken });
        let result = if !slots.ready {
            Err(NotYet::Starting)
        } else {
            let free = self.capacity.saturating_sub(slots.in_use());
            let ahead = slots.waiting.range(..key.clone()).filter(|(_, w)| !w.gone(now)).count();
            if ahead < free {
                slots.waiting.remove(&key);
                let name = (!tenant.refill).then(|| tenant.name.clone());
                slots.reserved.insert(tenant.uid.clone(), name);
                Ok(())
            } else {
                Err(NotYet::InLine { position: ahead + 1, in_use: slots.in_use() })
            }
        };
        slots.publish(self.capacity, &self.label);
        result
    }

    /// Gives back a slot whose CreateAccount was not sent or failed before AWS answered.
    pub fn release(&self, uid: &str) {
        let mut slots = self.lock();
        if slots.reserved.remove(uid).is_some() {
            self.wake_next(&mut slots);
        }
        slots.publish(self.capacity, &self.label);
    }

    /// The tenant no longer wants an account created (deleted, paused, adopting instead).
    pub fn leave(&self, uid: &str) {
        let mut slots = self.lock();
        slots.waiting.retain(|(_, _, waiter), _| waiter != uid);
        let released = slots.reserved.remove(uid).is_some();
        if released {
            self.wake_next(&mut slots);
        }
        slots.publish(self.capacity, &self.label);
    }

    /// AWS answered CreateAccount for the tenant holding a slot: the slot now belongs to the
    /// request, until the request leaves IN_PROGRESS.
    pub fn sent(&self, uid: &str, request: &CreateRequest) {
        let mut slots = self.lock();
        if let Some(name) = slots.reserved.remove(uid) {
            slots.by_tenant.insert(uid.to_string(), request.id.clone());
            if request.state == CreationState::InProgress {
                let next_check = slots.first_check(Instant::now());
                slots.in_flight.insert(
                    request.id.clone(),
                    Tracked { owner: name, account_name: request.account_name.clone(), next_check, gap: MIN_CHECK_GAP },
                );
                self.changed.notify_one();
            } else {
                slots.finished.insert(request.id.clone(), Finished { request: request.clone(), at: Instant::now() });
                self.wake_next(&mut slots);
            }
        }
        slots.publish(self.capacity, &self.label);
    }

    /// A tenant follows a request it found by name after a crash: wake it when it ends.
    pub fn follow(&self, uid: &str, name: &str, request_id: &str) {
        let mut slots = self.lock();
        slots.by_tenant.insert(uid.to_string(), request_id.to_string());
        if let Some(tracked) = slots.in_flight.get_mut(request_id) {
            tracked.owner = Some(name.to_string());
        }
    }

    /// The tenant's request ended without an account and the tenant forgot it: its next
    /// attempt is a new request, not this one again.
    pub fn forget(&self, uid: &str) {
        self.lock().by_tenant.remove(uid);
    }

    /// The request this process knows the tenant sent or follows.
    pub fn request_of(&self, uid: &str) -> Option<String> {
        self.lock().by_tenant.get(uid).cloned()
    }

    /// What Silo knows of a request without asking AWS: `Some(InProgress)` while tracked,
    /// the final state once seen, `None` when unknown (ask AWS, then [`Creations::observe`]).
    pub fn known(&self, request_id: &str) -> Option<CreateRequest> {
        let slots = self.lock();
        if let Some(done) = slots.finished.get(request_id) {
            return Some(done.request.clone());
        }
        slots.in_flight.get(request_id).map(|t| CreateRequest {
            id: request_id.to_string(),
            account_name: t.account_name.clone(),
            state: CreationState::InProgress,
            took: None,
        })
    }

    /// Requests of this account name that Silo knows (in flight or recently finished).
    pub fn named(&self, account_name: &str) -> Vec<CreateRequest> {
        let slots = self.lock();
        let in_flight =
            slots.in_flight.iter().filter(|(_, t)| t.account_name == account_name).map(|(id, t)| CreateRequest {
                id: id.clone(),
                account_name: t.account_name.clone(),
                state: CreationState::InProgress,
                took: None,
            });
        let finished =
            slots.finished.values().filter(|f| f.request.account_name == account_name).map(|f| f.request.clone());
        in_flight.chain(finished).collect()
    }

    /// Records a request's state as some path saw it. A request that left IN_PROGRESS frees
    /// its slot (if it held one) and wakes its owner and the next tenants in line; one still
    /// in progress is tracked.
    pub fn observe(&self, request: &CreateRequest) {
        let mut slots = self.lock();
        let now = Instant::now();
        match request.state {
            CreationState::InProgress => {
                if !slots.in_flight.contains_key(&request.id) && !slots.finished.contains_key(&request.id) {
                    let next_check = slots.first_check(now);
                    slots.in_flight.insert(
                        request.id.clone(),
                        Tracked {
                            owner: None,
                            account_name: request.account_name.clone(),
                            next_check,
                            gap: MIN_CHECK_GAP,
                        },
                    );
                    self.changed.notify_one();
                }
            }
            _ => {
                if let Some(took) = request.took {
                    // An exponentially weighted mean of what AWS reported.
                    slots.typical = Some(match slots.typical {
                        Some(typical) => typical.mul_f64(0.8) + took.mul_f64(0.2),
                        None => took,
                    });
                }
                let owner = slots.in_flight.remove(&request.id).and_then(|t| t.owner);
                slots.finished.insert(request.id.clone(), Finished { request: request.clone(), at: now });
                slots.finished.retain(|_, f| now - f.at < FINISHED_MEMORY);
                if let Some(owner) = owner {
                    (self.wake)(owner);
                }
                self.wake_next(&mut slots);
            }
        }
        slots.publish(self.capacity, &self.label);
    }

    /// A check found the request still in progress: look again a little later, backing off.
    pub fn still_in_progress(&self, request_id: &str) {
        let mut slots = self.lock();
        let typical = slots.typical.unwrap_or(FIRST_GUESS);
        if let Some(tracked) = slots.in_flight.get_mut(request_id) {
            tracked.gap = (tracked.gap * 2).max(typical / 20).clamp(MIN_CHECK_GAP, MAX_CHECK_GAP);
            tracked.next_check = Instant::now() + tracked.gap;
        }
    }

    /// A listing of the requests IN_PROGRESS (after a restart, or when AWS refused a
    /// CreateAccount): every one of them holds a slot until it is seen to finish.
    pub fn observe_in_progress(&self, requests: &[CreateRequest]) {
        for request in requests.iter().filter(|r| r.state == CreationState::InProgress) {
            self.observe(request);
        }
    }

    /// The requests due for a check now, and when the next one is due.
    pub fn due(&self) -> (Vec<String>, Option<Instant>) {
        let slots = self.lock();
        let now = Instant::now();
        let due = slots.in_flight.iter().filter(|(_, t)| t.next_check <= now).map(|(id, _)| id.clone()).collect();
        let next = slots.in_flight.values().map(|t| t.next_check).filter(|at| *at > now).min();
        (due, next)
    }

    /// Wakes as many waiting tenants, first in line first, as there are free slots (lock held).
    fn wake_next(&self, slots: &mut Slots) {
        if !slots.ready {
            return;
        }
        let now = Instant::now();
        let free = self.capacity.saturating_sub(slots.in_use());
        for waiter in slots.waiting.values_mut().filter(|w| !w.gone(now)).take(free) {
            waiter.woken = Some(now);
            if let Some(name) = &waiter.name {
                (self.wake)(name.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn applicant(name: &str, created: i64) -> Applicant {
        Applicant { name: name.into(), uid: format!("uid-{name}"), created, refill: false }
    }

    fn refill(pool: &str, created: i64) -> Applicant {
        Applicant { refill: true, ..applicant(pool, created) }
    }

    fn request(id: &str, state: CreationState) -> CreateRequest {
        CreateRequest { id: id.into(), account_name: id.into(), state, took: None }
    }

    fn creations(capacity: usize) -> (Creations, Arc<Mutex<Vec<String>>>) {
        let woken = Arc::new(Mutex::new(vec![]));
        let log = woken.clone();
        let creations =
            Creations::new(capacity, OrganizationLabels::default(), move |name| log.lock().unwrap().push(name));
        (creations, woken)
    }

    #[test]
    fn nothing_is_reserved_until_the_requests_in_flight_are_known() {
        let (creations, _) = creations(5);
        assert_eq!(creations.reserve(&applicant("a", 1)), Err(NotYet::Starting));
        creations.mark_ready();
        assert_eq!(creations.reserve(&applicant("a", 1)), Ok(()));
    }

    #[test]
    fn slots_go_first_come_first_served_by_creation_time() {
        let (creations, woken) = creations(1);
        creations.mark_ready();
        // The later tenant asks first, but the earlier one is in line too.
        assert_eq!(creations.reserve(&applicant("early", 1)), Ok(()));
        assert_eq!(creations.reserve(&applicant("late", 3)), Err(NotYet::InLine { position: 1, in_use: 1 }));
        assert_eq!(creations.reserve(&applicant("middle", 2)), Err(NotYet::InLine { position: 1, in_use: 1 }));
        assert_eq!(
            creations.reserve(&applicant("late", 3)),
            Err(NotYet::InLine { position: 2, in_use: 1 }),
            "middle is ahead of late"
        );
        creations.sent("uid-early", &request("r1", CreationState::InProgress));
        assert!(woken.lock().unwrap().is_empty(), "the slot still belongs to r1");
        creations.observe(&request("r1", CreationState::Succeeded { account_id: "111".into() }));
        assert_eq!(
            *woken.lock().unwrap(),
            vec!["early".to_string(), "middle".to_string()],
            "the owner learns its account is there, and the next in line gets the slot"
        );
        assert!(creations.reserve(&applicant("late", 3)).is_err(), "late must not jump the line");
        assert_eq!(creations.reserve(&applicant("middle", 2)), Ok(()));
    }

    #[test]
    fn a_slot_is_freed_by_the_requests_state_whoever_sees_it() {
        let (creations, woken) = creations(1);
        creations.mark_ready();
        creations.reserve(&applicant("a", 1)).unwrap();
        creations.sent("uid-a", &request("r1", CreationState::InProgress));
        assert!(creations.reserve(&applicant("b", 2)).is_err());
        // The owner itself asked AWS and saw the request fail.
        let failed = CreationState::Failed { reason: "INTERNAL_FAILURE".into(), failed_for: None };
        creations.observe(&request("r1", failed.clone()));
        assert_eq!(creations.known("r1").unwrap().state, failed);
        assert!(woken.lock().unwrap().contains(&"b".to_string()));
        assert_eq!(creations.reserve(&applicant("b", 2)), Ok(()));
    }

    #[test]
    fn a_forgotten_request_is_not_the_tenants_request_any_more() {
        let (creations, _) = creations(1);
        creations.mark_ready();
        creations.reserve(&applicant("a", 1)).unwrap();
        creations.sent("uid-a", &request("r1", CreationState::InProgress));
        creations
            .observe(&request("r1", CreationState::Failed { reason: "INTERNAL_FAILURE".into(), failed_for: None }));
        assert_eq!(creations.request_of("uid-a").as_deref(), Some("r1"), "a reconcile on a stale Tenant finds it");
        // The tenant retries: its next reconcile must send a new request, not look at r1 again.
        creations.forget("uid-a");
        assert_eq!(creations.request_of("uid-a"), None);
        assert_eq!(creations.reserve(&applicant("a", 1)), Ok(()));
    }

    #[test]
    fn an_immediate_answer_frees_the_slot_at_once() {
        let (creations, _) = creations(1);
        creations.mark_ready();
        creations.reserve(&applicant("a", 1)).unwrap();
        creations.sent("uid-a", &request("r1", CreationState::Succeeded { account_id: "111".into() }));
        assert_eq!(creations.reserve(&applicant("b", 2)), Ok(()));
        assert_eq!(creations.request_of("uid-a").as_deref(), Some("r1"));
    }

    #[test]
    fn requests_found_in_listings_hold_slots() {
        let (creations, _) = creations(2);
        creations.observe_in_progress(&[request("other-1", CreationState::InProgress)]);
        creations.mark_ready();
        assert_eq!(creations.reserve(&applicant("a", 1)), Ok(()));
        assert_eq!(creations.reserve(&applicant("b", 2)), Err(NotYet::InLine { position: 1, in_use: 2 }));
        assert_eq!(creations.named("other-1").len(), 1, "a crash-window tenant can find it by name");
    }

    #[test]
    fn a_released_slot_goes_to_the_next_tenant() {
        let (creations, woken) = creations(1);
        creations.mark_ready();
        creations.reserve(&applicant("a", 1)).unwrap();
        assert!(creations.reserve(&applicant("b", 2)).is_err());
        creations.release("uid-a");
        assert_eq!(*woken.lock().unwrap(), vec!["b".to_string()]);
        assert_eq!(creations.reserve(&applicant("b", 2)), Ok(()));
    }

    #[test]
    fn every_tenant_gets_a_slot_before_a_refill_and_a_refill_is_never_woken() {
        let (creations, woken) = creations(1);
        creations.mark_ready();
        creations.reserve(&applicant("first", 1)).unwrap();
        // The pool has waited longest, but a Tenant that came later goes first.
        assert!(creations.reserve(&refill("pool", 0)).is_err());
        assert_eq!(creations.reserve(&applicant("late", 5)), Err(NotYet::InLine { position: 1, in_use: 1 }));
        creations.release("uid-first");
        assert_eq!(*woken.lock().unwrap(), vec!["late".to_string()]);
        assert!(creations.reserve(&refill("pool", 0)).is_err(), "the slot is the Tenant's");
        creations.reserve(&applicant("late", 5)).unwrap();
        creations.release("uid-late");
        assert_eq!(*woken.lock().unwrap(), vec!["late".to_string()], "a pool is not woken: it looks again itself");
        assert_eq!(creations.reserve(&refill("pool", 0)), Ok(()));
    }

    #[test]
    fn a_tenant_woken_for_a_slot_that_never_comes_holds_nobody_back() {
        let (creations, woken) = creations(1);
        creations.mark_ready();
        creations.reserve(&applicant("a", 1)).unwrap();
        assert!(creations.reserve(&applicant("b", 2)).is_err());
        assert!(creations.reserve(&applicant("c", 3)).is_err());
        creations.release("uid-a");
        assert_eq!(*woken.lock().unwrap(), vec!["b".to_string()]);
        // b never comes (its Tenant was removed without its finalizer, say).
        {
            let mut slots = creations.lock();
            let waiter = slots.waiting.values_mut().find(|w| w.name.as_deref() == Some("b")).unwrap();
            let long_ago = Instant::now() - WAKE_GRACE - Duration::from_secs(1);
            waiter.woken = Some(long_ago);
            waiter.last_asked = long_ago - Duration::from_secs(1);
        }
        assert_eq!(creations.reserve(&applicant("c", 3)), Ok(()), "c is not held back by b");
    }

    #[test]
    fn a_tenant_that_left_holds_nobody_back() {
        let (creations, _) = creations(1);
        creations.mark_ready();
        creations.reserve(&applicant("a", 1)).unwrap();
        assert!(creations.reserve(&applicant("b", 2)).is_err());
        creations.leave("uid-a");
        creations.leave("uid-b");
        assert_eq!(creations.reserve(&applicant("c", 3)), Ok(()));
    }

    #[test]
    fn checks_follow_how_long_creations_take() {
        let (creations, _) = creations(5);
        creations.mark_ready();
        let done = CreationState::Succeeded { account_id: "1".into() };
        creations.observe(&CreateRequest { took: Some(Duration::from_secs(60)), ..request("r0", done) });
        creations.reserve(&applicant("a", 1)).unwrap();
        let before = Instant::now();
        creations.sent("uid-a", &request("r1", CreationState::InProgress));
        let (due, next) = creations.due();
        assert!(due.is_empty());
        let first = next.unwrap() - before;
        assert!(
            first >= Duration::from_secs(60) && first < Duration::from_secs(65),
            "first look at about 60 s: {first:?}"
        );
    }
}
