//! How a Baseline's new revision reaches its tenants: the way Kubernetes rolls a Deployment.
//!
//! A tenant stays on the revision it was admitted to until the rollout admits it to a newer
//! one. The order is stable and documented, so a resumed rollout continues where it stopped:
//! 1. the rollout goes in **stages** (`spec.rollout.stages`, cumulative sizes like
//!    `[1, 5%, 25%, 100%]`; default: the canary, then everyone). The first stage is the
//!    **canary** (the tenants a label selector picks, or the first ones by name), fixed when
//!    the rollout starts; the later stages take the other tenants by name;
//! 2. within a stage, a **sliding window** of `maxConcurrent` tenants: the next tenant is
//!    admitted as soon as one finishes, as a Deployment's rolling update does, so never more
//!    than `maxConcurrent` tenants have stack work in flight and no slot waits for the
//!    slowest;
//! 3. each stage but the last finishes, then **bakes** (`bakeSeconds` without a new failure),
//!    before the next opens;
//! 4. when failures exceed `failureTolerance`, the rollout **halts**: nobody else is
//!    admitted. A new revision, or a raised tolerance, ends the halt; toggling `paused` does
//!    not. With `onFailure: Rollback` it **rolls back** instead: the tenants the revision
//!    reached go back to the last revision that completed, through the same window, by name
//!    (`rollback.through` records how far), and the rollout ends `RolledBack` until a new
//!    revision.
//!
//! What is admitted is recorded as two names: the canary tenants up to `canaryThrough`, and
//! after the canary every tenant up to `admittedThrough`, by name. A tenant that has never
//! been admitted to any revision (a new tenant) gets the newest revision that passed its
//! canary: during a canary or a halt, the last complete one.
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

use crate::api::{FailedTenant, OnFailure, RollbackStatus, RolledBack, RolloutSpec, RolloutStatus, Tenant};

/// Where a rollout stands. [`step`] decides it; the status records it by name
/// (`status.rollout.phase` is a string in the API, so a name Silo does not know yet reads as
/// no phase at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Admitting tenants (the canary, or a later stage), or waiting for those admitted to
    /// finish.
    Progressing,
    /// A stage finished; waiting `bakeSeconds` without a new failure before the next opens.
    Baking,
    /// Failures exceed `failureTolerance`: nobody else is admitted.
    Halted,
    /// Failures exceed `failureTolerance` with `onFailure: Rollback`: the tenants the revision
    /// reached are going back to the last complete one.
    RollingBack,
    /// Every tenant the failed revision reached is back on the last complete one.
    RolledBack,
    /// `paused`: nobody else is admitted.
    Paused,
    /// `preview`: the canary shows its changes, nobody is admitted.
    Previewing,
    /// Every tenant on a revision was admitted to this one.
    Complete,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Progressing,
        Phase::Baking,
        Phase::Halted,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Paused,
        Phase::Previewing,
        Phase::Complete,
    ];

    /// Its name in the status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "Progressing",
            Phase::Baking => "Baking",
            Phase::Halted => "Halted",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
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
pub const ROLLING_BACK: &str = Phase::RollingBack.as_str();
pub const ROLLED_BACK: &str = Phase::RolledBack.as_str();
pub const PAUSED: &str = Phase::Paused.as_str();
pub const PREVIEWING: &str = Phase::Previewing.as_str();
pub const COMPLETE: &str = Phase::Complete.as_str();
/// Every phase's name, for metrics that show each one.
pub const PHASES: [&str; 8] = [PROGRESSING, BAKING, HALTED, ROLLING_BACK, ROLLED_BACK, PAUSED, PREVIEWING, COMPLETE];

/// Default tenants with stack work in flight at once.
pub const DEFAULT_MAX_CONCURRENT: usize = 5;

/// The rollout spec, with percentages resolved against the number of tenants.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedSpec {
    pub max_concurrent: usize,
    pub failure_tolerance: usize,
    /// The size of the first stage, the canary, when `canary` does not pick it.
    pub canary: Option<usize>,
    /// The cumulative sizes of the stages after the canary, the last one every tenant.
    pub stages: Vec<usize>,
    pub bake: Duration,
    pub paused: bool,
    pub preview: bool,
    /// Roll back, rather than only halt, when failures exceed the tolerance.
    pub rollback: bool,
    /// The revision whose remaining bakes a person skipped (`silo rollout promote`).
    pub promoted: Option<String>,
}

