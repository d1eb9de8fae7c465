//! Request budgets: one shared view of an AWS quota for the whole fleet.
//!
//! AWS throttles Organizations per organization, not per caller: a rollout of a thousand
//! Tenants must share one rate. Every request (every page of a listing) takes a [`Permit`]
//! from its service's budget first: at most `requests_per_second` start per second, with a
//! burst of half that ([`burst`]), and at most `max_in_flight` run at once. AWS refills its
//! own bucket at about the same rate: a full burst of Silo's would empty it, leaving nothing
//! for requests that reach AWS bunched up or for the SDK's retries of a throttled request
//! (which do not pass through Silo's budget). Half keeps slack there, and still lets a
//! request start at once after a pause, so a chain of requests (a creation slot's
//! CreateAccount, status, next CreateAccount) does not wait for the spacing at each link.
//! CloudFormation's per-account budget ([`KeyedBudget`]) allows a burst of the whole rate:
//! one tenant's stack is a few requests in a row, and no other tenant shares its bucket.
//!
//! Work comes in two priorities:
//! - [`Priority::User`]: what a person is waiting for (a new, changed or deleted Tenant, a
//!   creation in flight, the first look at the organization). It waits for a permit.
//! - [`Priority::Background`]: index refreshes. It waits without ever getting ahead of a
//!   waiting user request ([`Budget::background`]).
//! - [`Priority::IfIdle`]: periodic verification. It takes a permit only while no user
//!   request waits and a slot is free, waiting at most for the spacing of the next token
//!   ([`Budget::if_idle`]); else nothing is sent and the work is done later: a verification
//!   never holds a controller worker while user work queues behind it.
//!
//! ## Guarantees
//! - Waiting for a permit never fails; it only delays the caller.
//! - While user requests wait, no background request starts (a background request already
//!   past the gate may still take one token).
//! - Budgets are per process; leader election makes that one per organization.
//!
//! ## Warning
//! Setting `requests_per_second` above what AWS allows does not make Silo faster: AWS answers
//! with throttling errors, which Silo absorbs by backing off, so the fleet converges slower.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{
    count_request,
    error::{AwsError, Failure},
    fence::Fence,
};
use crate::metrics::DEFAULT_ORGANIZATION;

/// Limits for one AWS API (one service, one organization).
#[derive(Clone, Copy, Debug)]
pub struct BudgetLimits {
    pub requests_per_second: NonZeroU32,
    pub max_in_flight: usize,
}

/// Who is waiting for a request: a person, or the fleet's housekeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Priority {
    User,
    Background,
    IfIdle,
}

/// The right to send one request; the request may run while the permit lives.
pub struct Permit {
    _in_flight: OwnedSemaphorePermit,
    /// The organization whose budget granted it (`organization` in `silo_aws_requests_total`).
    organization: Arc<str>,
}

/// A shared rate and concurrency budget with two priorities. Cheap to clone.
#[derive(Clone)]
pub struct Budget {
    rate: Arc<DefaultDirectRateLimiter>,
    in_flight: Arc<Semaphore>,
    users_waiting: Arc<AtomicUsize>,
    users_done: Arc<Notify>,
    organization: Arc<str>,
}

/// The burst of a [`Budget`]: half its rate, at least 1.
pub fn burst(requests_per_second: NonZeroU32) -> NonZeroU32 {
    NonZeroU32::new(requests_per_second.get() / 2).unwrap_or(NonZeroU32::MIN)
}

/// How long [`Budget::if_idle`] waits for one token at most: the spacing at 1 request/s.
const IF_IDLE_MAX_WAIT: Duration = Duration::from_secs(1);

/// How many tokens [`Budget::if_idle`] waits for before it gives up to other idle work.
const IF_IDLE_TRIES: usize = 4;

/// How often a waiting background request looks again while user requests hold the budget.
const BACKGROUND_RECHECK: Duration = Duration::from_millis(50);

