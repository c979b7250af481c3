//! The one conversion from any error to a gRPC status.
//!
//! Every error that can reach a caller implements
//! [`ServiceError`](allies_core::ServiceError) where it is defined; here it
//! becomes a `tonic::Status` with its code, message and details:
//! `BadRequest` field violations, `PreconditionFailure` for the business rule
//! that refused, `RetryInfo` when a retry may succeed. An internal error is
//! logged here, once, with its cause; the caller is told only "internal error".

use allies_core::{ErrorCode, ServiceError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The gRPC code of an error code.
pub fn code(c: ErrorCode) -> Code {
    match c {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Aborted => Code::Aborted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::Internal => Code::Internal,
    }
}

/// The status of an error (see the module documentation).
pub fn to_status(e: &(impl ServiceError + ?Sized)) -> Status {
    let c = e.code();
    match c {
        ErrorCode::Internal => tracing::error!(error = %e, "internal error"),
        ErrorCode::Unavailable => tracing::warn!(error = %e, "dependency unavailable"),
        _ => tracing::debug!(code = c.as_str(), error = %e, "refused"),
    }
    let mut details = ErrorDetails::new();
    let mut any = false;
    let violations = e.field_violations();
    if !violations.is_empty() {
        for v in violations.iter().take(MAX_VIOLATIONS) {
            details.add_bad_request_violation(bounded(&v.field, MAX_FIELD), bounded(&v.reason, MAX_REASON));
        }
        any = true;
    }
    if let Some(rule) = e.rule() {
        details.add_precondition_failure_violation(
            bounded(&rule.rule, MAX_FIELD),
            bounded(&rule.subject, MAX_REASON),
            bounded(&rule.description, MAX_REASON),
        );
        any = true;
    }
    if let Some(after) = e.retry_after() {
        details.set_retry_info(Some(after));
        any = true;
    }
    let message = bounded(&e.message(), MAX_MESSAGE);
    if any { Status::with_error_details(code(c), message, details) } else { Status::new(code(c), message) }
}

/// The most an error's message carries, in bytes. Messages may quote what a
/// client sent (a name, a map): a quote of kilobytes would push the
/// trailers past gRPC's 16 KiB header limit and the client would see
/// RESOURCE_EXHAUSTED instead of the error.
pub const MAX_MESSAGE: usize = 512;
/// The most a field name or rule name carries, in bytes.
pub const MAX_FIELD: usize = 64;
/// The most a violation's reason, subject or description carries, in bytes.
pub const MAX_REASON: usize = 256;
/// The most violations one error lists.
pub const MAX_VIOLATIONS: usize = 16;
// Together: at most 512 + 16 × (64 + 256) + 64 + 2 × 256 ≈ 6.2 KB, well under 16 KiB.

/// `text` cut to at most `max` bytes on a character boundary, marked with "…".
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `.into_status()` on any [`ServiceError`].
pub trait IntoStatus {
    fn into_status(self) -> Status;
}

impl<E: ServiceError> IntoStatus for E {
    fn into_status(self) -> Status {
        to_status(&self)
    }
}

/// `.or_status()?` on a result whose error is a [`ServiceError`].
pub trait OrStatus<T> {
    fn or_status(self) -> Result<T, Status>;
}

impl<T, E: ServiceError> OrStatus<T> for Result<T, E> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(|e| to_status(&e))
    }
}

/// InvalidArgument naming one field (in the message and as a BadRequest detail).
pub fn invalid_argument(field: &str, reason: &str) -> Status {
    to_status(&allies_core::Invalid::field(field, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use allies_core::{ExpectedVersion, Failure, Invalid};
    use allies_store::{AppendError, StoreError};

    #[test]
    fn invalid_input_names_every_field_in_message_and_details() {
        let mut i = Invalid::new();
        i.push("email", "is not a valid address").push("username", "too short");
        let s = to_status(&i);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "email: is not a valid address; username: too short");
        let details = s.get_error_details();
        let fields: Vec<&str> =
            details.bad_request().unwrap().field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["email", "username"]);
    }

    #[test]
    fn conflicts_are_aborted_and_redis_outages_unavailable_with_one_clean_message() {
        let c = AppendError::Conflict { expected: ExpectedVersion::Exact(1), actual: 2 };
        assert_eq!(to_status(&c).code(), Code::Aborted);
        let io: allies_store::RedisError = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        let s = to_status(&StoreError::Unavailable(io));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "event store unavailable; retry shortly");
        assert!(s.get_error_details().retry_info().is_some());
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let e = StoreError::Corrupt { stream: "es:{x.1}:stream:y".into(), entry: "0-1".into(), reason: "bad".into() };
        let s = to_status(&e);
        assert_eq!((s.code(), s.message()), (Code::Internal, "internal error"));
        assert_eq!(to_status(&Failure::not_found("no such user")).message(), "no such user");
    }
}
