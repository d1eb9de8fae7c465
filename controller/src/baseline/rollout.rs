//! How a Baseline's new revision reaches its tenants: the way Kubernetes rolls a Deployment.
//!
//! A tenant stays on the revision it was admitted to until the rollout admits it to a newer
//! one. The order is stable and documented, so a resumed rollout continues where it stopped:
//! 1. the **canary** (the tenants a label selector picks, or the first `count` by name) goes
//!    first, fixed when the rollout starts;
//! 2. when every canary tenant is done and the canary has **baked** (`bakeSeconds` without a
//!    new failure), the rest go in **waves** of `maxConcurrent` tenants, by name; each wave
//!    finishes, then bakes, before the next is admitted, so never more than `maxConcurrent`
//!    tenants have stack work in flight;
//! 3. when failures exceed `failureTolerance`, the rollout **halts**: nobody else is
//!    admitted, nothing rolls back. A new revision, or a raised tolerance, ends the halt;
//!    toggling `paused` does not.
//!
//! A tenant that has never been admitted to any revision (a new tenant) gets the newest
//! revision that passed its canary: during a canary or a halt, the last complete one.
//!
//! Everything here is pure: [`step`] takes the recorded [`RolloutStatus`], the rollout's
//! settings and what the tenants report, and returns the next status and whom it admits.
//! The Baseline controller records the status before waking anyone ([`Rollouts`] holds the
//! process's current view for the tenants to read).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::util::intstr::IntOrString, jiff::Timestamp};
use kube::ResourceExt;

use crate::api::{FailedTenant, RolloutSpec, RolloutStatus, Tenant};

/// Where a rollout stands. [`step`] decides it; the status records it by name
/// (`status.rollout.phase` is a string in the API, so a name Silo does not know yet reads as
/// no phase at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Admitting tenants (the canary, or a wave), or waiting for those admitted to finish.
    Progressing,
    /// The canary or the last wave finished; waiting `bakeSeconds` without a new failure.
    Baking,
    /// Failures exceed `failureTolerance`: nobody else is admitted.
    Halted,
    /// `paused`: nobody else is admitted.
    Paused,
    /// `preview`: the canary shows its changes, nobody is admitted.
    Previewing,
    /// Every tenant on a revision was admitted to this one.
    Complete,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Progressing, Phase::Baking, Phase::Halted, Phase::Paused, Phase::Previewing, Phase::Complete];

    /// Its name in the status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "Progressing",
            Phase::Baking => "Baking",
            Phase::Halted => "Halted",
            Phase::Paused => "Paused",
            Phase::Previewing => "Previewing",
            Phase::Complete => "Complete",
        }
    }

    /// The phase a recorded rollout is in; `None` for a name Silo does not know.
    pub fn of(rollout: &RolloutStatus) -> Option<Self> {
        Self::ALL.into_iter().find(|phase| phase.as_str() == rollout.phase)
    }
}

pub const PROGRESSING: &str = Phase::Progressing.as_str();
pub const BAKING: &str = Phase::Baking.as_str();
pub const HALTED: &str = Phase::Halted.as_str();
pub const PAUSED: &str = Phase::Paused.as_str();
pub const PREVIEWING: &str = Phase::Previewing.as_str();
pub const COMPLETE: &str = Phase::Complete.as_str();
/// Every phase's name, for metrics that show each one.
pub const PHASES: [&str; 6] = [PROGRESSING, BAKING, HALTED, PAUSED, PREVIEWING, COMPLETE];

/// Default tenants with stack work in flight at once.
pub const DEFAULT_MAX_CONCURRENT: usize = 5;

/// The rollout spec, with percentages resolved against the number of tenants.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedSpec {
    pub max_concurrent: usize,
    pub failure_tolerance: usize,
    pub bake: Duration,
    pub paused: bool,
    pub preview: bool,
}

impl ResolvedSpec {
    /// Resolves a Baseline's `spec.rollout` for a fleet of `tenants`.
    pub fn of(spec: &RolloutSpec, tenants: usize) -> Self {
        let resolve = |value: &Option<IntOrString>, default: usize, at_least: usize| match value {
            None => default,
            Some(IntOrString::Int(n)) => usize::try_from(*n).unwrap_or(0).max(at_least),
            Some(IntOrString::String(percent)) => {
                let percent: usize = percent.trim_end_matches('%').parse().unwrap_or(0);
                (tenants * percent).div_ceil(100).max(at_least)
            }
        };
        Self {
            max_concurrent: resolve(&spec.max_concurrent, DEFAULT_MAX_CONCURRENT, 1),
            failure_tolerance: resolve(&spec.failure_tolerance, 0, 0),
            bake: Duration::from_secs(u64::from(spec.bake_seconds.unwrap_or(0))),
            paused: spec.paused,
            preview: spec.preview,
        }
    }
}

