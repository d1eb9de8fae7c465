//! Conditions are Silo's user interface: `kubectl wait --for=condition=Ready`, Flux and Argo
//! CD health checks and humans all read them.
//!
//! Silo follows kstatus: `Reconciling` is True while work is in progress, `Stalled` is True
//! when progress needs a person, and `Ready` is True when everything is done for the current
//! `observedGeneration`. Each step of the pipeline reports one [`StepOutcome`]; the summary
//! conditions are derived from the steps in one place ([`Conditions::summarize`]).
//!
//! A [`StepOutcome`] also says when to look again: Silo's own status writes never trigger a
//! reconcile, so a step that is not done must name the time it wants to be called back.
//!
//! ## Guarantee
//! A condition keeps its `lastTransitionTime` while its status does not change, so writing
//! the same outcome twice produces the same status and does not re-trigger the controller.

use std::{borrow::Cow, time::Duration};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

pub const READY: &str = "Ready";
pub const ACCOUNT_READY: &str = "AccountReady";
pub const PLACEMENT_READY: &str = "PlacementReady";
pub const SETTINGS_READY: &str = "SettingsReady";
pub const BASELINE_READY: &str = "BaselineReady";
/// True while the last drift check found resources of the tenant's stacks changed outside
/// CloudFormation; it does not affect Ready.
pub const BASELINE_DRIFTED: &str = "BaselineDrifted";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// What one step of the pipeline decided: the user's words, and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step's part of the world matches the spec.
    Done { reason: Cow<'static, str>, message: String },
    /// Work is under way (AWS is working, or it is not this tenant's turn yet); look again
    /// `after` this long, unless something wakes the tenant sooner.
    Wait { reason: Cow<'static, str>, message: String, after: Duration },
    /// Progress needs a person; the message says what to do. Silo still looks again
    /// `retry_after` this long, in case the world changed.
    Stalled { reason: Cow<'static, str>, message: String, retry_after: Duration },
}

impl StepOutcome {
    pub fn done(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Done { reason: reason.into(), message: message.into() }
    }

    pub fn wait(reason: &'static str, message: impl Into<String>, after: Duration) -> Self {
        Self::Wait { reason: reason.into(), message: message.into(), after }
    }

    pub fn stalled(reason: &'static str, message: impl Into<String>, retry_after: Duration) -> Self {
        Self::Stalled { reason: reason.into(), message: message.into(), retry_after }
    }

    /// A Done outcome recorded earlier (its reason read back from a condition).
    pub fn recorded_done(reason: &str, message: &str) -> Self {
        Self::Done { reason: Cow::Owned(reason.to_string()), message: message.to_string() }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Done { reason, .. } | Self::Wait { reason, .. } | Self::Stalled { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Done { message, .. } | Self::Wait { message, .. } | Self::Stalled { message, .. } => message,
        }
    }

    /// When to look again: `None` once done.
    pub fn look_again(&self) -> Option<Duration> {
        match self {
            Self::Done { .. } => None,
            Self::Wait { after, .. } => Some(*after),
            Self::Stalled { retry_after, .. } => Some(*retry_after),
        }
    }
}

/// The conditions of one object, updated in place for one generation at one instant.
pub struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    generation: Option<i64>,
    now: Timestamp,
}

impl<'a> Conditions<'a> {
    pub fn new(list: &'a mut Vec<Condition>, generation: Option<i64>, now: Timestamp) -> Self {
        Self { list, generation, now }
    }

    /// Sets one condition, keeping `lastTransitionTime` when the status is unchanged.
    pub fn set(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        let status = if status { "True" } else { "False" };
        let transition = match self.list.iter().find(|c| c.type_ == type_) {
            Some(old) if old.status == status => old.last_transition_time.clone(),
            _ => Time(self.now),
        };
        let condition = Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: self.generation,
            last_transition_time: transition,
        };
        match self.list.iter_mut().find(|c| c.type_ == type_) {
            Some(old) => *old = condition,
            None => self.list.push(condition),
        }
    }

    /// Records one step's outcome under its own condition type.
    pub fn step(&mut self, type_: &str, outcome: &StepOutcome) {
        self.set(type_, outcome.is_done(), outcome.reason(), outcome.message());
    }

    /// Derives `Ready`, `Reconciling` and `Stalled` from the steps' outcomes, in pipeline
    /// order. The first step that is not done speaks for the whole object.
    pub fn summarize(&mut self, steps: &[&StepOutcome]) {
        let blocking = steps.iter().find(|s| !s.is_done());
        match blocking {
            None => {
                self.set(READY, true, "Ready", "The account is ready");
                self.set(RECONCILING, false, "Ready", "");
                self.set(STALLED, false, "Ready", "");
            }
            Some(step) => {
                let stalled = matches!(step, StepOutcome::Stalled { .. });
                self.set(READY, false, step.reason(), step.message());
                self.set(RECONCILING, !stalled, step.reason(), if stalled { "" } else { step.message() });
                self.set(STALLED, stalled, step.reason(), if stalled { step.message() } else { "" });
            }
        }
    }
}

/// The condition of the given type, if present.
pub fn find<'c>(list: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    list.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present and True.
pub fn is_true(list: &[Condition], type_: &str) -> bool {
    find(list, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let mut list = vec![];
        Conditions::new(&mut list, Some(1), at(0)).set(ACCOUNT_READY, false, "Creating", "a");
        Conditions::new(&mut list, Some(1), at(10)).set(ACCOUNT_READY, false, "Creating", "b");
        assert_eq!(list[0].last_transition_time, Time(at(0)));
        assert_eq!(list[0].message, "b");

        Conditions::new(&mut list, Some(2), at(20)).set(ACCOUNT_READY, true, "Created", "c");
        assert_eq!(list[0].last_transition_time, Time(at(20)));
        assert_eq!(list[0].observed_generation, Some(2));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn first_unfinished_step_speaks_for_the_object() {
        let mut list = vec![];
        let done = StepOutcome::done("AccountCreated", "ok");
        let waiting = StepOutcome::wait("MovingAccount", "moving", Duration::from_secs(1));
        let stalled = StepOutcome::stalled("OrganizationalUnitNotFound", "create it", Duration::from_secs(600));

        Conditions::new(&mut list, Some(1), at(0)).summarize(&[&done, &waiting, &stalled]);
        assert!(!is_true(&list, READY));
        assert!(is_true(&list, RECONCILING));
        assert!(!is_true(&list, STALLED));
        assert_eq!(find(&list, READY).unwrap().reason, "MovingAccount");

        Conditions::new(&mut list, Some(1), at(1)).summarize(&[&done, &stalled]);
        assert!(is_true(&list, STALLED));
        assert!(!is_true(&list, RECONCILING));
        assert_eq!(find(&list, STALLED).unwrap().message, "create it");

        Conditions::new(&mut list, Some(1), at(2)).summarize(&[&done]);
        assert!(is_true(&list, READY));
        assert!(!is_true(&list, STALLED));
    }
}
