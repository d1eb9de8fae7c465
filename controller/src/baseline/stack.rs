//! The stack state machine: for one tenant, one region, what to do next with the baseline
//! stack, from what CloudFormation reports. Pure; `tenant::bootstrap` carries it out.
//!
//! ## Guarantees
//! - Every action is safe to repeat. The revision a stack runs is read from its tag
//!   `silo.dev/revision`, which CloudFormation sets in the same operation as the template, so
//!   a controller killed after CreateStack or UpdateStack sees the truth on its next look;
//!   create and update also carry a ClientRequestToken derived from the revision and attempt.
//! - Nothing waits: in-progress states are polled by requeueing, at an eighth of the time the
//!   stack has spent in its state (0.5 to 30 seconds). A finished update is seen within an
//!   eighth of its time (30 seconds at most), so a rollout's slot idles about a sixteenth of
//!   the time it works, while a long update costs a few dozen DescribeStacks, all in the
//!   tenant's own account's budget. A stack stuck in an `*_IN_PROGRESS` state past the timeout
//!   is reported, not waited on in silence.
//! - A failed create (`ROLLBACK_COMPLETE`) is deleted and created again at most
//!   `max_create_attempts` times per revision, then reported `Stalled`.
//! - A failed update (`UPDATE_ROLLBACK_COMPLETE`) is not retried until the revision changes.

use std::time::Duration;

/// What DescribeStacks says of the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub status: String,
    pub reason: Option<String>,
    /// The stack's `silo.dev/revision` tag.
    pub revision: Option<String>,
    /// Time since the stack last changed state (from CreationTime / LastUpdatedTime).
    pub since: Duration,
}

/// What Silo remembers of earlier attempts (from the Tenant's status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Creations deleted after failing, for the desired revision.
    pub create_attempts: u32,
    /// The revision last sent with CreateStack or UpdateStack.
    pub attempted: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_create_attempts: u32,
    pub in_progress_timeout: Duration,
}

/// The next step for one stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackAction {
    /// No stack: create it.
    Create,
    /// The stack runs another revision: update it.
    Update,
    /// CloudFormation is working; look again later.
    Wait,
    /// Nothing to do: the stack runs the desired revision.
    Ready,
    /// A failed creation with attempts left: delete it, then create again.
    DeleteAndRecreate,
    /// `UPDATE_ROLLBACK_FAILED`: ask CloudFormation to finish the rollback.
    ContinueRollback,
    /// The stack cannot reach the desired revision until a person changes something.
    Failed { reason: &'static str },
}

/// The soonest and latest look at a stack in progress.
pub const POLL_BOUNDS: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// When to look again at a stack that has been `since` in its in-progress state. Pure.
pub fn poll_after(since: Duration) -> Duration {
    (since / 8).clamp(POLL_BOUNDS.0, POLL_BOUNDS.1)
}

/// Decides the next step. Pure.
pub fn next_action(observed: Option<&Observed>, desired: &str, memory: &Memory, limits: Limits) -> StackAction {
    let Some(stack) = observed else {
        return StackAction::Create;
    };
    let at_desired = stack.revision.as_deref() == Some(desired);
    let status = stack.status.as_str();
    match status {
        "DELETE_COMPLETE" => StackAction::Create,
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE" => {
            if at_desired {
                StackAction::Ready
            } else {
                StackAction::Update
            }
        }
        "UPDATE_ROLLBACK_COMPLETE" | "IMPORT_ROLLBACK_COMPLETE" => {
            if at_desired {
                StackAction::Ready
            } else if memory.attempted.as_deref() == Some(desired) {
                StackAction::Failed { reason: "StackUpdateRolledBack" }
            } else {
                StackAction::Update
            }
        }
        "ROLLBACK_COMPLETE" | "CREATE_FAILED" | "ROLLBACK_FAILED" => {
            if memory.create_attempts < limits.max_create_attempts {
                StackAction::DeleteAndRecreate
            } else {
                StackAction::Failed { reason: "StackCreateFailed" }
            }
        }
        // Continued until an hour after the update began; a rollback that keeps failing
        // longer needs a person.
        "UPDATE_ROLLBACK_FAILED" if stack.since > limits.in_progress_timeout => {
            StackAction::Failed { reason: "StackRollbackFailed" }
        }
        "UPDATE_ROLLBACK_FAILED" => StackAction::ContinueRollback,
        "DELETE_FAILED" => StackAction::Failed { reason: "StackDeleteFailed" },
        in_progress if in_progress.ends_with("_IN_PROGRESS") || in_progress == "UPDATE_FAILED" => {
            if stack.since > limits.in_progress_timeout {
                StackAction::Failed { reason: "StackTimedOut" }
            } else {
                StackAction::Wait
            }
        }
        _ => StackAction::Failed { reason: "StackStatusUnknown" },
    }
}