/// Where one tenant's stacks stand against the revision it was admitted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// At its admitted revision in every region.
    Current,
    /// Stack work under way (or not started yet since its admission).
    InFlight,
    /// Failed to reach it; the reason names the first failing resource.
    Failed { reason: String },
}

/// What the rollout needs to know of one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The revision it was admitted to, if any yet.
    pub admitted: Option<String>,
    pub state: State,
}

/// Who goes first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanaryRule {
    /// The tenants whose labels match all of these (a label selector's matchLabels).
    Labels(BTreeMap<String, String>),
    /// The first `n` tenants by name.
    First(usize),
}

impl CanaryRule {
    /// The canary rule of a Baseline's `spec.rollout` (default: the first tenant by name).
    pub fn of(spec: &RolloutSpec) -> Self {
        match &spec.canary {
            Some(canary) => match (&canary.selector, canary.count) {
                (Some(selector), _) => Self::Labels(selector.match_labels.clone().unwrap_or_default()),
                (None, Some(n)) => Self::First(n as usize),
                (None, None) => Self::First(1),
            },
            None => Self::First(1),
        }
    }

    fn pick(&self, tenants: &[&TenantView]) -> Vec<String> {
        match self {
            Self::Labels(labels) => tenants
                .iter()
                .filter(|t| labels.iter().all(|(k, v)| t.labels.get(k) == Some(v)))
                .map(|t| t.name.clone())
                .collect(),
            Self::First(n) => tenants.iter().take(*n).map(|t| t.name.clone()).collect(),
        }
    }
}

/// What [`step`] decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub status: RolloutStatus,
    /// Tenants admitted by this step: wake them.
    pub admitted: Vec<String>,
    /// Something worth an Event: the start, the canary passing, a wave, a halt, a resume,
    /// completion.
    pub news: Vec<News>,
}

/// One Event's worth of a rollout: a stable reason and what happened.
#[derive(Clone, Debug, PartialEq)]
pub struct News {
    pub reason: &'static str,
    pub note: String,
}

impl Step {
    /// The step's result, in `phase`: the status records the phase by name.
    fn at(phase: Phase, mut status: RolloutStatus, admitted: Vec<String>, news: Vec<News>) -> Self {
        status.phase = phase.as_str().into();
        Self { status, admitted, news }
    }
}

impl News {
    fn new(reason: &'static str, note: String) -> Self {
        Self { reason, note }
    }

    pub fn is_halt(&self) -> bool {
        self.reason == "RolloutHalted"
    }
}

/// The revision a tenant should run now. `admitted`: the revision it was admitted to before,
/// if any. Pure.
pub fn target(rollout: &RolloutStatus, tenant: &str, admitted: Option<&str>) -> String {
    match admitted {
        Some(admitted) if admitted == rollout.revision => rollout.revision.clone(),
        Some(_) if is_admitted(rollout, tenant) => rollout.revision.clone(),
        Some(admitted) => admitted.to_string(),
        // A new tenant: the newest revision that passed its canary and is not halted.
        None if rollout.canary_passed && rollout.halted_at_tolerance.is_none() => rollout.revision.clone(),
        None => rollout.previous.clone().unwrap_or_else(|| rollout.revision.clone()),
    }
}

/// Whether `tenant` is a canary of a rollout in preview that has not shown its changes for
/// the rollout's revision yet. `previewed`: the revision of its last preview. Pure.
pub fn wants_preview(rollout: &RolloutStatus, tenant: &str, previewed: Option<&str>) -> bool {
    Phase::of(rollout) == Some(Phase::Previewing)
        && rollout.canary.iter().any(|c| c == tenant)
        && previewed != Some(&rollout.revision)
}

