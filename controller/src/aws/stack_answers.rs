//! What AWS's refusals mean for the baseline's work in a tenant account: the role Silo
//! assumes there, and the CloudFormation calls it makes with that session.
//!
//! Error codes are matched here, once, and turned into typed answers; the baseline step only
//! ever matches the answers.

use super::{AwsError, AwsErrorKind, tenant_access::is_access_denied};

/// What a refused AssumeRole into a tenant account means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRefusal {
    /// The role refused Silo (AccessDenied): a brand-new account's role is not assumable yet,
    /// or the role does not trust Silo.
    RoleRefused,
    /// Anything else: retried, or surfaced, as the error it is.
    Other,
}

/// Reads a failed AssumeRole.
pub fn session_refusal(err: &AwsError) -> SessionRefusal {
    if is_access_denied(err) { SessionRefusal::RoleRefused } else { SessionRefusal::Other }
}

/// What a refused stack write (CreateStack, UpdateStack, ContinueUpdateRollback) means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackRefusal {
    /// CloudFormation understood and refused: the template or its parameters are wrong, and
    /// a person must fix the Baseline.
    Rejected,
    /// Throttling, a passing fault, a busy budget: retried later.
    Other,
}

/// Reads a failed stack write.
pub fn stack_refusal(err: &AwsError) -> StackRefusal {
    if err.kind == AwsErrorKind::Terminal { StackRefusal::Rejected } else { StackRefusal::Other }
}

/// What a call that failed while converging one region means for the whole step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionFailure {
    /// OptInRequired: the region is not enabled in the account; the other regions go on.
    NotEnabled,
    /// AccessDenied or InvalidClientTokenId: the session went stale (or the role changed);
    /// a new one is needed.
    StaleSession,
    /// Anything else: the error it is.
    Other,
}

/// Reads a call that failed while converging a region.
pub fn region_failure(err: &AwsError) -> RegionFailure {
    if err.has_code("OptInRequired") {
        RegionFailure::NotEnabled
    } else if is_access_denied(err) || err.has_code("InvalidClientTokenId") {
        RegionFailure::StaleSession
    } else {
        RegionFailure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: AwsErrorKind, code: Option<&str>) -> AwsError {
        AwsError { operation: "Test", kind, code: code.map(str::to_string), message: String::new() }
    }

    #[test]
    fn a_refused_assume_role_is_the_role_only_when_access_is_denied() {
        use AwsErrorKind::*;
        let table = [
            (err(Terminal, Some("AccessDenied")), SessionRefusal::RoleRefused),
            (err(Terminal, Some("AccessDeniedException")), SessionRefusal::RoleRefused),
            (err(Transient, Some("AccessDenied")), SessionRefusal::Other),
            (err(Terminal, Some("RegionDisabledException")), SessionRefusal::Other),
            (err(Throttled, Some("Throttling")), SessionRefusal::Other),
        ];
        for (err, expected) in table {
            assert_eq!(session_refusal(&err), expected, "{err}");
        }
    }

    #[test]
    fn a_stack_write_is_rejected_only_when_aws_refused_it() {
        assert_eq!(stack_refusal(&err(AwsErrorKind::Terminal, Some("ValidationError"))), StackRefusal::Rejected);
        assert_eq!(stack_refusal(&err(AwsErrorKind::Terminal, None)), StackRefusal::Rejected);
        assert_eq!(stack_refusal(&err(AwsErrorKind::Throttled, Some("Throttling"))), StackRefusal::Other);
        assert_eq!(stack_refusal(&err(AwsErrorKind::Transient, None)), StackRefusal::Other);
        assert_eq!(stack_refusal(&err(AwsErrorKind::Busy, None)), StackRefusal::Other);
    }

    #[test]
    fn region_failures_tell_a_disabled_region_from_a_stale_session() {
        use AwsErrorKind::*;
        let table = [
            (err(Terminal, Some("OptInRequired")), RegionFailure::NotEnabled),
            (err(Transient, Some("OptInRequired")), RegionFailure::NotEnabled),
            (err(Terminal, Some("AccessDenied")), RegionFailure::StaleSession),
            (err(Terminal, Some("AccessDeniedException")), RegionFailure::StaleSession),
            (err(Terminal, Some("InvalidClientTokenId")), RegionFailure::StaleSession),
            (err(Transient, Some("AccessDenied")), RegionFailure::Other),
            (err(Terminal, Some("ValidationError")), RegionFailure::Other),
            (err(Transient, None), RegionFailure::Other),
        ];
        for (err, expected) in table {
            assert_eq!(region_failure(&err), expected, "{err}");
        }
    }
}
