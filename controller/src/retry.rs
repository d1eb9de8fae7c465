//! Retry timing, one rule for the whole process: a pause that doubles from a first value,
//! stretched by a random factor so a fleet that failed together does not retry together.
//!
//! Used by the Tenant controller's error policy, the organization's sweeps and creation
//! tracking, the orphan gauge, and the `silo import`/`silo orphans` commands.

use std::time::Duration;

use rand::Rng;

/// `base` stretched by a random factor in [1, 2), so a fleet retrying together spreads out.
pub fn jittered(base: Duration) -> Duration {
    base.mul_f64(1.0 + rand::rng().random::<f64>())
}

/// Exponential backoff with jitter: the pause before retry `n` (counting from 1) is
/// `first × 2^(n-1)`, at most `max / 2`, [`jittered`] into [base, 2 × base), so never more
/// than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The pause before retry `attempt` (1 for the first retry), before jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.max / 2)
    }

    /// The jittered pause before retry `attempt` (1 for the first retry).
    pub fn pause(&self, attempt: u32) -> Duration {
        jittered(self.base(attempt)).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_half_the_maximum() {
        let backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        let bases: Vec<u64> = (1..=8).map(|n| backoff.base(n).as_secs()).collect();
        assert_eq!(bases, [5, 10, 20, 40, 80, 150, 150, 150]);
        assert_eq!(backoff.base(0), Duration::from_secs(5), "attempt 0 counts as the first retry");
        assert_eq!(backoff.base(u32::MAX), Duration::from_secs(150), "no overflow");
    }

    #[test]
    fn jitter_stays_within_one_to_two_times_the_base_and_under_the_maximum() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 1..=10 {
            for _ in 0..50 {
                let base = backoff.base(attempt);
                let pause = backoff.pause(attempt);
                assert!(pause >= base && pause < base * 2 + Duration::from_nanos(1), "{pause:?} for {base:?}");
                assert!(pause <= backoff.max);
            }
        }
    }
}
