//! Retry policies, and recovery of pending entries: a consumer retries its
//! own failed entries once their backoff has passed, and claims entries idle
//! on another consumer longer than `claim_idle` (a dead pod) with XCLAIM,
//! which re-checks idleness atomically, so two live consumers never both
//! take one. Entries deleted from the stream meanwhile are acked away.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

use super::Handler;
use super::reader::PartitionReader;
use crate::metrics::SubscriberMetrics;
use crate::{RedisConn, StoreError};

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Fixed,
    Linear,
    /// Doubling from `base`, with jitter (half to full delay) to spread retries.
    Exponential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    pub base: Duration,
    pub max_delay: Duration,
    /// Deliveries before an entry is dead-lettered (1 = no retry).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff::Exponential,
            base: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// How long to wait after the `failed`-th failed delivery of entry `id`.
    pub fn delay(&self, failed: u32, id: &str) -> Duration {
        let n = failed.max(1);
        let raw = match self.backoff {
            Backoff::Fixed => self.base,
            Backoff::Linear => self.base.saturating_mul(n),
            Backoff::Exponential => self.base.saturating_mul(1u32 << (n - 1).min(20)),
        };
        let capped = raw.min(self.max_delay);
        if self.backoff != Backoff::Exponential {
            return capped;
        }
        // Deterministic jitter per (entry, attempt): between half and the full delay.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(n);
        for b in id.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        capped.mul_f64(0.5 + 0.5 * (h % 1000) as f64 / 1000.0)
    }

    /// The policy of an event type: its own, else this one.
    pub fn for_event<'a>(&'a self, event_type: Option<&str>, by_type: &'a HashMap<String, RetryPolicy>) -> &'a Self {
        event_type.and_then(|t| by_type.get(t)).unwrap_or(self)
    }
}

impl PartitionReader {
    /// Retries this consumer's failed entries whose backoff has passed and
    /// claims entries idle on other consumers longer than `claim_idle`
    /// (XPENDING + XCLAIM). At start (`startup`) its own entries are due at
    /// once. Returns false if shutdown was requested.
    pub(crate) async fn recover<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        shutdown: &watch::Receiver<bool>,
        startup: bool,
    ) -> Result<bool, StoreError> {
        for stream in 0..self.streams.len() {
            if !self.recover_stream(conn, handler, shutdown, startup, stream).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn recover_stream<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        shutdown: &watch::Receiver<bool>,
        startup: bool,
        stream: usize,
    ) -> Result<bool, StoreError> {
        let key = &self.streams[stream];
        let mut start = "-".to_owned();
        loop {
            let page: Vec<(String, String, u64, u32)> = redis::cmd("XPENDING")
                .arg(key)
                .arg(&self.config.group)
                .arg(&start)
                .arg("+")
                .arg(self.config.batch)
                .query_async(conn)
                .await?;
            let Some(last) = page.last() else { return Ok(true) };
            start = format!("({}", last.0);
            let full = page.len() == self.config.batch;
            for (id, owner, idle_ms, deliveries) in page {
                if *shutdown.borrow() {
                    return Ok(false);
                }
                let mine = owner == self.config.consumer;
                let backoff = self.config.retry.get().delay(deliveries, &id);
                let wait = if mine && startup {
                    Duration::ZERO
                } else if mine {
                    backoff
                } else {
                    backoff.max(self.config.claim_idle)
                };
                if Duration::from_millis(idle_ms) < wait || !self.config.breaker.remaining_open().is_zero() {
                    if mine {
                        self.owes_retries(true);
                    }
                    continue;
                }
                // XCLAIM re-checks the idle time atomically: if another consumer
                // took the entry meanwhile, nothing comes back and we skip it.
                let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
                    .arg(key)
                    .arg(&self.config.group)
                    .arg(&self.config.consumer)
                    .arg(wait.as_millis() as u64)
                    .arg(&id)
                    .query_async(conn)
                    .await?;
                if claimed.ids.is_empty() && mine {
                    // Deleted from the stream (XCLAIM returns nothing for it): ack it away.
                    let _: i64 = redis::cmd("XACK").arg(key).arg(&self.config.group).arg(&id).query_async(conn).await?;
                }
                for entry in &claimed.ids {
                    if !mine {
                        tracing::info!(stream = %key, entry = %entry.id, from = %owner, "claimed an idle entry");
                        if let Some(m) = &self.config.metrics {
                            m.claimed.get_or_create(&SubscriberMetrics::labels(&self.config.group)).inc();
                        }
                    }
                    self.process_one(conn, handler, stream, entry, deliveries + 1).await?;
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }
}
