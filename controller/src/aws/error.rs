//! AWS errors, classified once, here.
//!
//! The SDK already retries throttling and transient errors a few times with backoff. What
//! still comes out of it is sorted into three kinds, and the rest of Silo only ever looks at
//! the kind:
//! - [`AwsErrorKind::Throttled`]: AWS asked us to slow down. Normal weather for a fleet of
//!   thousands of accounts: the tenant is retried later with jittered backoff, and nothing is
//!   shown to the user as a failure.
//! - [`AwsErrorKind::Transient`]: a 5xx, a timeout, a dropped connection. Retried the same way.
//! - [`AwsErrorKind::Terminal`]: AWS understood and refused. The caller decides which
//!   condition to report; the code and message are kept for it.
//! - [`AwsErrorKind::Busy`]: not an AWS answer at all: Silo's own budget had no permit for
//!   background work at that moment (see [`super::budget`]), or the fence held a write back
//!   (see [`super::fence`]). The work is done later.
//!
//! A call sent through the budget fails first as a [`Failure`], which still holds the
//! service's own typed error: a caller that treats a refusal as an answer (a policy already
//! attached, a contact not set) looks at it there; everything else becomes an [`AwsError`]
//! with `?`, which classifies it and counts it in `silo_aws_errors_total`.

use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::metrics::{AwsErrorLabels, METRICS};

/// Error codes AWS services use to say "slow down".
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Error codes AWS services use for a passing fault on their side.
const TRANSIENT_CODES: &[&str] =
    &["ServiceException", "ServiceFailure", "InternalFailure", "InternalError", "ServiceUnavailable", "RequestTimeout"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsErrorKind {
    Throttled,
    Transient,
    Terminal,
    Busy,
}

/// One failed AWS call, classified.
#[derive(Clone, Debug, thiserror::Error)]
#[error("AWS {operation} failed ({kind:?}, {}): {message}", code.as_deref().unwrap_or("no code"))]
pub struct AwsError {
    pub operation: &'static str,
    pub kind: AwsErrorKind,
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    /// Whether retrying later, unchanged, is the right answer.
    pub fn is_retryable(&self) -> bool {
        self.kind != AwsErrorKind::Terminal
    }

    /// An answer that lacks what AWS documents it to carry; retried like a transient fault.
    pub fn unexpected_answer(operation: &'static str, message: impl Into<String>) -> Self {
        Self { operation, kind: AwsErrorKind::Transient, code: None, message: message.into() }
    }

    /// A write this replica may not send: it cannot prove it still holds the Lease (see
    /// [`super::fence`]). Retried later, quietly, like busy background work.
    pub fn fenced(operation: &'static str) -> Self {
        Self {
            operation,
            kind: AwsErrorKind::Busy,
            code: Some("LeaseNotConfirmed".into()),
            message: "this replica cannot confirm it still holds the Lease; AWS writes wait".into(),
        }
    }

    /// Background work found the budget busy with user work; nothing was sent.
    pub fn busy(operation: &'static str) -> Self {
        Self { operation, kind: AwsErrorKind::Busy, code: None, message: "deferred: the AWS budget is busy".into() }
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Classifies what an SDK call returned.
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let classified = match &err {
            SdkError::ServiceError(ctx) => {
                let code = ctx.err().code().map(str::to_string);
                let message = ctx.err().message().unwrap_or_default().to_string();
                let kind = classify(code.as_deref(), Some(ctx.raw().status_code()));
                Self { operation, kind, code, message }
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                Self { operation, kind: AwsErrorKind::Transient, code: None, message: error_chain(&err) }
            }
            _ => Self { operation, kind: AwsErrorKind::Terminal, code: None, message: error_chain(&err) },
        };
        let kind = match classified.kind {
            AwsErrorKind::Throttled => "throttled",
            AwsErrorKind::Transient => "transient",
            AwsErrorKind::Terminal => "terminal",
            AwsErrorKind::Busy => "busy",
        };
        METRICS.aws_errors.get_or_create(&AwsErrorLabels { operation, kind }).inc();
        classified
    }
}

/// A call through the budget that did not succeed, not classified yet.
#[derive(Debug)]
pub enum Failure<E> {
    /// Nothing was sent: the budget had no permit for it now ([`AwsErrorKind::Busy`]), or the
    /// fence refused the write ([`AwsError::fenced`]).
    NotSent(AwsError),
    /// The request was sent and failed: AWS refused it, or the way there failed.
    Sent { operation: &'static str, error: SdkError<E, HttpResponse> },
}

impl<E> Failure<E> {
    /// The service's own error, when AWS answered with one; to match before classifying.
    pub fn service_error(&self) -> Option<&E> {
        match self {
            Self::NotSent(_) => None,
            Self::Sent { error, .. } => error.as_service_error(),
        }
    }
}

impl<E> Failure<E>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    /// The failure as Silo handles it: what was not sent as is, what AWS answered classified
    /// (and counted) by [`AwsError::from_sdk`].
    pub fn into_aws(self) -> AwsError {
        match self {
            Self::NotSent(err) => err,
            Self::Sent { operation, error } => AwsError::from_sdk(operation, error),
        }
    }
}

impl<E> From<Failure<E>> for AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn from(failure: Failure<E>) -> Self {
        failure.into_aws()
    }
}