/// [`wants_preview`] for a Tenant, from the revision of its last preview in its status.
pub fn tenant_wants_preview(rollout: &RolloutStatus, tenant: &Tenant) -> bool {
    let previewed =
        tenant.status.as_ref().and_then(|s| s.baseline.as_ref()?.preview.as_ref()).map(|p| p.revision.as_str());
    wants_preview(rollout, &tenant.name_any(), previewed)
}

/// Whether the rollout has admitted `tenant` to its revision (canary, or within the waves).
pub fn is_admitted(rollout: &RolloutStatus, tenant: &str) -> bool {
    if Phase::of(rollout) == Some(Phase::Previewing) {
        return false;
    }
    rollout.canary.iter().any(|c| c == tenant)
        || (rollout.canary_passed && rollout.admitted_through.as_deref().is_some_and(|last| tenant <= last))
}

/// The next state of a Baseline's rollout. `newest`: the Baseline's newest revision;
/// `current`: the recorded rollout, if any; `tenants`: every tenant that uses the Baseline.
/// Pure.
pub fn step(
    current: Option<&RolloutStatus>,
    newest: &str,
    settings: &ResolvedSpec,
    canary_rule: &CanaryRule,
    tenants: &[TenantView],
    now: Timestamp,
) -> Step {
    let mut tenants: Vec<&TenantView> = tenants.iter().collect();
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    let mut status = match current {
        Some(current) if current.revision == newest => current.clone(),
        // A new revision: a new rollout, its canary fixed now. Only tenants already on some
        // revision are rolled (new tenants get what `target` gives them).
        Some(previous) => RolloutStatus {
            revision: newest.to_string(),
            previous: if Phase::of(previous) == Some(Phase::Complete) {
                Some(previous.revision.clone())
            } else {
                previous.previous.clone()
            },
            phase: Phase::Progressing.as_str().into(),
            canary: canary_rule.pick(&tenants.iter().copied().filter(|t| t.admitted.is_some()).collect::<Vec<_>>()),
            ..RolloutStatus::default()
        },
        // The first revision: there is nothing older to stay on.
        None => RolloutStatus {
            revision: newest.to_string(),
            phase: Phase::Complete.as_str().into(),
            canary_passed: true,
            ..Default::default()
        },
    };
    // The phase the rollout is in before this step.
    let was = Phase::of(&status);
    let started = current.is_none_or(|c| c.revision != newest);
    let revision = status.revision.clone();
    // Where each tenant admitted to the revision stands; one the rollout admitted that has not
    // recorded it yet counts as in flight.
    let on_revision: Vec<(&str, State)> = tenants
        .iter()
        .filter_map(|t| {
            if t.admitted.as_deref() == Some(revision.as_str()) {
                Some((t.name.as_str(), t.state.clone()))
            } else if t.admitted.is_some() && is_admitted(&status, &t.name) {
                Some((t.name.as_str(), State::InFlight))
            } else {
                None
            }
        })
        .collect();
    let failed: Vec<FailedTenant> = on_revision
        .iter()
        .filter_map(|(name, state)| match state {
            State::Failed { reason } => Some(FailedTenant { name: name.to_string(), reason: reason.clone() }),
            _ => None,
        })
        .collect();
    let in_flight = on_revision.iter().filter(|(_, state)| *state == State::InFlight).count();
    let mut news = vec![];
    if started {
        news.push(News::new("RolloutStarted", format!("Rolling out revision {revision}")));
    }
    status.failed = failed.clone();

    // A halt holds until a new revision or a raised tolerance.
    if let Some(tolerance) = status.halted_at_tolerance {
        if settings.failure_tolerance > tolerance as usize && failed.len() <= settings.failure_tolerance {
            status.halted_at_tolerance = None;
            news.push(News::new(
                "RolloutResumed",
                format!("Resuming revision {revision}: failureTolerance raised to {}", settings.failure_tolerance),
            ));
        } else {
            return Step::at(Phase::Halted, status, vec![], news);
        }
    }
    if failed.len() > settings.failure_tolerance {
        status.halted_at_tolerance = Some(u32::try_from(settings.failure_tolerance).unwrap_or(u32::MAX));
        status.bake_until = None;
        let names: Vec<&str> = failed.iter().map(|f| f.name.as_str()).collect();
        news.push(News::new(
            "RolloutHalted",
            format!(
                "Halted revision {revision}: {} tenants failed ({}), more than failureTolerance {}",
                failed.len(),
                names.join(", "),
                settings.failure_tolerance
            ),
        ));
        return Step::at(Phase::Halted, status, vec![], news);
    }
    let mut admitted = vec![];
    if !status.canary_passed {
        if settings.preview {
            return Step::at(Phase::Previewing, status, admitted, news);
        }
        // The canary is admitted as the rollout starts (or leaves a preview).
        if started || current.and_then(Phase::of) == Some(Phase::Previewing) {
            admitted = status.canary.clone();
        }
        let canary_done = status.canary.iter().all(|name| {
            on_revision.iter().any(|(n, state)| n == name && *state != State::InFlight)
                || !tenants.iter().any(|t| &t.name == name)
        });
        if !canary_done {
            return Step::at(Phase::Progressing, status, admitted, news);
        }
        if !baked(&mut status, settings, now) {
            return Step::at(Phase::Baking, status, admitted, news);
        }
        status.canary_passed = true;
        news.push(News::new("CanaryPassed", format!("The canary of revision {revision} passed")));
    }
    if settings.paused {
        return Step::at(Phase::Paused, status, admitted, news);
    }
    // Waves: the next one only when the last one is done and has baked.
    let waiting: Vec<&&TenantView> = tenants
        .iter()
        .filter(|t| t.admitted.is_some() && t.admitted.as_deref() != Some(revision.as_str()))
        .filter(|t| !is_admitted(&status, &t.name))
        .collect();
    if in_flight > 0 {
        return Step::at(Phase::Progressing, status, admitted, news);
    }
    if waiting.is_empty() {
        if was != Some(Phase::Complete) {
            news.push(News::new("RolloutComplete", format!("Revision {revision} is complete")));
        }
        status.bake_until = None;
        return Step::at(Phase::Complete, status, admitted, news);
    }
    if status.wave > 0 && !baked(&mut status, settings, now) {
        return Step::at(Phase::Baking, status, admitted, news);
    }
    let wave: Vec<String> = waiting.iter().take(settings.max_concurrent).map(|t| t.name.clone()).collect();
    status.admitted_through = wave.last().cloned().or(status.admitted_through);
    status.wave += 1;
    status.bake_until = None;
    news.push(News::new(
        "WaveAdmitted",
        format!("Wave {} of revision {revision}: {} tenants", status.wave, wave.len()),
    ));
    admitted.extend(wave);
    Step::at(Phase::Progressing, status, admitted, news)
}

