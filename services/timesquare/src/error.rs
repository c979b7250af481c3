//! The one error type of timesquare's use cases: what the caller gets is
//! decided by each cause's own `ServiceError` (domain refusals name their
//! rule), converted to a gRPC status in the platform.

use allies_core::{ErrorCode, Failure, FieldViolation, Invalid, RuleViolation, ServiceError};
use allies_platform::auth::AuthError;
use allies_store::{ExecuteError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TimesquareError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Refused(#[from] Failure),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A command on any aggregate: refused by its rules, or not appended.
    #[error("{0}")]
    Command(Box<dyn ServiceError>),
    /// An error about someone or something the caller did not name first
    /// (a party member): the same code and rule, the message says whose.
    #[error("{0}: {1}")]
    About(String, Box<TimesquareError>),
}

pub type Result<T, E = TimesquareError> = std::result::Result<T, E>;

impl<E: ServiceError + 'static> From<ExecuteError<E>> for TimesquareError {
    fn from(e: ExecuteError<E>) -> Self {
        Self::Command(Box::new(e))
    }
}

impl From<FieldViolation> for TimesquareError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(v.into())
    }
}

/// Domain refusals, as if their command had been executed.
macro_rules! refusals {
    ($($e:ty),+) => {$(
        impl From<$e> for TimesquareError {
            fn from(e: $e) -> Self {
                Self::Command(Box::new(ExecuteError::Domain(e)))
            }
        }
    )+};
}

refusals!(
    timesquare_domain::GameError,
    timesquare_domain::player::PlayerError,
    timesquare_domain::ticket::TicketError,
    timesquare_domain::matching::MatchError,
    timesquare_domain::party::PartyError
);

impl TimesquareError {
    fn inner(&self) -> &dyn ServiceError {
        match self {
            Self::Invalid(e) => e,
            Self::Refused(e) => e,
            Self::Store(e) => e,
            Self::Auth(e) => e,
            Self::Command(e) => e.as_ref(),
            Self::About(_, e) => e.inner(),
        }
    }

    /// This error, about `whom`.
    pub fn about(self, whom: impl Into<String>) -> Self {
        Self::About(whom.into(), Box::new(self))
    }

    /// The rule a refusal names, if any (e.g. `ALREADY_QUEUED`).
    pub fn rule_name(&self) -> Option<String> {
        self.inner().rule().map(|r| r.rule)
    }
}

impl ServiceError for TimesquareError {
    fn code(&self) -> ErrorCode {
        self.inner().code()
    }
    fn field_violations(&self) -> Vec<FieldViolation> {
        self.inner().field_violations()
    }
    fn rule(&self) -> Option<RuleViolation> {
        self.inner().rule()
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        self.inner().retry_after()
    }
    fn message(&self) -> String {
        match self {
            Self::About(whom, e) => format!("{whom}: {}", e.message()),
            _ => self.inner().message(),
        }
    }
}
