//! Priority streams for integration events: critical, high, normal, low.
//!
//! A topic's four streams share one hash tag (`ie:{<topic>}:<priority>`),
//! so one XREADGROUP can block on all four, on Redis Cluster too. A
//! subscriber serves them by weighted rounds: per round it takes up to
//! 8 critical, 4 high, 2 normal and 1 low entries, and a priority that has
//! fewer hands its unused share down. Higher priorities go first, and while
//! all four are busy a low entry still gets at least one place in every 15 —
//! no starvation.

use std::sync::Arc;
use std::time::Duration;

use allies_core::Metadata;
use redis::streams::{StreamId, StreamReadReply};
use tokio::sync::watch;

use crate::subscriber::{Handler, HandlerError};
use crate::{NewEvent, RecordedEvent, RedisConn, RedisTarget, StoreError, checksum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Critical, Self::High, Self::Normal, Self::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// Entries per round.
    pub fn weight(self) -> usize {
        match self {
            Self::Critical => 8,
            Self::High => 4,
            Self::Normal => 2,
            Self::Low => 1,
        }
    }
}

pub fn priority_key(topic: &str, p: Priority) -> String {
    format!("ie:{{{topic}}}:{}", p.as_str())
}

/// Where an integration event comes from.
#[derive(Debug, Clone)]
pub struct Source {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
}

/// Publishes an integration event on `topic` with `priority`; returns its entry id.
pub async fn publish(
    conn: &mut RedisConn,
    topic: &str,
    priority: Priority,
    source: &Source,
    metadata: &Metadata,
    recorded_at_ms: i64,
    event: &NewEvent,
) -> Result<String, StoreError> {
    let meta = serde_json::to_string(metadata).map_err(|e| StoreError::Archive(e.to_string()))?;
    let id: String = redis::cmd("XADD")
        .arg(priority_key(topic, priority))
        .arg("*")
        .arg("event_id")
        .arg(event.event_id.to_string())
        .arg("event_type")
        .arg(&event.event_type)
        .arg("schema_version")
        .arg(event.schema_version)
        .arg("content_type")
        .arg(&event.content_type)
        .arg("data")
        .arg(&event.data)
        .arg("metadata")
        .arg(meta)
        .arg("created_at")
        .arg(recorded_at_ms)
        .arg("checksum")
        .arg(checksum(&event.data))
        .arg("aggregate_type")
        .arg(&source.aggregate_type)
        .arg("aggregate_id")
        .arg(&source.aggregate_id)
        .arg("version")
        .arg(source.version)
        .query_async(conn)
        .await?;
    Ok(id)
}

async fn read(
    conn: &mut RedisConn,
    group: &str,
    consumer: &str,
    keys: &[(Priority, String)],
    count: usize,
    block: Option<Duration>,
) -> Result<Vec<(Priority, StreamId)>, StoreError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count.max(1));
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b.as_millis() as u64);
    }
    cmd.arg("STREAMS");
    for (_, k) in keys {
        cmd.arg(k);
    }
    for _ in keys {
        cmd.arg(">");
    }
    let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
    let mut out = Vec::new();
    for k in reply.map(|r| r.keys).unwrap_or_default() {
        let p = keys.iter().find(|(_, key)| *key == k.key).map(|(p, _)| *p).unwrap_or(Priority::Low);
        out.extend(k.ids.into_iter().map(|e| (p, e)));
    }
    out.sort_by_key(|(p, _)| *p);
    Ok(out)
}

/// Runs `handler` on `topic`'s priority streams until `shutdown`. Each entry
/// is acked after it was handled; a failed one stays pending.
pub async fn run<H: Handler>(
    target: RedisTarget,
    topic: &str,
    group: &str,
    consumer: &str,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let mut conn = target.dedicated(Duration::from_secs(15)).await?;
    let keys: Vec<(Priority, String)> = Priority::ALL.iter().map(|p| (*p, priority_key(topic, *p))).collect();
    for (_, k) in &keys {
        let created: redis::RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(k).arg(group).arg("0").arg("MKSTREAM").query_async(&mut conn).await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            other => other?,
        }
    }
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        // One weighted round: unused shares flow down to lower priorities.
        let mut round = Vec::new();
        let mut carry = 0;
        for (i, p) in Priority::ALL.iter().enumerate() {
            let budget = p.weight() + carry;
            let got = read(&mut conn, group, consumer, &keys[i..=i], budget, None).await?;
            carry = budget - got.len();
            round.extend(got);
        }
        if round.is_empty() {
            // Idle: block on all four at once (they share one slot).
            tokio::select! {
                r = read(&mut conn, group, consumer, &keys, 1, Some(Duration::from_secs(2))) => round = r?,
                _ = shutdown.changed() => return Ok(()),
            }
        }
        for (p, entry) in round {
            let key = &keys[Priority::ALL.iter().position(|x| *x == p).unwrap_or(3)].1;
            let outcome = match RecordedEvent::from_entry(key, &entry) {
                Ok(event) => handler.handle(&event).await,
                Err(e) => Err(HandlerError(e.to_string())),
            };
            match outcome {
                Ok(()) => {
                    let _: i64 = redis::cmd("XACK").arg(key).arg(group).arg(&entry.id).query_async(&mut conn).await?;
                }
                Err(e) => {
                    tracing::warn!(topic, priority = p.as_str(), entry = %entry.id, error = %e, "integration event left pending")
                }
            }
        }
    }
}
