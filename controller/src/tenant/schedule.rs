//! What a reconcile is for, and when a Ready tenant is verified again. Pure.
//!
//! Silo's own status writes do not trigger reconciles; a Tenant is reconciled when its spec
//! (generation), deletion, finalizers or Silo's annotations change, when a step's own timer
//! is due, or when something wakes it (its creation ended, a creation slot is its turn). A
//! reconcile then does one of three things ([`mode`]):
//! - **converge**: the spec changed, or the tenant is not Ready yet: bring AWS in line;
//! - **verify**: a Ready tenant's verification is due, or someone asked for one with the
//!   annotation [`VERIFY_ANNOTATION`];
//! - **nothing** until the next verification is due.
//!
//! ## The verification schedule
//! Each tenant is verified once per resync period, at a fixed phase of the period derived
//! from its UID: a fleet is spread evenly over the period, whenever its tenants were created.
//! The schedule is computed from `status.lastVerifiedTime`, so a restarted controller does
//! not verify the fleet again: it waits for each tenant's next turn.
//!
//! ## What a verification reads
//! The name and OU come from the organization index. The rest costs a request per item: the
//! tags, the policies, each alternate contact ([`drift_checks`]). A periodic verification
//! reads one item, in turn ([`reads`], counted in `status.verificationCount`), so a fleet's
//! verification costs the same whatever its tenants use: a tenant with tags, policies and
//! three contacts has each read every fifth verification.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::{
    api::{AlternateContacts, ContactKind, Tenant, TenantDrift},
    aws::Priority,
    conditions,
};

pub use crate::contract::annotations::VERIFY as VERIFY_ANNOTATION;

/// Why a tenant is being verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Its turn in the resync period: background work, done only when AWS's budget is idle.
    Periodic,
    /// A person asked (the annotation): read everything from AWS now.
    Requested,
}

/// What a reconcile does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bring AWS in line with the spec; steps already done for this generation are trusted.
    Converge,
    /// Check every step against AWS and repair drift.
    Verify(Verification),
    /// Nothing to do; look again after this long.
    Idle(Duration),
}

/// Decides what this reconcile of `tenant` is for. `baseline_changed`: the tenant's
/// Baseline now asks for another revision than the one recorded (a Baseline change is not a
/// change of the Tenant's generation).
pub fn mode(tenant: &Tenant, now: Timestamp, period: Duration, baseline_changed: bool) -> Mode {
    let status = tenant.status.clone().unwrap_or_default();
    if requested_verification(tenant).is_some() {
        return Mode::Verify(Verification::Requested);
    }
    let ready = conditions::is_true(&status.conditions, conditions::READY);
    if !ready || status.observed_generation != tenant.metadata.generation || baseline_changed {
        return Mode::Converge;
    }
    // A drift check in flight is read (or started again) without a verification: the steps
    // are trusted, and only the check talks to AWS.
    if drift_pending(status.baseline.as_ref().and_then(|b| b.drift.as_ref())) {
        return Mode::Converge;
    }
    let last = status
        .last_verified_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        // A Ready tenant without a record (written by an older Silo): its next turn.
        .unwrap_or_else(|| now - half(period));
    let due = next_verification(&tenant.uid().unwrap_or_default(), last, period);
    match Duration::try_from(due.duration_since(now)) {
        Ok(wait) if !wait.is_zero() => Mode::Idle(wait),
        _ => Mode::Verify(Verification::Periodic),
    }
}

/// Whether the tenant's status asks for a drift pass before its next verification: detections
/// to read, or a check to start again. Pure.
pub fn drift_pending(drift: Option<&TenantDrift>) -> bool {
    drift.is_some_and(|d| !d.detections.is_empty() || d.recheck)
}

/// One part of a tenant's account that can drift, and costs an AWS request to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftCheck {
    /// The account's tags (ListTagsForResource).
    Tags,
    /// The service control policies attached to it (ListPoliciesForTarget).
    Policies,
    /// One alternate contact (GetAlternateContact).
    Contact(ContactKind),
}