impl Budget {
    pub fn new(limits: BudgetLimits) -> Self {
        Self::with_quota(
            Quota::per_second(limits.requests_per_second).allow_burst(burst(limits.requests_per_second)),
            limits.max_in_flight,
        )
    }

    fn with_quota(quota: Quota, max_in_flight: usize) -> Self {
        Self {
            rate: Arc::new(RateLimiter::direct(quota)),
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            users_waiting: Arc::default(),
            users_done: Arc::default(),
            organization: Arc::from(DEFAULT_ORGANIZATION),
        }
    }

    /// The same budget, counting its requests for `organization` (its metrics label).
    pub fn for_organization(self, organization: &str) -> Self {
        Self { organization: Arc::from(organization), ..self }
    }

    fn granted(&self, in_flight: OwnedSemaphorePermit) -> Permit {
        Permit { _in_flight: in_flight, organization: self.organization.clone() }
    }

    /// A permit at `priority`: waits for it, except at [`Priority::IfIdle`], which gets
    /// `None` when the budget is not idle now.
    pub async fn permit(&self, priority: Priority) -> Option<Permit> {
        match priority {
            Priority::User => Some(self.user().await),
            Priority::Background => Some(self.background().await),
            Priority::IfIdle => self.if_idle().await,
        }
    }

    /// Waits for a slot, then for a token, ahead of every background request.
    pub async fn user(&self) -> Permit {
        let _waiting = UserWaiting::enter(self);
        let in_flight = self.in_flight.clone().acquire_owned().await.expect("the budget's semaphore is never closed");
        self.rate.until_ready().await;
        self.granted(in_flight)
    }

    /// Waits until no user request is waiting and a slot and a token are free.
    pub async fn background(&self) -> Permit {
        loop {
            if let Some(permit) = self.try_background() {
                return permit;
            }
            tokio::select! {
                _ = self.users_done.notified() => {}
                _ = tokio::time::sleep(BACKGROUND_RECHECK) => {}
            }
        }
    }

    /// A permit while the budget is idle: no user request waits and a slot is free. Waits for
    /// the next token only while that stays so, and only for the spacing between two requests
    /// (at most [`IF_IDLE_MAX_WAIT`], [`IF_IDLE_TRIES`] times, as other idle work competes for
    /// the same tokens); `None` otherwise.
    pub async fn if_idle(&self) -> Option<Permit> {
        for _ in 0..IF_IDLE_TRIES {
            if self.users_waiting.load(Ordering::Acquire) > 0 {
                return None;
            }
            let in_flight = self.in_flight.clone().try_acquire_owned().ok()?;
            match self.rate.check() {
                Ok(()) => return Some(self.granted(in_flight)),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.rate.clock().now());
                    if wait > IF_IDLE_MAX_WAIT {
                        return None;
                    }
                    drop(in_flight);
                    tokio::time::sleep(wait).await;
                }
            }
        }
        None
    }

    /// A permit now, if no user request is waiting and a slot and a token are free.
    pub fn try_background(&self) -> Option<Permit> {
        if self.users_waiting.load(Ordering::Acquire) > 0 {
            return None;
        }
        let in_flight = self.in_flight.clone().try_acquire_owned().ok()?;
        self.rate.check().ok()?;
        Some(self.granted(in_flight))
    }
}

/// How a client with one budget for its whole service (Organizations, the Account API, STS)
/// sends a request: [`Gate::read`] or [`Gate::write`] name the operation once, for the
/// permit, the count in `silo_aws_requests_total` and the error. Writes go only while the
/// leader's fence allows them, and always at user priority.
#[derive(Clone)]
pub struct Gate {
    service: &'static str,
    budget: Budget,
    fence: Fence,
}

impl Gate {
    pub fn new(service: &'static str, budget: Budget) -> Self {
        Self { service, budget, fence: Fence::open() }
    }

    /// The same gate, whose writes first check `fence` (the leader's proof that it leads).
    pub fn fenced(self, fence: Fence) -> Self {
        Self { fence, ..self }
    }

