//! The organization-wide AWS budget: one view of AWS quotas for the whole fleet.
//!
//! AWS Organizations throttles per organization, not per caller, and a rollout of a thousand
//! Tenants would otherwise send a thousand ListAccounts at once. Every Organizations call
//! takes a permit here first: at most `requests_per_second` calls start per second (a token
//! bucket, with a burst of the same size) and at most `max_in_flight` run at once.
//!
//! ## Guarantees
//! - Waiting for a permit never fails; it only delays the caller. Reconciles waiting here hold
//!   a worker, so `max_in_flight` should stay below the controller's concurrency.
//! - The budget is per process. Run one controller per organization (the deployment uses one
//!   replica with the Recreate strategy).
//!
//! ## Warning
//! Setting `requests_per_second` above what AWS allows does not make Silo faster: AWS answers
//! with throttling errors, which Silo absorbs by backing off, so the fleet converges slower.

use std::{num::NonZeroU32, sync::Arc};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits for one AWS API (one service, one organization).
#[derive(Clone, Copy, Debug)]
pub struct BudgetLimits {
    pub requests_per_second: NonZeroU32,
    pub max_in_flight: usize,
}

/// A shared rate and concurrency budget. Cheap to clone.
#[derive(Clone)]
pub struct Budget {
    rate: Arc<DefaultDirectRateLimiter>,
    in_flight: Arc<Semaphore>,
}

impl Budget {
    pub fn new(limits: BudgetLimits) -> Self {
        Self {
            rate: Arc::new(RateLimiter::direct(Quota::per_second(limits.requests_per_second))),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        }
    }

    /// Waits for a slot, then for a token; the call may run while the permit lives.
    pub async fn permit(&self) -> OwnedSemaphorePermit {
        let permit = self.in_flight.clone().acquire_owned().await.expect("the budget's semaphore is never closed");
        self.rate.until_ready().await;
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_flight_calls_are_capped() {
        let budget =
            Budget::new(BudgetLimits { requests_per_second: NonZeroU32::new(1000).unwrap(), max_in_flight: 2 });
        let a = budget.permit().await;
        let _b = budget.permit().await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), budget.permit()).await;
        assert!(third.is_err(), "a third call waits while two are in flight");
        drop(a);
        let third = tokio::time::timeout(std::time::Duration::from_secs(5), budget.permit()).await;
        assert!(third.is_ok(), "a finished call frees its slot");
    }
}
