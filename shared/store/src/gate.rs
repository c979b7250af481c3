//! Maintenance mode's switch for client writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use allies_core::CommandContext;

use crate::ExecuteError;

/// Maintenance mode's switch, shared by every executor of a service: while
/// paused, a client's command is refused before anything is read or
/// written ([`ExecuteError::Paused`]: UNAVAILABLE with a retry delay).
#[derive(Debug, Clone, Default)]
pub struct WritesGate(Arc<AtomicU64>);

impl WritesGate {
    /// Pauses a client's writes; callers are told to retry after `retry_after`.
    pub fn pause(&self, retry_after: Duration) {
        self.0.store(retry_after.as_secs().max(1), Ordering::Release);
    }

    pub fn resume(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// The retry delay while paused.
    pub fn paused(&self) -> Option<Duration> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// Refuses a client's command while paused.
    pub fn check<E: std::error::Error + 'static>(&self, ctx: &CommandContext) -> Result<(), ExecuteError<E>> {
        match self.paused() {
            Some(retry_after) if ctx.from_client => Err(ExecuteError::Paused { retry_after }),
            _ => Ok(()),
        }
    }
}
