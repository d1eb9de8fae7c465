//! The fence: whether this process may write to AWS now.
//!
//! With several replicas, only the leader acts, and a leader cut off from the API server
//! cannot learn that it lost its Lease. The fence turns the leader's own proof that it still
//! leads into a rule for AWS: leader election opens it up to the moment until which no other
//! replica can have taken over, and closes it when the Lease is lost. The fence is a gate on
//! AWS writes, so it lives here, with the budget it gates: every write's permit is taken
//! through [`Fence::permit_write`].
//!
//! ## Guarantees
//! - A fence from [`Fence::open`] (a single replica, no leader election) never refuses.
//! - Any other fence refuses writes except between an `allow_until` and the moment
//!   it names: the leader allows writes only as long as its proof holds, and closes the fence
//!   (`close`) the moment it knows the Lease is lost.
//! - A write is checked both before it waits for its budget's permit and again once it holds
//!   it: a write queued while this replica led is not sent after its fence closed.
//! - A refused write is an [`AwsError::fenced`]: nothing was sent, and the work is retried
//!   later, quietly.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use super::AwsError;

/// Whether this process may write to AWS now. Cheap to clone; every clone is the same fence.
#[derive(Clone)]
pub struct Fence {
    /// `None`: no leader election, always open. Otherwise the moment writes stop, if any.
    until: Option<Arc<Mutex<Option<Instant>>>>,
}

impl Fence {
    /// A fence that never closes (a single replica without leader election).
    pub fn open() -> Self {
        Self { until: None }
    }

    /// A fence that refuses every write until [`Fence::allow_until`] opens it.
    pub(crate) fn closed() -> Self {
        Self { until: Some(Arc::new(Mutex::new(None))) }
    }

    /// Allows writes until `until` (in the past: refuses them from now). No effect on an
    /// [`Fence::open`] fence.
    pub(crate) fn allow_until(&self, until: Instant) {
        if let Some(state) = &self.until {
            *state.lock().expect("fence lock") = Some(until);
        }
    }

    /// Refuses every write until [`Fence::allow_until`] opens it again. No effect on an
    /// [`Fence::open`] fence.
    pub(crate) fn close(&self) {
        if let Some(state) = &self.until {
            *state.lock().expect("fence lock") = None;
        }
    }

    /// Ok while this process certainly still holds the Lease; an error that retries the work
    /// later otherwise.
    pub fn check(&self, operation: &'static str) -> Result<(), AwsError> {
        let Some(state) = &self.until else { return Ok(()) };
        match *state.lock().expect("fence lock") {
            Some(until) if Instant::now() < until => Ok(()),
            _ => Err(AwsError::fenced(operation)),
        }
    }

    /// Waits for `permit` (the AWS budget's) to send the write `operation`, and hands it over
    /// only while the fence allows it: checked before the wait, so nothing queues in vain, and
    /// again after it, because at fleet scale the wait can outlast the Lease, and a replica that
    /// lost it must not send what it queued while it led. Every AWS write goes through here.
    pub async fn permit_write<P>(
        &self,
        operation: &'static str,
        permit: impl Future<Output = Result<P, AwsError>>,
    ) -> Result<P, AwsError> {
        self.check(operation)?;
        let permit = permit.await?;
        self.check(operation)?;
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_fence_allows_writes_until_it_expires() {
        assert!(Fence::open().check("TagResource").is_ok(), "without leader election, always open");
        let fence = Fence::closed();
        assert!(fence.check("TagResource").is_err(), "closed until a renewal is proven");
        fence.allow_until(Instant::now() + Duration::from_secs(60));
        assert!(fence.check("TagResource").is_ok());
        fence.allow_until(Instant::now() - Duration::from_secs(1));
        assert!(fence.check("TagResource").is_err(), "expired");
        fence.allow_until(Instant::now() + Duration::from_secs(60));
        fence.close();
        assert!(fence.check("TagResource").is_err(), "a lost Lease closes it");
    }

    #[tokio::test]
    async fn a_write_that_waited_past_the_lease_is_not_sent() {
        let fence = Fence::closed();
        fence.allow_until(Instant::now() + Duration::from_secs(60));
        let sent = fence.permit_write("MoveAccount", async { Ok(()) }).await;
        assert!(sent.is_ok(), "a permit while the Lease is held");

        // The Lease is lost while the write waits for its permit.
        let waiting = fence.permit_write("MoveAccount", async {
            fence.close();
            Ok(())
        });
        assert!(waiting.await.is_err(), "the fence is checked again once the permit is held");

        // A closed fence does not queue the write at all.
        let mut asked = false;
        let refused = fence.permit_write("MoveAccount", async {
            asked = true;
            Ok(())
        });
        assert!(refused.await.is_err());
        assert!(!asked, "no permit is asked for while the fence is closed");
    }
}
