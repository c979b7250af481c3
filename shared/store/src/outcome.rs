//! What a command did ([`Executed`]) or why it did not ([`ExecuteError`]):
//! domain refusals, conflicts, store failures and maintenance kept apart,
//! each with its gRPC code, rule and retry delay.

use std::sync::Arc;
use std::time::Duration;

use allies_core::{Aggregate, ErrorCode, ServiceError};

use crate::store::AppendOutcome;
use crate::{AppendError, StoreError};

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The aggregate's state after the command (shared with the hot handle
    /// that keeps it: no copy per command).
    pub state: Arc<A>,
    /// Its version after the command.
    pub version: u64,
    /// The events the command produced (empty: it changed nothing).
    pub events: Vec<A::Event>,
    /// Where the events went (None when there were none).
    pub outcome: Option<AppendOutcome>,
}

impl<A: Aggregate> Executed<A> {
    /// What a query waits for to read this write (empty when nothing was written).
    pub fn consistency_token(&self) -> String {
        self.outcome.as_ref().map(|o| o.consistency_token.clone()).unwrap_or_default()
    }

    /// True when the command id had already been applied: nothing was
    /// written, the outcome is the first one.
    pub fn duplicate(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| o.duplicate)
    }
}

/// Why a command did not happen. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// Concurrent writers kept winning.
    #[error("{aggregate_type} {aggregate_id} kept changing concurrently: gave up after {attempts} attempts")]
    Conflict { aggregate_type: &'static str, aggregate_id: String, attempts: u32 },
    /// The append refused (command id reused for another command, an event
    /// that does not encode) or the store failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Maintenance mode: a client's writes wait; reads and the services'
    /// own work go on.
    #[error("the fleet is in maintenance: writes are paused, reads go on; retry in {}s", .retry_after.as_secs())]
    Paused { retry_after: Duration },
}

impl<E: std::error::Error + 'static> ExecuteError<E> {
    /// The `outcome` label of `allies_commands_total`.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            Self::Domain(_) => "refused",
            Self::Conflict { .. } => "conflict",
            _ => "error",
        }
    }

    /// The domain refusal, if that is what this is.
    pub fn domain(&self) -> Option<&E> {
        match self {
            Self::Domain(e) => Some(e),
            _ => None,
        }
    }

    /// Maps the domain error (to wrap it in a service's own error type).
    pub fn map_domain<F: std::error::Error + 'static>(self, f: impl FnOnce(E) -> F) -> ExecuteError<F> {
        match self {
            Self::Domain(e) => ExecuteError::Domain(f(e)),
            Self::Conflict { aggregate_type, aggregate_id, attempts } => {
                ExecuteError::Conflict { aggregate_type, aggregate_id, attempts }
            }
            Self::Append(e) => ExecuteError::Append(e),
            Self::Store(e) => ExecuteError::Store(e),
            Self::Paused { retry_after } => ExecuteError::Paused { retry_after },
        }
    }
}

impl<E: ServiceError + 'static> ServiceError for ExecuteError<E> {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Domain(e) => e.code(),
            Self::Conflict { .. } => ErrorCode::Aborted,
            Self::Append(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Paused { .. } => ErrorCode::Unavailable,
        }
    }
    fn field_violations(&self) -> Vec<allies_core::FieldViolation> {
        match self {
            Self::Domain(e) => e.field_violations(),
            _ => Vec::new(),
        }
    }
    fn rule(&self) -> Option<allies_core::RuleViolation> {
        match self {
            Self::Domain(e) => e.rule(),
            Self::Append(e) => e.rule(),
            _ => None,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Domain(e) => e.retry_after(),
            Self::Conflict { .. } => Some(Duration::from_millis(50)),
            Self::Append(e) => e.retry_after(),
            Self::Store(e) => e.retry_after(),
            Self::Paused { retry_after } => Some(*retry_after),
        }
    }
    fn message(&self) -> String {
        match self {
            Self::Domain(e) => e.message(),
            Self::Append(e) => e.message(),
            Self::Store(e) => e.message(),
            Self::Conflict { .. } => format!("{self}; retry the command"),
            Self::Paused { .. } => self.to_string(),
        }
    }
}
