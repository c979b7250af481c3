//! Per-player command rates: a client flooding a command API is answered
//! RESOURCE_EXHAUSTED with a retry delay (google.rpc.RetryInfo), and every
//! other player goes on unhindered — each player has a bucket of their own.
//!
//! GCRA (a token bucket kept as one instant per player): `rate` commands a
//! second on average, bursts of `burst`. The buckets are this replica's: a
//! player spread over N replicas by a load balancer gets up to N times the
//! rate, which bounds a flood without a Redis round trip on the game's hot
//! path. Settings are live ([`Tunable`]): a change applies to the next command.
//! (Hand-written rather than `governor`: twenty lines, and the limits must
//! change at run time, which governor's quotas do not.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use allies_core::{ErrorCode, Failure};
use allies_store::Tunable;

/// A rate: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Buckets above this many are swept of the idle ones.
const SWEEP_ABOVE: usize = 100_000;

/// See the module documentation.
pub struct PlayerRates {
    what: &'static str,
    rate: Tunable<Rate>,
    /// Per player: the theoretical arrival time of their next command.
    tat: Mutex<HashMap<String, Instant>>,
}

impl PlayerRates {
    /// `what` names the commands in the refusal ("game commands").
    pub fn new(what: &'static str, rate: Tunable<Rate>) -> Self {
        Self { what, rate, tat: Mutex::new(HashMap::new()) }
    }

    /// Counts one command of `player`, or refuses it with the time to wait.
    pub fn check(&self, player: &str) -> Result<(), Failure> {
        let rate = self.rate.get();
        if rate.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate.per_second);
        let tolerance = interval * rate.burst.max(1).saturating_sub(1);
        let Ok(mut tat) = self.tat.lock() else { return Ok(()) };
        if tat.len() > SWEEP_ABOVE {
            tat.retain(|_, t| *t > now);
        }
        let next = tat.get(player).copied().unwrap_or(now).max(now);
        let wait = next.saturating_duration_since(now);
        if wait > tolerance {
            let retry_after = wait - tolerance;
            return Err(Failure::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "too many {}: at most {} a second (bursts of {}); retry in {} ms",
                    self.what,
                    rate.per_second,
                    rate.burst,
                    retry_after.as_millis().max(1)
                ),
            )
            .with_retry_after(retry_after.max(Duration::from_millis(1))));
        }
        tat.insert(player.to_owned(), next + interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_flooder_waits_and_others_are_not_touched() {
        let rates = PlayerRates::new("game commands", Tunable::new(Rate { per_second: 10.0, burst: 5 }));
        for _ in 0..5 {
            rates.check("flooder").unwrap();
        }
        let refused = rates.check("flooder").unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResourceExhausted);
        let after = refused.retry_after.unwrap();
        assert!(after > Duration::ZERO && after <= Duration::from_millis(100), "{after:?}");
        assert!(refused.message.starts_with("too many game commands"), "{}", refused.message);
        rates.check("someone else").unwrap();
        std::thread::sleep(after);
        rates.check("flooder").unwrap();
    }

    #[test]
    fn a_live_change_applies_to_the_next_command() {
        let rate = Tunable::new(Rate { per_second: 1.0, burst: 1 });
        let rates = PlayerRates::new("x", rate.clone());
        rates.check("p").unwrap();
        assert!(rates.check("p").is_err());
        rate.set(Rate { per_second: 0.0, burst: 1 });
        assert!(rates.check("p").is_ok(), "0 turns the limit off");
    }
}