/// Bakes: true once `bake` has passed since the work in flight ended (starting the bake now
/// if it had not started); while false, the rollout is [`Phase::Baking`].
fn baked(status: &mut RolloutStatus, settings: &ResolvedSpec, now: Timestamp) -> bool {
    if settings.bake.is_zero() {
        return true;
    }
    let until = match status.bake_until.as_deref().and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(until) => until,
        None => {
            let until = now + k8s_openapi::jiff::SignedDuration::try_from(settings.bake).unwrap_or_default();
            status.bake_until = Some(until.to_string());
            until
        }
    };
    if now >= until {
        status.bake_until = None;
        return true;
    }
    false
}

/// When the rollout wants to look again by itself (the end of a bake).
pub fn wake_at(status: &RolloutStatus) -> Option<Timestamp> {
    status.bake_until.as_deref().and_then(|t| t.parse().ok())
}

/// The rollouts as this process last decided them, for tenants to read: the Baseline
/// controller records a rollout in the Baseline's status, then here, then wakes the tenants
/// it admitted (which would otherwise read a Baseline from a watch cache not yet updated).
#[derive(Default)]
pub struct Rollouts(Mutex<HashMap<String, RolloutStatus>>);

impl Rollouts {
    pub fn get(&self, baseline: &str) -> Option<RolloutStatus> {
        self.0.lock().expect("rollouts lock").get(baseline).cloned()
    }