/// What a verification of this tenant can read: the tags always; the policies when the
/// tenant names any or Silo attached some; each contact kind it wants or Silo set. The name
/// and the OU come from the organization index, at no cost per tenant.
pub fn drift_checks(tenant: &Tenant, default_contacts: &AlternateContacts) -> Vec<DriftCheck> {
    let status = tenant.status.clone().unwrap_or_default();
    let mut checks = vec![DriftCheck::Tags];
    if !tenant.spec.policies.is_empty() || !status.attached_policy_ids.is_empty() {
        checks.push(DriftCheck::Policies);
    }
    let wanted = |kind: ContactKind| {
        tenant.spec.contacts.as_ref().and_then(|c| c.get(kind)).or(default_contacts.get(kind)).is_some()
            || status.applied_contacts.contains_key(kind.as_str())
    };
    checks.extend(ContactKind::ALL.into_iter().filter(|k| wanted(*k)).map(DriftCheck::Contact));
    checks
}

/// Whether this reconcile reads `check` from AWS. A periodic verification reads one check,
/// in turn (the `count`-th of `checks`), so a verification costs one request whatever the
/// tenant has; a verification a person asked for reads them all. Converging reads what it
/// changes, not this.
pub fn reads(mode: Mode, checks: &[DriftCheck], count: u64, check: DriftCheck) -> bool {
    match mode {
        Mode::Verify(Verification::Requested) => checks.contains(&check),
        Mode::Verify(Verification::Periodic) => {
            let turn = usize::try_from(count % checks.len().max(1) as u64).unwrap_or(0);
            checks.get(turn) == Some(&check)
        }
        Mode::Converge | Mode::Idle(_) => false,
    }
}

/// The priority of this reconcile's AWS reads: a periodic verification is background work,
/// done only when AWS's budget is idle; everything else is user work.
pub fn priority(mode: Mode) -> Priority {
    if mode == Mode::Verify(Verification::Periodic) { Priority::IfIdle } else { Priority::User }
}

/// The value of the verify annotation when it asks for a verification not done yet.
pub fn requested_verification(tenant: &Tenant) -> Option<String> {
    let value = tenant.annotations().get(VERIFY_ANNOTATION)?;
    let done = tenant.status.as_ref().and_then(|s| s.verified_request.as_ref());
    (!value.is_empty() && Some(value) != done).then(|| value.clone())
}

/// The next verification after one at `last`: the first time at least half a period later
/// that falls on the tenant's phase of the period.
pub fn next_verification(uid: &str, last: Timestamp, period: Duration) -> Timestamp {
    let period_secs = i64::try_from(period.as_secs().max(1)).unwrap_or(i64::MAX);
    let earliest = (last + half(period)).as_second();
    let phase = phase(uid, period_secs);
    let mut due = earliest - earliest.rem_euclid(period_secs) + phase;
    if due < earliest {
        due += period_secs;
    }
    Timestamp::from_second(due).unwrap_or(last)
}

fn half(period: Duration) -> SignedDuration {
    SignedDuration::try_from(period / 2).unwrap_or(SignedDuration::MAX)
}

