//! A circuit breaker per handler (subscription): after `failure_threshold`
//! consecutive failures it opens, and the subscription stops delivering to
//! the handler — entries stay pending instead of burning their retries —
//! until `open_for` has passed; then one trial entry goes through (half-open):
//! success closes it, failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 10, open_for: Duration::from_secs(5) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

#[derive(Debug, Default)]
pub struct CircuitBreaker {
    /// Replaced whole while running (see [`following`](Self::following)).
    config: crate::Tunable<BreakerConfig>,
    inner: Mutex<Inner>,
}

/// Whether an entry may go to the handler now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Allowed,
    /// The half-open trial: its outcome decides.
    Trial,
    Denied,
}

impl CircuitBreaker {
    /// A breaker whose thresholds follow `config` (the live configuration):
    /// a change is in force from the next entry; the state is kept.
    pub fn following(config: crate::Tunable<BreakerConfig>) -> Self {
        Self { config, inner: Mutex::new(Inner::default()) }
    }

    pub fn new(config: BreakerConfig) -> Self {
        Self { config: crate::Tunable::new(config), inner: Mutex::new(Inner::default()) }
    }

    pub fn state(&self) -> BreakerState {
        let Ok(i) = self.inner.lock() else { return BreakerState::Open };
        match i.opened_at {
            None => BreakerState::Closed,
            Some(t) if t.elapsed() < self.config.get().open_for => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether entries flow (no streak of failures has opened it).
    pub fn is_closed(&self) -> bool {
        self.inner.lock().is_ok_and(|i| i.opened_at.is_none())
    }

    /// How long until an open breaker lets a trial through (zero otherwise).
    pub fn remaining_open(&self) -> Duration {
        let Ok(i) = self.inner.lock() else { return self.config.get().open_for };
        i.opened_at.map(|t| self.config.get().open_for.saturating_sub(t.elapsed())).unwrap_or_default()
    }

    pub fn permit(&self) -> Permit {
        let Ok(mut i) = self.inner.lock() else { return Permit::Denied };
        match i.opened_at {
            None => Permit::Allowed,
            Some(t) if t.elapsed() < self.config.get().open_for => Permit::Denied,
            Some(_) if i.trial_in_flight => Permit::Denied,
            Some(_) => {
                i.trial_in_flight = true;
                Permit::Trial
            }
        }
    }

    pub fn record(&self, permit: Permit, ok: bool) {
        let Ok(mut i) = self.inner.lock() else { return };
        if permit == Permit::Trial {
            i.trial_in_flight = false;
        }
        if ok {
            i.consecutive_failures = 0;
            i.opened_at = None;
            return;
        }
        i.consecutive_failures += 1;
        if permit == Permit::Trial || i.consecutive_failures >= self.config.get().failure_threshold {
            if i.opened_at.is_none() || permit == Permit::Trial {
                tracing::warn!(failures = i.consecutive_failures, "circuit breaker opened");
            }
            i.opened_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_tries_once_then_closes_or_reopens() {
        let b = CircuitBreaker::new(BreakerConfig { failure_threshold: 3, open_for: Duration::from_millis(40) });
        for _ in 0..2 {
            let p = b.permit();
            b.record(p, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let p = b.permit();
        b.record(p, false);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.permit(), Permit::Denied, "open: nothing goes through");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let trial = b.permit();
        assert_eq!(trial, Permit::Trial);
        assert_eq!(b.permit(), Permit::Denied, "one trial at a time");
        b.record(trial, false);
        assert_eq!(b.state(), BreakerState::Open, "a failed trial reopens");
        std::thread::sleep(Duration::from_millis(50));
        let trial = b.permit();
        b.record(trial, true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.permit(), Permit::Allowed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(BreakerConfig { failure_threshold: 2, open_for: Duration::from_secs(1) });
        b.record(Permit::Allowed, false);
        b.record(Permit::Allowed, true);
        b.record(Permit::Allowed, false);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
