//! The projector's one error type: every failure of a query or an admin
//! call says its gRPC code here, and becomes a status in the platform.

use allies_core::{ErrorCode, Failure, FieldViolation, Invalid, ServiceError};
use allies_platform::auth::AuthError;
use allies_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Not allowed, not found, not caught up…
    #[error(transparent)]
    Refused(#[from] Failure),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rebuild(#[from] crate::manager::RebuildError),
}

impl From<FieldViolation> for ProjectorError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(v.into())
    }
}

impl From<redis::RedisError> for ProjectorError {
    fn from(e: redis::RedisError) -> Self {
        Self::Store(StoreError::from(e))
    }
}

impl ServiceError for ProjectorError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Auth(e) => e.code(),
            Self::Refused(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Rebuild(e) => e.code(),
        }
    }
    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            Self::Invalid(e) => e.field_violations(),
            _ => Vec::new(),
        }
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Auth(e) => e.retry_after(),
            Self::Store(e) => e.retry_after(),
            Self::Refused(e) => e.retry_after(),
            _ => None,
        }
    }
    fn message(&self) -> String {
        match self {
            Self::Invalid(e) => e.message(),
            Self::Auth(e) => e.message(),
            Self::Refused(e) => e.message(),
            Self::Store(e) => e.message(),
            Self::Rebuild(e) => e.message(),
        }
    }
}

pub type Result<T, E = ProjectorError> = std::result::Result<T, E>;