/// The HTTP status of a raw response, for classification.
pub trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The pure classification rule, by error code first and HTTP status second.
pub fn classify(code: Option<&str>, status: Option<u16>) -> AwsErrorKind {
    match (code, status) {
        (Some(code), _) if THROTTLING_CODES.contains(&code) => AwsErrorKind::Throttled,
        (_, Some(429)) => AwsErrorKind::Throttled,
        (Some(code), _) if TRANSIENT_CODES.contains(&code) => AwsErrorKind::Transient,
        (_, Some(status)) if status >= 500 => AwsErrorKind::Transient,
        _ => AwsErrorKind::Terminal,
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// What an SDK call returns when AWS refuses with `code` and HTTP `status`: a test double
/// in the SDK's own types (ListRoots' error type stands for any operation's).
#[cfg(test)]
pub(crate) fn refused(
    code: &str,
    status: u16,
) -> SdkError<aws_sdk_organizations::operation::list_roots::ListRootsError, HttpResponse> {
    use aws_sdk_organizations::operation::list_roots::ListRootsError;
    use aws_smithy_types::{body::SdkBody, error::ErrorMetadata};
    let error = ListRootsError::generic(ErrorMetadata::builder().code(code).message("refused").build());
    let status = aws_smithy_runtime_api::http::StatusCode::try_from(status).expect("an HTTP status");
    SdkError::service_error(error, HttpResponse::new(status, SdkBody::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_recognised_by_code_or_status() {
        assert_eq!(classify(Some("TooManyRequestsException"), Some(400)), AwsErrorKind::Throttled);
        assert_eq!(classify(Some("Throttling"), Some(400)), AwsErrorKind::Throttled);
        assert_eq!(classify(None, Some(429)), AwsErrorKind::Throttled);
    }

    #[test]
    fn codes_alone_say_weather() {
        // Without a status to go by (preflight knew these before it used this classifier).
        for code in ["Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"] {
            assert_eq!(classify(Some(code), None), AwsErrorKind::Throttled, "{code}");
        }
        for code in ["ServiceUnavailable", "InternalFailure", "InternalError", "ServiceFailure"] {
            assert_eq!(classify(Some(code), None), AwsErrorKind::Transient, "{code}");
        }
    }

    #[test]
    fn server_faults_are_transient_and_refusals_terminal() {
        assert_eq!(classify(Some("ServiceException"), Some(500)), AwsErrorKind::Transient);
        assert_eq!(classify(None, Some(503)), AwsErrorKind::Transient);
        assert_eq!(classify(Some("AccountNotFoundException"), Some(400)), AwsErrorKind::Terminal);
        assert_eq!(classify(Some("AccessDeniedException"), Some(403)), AwsErrorKind::Terminal);
    }

    #[test]
    fn a_refusal_the_caller_handles_is_counted_as_an_error_only_once_classified() {
        let errors = |kind| METRICS.aws_errors.get_or_create(&AwsErrorLabels { operation: "TestRefusal", kind }).get();
        let failure = Failure::Sent { operation: "TestRefusal", error: refused("PolicyNotAttachedException", 400) };
        assert!(failure.service_error().is_some(), "the service's own error, to match before classifying");
        assert_eq!(errors("terminal"), 0, "looking at it counts nothing");
        let err = AwsError::from(failure);
        assert_eq!((err.operation, err.kind), ("TestRefusal", AwsErrorKind::Terminal));
        assert!(err.has_code("PolicyNotAttachedException"));
        assert_eq!(errors("terminal"), 1, "classified, it is counted");
    }

    #[test]
    fn what_was_not_sent_is_not_counted_as_an_aws_error() {
        use aws_sdk_organizations::operation::list_roots::ListRootsError;
        let errors = |kind| METRICS.aws_errors.get_or_create(&AwsErrorLabels { operation: "TestNotSent", kind }).get();
        let failure = Failure::<ListRootsError>::NotSent(AwsError::busy("TestNotSent"));
        assert!(failure.service_error().is_none(), "AWS did not answer");
        assert_eq!(failure.into_aws().kind, AwsErrorKind::Busy);
        assert_eq!(errors("busy"), 0, "Silo's own refusal is not an answer from AWS");
    }
}