    pub fn set(&self, baseline: &str, status: RolloutStatus) {
        self.0.lock().expect("rollouts lock").insert(baseline.to_string(), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "r1";
    const NEW: &str = "r2";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn settings(max_concurrent: usize, tolerance: usize, bake: u64) -> ResolvedSpec {
        ResolvedSpec {
            max_concurrent,
            failure_tolerance: tolerance,
            bake: Duration::from_secs(bake),
            paused: false,
            preview: false,
        }
    }

    /// `n` tenants named t00.., on `admitted`, in `state`.
    fn fleet(n: usize, admitted: &str, state: State) -> Vec<TenantView> {
        (0..n)
            .map(|i| TenantView {
                name: format!("t{i:02}"),
                labels: BTreeMap::new(),
                admitted: Some(admitted.into()),
                state: state.clone(),
            })
            .collect()
    }

    fn complete(revision: &str) -> RolloutStatus {
        RolloutStatus { revision: revision.into(), phase: COMPLETE.into(), canary_passed: true, ..Default::default() }
    }

    /// Applies a step's admissions to the fleet, as the tenants would.
    fn admit(fleet: &mut [TenantView], step: &Step, state: State) {
        for t in fleet.iter_mut().filter(|t| step.admitted.contains(&t.name)) {
            t.admitted = Some(step.status.revision.clone());
            t.state = state.clone();
        }
    }

    fn finish(fleet: &mut [TenantView]) {
        for t in fleet.iter_mut().filter(|t| t.state == State::InFlight) {
            t.state = State::Current;
        }
    }

    #[test]
    fn phases_are_recorded_by_name_and_read_back() {
        for phase in Phase::ALL {
            let recorded = RolloutStatus { phase: phase.as_str().into(), ..Default::default() };
            assert_eq!(Phase::of(&recorded), Some(phase));
        }
        assert_eq!(PHASES, Phase::ALL.map(Phase::as_str), "the metrics show every phase");
        let unknown = RolloutStatus { phase: "Rolling".into(), canary: vec!["t00".into()], ..Default::default() };
        assert_eq!(Phase::of(&unknown), None);
        assert!(is_admitted(&unknown, "t00"), "an unknown phase is no preview");
    }

    #[test]
    fn tenants_admitted_but_not_yet_moving_count_as_in_flight() {
        let mut fleet = fleet(12, OLD, State::Current);
        let s = settings(3, 0, 0);
        let first = step(Some(&complete(OLD)), NEW, &s, &CanaryRule::First(1), &fleet, at(0));
        admit(&mut fleet, &first, State::Current);
        let wave = step(Some(&first.status), NEW, &s, &CanaryRule::First(1), &fleet, at(1));
        assert_eq!(wave.admitted.len(), 3);
        let reasons: Vec<&str> = wave.news.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["CanaryPassed", "WaveAdmitted"], "one step, two Events");
        // The admitted tenants have not reconciled yet: the rollout must not admit more.
        let again = step(Some(&wave.status), NEW, &s, &CanaryRule::First(1), &fleet, at(2));
        assert!(again.admitted.is_empty(), "the wave is still in flight");
        assert_eq!(again.status.phase, PROGRESSING);
    }

    #[test]
    fn the_first_revision_is_complete_at_once() {
        let step = step(None, NEW, &settings(5, 0, 0), &CanaryRule::First(1), &[], at(0));
        assert_eq!(step.status.phase, COMPLETE);
        assert_eq!(target(&step.status, "anyone", None), NEW, "every tenant gets it");
    }

    #[test]
    fn a_new_revision_goes_canary_first_then_in_waves_never_above_max_concurrent() {
        let mut fleet = fleet(12, OLD, State::Current);
        let s = settings(5, 0, 0);
        let first = step(Some(&complete(OLD)), NEW, &s, &CanaryRule::First(2), &fleet, at(0));
        assert_eq!(first.admitted, vec!["t00", "t01"], "the canary, first by name");
        assert_eq!(first.status.phase, PROGRESSING);
        assert_eq!(target(&first.status, "t05", Some(OLD)), OLD, "the others stay");
        admit(&mut fleet, &first, State::InFlight);
        let mut status = first.status;
        let mut waves = vec![];
        for round in 1..20 {
            finish(&mut fleet);
            let next = step(Some(&status), NEW, &s, &CanaryRule::First(2), &fleet, at(round));
            let in_flight = fleet.iter().filter(|t| t.state == State::InFlight).count();
            assert!(in_flight + next.admitted.len() <= 5, "never above maxConcurrent");
            if !next.admitted.is_empty() {
                waves.push(next.admitted.clone());
            }
            admit(&mut fleet, &next, State::InFlight);
            status = next.status;
            if status.phase == COMPLETE {
                break;
            }
        }
        assert_eq!(status.phase, COMPLETE);
        assert_eq!(waves.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5], "10 after the canary, in two waves");
        assert!(fleet.iter().all(|t| t.admitted.as_deref() == Some(NEW)));
    }