/// A stable place in the period for each tenant: a hash of its UID (stable across restarts
/// and Silo versions, unlike Rust's default hasher).
fn phase(uid: &str, period_secs: i64) -> i64 {
    let digest = Sha256::digest(uid.as_bytes());
    let bytes: [u8; 8] = digest[..8].try_into().expect("a SHA-256 digest has 32 bytes");
    i64::try_from(u64::from_be_bytes(bytes) % u64::try_from(period_secs).unwrap_or(1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::api::{TenantSpec, TenantStatus};

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn ready_tenant(uid: &str, generation: i64, last_verified: Option<Timestamp>) -> Tenant {
        let mut tenant = Tenant::new("acme", TenantSpec::default());
        tenant.metadata.uid = Some(uid.into());
        tenant.metadata.generation = Some(generation);
        tenant.status = Some(TenantStatus {
            observed_generation: Some(1),
            last_verified_time: last_verified.map(|t| t.to_string()),
            conditions: vec![Condition {
                type_: conditions::READY.into(),
                status: "True".into(),
                reason: "Ready".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: Time(at(0)),
            }],
            ..Default::default()
        });
        tenant
    }

    #[test]
    fn verifications_fall_on_the_tenants_phase_at_least_half_a_period_apart() {
        for uid in ["a", "b", "c", "d"] {
            let first = next_verification(uid, at(0), HOUR);
            let gap = first.duration_since(at(0)).as_secs();
            assert!((1800..5400).contains(&gap), "{uid}: {gap}");
            let second = next_verification(uid, first, HOUR);
            assert_eq!(second.duration_since(first).as_secs(), 3600, "{uid}: then once per period");
        }
    }

    #[test]
    fn a_fleet_created_at_once_is_spread_over_the_period() {
        let mut buckets = [0usize; 4];
        for i in 0..400 {
            let due = next_verification(&format!("uid-{i}"), at(0), HOUR);
            let offset = due.as_second().rem_euclid(3600);
            buckets[usize::try_from(offset / 900).unwrap()] += 1;
        }
        assert!(buckets.iter().all(|&n| (60..=140).contains(&n)), "quarters of the hour: {buckets:?}");
    }

    #[test]
    fn what_a_reconcile_is_for() {
        let verified = at(0);
        let tenant = ready_tenant("uid-1", 1, Some(verified));
        let due = next_verification("uid-1", verified, HOUR);
        let before = due - SignedDuration::from_secs(10);
        assert_eq!(mode(&tenant, before, HOUR, false), Mode::Idle(Duration::from_secs(10)));
        assert_eq!(mode(&tenant, due, HOUR, false), Mode::Verify(Verification::Periodic));
        assert_eq!(mode(&tenant, before, HOUR, true), Mode::Converge, "a Baseline change converges");

        let changed = ready_tenant("uid-1", 2, Some(verified));
        assert_eq!(mode(&changed, before, HOUR, false), Mode::Converge, "a new generation converges");

        let mut not_ready = tenant.clone();
        not_ready.status.as_mut().unwrap().conditions[0].status = "False".into();
        assert_eq!(mode(&not_ready, before, HOUR, false), Mode::Converge);

        let mut asked = tenant.clone();
        asked.annotations_mut().insert(VERIFY_ANNOTATION.into(), "now".into());
        assert_eq!(mode(&asked, before, HOUR, false), Mode::Verify(Verification::Requested));
        asked.status.as_mut().unwrap().verified_request = Some("now".into());
        assert_eq!(mode(&asked, before, HOUR, false), Mode::Idle(Duration::from_secs(10)), "acted on once");
    }

    #[test]
    fn a_restart_does_not_verify_the_fleet_again() {
        // Verified a minute ago: whatever the phase, the next turn is at least half an hour away.
        let now = at(100_000);
        let tenant = ready_tenant("uid-2", 1, Some(now - SignedDuration::from_secs(60)));
        assert!(matches!(mode(&tenant, now, HOUR, false), Mode::Idle(wait) if wait >= Duration::from_secs(1740)));
    }

    #[test]
    fn a_periodic_verification_reads_one_part_in_turn() {
        use crate::api::{Contact, ContactKind::*};
        let contact = Contact { name: "A".into(), title: "T".into(), email: "a@example.com".into(), phone: "1".into() };
        let mut tenant = ready_tenant("uid-3", 1, None);
        assert_eq!(drift_checks(&tenant, &AlternateContacts::default()), vec![DriftCheck::Tags]);

        tenant.spec.policies = vec!["guardrail".into()];
        tenant.spec.contacts = Some(AlternateContacts { security: Some(contact.clone()), ..Default::default() });
        let defaults = AlternateContacts { billing: Some(contact), ..Default::default() };
        tenant.status.as_mut().unwrap().applied_contacts.insert("operations".into(), "f".into());
        let checks = drift_checks(&tenant, &defaults);
        let all = vec![
            DriftCheck::Tags,
            DriftCheck::Policies,
            DriftCheck::Contact(Security),
            DriftCheck::Contact(Billing),
            DriftCheck::Contact(Operations),
        ];
        assert_eq!(checks, all, "operations: Silo set it, so it is checked until removed");

        let periodic = Mode::Verify(Verification::Periodic);
        for count in 0..10u64 {
            let read: Vec<DriftCheck> = all.iter().copied().filter(|c| reads(periodic, &checks, count, *c)).collect();
            assert_eq!(read, vec![all[count as usize % 5]], "verification {count} reads one part");
        }
        let requested = Mode::Verify(Verification::Requested);
        assert!(all.iter().all(|c| reads(requested, &checks, 7, *c)), "a requested verification reads all");
        assert!(!reads(requested, &[DriftCheck::Tags], 0, DriftCheck::Policies), "only what the tenant has");
        assert!(!reads(Mode::Converge, &checks, 0, DriftCheck::Tags));
    }
}
