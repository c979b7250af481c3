//! Reading partition logs through consumer groups.
//!
//! One consumer group per projection (or subscribing service) on each
//! partition log of an aggregate type; one consumer name per process. Each
//! partition is read by its own task on its own connection, because a
//! blocking `XREADGROUP` must never sit on a shared multiplexed connection,
//! and that connection's response timeout is longer than the block time.
//!
//! At start a consumer first re-reads its own pending entries (delivered
//! before a crash or shutdown, never acknowledged), then blocks for new ones.
//! An entry is acknowledged only after its handler succeeded; a failed entry
//! stays pending. Within a partition entries are handled one at a time in log
//! order, which preserves per-aggregate order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;
use redis::streams::{StreamId, StreamReadReply};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{RecordedEvent, RedisConn, RedisTarget, StoreError, keys};

/// Why a handler could not apply an entry. The entry stays pending.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// What a subscription does with each entry of the log.
pub trait Handler: Send + Sync + 'static {
    /// Applies one event. Must be idempotent: an entry can be delivered again
    /// after a crash between applying and acknowledging.
    fn handle(&self, event: &RecordedEvent) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Consumer group, one per projection: `rm.user`.
    pub group: String,
    /// Consumer name, stable per process instance (hostname / pod name), so a
    /// restarted instance finds its own pending entries.
    pub consumer: String,
    pub aggregate_type: String,
    pub partitions: u32,
    /// Entries per read.
    pub batch: usize,
    /// How long one XREADGROUP blocks.
    pub block: Duration,
}

impl SubscriptionConfig {
    pub fn new(group: &str, consumer: &str, aggregate_type: &str, partitions: u32) -> Self {
        Self {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            aggregate_type: aggregate_type.to_owned(),
            partitions: partitions.max(1),
            batch: 128,
            block: Duration::from_secs(2),
        }
    }
}

/// Runs a subscription on every partition log until `shutdown` turns true.
/// Returns when every partition task has stopped: each finishes the entry it
/// is applying and leaves the rest of its batch pending.
pub async fn run<H: Handler>(
    target: RedisTarget,
    config: SubscriptionConfig,
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for partition in 0..config.partitions {
        let reader = PartitionReader {
            target: target.clone(),
            log: keys::log_key(&config.aggregate_type, partition),
            config: config.clone(),
        };
        tasks.spawn(reader.run(handler.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

struct PartitionReader {
    target: RedisTarget,
    log: String,
    config: SubscriptionConfig,
}

impl PartitionReader {
    async fn connect(&self) -> RedisResult<RedisConn> {
        let mut conn = self.target.dedicated(self.config.block + Duration::from_secs(10)).await?;
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.log)
            .arg(&self.config.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            other => other?,
        }
        Ok(conn)
    }

    async fn run<H: Handler>(self, handler: Arc<H>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() {
            match self.session(&*handler, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(log = %self.log, group = %self.config.group, error = %e,
                        "subscription interrupted; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One connection's lifetime: pending entries first, then new ones.
    /// Ok(()) means shutdown was requested.
    async fn session<H: Handler>(&self, handler: &H, shutdown: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        let mut conn = self.connect().await?;
        // Own pending entries, walked with a cursor so a failing entry is not re-read forever.
        let mut cursor = "0".to_owned();
        loop {
            let entries = self.read(&mut conn, &cursor, None).await?;
            let Some(last) = entries.last() else { break };
            cursor = last.id.clone();
            if !self.process(&mut conn, handler, &entries, shutdown).await? {
                return Ok(());
            }
        }
        loop {
            let entries = tokio::select! {
                r = self.read(&mut conn, ">", Some(self.config.block)) => r?,
                _ = shutdown.changed() => return Ok(()),
            };
            if !self.process(&mut conn, handler, &entries, shutdown).await? {
                return Ok(());
            }
        }
    }

    async fn read(&self, conn: &mut RedisConn, id: &str, block: Option<Duration>) -> Result<Vec<StreamId>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.config.group).arg(&self.config.consumer);
        cmd.arg("COUNT").arg(self.config.batch);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.log).arg(id);
        let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
        Ok(reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default())
    }

    /// Handles and acks entries in order. Returns false if shutdown was
    /// requested (the rest of the batch stays pending).
    async fn process<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        entries: &[StreamId],
        shutdown: &watch::Receiver<bool>,
    ) -> Result<bool, StoreError> {
        for entry in entries {
            if *shutdown.borrow() {
                return Ok(false);
            }
            if entry.map.is_empty() {
                // Pending entry that no longer exists in the log: nothing to apply.
                self.ack(conn, &entry.id).await?;
                continue;
            }
            let outcome = match RecordedEvent::from_entry(&self.log, entry) {
                Ok(event) => handler.handle(&event).await,
                Err(e) => Err(HandlerError(e.to_string())),
            };
            match outcome {
                Ok(()) => self.ack(conn, &entry.id).await?,
                Err(e) => {
                    tracing::warn!(log = %self.log, entry = %entry.id, group = %self.config.group,
                    error = %e, "entry not applied; left pending")
                }
            }
        }
        Ok(true)
    }

    async fn ack(&self, conn: &mut RedisConn, id: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("XACK").arg(&self.log).arg(&self.config.group).arg(id).query_async(conn).await?;
        Ok(())
    }
}

/// A consistency token: `<aggregate_type>.<partition>@<log entry id>`, as an
/// append returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub aggregate_type: String,
    pub partition: u32,
    pub entry: (u64, u64),
}

impl std::str::FromStr for ConsistencyToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not <aggregate_type>.<partition>@<entry id>");
        let (log, id) = s.split_once('@').ok_or_else(bad)?;
        let (aggregate_type, partition) = log.rsplit_once('.').ok_or_else(bad)?;
        if aggregate_type.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            aggregate_type: aggregate_type.to_owned(),
            partition: partition.parse().map_err(|_| bad())?,
            entry: parse_entry_id(id).ok_or_else(bad)?,
        })
    }
}

fn parse_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Whether consumer group `group` has applied the entry a token names: the
/// group has read past it and it is not pending (so its handler succeeded).
pub async fn has_applied(conn: &mut RedisConn, group: &str, token: &ConsistencyToken) -> Result<bool, StoreError> {
    let log = keys::log_key(&token.aggregate_type, token.partition);
    let groups: redis::streams::StreamInfoGroupsReply =
        match redis::cmd("XINFO").arg("GROUPS").arg(&log).query_async(conn).await {
            Ok(g) => g,
            // No log yet: nothing was ever written there.
            Err(e) if e.code() == Some("ERR") => return Ok(false),
            Err(e) => return Err(e.into()),
        };
    let Some(info) = groups.groups.iter().find(|g| g.name == group) else { return Ok(false) };
    if parse_entry_id(&info.last_delivered_id).is_none_or(|last| last < token.entry) {
        return Ok(false);
    }
    let id = format!("{}-{}", token.entry.0, token.entry.1);
    let pending: Vec<redis::Value> =
        redis::cmd("XPENDING").arg(&log).arg(group).arg(&id).arg(&id).arg(1).query_async(conn).await?;
    Ok(pending.is_empty())
}