    #[test]
    fn a_failing_canary_halts_with_no_one_else_admitted() {
        let mut fleet = fleet(10, OLD, State::Current);
        let s = settings(5, 0, 0);
        let first = step(Some(&complete(OLD)), NEW, &s, &CanaryRule::First(1), &fleet, at(0));
        admit(&mut fleet, &first, State::Failed { reason: "Topic: not allowed".into() });
        let next = step(Some(&first.status), NEW, &s, &CanaryRule::First(1), &fleet, at(1));
        assert_eq!(next.status.phase, HALTED);
        assert!(next.admitted.is_empty());
        assert_eq!(next.status.failed, vec![FailedTenant { name: "t00".into(), reason: "Topic: not allowed".into() }]);
        assert!(next.news.iter().any(|n| n.note.contains("t00")), "the event names the failed tenants");
        assert_eq!(target(&next.status, "newcomer", None), OLD, "new tenants get the last complete revision");
        // Pausing and unpausing does not clear a halt.
        let paused = ResolvedSpec { paused: true, ..s.clone() };
        let still = step(Some(&next.status), NEW, &paused, &CanaryRule::First(1), &fleet, at(2));
        let still = step(Some(&still.status), NEW, &s, &CanaryRule::First(1), &fleet, at(3));
        assert_eq!(still.status.phase, HALTED);
        // A raised tolerance does.
        let tolerant = settings(5, 1, 0);
        let resumed = step(Some(&still.status), NEW, &tolerant, &CanaryRule::First(1), &fleet, at(4));
        assert_ne!(resumed.status.phase, HALTED);
        assert_eq!(resumed.admitted.len(), 5, "the next wave");
    }

    #[test]
    fn failures_beyond_tolerance_halt_mid_rollout_and_a_new_revision_starts_over() {
        let mut fleet = fleet(12, OLD, State::Current);
        let s = settings(4, 1, 0);
        let mut status = step(Some(&complete(OLD)), NEW, &s, &CanaryRule::First(1), &fleet, at(0)).status;
        fleet[0].admitted = Some(NEW.into());
        let mut halted = None;
        for round in 1..20 {
            let next = step(Some(&status), NEW, &s, &CanaryRule::First(1), &fleet, at(round));
            // The second wave fails for two of its tenants.
            let failing = next.status.wave == 2;
            for t in fleet.iter_mut().filter(|t| next.admitted.contains(&t.name)) {
                t.admitted = Some(NEW.into());
                t.state = if failing && (t.name == "t05" || t.name == "t06") {
                    State::Failed { reason: "boom".into() }
                } else {
                    State::Current
                };
            }
            status = next.status;
            if status.phase == HALTED {
                halted = Some(round);
                break;
            }
        }
        assert!(halted.is_some(), "two failures with tolerance 1 halt the rollout");
        let untouched = fleet.iter().filter(|t| t.admitted.as_deref() == Some(OLD)).count();
        assert_eq!(untouched, 3, "the third wave was never admitted");
        // The fix is a new revision: it starts over from the canary.
        let fixed = step(Some(&status), "r3", &s, &CanaryRule::First(1), &fleet, at(100));
        assert_eq!(fixed.status.phase, PROGRESSING);
        assert_eq!(fixed.admitted, vec!["t00"]);
        assert_eq!(fixed.status.previous.as_deref(), Some(OLD), "r2 never completed");
    }

    #[test]
    fn the_canary_bakes_before_the_waves() {
        let mut fleet = fleet(6, OLD, State::Current);
        let s = settings(5, 0, 60);
        let first = step(Some(&complete(OLD)), NEW, &s, &CanaryRule::First(1), &fleet, at(0));
        admit(&mut fleet, &first, State::Current);
        let baking = step(Some(&first.status), NEW, &s, &CanaryRule::First(1), &fleet, at(10));
        assert_eq!(baking.status.phase, BAKING);
        assert!(baking.admitted.is_empty());
        assert_eq!(wake_at(&baking.status), Some(at(70)));
        let still = step(Some(&baking.status), NEW, &s, &CanaryRule::First(1), &fleet, at(50));
        assert!(still.admitted.is_empty());
        let passed = step(Some(&still.status), NEW, &s, &CanaryRule::First(1), &fleet, at(71));
        assert!(passed.status.canary_passed);
        assert_eq!(passed.admitted.len(), 5);
    }

