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
use allies_store::subscriber::{Handler, HandlerError};
use allies_store::{RecordedEvent, RedisConn};
use tokio::sync::watch;

use crate::game::Game;

pub use crate::wave_schedule::{DUE, GROUP, TOPIC, member};

const CLAIM: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
return ids
";

/// The consumer that keeps `ts:waves:due`.
pub struct Scheduler {
    pub conn: RedisConn,
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
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> =
            redis::cmd("ZADD").arg(DUE).arg("NX").arg(at).arg(member(id, w.wave)).query_async(&mut conn).await;
        r.map(|_| ()).map_err(HandlerError::of)
    }
}

/// Sessions with a running wave (for the `allies_waves_running` gauge).
pub async fn running(conn: &RedisConn) -> u64 {
    let mut conn = conn.clone();
    redis::cmd("ZCARD").arg(DUE).query_async::<u64>(&mut conn).await.unwrap_or(0)
}

/// Claims due sessions and settles them until shutdown.
pub async fn sweep(game: Arc<Game>, conn: RedisConn, every: Duration, mut stop: watch::Receiver<bool>) {
    let script = redis::Script::new(CLAIM);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every / 2) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = allies_platform::context::now_ms();
        let mut c = conn.clone();
        let due: Vec<String> =
            match script.key(DUE).arg(now).arg(now + every.as_millis() as i64).arg(50).invoke_async(&mut c).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = %e, "sweeper cannot reach Redis");
                    continue;
                }
            };
        for entry in due {
            let Some((id, wave)) = entry.rsplit_once(':').and_then(|(id, w)| Some((id, w.parse::<u32>().ok()?))) else {
                let _: redis::RedisResult<i64> = redis::cmd("ZREM").arg(DUE).arg(&entry).query_async(&mut c).await;
                continue;
            };
            let ctx = RequestContext::system(allies_platform::context::now_ms());
            match game.settle(id, &ctx).await {
                Ok(done) => {
                    if !done.executed.events.is_empty() {
                        tracing::info!(session_id = id, events = ?done.event_types(), "wave settled by the sweeper");
                    }
                    let s = &done.executed.state;
                    if s.phase != timesquare_domain::Phase::InWave || s.wave != wave {
                        let _: redis::RedisResult<i64> =
                            redis::cmd("ZREM").arg(DUE).arg(&entry).query_async(&mut c).await;
                    }
                }
                Err(e) if transient(&e) => {
                    tracing::warn!(session_id = id, error = %e, "cannot settle a wave; retried later")
                }
                Err(e) => {
                    tracing::warn!(session_id = id, error = %e, "a scheduled wave that cannot be settled is dropped");
                    let _: redis::RedisResult<i64> = redis::cmd("ZREM").arg(DUE).arg(&entry).query_async(&mut c).await;
                }
            }
        }
    }
}

/// Whether a failure may pass (Redis, a conflict storm) rather than being
/// the session's answer for good.
fn transient(e: &crate::game::TimesquareError) -> bool {
    use allies_core::{ErrorCode, ServiceError};
    matches!(e.code(), ErrorCode::Unavailable | ErrorCode::Aborted | ErrorCode::DeadlineExceeded | ErrorCode::Internal)
}
