//! Waves complete even when no client sends anything.
//!
//! Every `WaveStarted` is also published, by the same append, on the
//! internal topic `ts.waves`; a consumer group on it (`ts.waves`, one per
//! fleet) keeps the running waves in a sorted set, `ts:waves:due` (member
//! `<session id>:<wave>`, score: when to look next) — at least once, so a
//! crash between the append and the bookkeeping loses nothing (StartWave
//! also adds the wave at once, saving the hop). The group reads only wave
//! starts, not every game event. Every replica's sweeper claims the waves that are due
//! (one script: read the due ones and push their time one interval on, so
//! replicas do not pile onto the same session) and sends them `Settle`,
//! which completes the wave when its end has passed. A second attempt on the
//! same wave is a harmless version conflict, re-decided on the completed
//! state; a wave the sweeper finds no longer running (ended by a forfeit, or
//! its removal processed before its addition by another consumer) is
//! dropped from the set — by its own member, so the next wave is untouched.

use std::sync::Arc;
use std::time::Duration;

use allies_contracts::timesquare::events::GameEvent;
use allies_platform::RequestContext;
use allies_store::RecordedEvent;
use allies_store::subscriber::{Handler, HandlerError};
use tokio::sync::watch;

use crate::game::Game;
use crate::schedule::{Schedule, parse_member};

pub use crate::schedule::{DUE, GROUP, TOPIC, member};

/// The consumer that keeps the schedule from the wave starts.
pub struct Scheduler {
    pub schedule: Arc<dyn Schedule>,
    pub settle: Duration,
}

impl Handler for Scheduler {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let id = &event.envelope.aggregate_id;
        if event.envelope.event_type != "WaveStarted" {
            return Ok(());
        }
        let e = event.decode::<GameEvent>().map_err(HandlerError::of)?;
        let GameEvent::WaveStarted(w) = e.payload else { return Ok(()) };
        // First look: soon after the start, the sweeper reschedules from there.
        let at = w.started_at_ms + self.settle.as_millis() as i64;
        self.schedule.add(&member(id, w.wave), at).await.map_err(HandlerError::transient)
    }
}

/// Claims due sessions and settles them until shutdown.
pub async fn sweep(game: Arc<Game>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every / 2) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        sweep_once(&game, allies_platform::context::now_ms(), every).await;
    }
}

/// One pass at `now_ms`: claims the waves that are due (pushing their next
/// look `every` on) and settles each; a wave no longer running, or that
/// cannot be settled for good, leaves the schedule. Returns how many were
/// claimed.
pub async fn sweep_once(game: &Game, now_ms: i64, every: Duration) -> usize {
    let schedule = &game.schedule;
    let due = match schedule.claim_due(now_ms, now_ms + every.as_millis() as i64, 50).await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "sweeper cannot reach the wave schedule");
            return 0;
        }
    };
    let claimed = due.len();
    for entry in due {
        let drop = || async {
            if let Err(e) = schedule.remove(&entry).await {
                tracing::debug!(entry, error = %e, "a wave stays scheduled; dropped on a later pass");
            }
        };
        let Some((id, wave)) = parse_member(&entry) else {
            drop().await;
            continue;
        };
        let ctx = RequestContext::system(now_ms);
        match game.settle(id, &ctx).await {
            Ok(done) => {
                if !done.executed.events.is_empty() {
                    tracing::info!(session_id = id, events = ?done.event_types(), "wave settled by the sweeper");
                }
                let s = &done.executed.state;
                if s.phase != timesquare_domain::Phase::InWave || s.wave != wave {
                    drop().await;
                }
            }
            Err(e) if transient(&e) => {
                tracing::warn!(session_id = id, error = %e, "cannot settle a wave; retried later")
            }
            Err(e) => {
                tracing::warn!(session_id = id, error = %e, "a scheduled wave that cannot be settled is dropped");
                drop().await;
            }
        }
    }
    claimed
}
/// Whether a failure may pass (Redis, a conflict storm) rather than being
/// the session's answer for good.
fn transient(e: &crate::game::TimesquareError) -> bool {
    use allies_core::{ErrorCode, ServiceError};
    matches!(e.code(), ErrorCode::Unavailable | ErrorCode::Aborted | ErrorCode::DeadlineExceeded | ErrorCode::Internal)
}
