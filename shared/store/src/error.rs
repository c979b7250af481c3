//! What can go wrong in the store, typed, with the gRPC code each means.

use allies_core::{DecodeError, ErrorCode, ExpectedVersion, ServiceError};

/// Failure to talk to Redis or to understand what it answered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store unavailable: {0}")]
    Unavailable(redis::RedisError),
    #[error("corrupt entry in {stream} at {entry}: {reason}")]
    Corrupt { stream: String, entry: String, reason: String },
    #[error(
        "{stream}: versions before {first_kept} were archived and trimmed (wanted {wanted}); load from the snapshot or restore the archive"
    )]
    Trimmed { stream: String, wanted: u64, first_kept: u64 },
    #[error("archive: {0}")]
    Archive(String),
    #[error("cannot decode {stream} version {version}: {source}")]
    Decode {
        stream: String,
        version: u64,
        #[source]
        source: DecodeError,
    },
    /// An operation that needs an aggregate found none (an operator tool's
    /// unknown id, for example).
    #[error("{0} does not exist")]
    NotFound(String),
}

impl ServiceError for StoreError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Corrupt { .. } | Self::Trimmed { .. } | Self::Archive(_) | Self::Decode { .. } => ErrorCode::Internal,
        }
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        matches!(self, Self::Unavailable(_)).then_some(std::time::Duration::from_secs(1))
    }
    fn message(&self) -> String {
        match self {
            // The Redis error text is the operator's, not the caller's.
            Self::Unavailable(_) => "event store unavailable; retry shortly".to_owned(),
            e if e.code() == ErrorCode::Internal => "internal error".to_owned(),
            e => e.to_string(),
        }
    }
}

/// Why an append did not happen. Nothing was written in any case but
/// `NotReplicated`.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("version conflict: expected {expected}, actual {actual}")]
    Conflict { expected: ExpectedVersion, actual: u64 },
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error(
        "command id '{command_id}' was already used for a different request; a command id names one request: use a new id for a new request"
    )]
    CommandIdReused { command_id: String },
    #[error("cannot encode event: {0}")]
    Encode(#[from] DecodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Written on the master, but fewer replicas than required confirmed it
    /// in time: not acknowledged. A retry with the same command id answers
    /// the first write (confirmed by then) without writing again.
    #[error("{stream}: {acked} of {wanted} replicas confirmed the append in time")]
    NotReplicated { stream: String, acked: u32, wanted: u32 },
}

impl From<redis::RedisError> for AppendError {
    fn from(e: redis::RedisError) -> Self {
        Self::Store(StoreError::from(e))
    }
}

static REDIS_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Redis errors the store met in this process (every one becomes a
/// `StoreError`): `allies_redis_errors_total` on `/metrics`.
pub fn redis_errors() -> u64 {
    REDIS_ERRORS.load(std::sync::atomic::Ordering::Relaxed)
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        REDIS_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::Unavailable(e)
    }
}

impl ServiceError for AppendError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Conflict { .. } => ErrorCode::Aborted,
            Self::CommandIdReused { .. } => ErrorCode::FailedPrecondition,
            Self::NotReplicated { .. } => ErrorCode::Unavailable,
            Self::Invalid(_) | Self::Encode(_) => ErrorCode::Internal,
            Self::Store(s) => s.code(),
        }
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Store(s) => s.retry_after(),
            Self::NotReplicated { .. } => Some(std::time::Duration::from_secs(1)),
            _ => None,
        }
    }
    fn rule(&self) -> Option<allies_core::RuleViolation> {
        match self {
            Self::CommandIdReused { command_id } => Some(allies_core::RuleViolation {
                rule: "COMMAND_ID_REUSED".into(),
                subject: format!("x-command-id {command_id}"),
                description: "a retry must repeat the first request exactly; a new request needs a new command id"
                    .into(),
            }),
            _ => None,
        }
    }
    fn message(&self) -> String {
        match self {
            Self::Conflict { .. } => format!("concurrent modification, retry the command: {self}"),
            Self::Store(s) => s.message(),
            Self::NotReplicated { .. } => {
                "the write is not yet confirmed by a replica; retry with the same x-command-id".to_owned()
            }
            e if e.code() == ErrorCode::Internal => "internal error".to_owned(),
            e => e.to_string(),
        }
    }
}
