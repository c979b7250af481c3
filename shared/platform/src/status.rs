//! The one mapping from store and validation errors to gRPC statuses.

use allies_store::{AppendError, StoreError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// InvalidArgument naming the field, in the message and as a BadRequest detail.
pub fn invalid_argument(field: &str, description: &str) -> Status {
    let details = ErrorDetails::with_bad_request_violation(field, description);
    Status::with_error_details(Code::InvalidArgument, format!("{field}: {description}"), details)
}

/// Status for a store failure. A conflict that survived the service's
/// retries is Aborted; an unreachable Redis is Unavailable; a corrupt entry
/// is Internal (the caller did not cause it).
pub fn from_store(e: &StoreError) -> Status {
    match e {
        StoreError::Unavailable(_) => Status::unavailable(format!("event store unavailable: {e}")),
        StoreError::Corrupt { .. }
        | StoreError::Decode { .. }
        | StoreError::Trimmed { .. }
        | StoreError::Archive(_) => {
            tracing::error!(error = %e, "stored data cannot be read");
            Status::internal(e.to_string())
        }
    }
}

pub fn from_append(e: &AppendError) -> Status {
    match e {
        AppendError::Conflict { .. } => Status::aborted(format!("concurrent modification, retry the command: {e}")),
        AppendError::Store(s) => from_store(s),
        AppendError::CommandIdReused { .. } => Status::failed_precondition(e.to_string()),
        AppendError::Invalid(_) | AppendError::Encode(_) => {
            tracing::error!(error = %e, "append refused");
            Status::internal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allies_core::ExpectedVersion;

    #[test]
    fn invalid_argument_names_the_field_in_message_and_details() {
        let s = invalid_argument("email", "is not a valid address");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "email: is not a valid address");
        let details = s.get_error_details();
        let br = details.bad_request().expect("bad request detail");
        assert_eq!(br.field_violations[0].field, "email");
    }

    #[test]
    fn conflicts_are_aborted_and_redis_outages_unavailable() {
        let c = AppendError::Conflict { expected: ExpectedVersion::Exact(1), actual: 2 };
        assert_eq!(from_append(&c).code(), Code::Aborted);
        let io = redis_io_error();
        assert_eq!(from_store(&StoreError::Unavailable(io)).code(), Code::Unavailable);
    }

    fn redis_io_error() -> allies_store::RedisError {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into()
    }
}
