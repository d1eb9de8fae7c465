//! How a short run is scaled to the controller's default periods, derived from the
//! controller's own code rather than from a description of it.
//!
//! - Verification: [`resync_per_tenant_per_hour`] follows `silo::tenant::schedule`, the code
//!   `silo run` decides with: a tenant's next verification is
//!   [`next_verification`]`(uid, last, period)`. The unit tests pin the result (once per
//!   period, at a fixed phase), so a change of the schedule fails them here and makes whoever
//!   changed it look at the scaling and at the figures it produced.
//! - Index refresh: [`index_per_tenant_per_hour`]. `silo run` sweeps the organization, then
//!   sleeps `--index-refresh-seconds` (`Organization::keep_index` in `controller/src/org/mod.rs`:
//!   the sleep starts when the sweep ends, there is no jitter), so sweeps start once per
//!   refresh period plus the time a sweep takes. A miss the index cannot answer asks for an
//!   earlier sweep (at most one 30 s after the last started); a Ready fleet has none.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
pub use silo::tenant::schedule::next_verification;

/// How long `silo run` uses a tenant session (AssumeRole into the tenant's account) before it
/// assumes the role again: sessions last an hour (`SESSION_SECONDS` in
/// `controller/src/aws/tenant_access.rs`) and are dropped five minutes before they expire.
pub const SESSION_REUSE_SECONDS: u64 = 3600 - 300;

/// Tenants the schedule is followed for: their UIDs hash to phases spread over the period.
const SAMPLE_UIDS: usize = 64;
/// Consecutive verifications followed for each.
const SAMPLE_TURNS: usize = 24;

fn sample_start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("a valid timestamp")
}

/// The mean time from one verification of a Ready tenant to the next under the controller's
/// schedule at `period` (`--resync-seconds`), following [`next_verification`] for sample
/// tenants over many turns. The tests pin it to one period.
pub fn verification_interval(period: Duration) -> Duration {
    let (mut total, mut gaps) = (0i64, 0i64);
    for i in 0..SAMPLE_UIDS {
        let uid = format!("00000000-bench-scaling-{i:04}");
        let mut last = next_verification(&uid, sample_start(), period);
        for _ in 0..SAMPLE_TURNS {
            let next = next_verification(&uid, last, period);
            total += next.duration_since(last).as_secs();
            gaps += 1;
            last = next;
        }
    }
    Duration::from_secs(u64::try_from(total / gaps.max(1)).unwrap_or(0))
}

/// THE steady-state scaling of verification requests: `requests` sent for `verifications`
/// counted verifications (changes of `status.lastVerifiedTime`), turned into requests per
/// tenant per hour at the controller's `period`: requests per verification times the
/// verifications of one tenant per hour under the schedule (3600 / [`verification_interval`]).
pub fn resync_per_tenant_per_hour(requests: u64, verifications: u64, period: Duration) -> f64 {
    if verifications == 0 {
        return 0.0;
    }
    let interval = verification_interval(period).as_secs_f64().max(1.0);
    requests as f64 / verifications as f64 * 3600.0 / interval
}

/// Index-refresh requests per tenant per hour at `refresh_period` (`--index-refresh-seconds`):
/// `requests_per_sweep` every `refresh_period + sweep_seconds` (the sleep starts when a sweep
/// ends), shared by `tenants`.
pub fn index_per_tenant_per_hour(
    requests_per_sweep: f64,
    sweep_seconds: f64,
    refresh_period: Duration,
    tenants: usize,
) -> f64 {
    let interval = refresh_period.as_secs_f64() + sweep_seconds.max(0.0);
    if tenants == 0 || interval <= 0.0 {
        return 0.0;
    }
    requests_per_sweep * 3600.0 / interval / tenants as f64
}

/// The tenant's first turn at or after `at`: when a controller running all along verifies it
/// next.
pub fn next_turn(uid: &str, at: Timestamp, period: Duration) -> Timestamp {
    // next_verification's earliest time is half a period after `last`.
    let half = SignedDuration::try_from(period / 2).unwrap_or(SignedDuration::ZERO);
    next_verification(uid, at - half, period)
}

/// The `status.lastVerifiedTime` a tenant has when the controller verified it on its schedule
/// until `until` and then stopped: its last turn before `until`.
pub fn last_turn_before(uid: &str, until: Timestamp, period: Duration) -> Timestamp {
    let period_signed = SignedDuration::try_from(period).unwrap_or(SignedDuration::ZERO);
    next_turn(uid, until, period) - period_signed
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    #[test]
    fn a_tenant_is_verified_once_per_period() {
        // If this fails, silo::tenant::schedule changed how often a Ready tenant is verified:
        // the scaling follows it, but the method in docs/performance.md, the steady report's
        // "scaling" text and the published figures say "once per period". Fix them first.
        for period in [120, 600, 3 * HOUR, 6 * HOUR] {
            let period = Duration::from_secs(period);
            assert_eq!(verification_interval(period), period, "one verification per period at {period:?}");
        }
    }

    #[test]
    fn requests_per_verification_are_scaled_by_the_period() {
        // 500 verifications of one request each: at the default 3 h, 1/3 request per hour.
        let three_hours = Duration::from_secs(3 * HOUR);
        let hourly = resync_per_tenant_per_hour(500, 500, three_hours);
        assert!((hourly - 1.0 / 3.0).abs() < 1e-9, "{hourly}");
        assert_eq!(resync_per_tenant_per_hour(10, 0, three_hours), 0.0);
    }

    #[test]
    fn a_refresh_runs_every_period_plus_a_sweep() {
        // 11 requests a sweep, a sweep of 4 s, every 3600 s + 4 s, 100 tenants.
        let hourly = index_per_tenant_per_hour(11.0, 4.0, Duration::from_secs(HOUR), 100);
        assert!((hourly - 11.0 * 3600.0 / 3604.0 / 100.0).abs() < 1e-12, "{hourly}");
    }

    #[test]
    fn the_schedule_state_of_a_fleet_that_ran_on_its_schedule() {
        let period = Duration::from_secs(3 * HOUR);
        let now = Timestamp::from_second(1_900_000_000).unwrap();
        for i in 0..50 {
            let uid = format!("uid-{i}");
            let last = last_turn_before(&uid, now, period);
            assert!(last < now && now.duration_since(last).as_secs() <= 3 * HOUR as i64, "{uid}");
            // A restarted controller verifies it at its next turn, within a period.
            let due = next_verification(&uid, last, period);
            assert_eq!(due.duration_since(last).as_secs(), 3 * HOUR as i64, "{uid}");
            assert!(due >= now, "{uid}: not overdue");
            // After an outage of an hour, the tenants whose turn fell in it are overdue.
            let before_outage = last_turn_before(&uid, now - SignedDuration::from_hours(1), period);
            let due = next_verification(&uid, before_outage, period);
            let overdue = due < now;
            let turn_in_outage = due >= now - SignedDuration::from_hours(1) && due < now;
            assert_eq!(overdue, turn_in_outage, "{uid}");
        }
    }
}