    #[test]
    fn a_new_tenant_gets_the_newest_revision_that_passed_its_canary() {
        let during_canary = RolloutStatus {
            revision: NEW.into(),
            previous: Some(OLD.into()),
            phase: PROGRESSING.into(),
            canary: vec!["t00".into()],
            ..Default::default()
        };
        assert_eq!(target(&during_canary, "zz-new", None), OLD);
        assert_eq!(target(&during_canary, "t00", Some(OLD)), NEW, "the canary is admitted");
        let after_canary = RolloutStatus { canary_passed: true, ..during_canary.clone() };
        assert_eq!(target(&after_canary, "zz-new", None), NEW);
        assert_eq!(target(&after_canary, "t05", Some(OLD)), OLD, "not admitted yet: stays");
        let admitted = RolloutStatus { admitted_through: Some("t07".into()), ..after_canary };
        assert_eq!(target(&admitted, "t05", Some(OLD)), NEW);
        assert_eq!(target(&admitted, "t09", Some(OLD)), OLD);
    }

    #[test]
    fn a_paused_rollout_admits_nobody_and_resumes_where_it_stopped() {
        let mut fleet = fleet(8, OLD, State::Current);
        let s = settings(3, 0, 0);
        let first = step(Some(&complete(OLD)), NEW, &s, &CanaryRule::First(1), &fleet, at(0));
        admit(&mut fleet, &first, State::Current);
        let wave = step(Some(&first.status), NEW, &s, &CanaryRule::First(1), &fleet, at(1));
        admit(&mut fleet, &wave, State::Current);
        let paused = ResolvedSpec { paused: true, ..s.clone() };
        let held = step(Some(&wave.status), NEW, &paused, &CanaryRule::First(1), &fleet, at(2));
        assert_eq!(held.status.phase, PAUSED);
        assert!(held.admitted.is_empty());
        let resumed = step(Some(&held.status), NEW, &s, &CanaryRule::First(1), &fleet, at(3));
        assert_eq!(resumed.admitted, vec!["t04", "t05", "t06"], "the next tenants by name");
    }

    #[test]
    fn a_preview_admits_nobody_until_it_is_turned_off() {
        let fleet = fleet(4, OLD, State::Current);
        let preview = ResolvedSpec { preview: true, ..settings(5, 0, 0) };
        let previewing = step(Some(&complete(OLD)), NEW, &preview, &CanaryRule::First(1), &fleet, at(0));
        assert_eq!(previewing.status.phase, PREVIEWING);
        assert!(previewing.admitted.is_empty());
        assert_eq!(target(&previewing.status, "t00", Some(OLD)), OLD, "the canary only previews");
        assert!(wants_preview(&previewing.status, "t00", None), "the canary owes a preview");
        assert!(wants_preview(&previewing.status, "t00", Some(OLD)), "a preview of an older revision is stale");
        assert!(!wants_preview(&previewing.status, "t00", Some(NEW)), "shown once");
        assert!(!wants_preview(&previewing.status, "t01", None), "only the canary previews");
        let go = step(Some(&previewing.status), NEW, &settings(5, 0, 0), &CanaryRule::First(1), &fleet, at(1));
        assert_eq!(go.admitted, vec!["t00"], "turning the preview off admits the canary");
    }

    #[test]
    fn a_canary_selector_picks_by_labels_and_percentages_resolve() {
        let mut fleet = fleet(4, OLD, State::Current);
        fleet[2].labels.insert("ring".into(), "0".into());
        let rule = CanaryRule::Labels(BTreeMap::from([("ring".to_string(), "0".to_string())]));
        let first = step(Some(&complete(OLD)), NEW, &settings(5, 0, 0), &rule, &fleet, at(0));
        assert_eq!(first.admitted, vec!["t02"]);
        let spec = RolloutSpec {
            max_concurrent: Some(IntOrString::String("10%".into())),
            failure_tolerance: Some(IntOrString::String("5%".into())),
            ..Default::default()
        };
        let resolved = ResolvedSpec::of(&spec, 95);
        assert_eq!((resolved.max_concurrent, resolved.failure_tolerance), (10, 5), "rounded up");
        assert_eq!(ResolvedSpec::of(&RolloutSpec::default(), 1000).max_concurrent, DEFAULT_MAX_CONCURRENT);
    }
}