impl ResolvedSpec {
    /// Resolves a Baseline's `spec.rollout` for a fleet of `tenants`.
    pub fn of(spec: &RolloutSpec, tenants: usize) -> Self {
        let resolve = |value: &IntOrString, at_least: usize| match value {
            IntOrString::Int(n) => usize::try_from(*n).unwrap_or(0).max(at_least),
            IntOrString::String(percent) => {
                let percent: usize = percent.trim_end_matches('%').parse().unwrap_or(0);
                (tenants * percent).div_ceil(100).max(at_least)
            }
        };
        let optional = |value: &Option<IntOrString>, default: usize, at_least: usize| {
            value.as_ref().map_or(default, |value| resolve(value, at_least))
        };
        let mut sizes: Vec<usize> = spec.stages.iter().map(|stage| resolve(stage, 1)).collect();
        // Cumulative: a stage never holds fewer tenants than the one before; the last holds all.
        for i in 1..sizes.len() {
            sizes[i] = sizes[i].max(sizes[i - 1]);
        }
        let canary = (!sizes.is_empty()).then(|| sizes.remove(0));
        sizes.retain(|&size| size < tenants);
        sizes.push(tenants);
        Self {
            max_concurrent: optional(&spec.max_concurrent, DEFAULT_MAX_CONCURRENT, 1),
            failure_tolerance: optional(&spec.failure_tolerance, 0, 0),
            canary,
            stages: sizes,
            bake: Duration::from_secs(u64::from(spec.bake_seconds.unwrap_or(0))),
            paused: spec.paused,
            preview: spec.preview,
            rollback: spec.on_failure == OnFailure::Rollback,
            promoted: None,
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
    /// The rollback that sent it back to `admitted`, if one did.
    pub rolled_back: Option<RolledBack>,
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
    /// The canary rule of a Baseline's `spec.rollout`: its `canary`, else the first stage's
    /// size, else the first tenant by name.
    pub fn of(spec: &RolloutSpec, settings: &ResolvedSpec) -> Self {
        match &spec.canary {
            Some(canary) => match (&canary.selector, canary.count) {
                (Some(selector), _) => Self::Labels(selector.match_labels.clone().unwrap_or_default()),
                (None, Some(n)) => Self::First(n as usize),
                (None, None) => Self::First(1),
            },
            None => Self::First(settings.canary.unwrap_or(1)),
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
    /// Something worth an Event: the start, the canary passing, a stage opening, a halt, a
    /// resume, completion.
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

    /// A halt or a rollback: a Warning.
    pub fn is_halt(&self) -> bool {
        matches!(self.reason, "RolloutHalted" | "RollbackStarted")
    }
}

/// The revision a tenant should run now. `admitted`: the revision it was admitted to before,
/// if any. Pure.
pub fn target(rollout: &RolloutStatus, tenant: &str, admitted: Option<&str>) -> String {
    if let Some(rollback) = &rollout.rollback
        && admitted == Some(rollout.revision.as_str())
        && rollback.through.as_deref().is_some_and(|last| tenant <= last)
    {
        return rollback.to.clone();
    }
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

/// The record a tenant keeps when `target` sends it back from the rollout's failed revision
/// (`admitted`: the revision it was admitted to before; `target`: what `target` gave). Pure.
pub fn rolled_back(rollout: &RolloutStatus, admitted: Option<&str>, target: &str) -> Option<RolledBack> {
    let rollback = rollout.rollback.as_ref()?;
    (admitted == Some(rollout.revision.as_str()) && target == rollback.to)
        .then(|| record_of(rollback, &rollout.revision))
}

/// What a tenant that `rollback` sent back from the revision `failed` records.
fn record_of(rollback: &RollbackStatus, failed: &str) -> RolledBack {
    RolledBack { from: failed.to_string(), started_at: rollback.started_at.clone().unwrap_or_default() }
}

/// Whether the rollout has admitted `tenant` to its revision (in the canary, or after it).
pub fn is_admitted(rollout: &RolloutStatus, tenant: &str) -> bool {
    if Phase::of(rollout) == Some(Phase::Previewing) || rollout.rollback.is_some() {
        return false;
    }
    let through = |last: &Option<String>| last.as_deref().is_some_and(|last| tenant <= last);
    if rollout.canary.iter().any(|c| c == tenant) {
        return through(&rollout.canary_through);
    }
    rollout.canary_passed && through(&rollout.admitted_through)
}

/// The next state of a Baseline's rollout. `newest`: the Baseline's newest revision;
/// `current`: the recorded rollout, if any; `tenants`: every tenant that uses the Baseline.
/// Pure.
pub fn step<'t>(
    current: Option<&RolloutStatus>,
    newest: &str,
    settings: &ResolvedSpec,
    canary_rule: &CanaryRule,
    tenants: impl IntoIterator<Item = &'t TenantView>,
    now: Timestamp,
) -> Step {
    let mut tenants: Vec<&TenantView> = tenants.into_iter().collect();
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    // Only tenants already on some revision are rolled (new tenants get what `target` gives).
    let rolled: Vec<&TenantView> = tenants.iter().copied().filter(|t| t.admitted.is_some()).collect();
    let mut status = match current {
        Some(current) if current.revision == newest => current.clone(),
        // A new revision: a new rollout, its canary fixed now.
        Some(previous) => RolloutStatus {
            revision: newest.to_string(),
            previous: if Phase::of(previous) == Some(Phase::Complete) {
                Some(previous.revision.clone())
            } else {
                previous.previous.clone()
            },
            phase: Phase::Progressing.as_str().into(),
            canary: canary_rule.pick(&rolled),
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
    let on_revision: Vec<(&str, State)> = rolled
        .iter()
        .filter_map(|t| {
            if t.admitted.as_deref() == Some(revision.as_str()) {
                Some((t.name.as_str(), t.state.clone()))
            } else if is_admitted(&status, &t.name) {
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

    // A rollback goes on until every tenant the revision reached is back; only a new
    // revision ends it.
    if let Some(rollback) = status.rollback.as_mut() {
        // One started by a Silo that kept no start: from now on, as far as records go.
        rollback.started_at.get_or_insert_with(|| now.to_string());
        return roll_back(status, &rolled, settings, was, news);
    }
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
        let why = format!(
            "{} tenants failed ({}), more than failureTolerance {}",
            failed.len(),
            names.join(", "),
            settings.failure_tolerance
        );
        if settings.rollback
            && let Some(to) = status.previous.clone()
        {
            let reached = rolled.iter().filter(|t| t.admitted.as_deref() == Some(revision.as_str())).count();
            let tenants = u32::try_from(reached).unwrap_or(u32::MAX);
            news.push(News::new(
                "RollbackStarted",
                format!("Rolling back revision {revision}: {why}; its {tenants} tenants go back to revision {to}"),
            ));
            let started_at = Some(now.to_string());
            status.rollback = Some(RollbackStatus { to, tenants, through: None, started_at });
            return roll_back(status, &rolled, settings, was, news);
        }
        news.push(News::new("RolloutHalted", format!("Halted revision {revision}: {why}")));
        return Step::at(Phase::Halted, status, vec![], news);
    }
    // The window: how many more tenants may start stack work now.
    let free = settings.max_concurrent.saturating_sub(in_flight);
    let mut admitted = vec![];
    if !status.canary_passed {
        if settings.preview {
            return Step::at(Phase::Previewing, status, admitted, news);
        }
        let present = |name: &String| rolled.iter().any(|t| &t.name == name);
        let on_it = |name: &String| rolled.iter().any(|t| &t.name == name && t.admitted.as_deref() == Some(&revision));
        // A canary tenant already on the revision (a revision rolled out before, again) has
        // nothing to do: it is not admitted, and the canary may pass in this step.
        let waiting: Vec<String> = status
            .canary
            .iter()
            .filter(|name| present(name) && !on_it(name) && !is_admitted(&status, name))
            .cloned()
            .collect();
        // Paused: not even the canary is admitted; those in flight finish.
        let next: Vec<String> = waiting.into_iter().take(if settings.paused { 0 } else { free }).collect();
        if let Some(last) = next.last() {
            status.canary_through = Some(last.clone());
        }
        let canary_done = status
            .canary
            .iter()
            .all(|name| on_revision.iter().any(|(n, state)| n == name && *state != State::InFlight) || !present(name));
        if !canary_done || !next.is_empty() {
            let phase = if settings.paused { Phase::Paused } else { Phase::Progressing };
            return Step::at(phase, status, next, news);
        }
        // A canary that had nothing to do (it ran the revision already) has nothing to bake.
        if status.canary_through.is_some() && !baked(&mut status, settings, now) {
            return Step::at(Phase::Baking, status, admitted, news);
        }
        status.canary_passed = true;
        status.stage = 1;
        news.push(News::new("CanaryPassed", format!("The canary of revision {revision} passed")));
        news.push(stage_opened(&status, settings));
    }
    if settings.paused {
        return Step::at(Phase::Paused, status, admitted, news);
    }
    // The later stages, through the window.
    loop {
        let waiting: Vec<&str> = rolled
            .iter()
            .filter(|t| t.admitted.as_deref() != Some(revision.as_str()) && !is_admitted(&status, &t.name))
            .map(|t| t.name.as_str())
            .collect();
        let reached = rolled.len() - waiting.len();
        let goal = stage_size(&status, settings);
        let room = goal.saturating_sub(reached).min(free);
        if room > 0 && !waiting.is_empty() {
            let next: Vec<String> = waiting.iter().take(room).map(|name| name.to_string()).collect();
            status.admitted_through = next.last().cloned();
            status.bake_until = None;
            admitted.extend(next);
            return Step::at(Phase::Progressing, status, admitted, news);
        }
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
        // The stage is done and others wait: it bakes, then the next one opens. A stage that
        // had nobody to admit (`1%` of 30 tenants after a canary of one) has nothing to bake.
        if stage_took_it_further(&status, settings) && !baked(&mut status, settings, now) {
            return Step::at(Phase::Baking, status, admitted, news);
        }
        status.stage += 1;
        news.push(stage_opened(&status, settings));
    }
}

/// A rollback's next step: the tenants on the failed revision go back to `rollback.to` by
/// name, through the window. One sent back counts as in flight until its stacks run the
/// revision again, and so does one still on its way to the failed revision. Pure.
fn roll_back(
    mut status: RolloutStatus,
    rolled: &[&TenantView],
    settings: &ResolvedSpec,
    was: Option<Phase>,
    mut news: Vec<News>,
) -> Step {
    let mut rollback = status.rollback.clone().expect("a rollback is under way");
    let failed_revision = status.revision.clone();
    let sent_back = |name: &str| rollback.through.as_deref().is_some_and(|last| name <= last);
    let on = |t: &TenantView, revision: &str| t.admitted.as_deref() == Some(revision);
    let waiting: Vec<&str> =
        rolled.iter().filter(|t| on(t, &failed_revision) && !sent_back(&t.name)).map(|t| t.name.as_str()).collect();
    // In flight: stack work towards either revision, and the tenants sent back that have not
    // taken it up yet.
    let in_flight = rolled
        .iter()
        .filter(|t| on(t, &failed_revision) || on(t, &rollback.to))
        .filter(|t| t.state == State::InFlight || (sent_back(&t.name) && on(t, &failed_revision)))
        .count();
    let free = settings.max_concurrent.saturating_sub(in_flight);
    let admitted: Vec<String> = waiting.iter().take(free).map(|name| name.to_string()).collect();
    if let Some(last) = admitted.last() {
        rollback.through = Some(last.clone());
    }
    // Reached: still on the failed revision, or sent back by this rollback (the tenant
    // records it). A tenant whose move to the failed revision the cache had not shown when
    // the rollback started is counted once it shows; one deleted since stays counted.
    let this_rollback = Some(record_of(&rollback, &failed_revision));
    let returned = rolled.iter().filter(|t| t.rolled_back == this_rollback);
    let reached = rolled.iter().filter(|t| on(t, &failed_revision)).count() + returned.count();
    rollback.tenants = rollback.tenants.max(u32::try_from(reached).unwrap_or(u32::MAX));
    let (to, tenants) = (rollback.to.clone(), rollback.tenants);
    status.rollback = Some(rollback);
    status.bake_until = None;
    if waiting.is_empty() && in_flight == 0 {
        if was != Some(Phase::RolledBack) {
            news.push(News::new(
                "RollbackComplete",
                format!("Revision {failed_revision} rolled back: the {tenants} tenants it reached run revision {to}"),
            ));
        }
        return Step::at(Phase::RolledBack, status, admitted, news);
    }
    Step::at(Phase::RollingBack, status, admitted, news)
}

/// How many of the rolled tenants the open stage (after the canary) takes the rollout to.
fn stage_size(status: &RolloutStatus, settings: &ResolvedSpec) -> usize {
    size_of_stage(status.stage, settings)
}

fn size_of_stage(stage: u32, settings: &ResolvedSpec) -> usize {
    let index = usize::try_from(stage.saturating_sub(1)).unwrap_or(usize::MAX);
    settings.stages.get(index).or(settings.stages.last()).copied().unwrap_or(usize::MAX)
}

/// Whether the open stage goes beyond the canary and every stage before it.
fn stage_took_it_further(status: &RolloutStatus, settings: &ResolvedSpec) -> bool {
    let before = (1..status.stage).map(|stage| size_of_stage(stage, settings)).max().unwrap_or(0);
    stage_size(status, settings) > before.max(status.canary.len())
}

/// The Event of a stage opening.
fn stage_opened(status: &RolloutStatus, settings: &ResolvedSpec) -> News {
    News::new(
        "StageStarted",
        format!(
            "Stage {} of revision {}: up to {} tenants, {} at a time",
            status.stage,
            status.revision,
            stage_size(status, settings),
            settings.max_concurrent
        ),
    )
}

/// Bakes: true once `bake` has passed since the work in flight ended (starting the bake now
/// if it had not started); while false, the rollout is [`Phase::Baking`].
fn baked(status: &mut RolloutStatus, settings: &ResolvedSpec, now: Timestamp) -> bool {
    if settings.bake.is_zero() || settings.promoted.as_deref() == Some(status.revision.as_str()) {
        status.bake_until = None;
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
            canary: None,
            stages: vec![usize::MAX],
            max_concurrent,
            failure_tolerance: tolerance,
            bake: Duration::from_secs(bake),
            paused: false,
            preview: false,
            rollback: false,
            promoted: None,
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
                rolled_back: None,
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
        let unknown = RolloutStatus {
            phase: "Rolling".into(),
            canary: vec!["t00".into()],
            canary_through: Some("t00".into()),
            ..Default::default()
        };
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
        assert_eq!(reasons, ["CanaryPassed", "StageStarted"], "one step, two Events");
        // The admitted tenants have not reconciled yet: the rollout must not admit more.
        let again = step(Some(&wave.status), NEW, &s, &CanaryRule::First(1), &fleet, at(2));
        assert!(again.admitted.is_empty(), "the window is full");
        assert_eq!(again.status.phase, PROGRESSING);
    }

    #[test]
    fn the_first_revision_is_complete_at_once() {
        let step = step(None, NEW, &settings(5, 0, 0), &CanaryRule::First(1), &[], at(0));
        assert_eq!(step.status.phase, COMPLETE);
        assert_eq!(target(&step.status, "anyone", None), NEW, "every tenant gets it");
    }

    #[test]
    fn a_new_revision_goes_canary_first_then_never_above_max_concurrent() {
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
        assert_eq!(waves.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5], "10 after the canary, 5 at a time");
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
            // Two tenants of the second window fail.
            for t in fleet.iter_mut().filter(|t| next.admitted.contains(&t.name)) {
                t.admitted = Some(NEW.into());
                t.state = if t.name == "t05" || t.name == "t06" {
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
        assert_eq!(untouched, 3, "nobody admitted after the halt");
        // The fix is a new revision: it starts over from the canary.
        let fixed = step(Some(&status), "r3", &s, &CanaryRule::First(1), &fleet, at(100));
        assert_eq!(fixed.status.phase, PROGRESSING);
        assert_eq!(fixed.admitted, vec!["t00"]);
        assert_eq!(fixed.status.previous.as_deref(), Some(OLD), "r2 never completed");
    }

    #[test]
    fn the_next_tenant_is_admitted_as_soon_as_one_finishes() {
        let mut fleet = fleet(10, OLD, State::Current);
        let s = settings(3, 0, 0);
        let first = step(Some(&complete(OLD)), NEW, &s, &CanaryRule::First(1), &fleet, at(0));
        admit(&mut fleet, &first, State::Current);
        let mut status = step(Some(&first.status), NEW, &s, &CanaryRule::First(1), &fleet, at(1)).status;
        let window: Vec<&str> = vec!["t01", "t02", "t03"];
        for t in fleet.iter_mut().filter(|t| window.contains(&t.name.as_str())) {
            t.admitted = Some(NEW.into());
            t.state = State::InFlight;
        }
        let mut order = vec![];
        for round in 2..40 {
            // The slowest goes last: one tenant in flight finishes per round, the newest first.
            if let Some(t) = fleet.iter_mut().rev().find(|t| t.state == State::InFlight) {
                t.state = State::Current;
            }
            let next = step(Some(&status), NEW, &s, &CanaryRule::First(1), &fleet, at(round));
            let in_flight = fleet.iter().filter(|t| t.state == State::InFlight).count();
            assert!(in_flight + next.admitted.len() <= 3, "never above maxConcurrent");
            if in_flight == 2 && next.status.phase != COMPLETE && order.len() < 6 {
                assert_eq!(next.admitted.len(), 1, "a freed slot is taken at once, round {round}");
            }
            order.extend(next.admitted.clone());
            admit(&mut fleet, &next, State::InFlight);
            status = next.status;
            if status.phase == COMPLETE {
                break;
            }
        }
        assert_eq!(status.phase, COMPLETE);
        assert_eq!(order, ["t04", "t05", "t06", "t07", "t08", "t09"], "one at a time, by name, nobody twice");
    }

    /// A bake: its stage, and how many tenants ran NEW when it began.
    type Bake = (u32, usize);

    /// Rolls NEW across `n` tenants with `stages`, a window of 2 and a bake of 60 s: the bakes
    /// and each tenant's admissions (name, stage).
    fn roll_in_stages(n: usize, stages: &[IntOrString]) -> (Vec<Bake>, Vec<(String, u32)>) {
        let mut fleet = fleet(n, OLD, State::Current);
        let spec = RolloutSpec {
            stages: stages.to_vec(),
            max_concurrent: Some(IntOrString::Int(2)),
            bake_seconds: Some(60),
            ..Default::default()
        };
        let s = ResolvedSpec::of(&spec, fleet.len());
        let rule = CanaryRule::of(&spec, &s);
        let mut status = complete(OLD);
        let (mut now, mut admissions, mut bakes) = (0, vec![], vec![]);
        while status.phase != COMPLETE || status.revision != NEW {
            let next = step(Some(&status), NEW, &s, &rule, &fleet, at(now));
            finish(&mut fleet);
            admit(&mut fleet, &next, State::InFlight);
            let on_new = fleet.iter().filter(|t| t.admitted.as_deref() == Some(NEW)).count();
            if next.status.phase == BAKING && (status.phase != BAKING || status.stage != next.status.stage) {
                bakes.push((next.status.stage, on_new));
            }
            admissions.extend(next.admitted.iter().map(|name| (name.clone(), next.status.stage)));
            status = next.status;
            now += 10;
            assert!(now < 10_000, "the rollout ends");
        }
        (bakes, admissions)
    }

    #[test]
    fn stages_finish_and_bake_in_order_and_the_last_one_does_not_bake() {
        let stages = [IntOrString::Int(1), IntOrString::String("25%".into()), IntOrString::String("100%".into())];
        let s = ResolvedSpec::of(&RolloutSpec { stages: stages.to_vec(), ..Default::default() }, 20);
        assert_eq!((s.canary, s.stages.clone()), (Some(1), vec![5, 20]));
        let (bakes, admissions) = roll_in_stages(20, &stages);
        assert_eq!(bakes, [(0, 1), (1, 5)], "the canary bakes, then stage 1 once 5 tenants run the revision");
        let stage_of = |name: &str| admissions.iter().find(|(n, _)| n == name).map(|(_, stage)| *stage);
        assert_eq!(stage_of("t00"), Some(0));
        assert_eq!(stage_of("t04"), Some(1));
        assert_eq!(stage_of("t05"), Some(2));
        let mut names: Vec<&String> = admissions.iter().map(|(n, _)| n).collect();
        names.dedup();
        assert_eq!(names.len(), 20, "each tenant admitted once");
    }

    #[test]
    fn a_stage_with_nobody_to_admit_does_not_bake() {
        // At 30 tenants, 1% is 1 tenant: the canary's size, so stage 1 has nobody to admit.
        let stages: Vec<IntOrString> = ["1", "1%", "10%", "100%"]
            .iter()
            .map(|v| v.parse().map_or(IntOrString::String(v.to_string()), IntOrString::Int))
            .collect();
        let (bakes, admissions) = roll_in_stages(30, &stages);
        assert_eq!(bakes, [(0, 1), (2, 3)], "the canary, then stage 2 (10%: 3 tenants); not stage 1");
        assert!(admissions.iter().all(|(_, stage)| *stage != 1), "stage 1 admitted nobody: {admissions:?}");
    }

    #[test]
    fn a_rollback_returns_exactly_the_tenants_the_failed_revision_reached_through_the_window() {
        let mut fleet = fleet(12, OLD, State::Current);
        let s = ResolvedSpec { rollback: true, ..settings(2, 0, 0) };
        let rule = CanaryRule::First(1);
        let mut status = complete(OLD);
        let (mut reached, mut moves) = (std::collections::BTreeSet::new(), 0);
        let mut news = vec![];
        for round in 0..60 {
            let next = step(Some(&status), NEW, &s, &rule, &fleet, at(round));
            let in_flight = fleet.iter().filter(|t| t.state == State::InFlight).count();
            assert!(in_flight + next.admitted.len() <= 2, "never above maxConcurrent, rolling back too");
            finish(&mut fleet);
            for t in fleet.iter_mut().filter(|t| next.admitted.contains(&t.name)) {
                // As the tenant would: it runs what the rollout's target says.
                let to = target(&next.status, &t.name, t.admitted.as_deref());
                t.state = if to == NEW && t.name == "t04" {
                    State::Failed { reason: "Topic: not allowed".into() }
                } else {
                    State::InFlight
                };
                if to == NEW {
                    reached.insert(t.name.clone());
                }
                t.admitted = Some(to);
                moves += 1;
            }
            news.extend(next.news.iter().map(|n| n.reason));
            status = next.status;
            if status.phase == ROLLED_BACK {
                break;
            }
        }
        assert_eq!(status.phase, ROLLED_BACK, "{status:?}");
        assert_eq!(reached.iter().map(String::as_str).collect::<Vec<_>>(), ["t00", "t01", "t02", "t03", "t04"]);
        assert!(fleet.iter().all(|t| t.admitted.as_deref() == Some(OLD)), "every tenant runs r1 again");
        assert_eq!(moves, 2 * reached.len(), "each tenant it reached went there and back; no other moved");
        assert_eq!(status.rollback.as_ref().map(|r| r.tenants), Some(5));
        assert!(news.contains(&"RollbackStarted") && news.contains(&"RollbackComplete"), "{news:?}");
        assert!(!news.contains(&"RolloutHalted"), "a rollback is announced as one");
        assert_eq!(target(&status, "newcomer", None), OLD, "new tenants get the last complete revision");
        // A rolled-back rollout admits nobody, whatever the tolerance, until a new revision.
        let tolerant = ResolvedSpec { failure_tolerance: 5, ..s.clone() };
        let still = step(Some(&status), NEW, &tolerant, &rule, &fleet, at(100));
        assert_eq!((still.status.phase.as_str(), still.admitted.len()), (ROLLED_BACK, 0));
        let fixed = step(Some(&status), "r3", &s, &rule, &fleet, at(101));
        assert_eq!((fixed.status.phase.as_str(), fixed.status.rollback.clone()), (PROGRESSING, None));
        assert_eq!(fixed.status.previous.as_deref(), Some(OLD));
    }

    /// As every tenant does on its next reconcile: follow `target`, recording the rollback that
    /// sends it back; a tenant that moves has stack work in flight.
    fn follow(fleet: &mut [TenantView], status: &RolloutStatus) {
        for t in fleet.iter_mut() {
            let to = target(status, &t.name, t.admitted.as_deref());
            if t.admitted.as_deref() != Some(to.as_str()) {
                t.rolled_back = rolled_back(status, t.admitted.as_deref(), &to);
                t.admitted = Some(to);
                t.state = State::InFlight;
            }
        }
    }

    #[test]
    fn a_rollback_counts_the_tenants_it_sent_back_and_one_the_cache_showed_late() {
        let s = ResolvedSpec { rollback: true, ..settings(3, 0, 0) };
        let rule = CanaryRule::First(1);
        let mut fleet = fleet(8, OLD, State::Current);
        // NEW reached t00..t05 and failed in t02; t01 had moved to it, but the cache shows it
        // on OLD still. t07 carries the record of an earlier rollback of NEW.
        for i in [0, 2, 3, 4, 5] {
            fleet[i].admitted = Some(NEW.into());
        }
        fleet[2].state = State::Failed { reason: "Topic: not allowed".into() };
        fleet[7].rolled_back = Some(RolledBack { from: NEW.into(), started_at: "2026-01-01T00:00:00Z".into() });
        let mut status = RolloutStatus {
            revision: NEW.into(),
            previous: Some(OLD.into()),
            phase: PROGRESSING.into(),
            canary: vec!["t00".into()],
            canary_passed: true,
            canary_through: Some("t00".into()),
            admitted_through: Some("t05".into()),
            stage: 1,
            ..Default::default()
        };
        for round in 0..30 {
            finish(&mut fleet);
            if round == 1 {
                fleet[1].admitted = Some(NEW.into());
            }
            let next = step(Some(&status), NEW, &s, &rule, &fleet, at(round));
            if round == 0 {
                assert_eq!(next.status.rollback.as_ref().map(|r| r.tenants), Some(5), "five on NEW in the cache");
                assert_eq!(next.admitted, ["t00", "t02", "t03"], "t01 is not on NEW as far as the cache knows");
            }
            follow(&mut fleet, &next.status);
            status = next.status;
            if status.phase == ROLLED_BACK {
                break;
            }
        }
        assert_eq!(status.phase, ROLLED_BACK, "{status:?}");
        let rollback = status.rollback.clone().unwrap();
        assert_eq!(rollback.tenants, 6, "t01, which showed late and was sent back behind the cursor, counts");
        assert!(fleet.iter().all(|t| t.admitted.as_deref() == Some(OLD)), "{fleet:?}");
        let this_rollback = Some(RolledBack { from: NEW.into(), started_at: rollback.started_at.unwrap() });
        let recorded: Vec<&str> =
            fleet.iter().filter(|t| t.rolled_back == this_rollback).map(|t| t.name.as_str()).collect();
        assert_eq!(recorded, ["t00", "t01", "t02", "t03", "t04", "t05"]);
    }

    #[test]
    fn a_rollback_started_by_a_silo_that_kept_no_start_gets_one() {
        let fleet = fleet(3, NEW, State::Current);
        let s = ResolvedSpec { rollback: true, ..settings(1, 0, 0) };
        let rollback = RollbackStatus { to: OLD.into(), tenants: 3, through: None, started_at: None };
        let rolling_back = RolloutStatus {
            revision: NEW.into(),
            previous: Some(OLD.into()),
            rollback: Some(rollback),
            ..complete(NEW)
        };
        let next = step(Some(&rolling_back), NEW, &s, &CanaryRule::First(1), &fleet, at(5));
        let started_at = next.status.rollback.as_ref().and_then(|r| r.started_at.clone());
        assert_eq!(started_at, Some(at(5).to_string()), "the tenants it sends back from now on record it");
        assert_eq!(next.admitted, ["t00"]);
    }

    #[test]
    fn a_revision_every_tenant_already_runs_completes_in_one_step() {
        // `silo rollout undo` to the revision the tenants were rolled back to.
        let fleet = fleet(5, OLD, State::Current);
        let rolled_back = RolloutStatus { revision: NEW.into(), previous: Some(OLD.into()), ..complete(NEW) };
        let again = step(Some(&rolled_back), OLD, &settings(2, 0, 60), &CanaryRule::First(1), &fleet, at(0));
        assert_eq!((again.status.phase.as_str(), again.admitted.len()), (COMPLETE, 0));
    }

    #[test]
    fn a_step_taken_again_from_the_same_record_admits_the_same_tenants() {
        // A controller killed after recording the status and before waking anyone: the next
        // process steps from the record and the tenants' statuses, and admits nobody new.
        let mut fleet = fleet(8, OLD, State::Current);
        let s = settings(3, 0, 0);
        let first = step(Some(&complete(OLD)), NEW, &s, &CanaryRule::First(1), &fleet, at(0));
        admit(&mut fleet, &first, State::Current);
        let window = step(Some(&first.status), NEW, &s, &CanaryRule::First(1), &fleet, at(1));
        assert_eq!(window.admitted, ["t01", "t02", "t03"]);
        let again = step(Some(&window.status), NEW, &s, &CanaryRule::First(1), &fleet, at(2));
        assert!(again.admitted.is_empty(), "the recorded admissions are in flight: {:?}", again.admitted);
        assert_eq!(again.status.admitted_through, window.status.admitted_through);
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
        assert_eq!(passed.admitted.len(), 5, "the window after the canary");
        // Promoted: the bake of the promoted revision is skipped, not another revision's.
        let promoted = ResolvedSpec { promoted: Some(NEW.into()), ..s.clone() };
        let skipped = step(Some(&baking.status), NEW, &promoted, &CanaryRule::First(1), &fleet, at(11));
        assert!(skipped.status.canary_passed && skipped.status.bake_until.is_none());
        let elsewhere = ResolvedSpec { promoted: Some(OLD.into()), ..s.clone() };
        let still = step(Some(&baking.status), NEW, &elsewhere, &CanaryRule::First(1), &fleet, at(11));
        assert_eq!(still.status.phase, BAKING);
    }

    #[test]
    fn a_new_tenant_gets_the_newest_revision_that_passed_its_canary() {
        let during_canary = RolloutStatus {
            revision: NEW.into(),
            previous: Some(OLD.into()),
            phase: PROGRESSING.into(),
            canary: vec!["t00".into()],
            canary_through: Some("t00".into()),
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
    fn a_rollout_paused_from_its_start_admits_not_even_the_canary() {
        let fleet = fleet(6, OLD, State::Current);
        let paused = ResolvedSpec { paused: true, ..settings(1, 0, 0) };
        let held = step(Some(&complete(OLD)), NEW, &paused, &CanaryRule::First(2), &fleet, at(0));
        assert_eq!((held.status.phase.as_str(), held.admitted.len()), (PAUSED, 0));
        let go = step(Some(&held.status), NEW, &settings(1, 0, 0), &CanaryRule::First(2), &fleet, at(1));
        assert_eq!(go.admitted, ["t00"], "resumed: the canary, through a window of one");
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
        let defaults = ResolvedSpec::of(&RolloutSpec::default(), 1000);
        assert_eq!(defaults.max_concurrent, DEFAULT_MAX_CONCURRENT);
        assert_eq!((defaults.canary, defaults.stages), (None, vec![1000]), "the canary, then everyone");
        let stages =
            |sizes: Vec<IntOrString>| ResolvedSpec::of(&RolloutSpec { stages: sizes, ..Default::default() }, 1000);
        let percent = |p: &str| IntOrString::String(p.into());
        let resolved = stages(vec![IntOrString::Int(1), percent("1%"), percent("10%"), percent("100%")]);
        assert_eq!((resolved.canary, resolved.stages.clone()), (Some(1), vec![10, 100, 1000]));
        let short = stages(vec![IntOrString::Int(20), IntOrString::Int(5), percent("50%")]);
        assert_eq!((short.canary, short.stages), (Some(20), vec![20, 500, 1000]), "cumulative; everyone last");
        assert_eq!(CanaryRule::of(&RolloutSpec::default(), &resolved), CanaryRule::First(1));
    }
}