/// A ClientRequestToken for an operation towards a revision, from a stack in a given state
/// (`generation`: the attempt number for a create, the time the stack last changed for the
/// others). A retried call repeats its token, so CloudFormation applies it once; the next
/// operation on the stack gets a new one, even towards a revision tried before.
pub fn request_token(operation: &str, revision: &str, generation: i64) -> String {
    format!("silo-{operation}-{revision}-{generation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_create_attempts: 2, in_progress_timeout: Duration::from_secs(1800) };

    fn stack(status: &str, revision: &str) -> Observed {
        Observed { status: status.into(), reason: None, revision: Some(revision.into()), since: Duration::from_secs(5) }
    }

    #[test]
    fn a_stack_in_progress_is_polled_at_an_eighth_of_its_age_within_bounds() {
        assert_eq!(poll_after(Duration::ZERO), POLL_BOUNDS.0, "a just-started operation");
        assert_eq!(poll_after(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(poll_after(Duration::from_secs(20)), Duration::from_millis(2500));
        assert_eq!(poll_after(Duration::from_secs(3600)), POLL_BOUNDS.1, "a long one");
    }

    fn next(status: &str, running: &str, memory: Memory) -> StackAction {
        next_action(Some(&stack(status, running)), "r2", &memory, LIMITS)
    }

    #[test]
    fn every_cloudformation_status_maps_to_an_action() {
        use StackAction::*;
        let none = Memory::default;
        let table: &[(&str, &str, StackAction)] = &[
            ("CREATE_IN_PROGRESS", "r2", Wait),
            ("CREATE_COMPLETE", "r2", Ready),
            ("CREATE_COMPLETE", "r1", Update),
            ("CREATE_FAILED", "r2", DeleteAndRecreate),
            ("ROLLBACK_IN_PROGRESS", "r2", Wait),
            ("ROLLBACK_COMPLETE", "r2", DeleteAndRecreate),
            ("ROLLBACK_FAILED", "r2", DeleteAndRecreate),
            ("DELETE_IN_PROGRESS", "r2", Wait),
            ("DELETE_COMPLETE", "r2", Create),
            ("DELETE_FAILED", "r2", Failed { reason: "StackDeleteFailed" }),
            ("UPDATE_IN_PROGRESS", "r2", Wait),
            ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "r2", Wait),
            ("UPDATE_COMPLETE", "r2", Ready),
            ("UPDATE_COMPLETE", "r1", Update),
            ("UPDATE_FAILED", "r2", Wait),
            ("UPDATE_ROLLBACK_IN_PROGRESS", "r1", Wait),
            ("UPDATE_ROLLBACK_FAILED", "r1", ContinueRollback),
            ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "r1", Wait),
            ("UPDATE_ROLLBACK_COMPLETE", "r1", Update),
            ("REVIEW_IN_PROGRESS", "r2", Wait),
            ("IMPORT_IN_PROGRESS", "r2", Wait),
            ("IMPORT_COMPLETE", "r2", Ready),
            ("IMPORT_ROLLBACK_IN_PROGRESS", "r2", Wait),
            ("IMPORT_ROLLBACK_COMPLETE", "r1", Update),
            ("SOMETHING_NEW", "r2", Failed { reason: "StackStatusUnknown" }),
        ];
        for (status, running, expected) in table {
            assert_eq!(&next(status, running, none()), expected, "{status} running {running}");
        }
        assert_eq!(next_action(None, "r2", &none(), LIMITS), Create, "no stack yet");
    }

    #[test]
    fn a_failed_create_is_retried_a_bounded_number_of_times() {
        let tried = |n| Memory { create_attempts: n, attempted: Some("r2".into()) };
        assert_eq!(next("ROLLBACK_COMPLETE", "r2", tried(1)), StackAction::DeleteAndRecreate);
        assert_eq!(next("ROLLBACK_COMPLETE", "r2", tried(2)), StackAction::Failed { reason: "StackCreateFailed" });
    }

    #[test]
    fn a_rolled_back_update_waits_for_a_new_revision() {
        let failed = Memory { create_attempts: 0, attempted: Some("r2".into()) };
        assert_eq!(
            next("UPDATE_ROLLBACK_COMPLETE", "r1", failed.clone()),
            StackAction::Failed { reason: "StackUpdateRolledBack" }
        );
        let older = Memory { create_attempts: 0, attempted: Some("r0".into()) };
        assert_eq!(next("UPDATE_ROLLBACK_COMPLETE", "r1", older), StackAction::Update, "r2 is new: try it");
    }

    #[test]
    fn a_rollback_that_keeps_failing_is_reported() {
        let old = Observed { since: Duration::from_secs(7200), ..stack("UPDATE_ROLLBACK_FAILED", "r1") };
        assert_eq!(
            next_action(Some(&old), "r2", &Memory::default(), LIMITS),
            StackAction::Failed { reason: "StackRollbackFailed" }
        );
    }

    #[test]
    fn a_stack_stuck_in_progress_is_reported() {
        let stuck = Observed { since: Duration::from_secs(3600), ..stack("UPDATE_IN_PROGRESS", "r2") };
        assert_eq!(
            next_action(Some(&stuck), "r2", &Memory::default(), LIMITS),
            StackAction::Failed { reason: "StackTimedOut" }
        );
    }
}