    /// Sends the read `operation` with a permit at `priority`: `send` builds and sends the
    /// request, once. At [`Priority::IfIdle`], when the budget is not idle, nothing is sent
    /// and the call fails with a `Busy` error.
    pub async fn read<T, E, F>(
        &self,
        priority: Priority,
        operation: &'static str,
        send: impl FnOnce() -> F,
    ) -> Result<T, Failure<E>>
    where
        F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let permit = async { self.budget.permit(priority).await.ok_or_else(|| AwsError::busy(operation)) };
        call(self.service, operation, permit, send).await
    }

    /// Sends the write `operation`: at user priority, and only while the fence allows it,
    /// checked before and after the wait for the permit ([`Fence::permit_write`]).
    pub async fn write<T, E, F>(&self, operation: &'static str, send: impl FnOnce() -> F) -> Result<T, Failure<E>>
    where
        F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let permit = self.fence.permit_write(operation, async { Ok(self.budget.user().await) });
        call(self.service, operation, permit, send).await
    }
}

/// One AWS request: waits for `permit`, counts the request in `silo_aws_requests_total` once
/// it is granted, then sends it and holds the permit until the answer. Without a permit,
/// nothing is sent or counted. Every request paced by a budget goes through here.
pub(super) async fn call<T, E, F>(
    service: &'static str,
    operation: &'static str,
    permit: impl Future<Output = Result<Permit, AwsError>>,
    send: impl FnOnce() -> F,
) -> Result<T, Failure<E>>
where
    F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let permit = permit.await.map_err(Failure::NotSent)?;
    count_request(service, operation, &permit.organization);
    send().await.map_err(|error| Failure::Sent { operation, error })
}

/// A budget with one rate per key and one in-flight cap for all keys: CloudFormation's
/// quotas are per account and region, so tenants proceed in parallel, each at its own rate.
#[derive(Clone)]
pub struct KeyedBudget {
    rate: Arc<DefaultKeyedRateLimiter<(String, String)>>,
    in_flight: Arc<Semaphore>,
    organization: Arc<str>,
}

impl KeyedBudget {
    pub fn new(limits: BudgetLimits) -> Self {
        Self {
            rate: Arc::new(RateLimiter::keyed(Quota::per_second(limits.requests_per_second))),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            organization: Arc::from(DEFAULT_ORGANIZATION),
        }
    }

    /// The same budget, counting its requests for `organization` (its metrics label).
    pub fn for_organization(self, organization: &str) -> Self {
        Self { organization: Arc::from(organization), ..self }
    }

    /// A permit for `key` (account, region); `None` at [`Priority::IfIdle`] when there is
    /// none now. Keys are not ordered by priority against each other: one tenant's requests
    /// never queue behind another's rate.
    pub async fn permit(&self, key: &(String, String), priority: Priority) -> Option<Permit> {
        let in_flight = match priority {
            Priority::IfIdle => self.in_flight.clone().try_acquire_owned().ok()?,
            Priority::User | Priority::Background => {
                self.in_flight.clone().acquire_owned().await.expect("the budget's semaphore is never closed")
            }
        };
        match priority {
            Priority::IfIdle => self.rate.check_key(key).ok()?,
            Priority::User | Priority::Background => self.rate.until_key_ready(key).await,
        }
        if self.rate.len() > 50_000 {
            self.rate.retain_recent();
        }
        Some(Permit { _in_flight: in_flight, organization: self.organization.clone() })
    }
}

/// Counts a user request as waiting for as long as it lives.
struct UserWaiting<'b>(&'b Budget);

impl<'b> UserWaiting<'b> {
    fn enter(budget: &'b Budget) -> Self {
        budget.users_waiting.fetch_add(1, Ordering::AcqRel);
        Self(budget)
    }
}

impl Drop for UserWaiting<'_> {
    fn drop(&mut self) {
        if self.0.users_waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.users_done.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use aws_sdk_organizations::operation::list_roots::ListRootsError;

    use super::*;
    use crate::{
        aws::{AwsErrorKind, error::refused},
        metrics::{AwsRequestLabels, METRICS},
    };

    /// What a call through a gate returns in these tests (any operation's SDK types would do).
    type Answer<T> = Result<T, SdkError<ListRootsError, HttpResponse>>;

    /// How many `operation` requests `service` sent, as `silo_aws_requests_total` counts them.
    fn sent(service: &'static str, operation: &'static str) -> u64 {
        let organization = DEFAULT_ORGANIZATION.to_string();
        METRICS.aws_requests.get_or_create(&AwsRequestLabels { service, operation, organization }).get()
    }

    fn budget(rps: u32, in_flight: usize) -> Budget {
        Budget::new(BudgetLimits { requests_per_second: NonZeroU32::new(rps).unwrap(), max_in_flight: in_flight })
    }

    /// A user request started in the background, once it counts as waiting.
    async fn user_waiting(budget: &Budget) -> tokio::task::JoinHandle<Permit> {
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.user().await }
        });
        while budget.users_waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        waiting
    }

    #[tokio::test]
    async fn in_flight_calls_are_capped() {
        let budget = budget(1000, 2);
        let a = budget.user().await;
        let _b = budget.user().await;
        let third = tokio::time::timeout(Duration::from_millis(50), budget.user()).await;
        assert!(third.is_err(), "a third call waits while two are in flight");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), budget.user()).await;
        assert!(third.is_ok(), "a finished call frees its slot");
    }

    #[tokio::test]
    async fn background_work_never_takes_a_permit_a_user_is_waiting_for() {
        let budget = budget(1000, 1);
        let held = budget.user().await;
        let waiting_user = user_waiting(&budget).await;
        assert!(budget.try_background().is_none(), "a user is waiting: background work must not start");
        drop(held);
        let user_permit = waiting_user.await.unwrap();
        assert!(budget.try_background().is_none(), "the only slot is the user's");
        drop(user_permit);
        let next = tokio::time::timeout(Duration::from_secs(5), budget.background()).await;
        assert!(next.is_ok(), "an idle budget serves background work once the next request may start");
    }

    #[test]
    fn the_burst_is_half_the_rate() {
        let burst = |rps: u32| burst(NonZeroU32::new(rps).unwrap()).get();
        assert_eq!([burst(1), burst(3), burst(10), burst(25)], [1, 1, 5, 12]);
    }

    #[tokio::test]
    async fn a_spent_burst_makes_requests_wait_for_the_rate() {
        // A burst of 2, then one request an hour: the third must wait even though a slot is free.
        let budget = Budget::with_quota(Quota::per_hour(NonZeroU32::MIN).allow_burst(NonZeroU32::new(2).unwrap()), 4);
        let _burst = (budget.user().await, budget.user().await);
        assert!(budget.try_background().is_none(), "the burst is spent");
        assert!(budget.if_idle().await.is_none(), "idle work does not wait an hour for its token");
        let third = tokio::time::timeout(Duration::from_millis(50), budget.user()).await;
        assert!(third.is_err(), "a user request waits for the rate too");
    }

    #[tokio::test]
    async fn idle_work_back_to_back_waits_for_the_spacing() {
        let budget = budget(1000, 4);
        for n in 1..=3 {
            assert!(budget.if_idle().await.is_some(), "idle request {n} gets a token once the spacing allows");
        }
    }

    #[tokio::test]
    async fn idle_work_gives_up_while_a_user_waits() {
        // Slots to spare; the waiting user waits for the next token, about a second away.
        let budget = Budget::with_quota(Quota::per_second(NonZeroU32::MIN).allow_burst(NonZeroU32::MIN), 4);
        let held = budget.user().await;
        let waiting_user = user_waiting(&budget).await;
        assert!(budget.if_idle().await.is_none(), "a user is waiting: idle work must not start");
        drop(held);
        drop(waiting_user.await.unwrap());
    }

    #[tokio::test]
    async fn background_waits_for_users_to_finish() {
        let budget = budget(1000, 1);
        let held = budget.user().await;
        let background = tokio::spawn({
            let budget = budget.clone();
            async move { budget.background().await }
        });
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!background.is_finished(), "the slot is held");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), background).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_call_names_its_operation_once_for_the_count_and_the_error() {
        let gate = Gate::new("test-gate", budget(1000, 4));
        let answer = gate.read(Priority::User, "ListRoots", || async { Answer::Ok("r-1") }).await;
        assert_eq!(answer.unwrap(), "r-1");
        assert_eq!(sent("test-gate", "ListRoots"), 1, "one request, counted once");

        let refusal =
            gate.read(Priority::Background, "ListRoots", || async { Answer::<()>::Err(refused("Throttling", 400)) });
        let err = refusal.await.unwrap_err().into_aws();
        assert_eq!((err.operation, err.kind), ("ListRoots", AwsErrorKind::Throttled), "the error names it too");
        assert_eq!(sent("test-gate", "ListRoots"), 2, "a refused request was sent: it counts");
    }

    #[tokio::test]
    async fn a_request_counts_for_the_organization_of_its_budget() {
        let eu = Gate::new("test-organization", budget(1000, 4).for_organization("eu"));
        eu.read(Priority::User, "ListRoots", || async { Answer::Ok(()) }).await.unwrap();
        let count = |organization: &str| {
            let labels = AwsRequestLabels {
                service: "test-organization",
                operation: "ListRoots",
                organization: organization.to_string(),
            };
            METRICS.aws_requests.get_or_create(&labels).get()
        };
        assert_eq!((count("eu"), count(DEFAULT_ORGANIZATION)), (1, 0));
    }

    #[tokio::test]
    async fn a_write_whose_fence_closes_while_it_waits_for_its_permit_is_not_sent() {
        let budget = budget(1000, 1);
        let fence = Fence::closed();
        fence.allow_until(Instant::now() + Duration::from_secs(60));
        let gate = Gate::new("test-fenced", budget.clone()).fenced(fence.clone());
        gate.write("TagResource", || async { Answer::Ok(()) }).await.expect("the fence is open");
        assert_eq!(sent("test-fenced", "TagResource"), 1);

        // The only slot is held; the Lease is lost while the write waits for it.
        let held = budget.user().await;
        let mut sent_to_aws = false;
        let write = gate.write("TagResource", || {
            sent_to_aws = true;
            async { Answer::Ok(()) }
        });
        let lose_the_lease = async {
            while budget.users_waiting.load(Ordering::Acquire) == 0 {
                tokio::task::yield_now().await;
            }
            fence.close();
            drop(held);
        };
        let (answer, ()) = tokio::join!(write, lose_the_lease);
        match answer {
            Err(Failure::NotSent(err)) => assert!(err.has_code("LeaseNotConfirmed"), "{err}"),
            other => panic!("a write past its fence must not be sent: {other:?}"),
        }
        assert!(!sent_to_aws);
        assert_eq!(sent("test-fenced", "TagResource"), 1, "nothing more was counted");
    }

    #[tokio::test]
    async fn idle_work_on_a_busy_budget_sends_nothing() {
        let budget = budget(1000, 1);
        let gate = Gate::new("test-if-idle", budget.clone());
        let _held = budget.user().await;
        let mut sent_to_aws = false;
        let answer = gate
            .read(Priority::IfIdle, "DescribeAccount", || {
                sent_to_aws = true;
                async { Answer::Ok(()) }
            })
            .await;
        match answer {
            Err(Failure::NotSent(err)) => assert_eq!(err.kind, AwsErrorKind::Busy),
            other => panic!("idle work must not wait for a busy budget: {other:?}"),
        }
        assert!(!sent_to_aws);
        assert_eq!(sent("test-if-idle", "DescribeAccount"), 0);
    }
}
