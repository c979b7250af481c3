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
    /// Entries pending on another consumer longer than this are claimed (a
    /// dead or stuck consumer); a live consumer acks well before.
    pub claim_idle: Duration,
    /// Retries of a failing entry; after the last attempt it is dead-lettered.
    pub retry: RetryPolicy,
    /// Per event type retry policies (override `retry`).
    pub retry_by_event_type: std::collections::HashMap<String, RetryPolicy>,
    /// Where to count what happens (None: not counted).
    pub metrics: Option<std::sync::Arc<crate::metrics::SubscriberMetrics>>,
    /// Entries of a batch are applied in this many concurrent lanes, split by
    /// aggregate id (one aggregate's entries stay in order in one lane).
    pub lanes: usize,
    /// The handler's circuit breaker, shared by all partitions.
    pub breaker: std::sync::Arc<crate::breaker::CircuitBreaker>,
}

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
            claim_idle: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            retry_by_event_type: Default::default(),
            metrics: None,
            lanes: 8,
            breaker: Default::default(),
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
            partition,
            log: keys::log_key(&config.aggregate_type, partition),
            config: config.clone(),
        };
        tasks.spawn(reader.run(handler.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

struct PartitionReader {
    target: RedisTarget,
    partition: u32,
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
        // Own pending entries first (delivered before a crash or a restart).
        if !self.recover(&mut conn, handler, shutdown, true).await? {
            return Ok(());
        }
        let every = (self.config.claim_idle / 2).min(self.config.retry.base).max(Duration::from_millis(50));
        let mut last_recovery = tokio::time::Instant::now();
        loop {
            let paused = self.config.breaker.remaining_open();
            if !paused.is_zero() {
                // Open breaker: read nothing, retry nothing; entries wait in the log.
                tokio::select! {
                    _ = tokio::time::sleep(paused.min(every)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                continue;
            }
            let block = self.config.block.min(every);
            let entries = tokio::select! {
                r = self.read(&mut conn, ">", Some(block)) => r?,
                _ = shutdown.changed() => return Ok(()),
            };
            if !self.process(&mut conn, handler, &entries, shutdown).await? {
                return Ok(());
            }
            if last_recovery.elapsed() >= every {
                last_recovery = tokio::time::Instant::now();
                if !self.recover(&mut conn, handler, shutdown, false).await? {
                    return Ok(());
                }
            }
        }
    }

    fn policy(&self, event_type: Option<&str>) -> &RetryPolicy {
        event_type.and_then(|t| self.config.retry_by_event_type.get(t)).unwrap_or(&self.config.retry)
    }

    /// Retries this consumer's failed entries whose backoff has passed and
    /// claims entries idle on other consumers longer than `claim_idle`
    /// (XPENDING + XCLAIM). At start (`startup`) its own entries are due at
    /// once. Returns false if shutdown was requested.
    async fn recover<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        shutdown: &watch::Receiver<bool>,
        startup: bool,
    ) -> Result<bool, StoreError> {
        let mut start = "-".to_owned();
        loop {
            let page: Vec<(String, String, u64, u32)> = redis::cmd("XPENDING")
                .arg(&self.log)
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
                let backoff = self.policy(None).delay(deliveries, &id);
                let wait = if mine && startup {
                    Duration::ZERO
                } else if mine {
                    backoff
                } else {
                    backoff.max(self.config.claim_idle)
                };
                if Duration::from_millis(idle_ms) < wait || !self.config.breaker.remaining_open().is_zero() {
                    continue;
                }
                // XCLAIM re-checks the idle time atomically: if another consumer
                // took the entry meanwhile, nothing comes back and we skip it.
                let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
                    .arg(&self.log)
                    .arg(&self.config.group)
                    .arg(&self.config.consumer)
                    .arg(wait.as_millis() as u64)
                    .arg(&id)
                    .query_async(conn)
                    .await?;
                for entry in &claimed.ids {
                    if !mine {
                        tracing::info!(log = %self.log, entry = %entry.id, from = %owner, "claimed an idle entry");
                        if let Some(m) = &self.config.metrics {
                            m.claimed
                                .get_or_create(&crate::metrics::SubscriberMetrics::labels(&self.config.group))
                                .inc();
                        }
                    }
                    self.process_one(conn, handler, entry, deliveries + 1).await?;
                }
            }
            if !full {
                return Ok(true);
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
        // Lanes by aggregate: entries of one aggregate stay in one lane, in
        // log order; lanes run concurrently; the batch's successes are acked
        // in one XACK once applied.
        let lanes = self.config.lanes.max(1);
        let mut by_lane: Vec<Vec<&StreamId>> = vec![Vec::new(); lanes];
        for entry in entries {
            let aggregate = entry.get::<String>("aggregate_id").unwrap_or_default();
            by_lane[crate::keys::partition_of(&aggregate, lanes as u32) as usize].push(entry);
        }
        let runs = by_lane.into_iter().filter(|l| !l.is_empty()).map(|lane| {
            let mut conn = conn.clone();
            async move {
                let mut acks = Vec::with_capacity(lane.len());
                for entry in lane {
                    if *shutdown.borrow() {
                        break;
                    }
                    if self.handle_entry(&mut conn, handler, entry, 1).await? {
                        acks.push(entry.id.clone());
                    }
                }
                Ok::<_, StoreError>(acks)
            }
        });
        let mut acks = Vec::with_capacity(entries.len());
        let mut failure = None;
        for result in futures_join_all(runs).await {
            match result {
                Ok(a) => acks.extend(a),
                Err(e) => failure = Some(e),
            }
        }
        if !acks.is_empty() {
            let _: i64 = redis::cmd("XACK").arg(&self.log).arg(&self.config.group).arg(&acks).query_async(conn).await?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(!*shutdown.borrow())
    }

    /// As [`handle_entry`](Self::handle_entry), acking a success at once.
    async fn process_one<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        entry: &StreamId,
        attempt: u32,
    ) -> Result<(), StoreError> {
        if self.handle_entry(conn, handler, entry, attempt).await? {
            self.ack(conn, &entry.id).await?;
        }
        Ok(())
    }

    /// Applies one entry delivered for the `attempt`-th time. Returns true
    /// when it should be acked (applied, or gone from the log); on failure
    /// leaves it pending for a retry, or after the last attempt moves it to
    /// the dead-letter stream (and acks it) in one script.
    async fn handle_entry<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        entry: &StreamId,
        attempt: u32,
    ) -> Result<bool, StoreError> {
        if entry.map.is_empty() {
            // Pending entry that no longer exists in the log: nothing to apply.
            return Ok(true);
        }
        let permit = self.config.breaker.permit();
        if permit == crate::breaker::Permit::Denied {
            // Left pending; delivered again once the breaker lets entries through.
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let (event_type, outcome) = match RecordedEvent::from_entry(&self.log, entry) {
            Ok(event) => (Some(event.envelope.event_type.clone()), handler.handle(&event).await),
            Err(e) => (None, Err(HandlerError(e.to_string()))),
        };
        self.config.breaker.record(permit, outcome.is_ok());
        let labels = crate::metrics::SubscriberMetrics::labels(&self.config.group);
        if let Some(m) = &self.config.metrics {
            m.handler_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
            match &outcome {
                Ok(()) => {
                    m.processed.get_or_create(&labels).inc();
                }
                Err(e) => {
                    m.failed.get_or_create(&labels).inc();
                    if let Ok(mut last) = m.last_error.lock() {
                        last.insert(self.config.group.clone(), format!("{}: {e}", entry.id));
                    }
                }
            }
        }
        let Err(error) = outcome else { return Ok(true) };
        let policy = self.policy(event_type.as_deref());
        if attempt < policy.max_attempts {
            tracing::warn!(log = %self.log, entry = %entry.id, group = %self.config.group, attempt,
                retry_in = ?policy.delay(attempt, &entry.id), %error, "entry failed; will retry");
            return Ok(false);
        }
        let dlq = keys::dead_letter_key(&self.config.aggregate_type, self.partition, &self.config.group);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let _: i64 = redis::Script::new(include_str!("dead_letter.lua"))
            .key(&self.log)
            .key(&dlq)
            .arg(&self.config.group)
            .arg(&entry.id)
            .arg(&self.config.group)
            .arg(error.to_string())
            .arg(attempt)
            .arg(now)
            .invoke_async(conn)
            .await?;
        tracing::error!(log = %self.log, entry = %entry.id, group = %self.config.group, attempt, %error,
            dead_letters = %dlq, "entry dead-lettered after its last attempt");
        if let Some(m) = &self.config.metrics {
            m.dead_lettered.get_or_create(&labels).inc();
        }
        Ok(false)
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

/// An entry a consumer group gave up on, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// `<partition>/<dead-letter entry id>`: names it for replay and purge.
    pub id: String,
    /// The entry's id in the partition log.
    pub entry: String,
    pub group: String,
    pub handler: String,
    pub error: String,
    pub attempts: u32,
    pub dead_lettered_at_ms: i64,
    pub event: RecordedEvent,
}

fn field(entry: &StreamId, name: &str) -> String {
    entry.get::<String>(name).unwrap_or_default()
}

/// The dead letters of `group` on every partition of `aggregate_type`, oldest
/// first per partition, at most `limit`.
pub async fn list_dead_letters(
    conn: &mut RedisConn,
    aggregate_type: &str,
    partitions: u32,
    group: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut out = Vec::new();
    for p in 0..partitions {
        if out.len() >= limit {
            break;
        }
        let key = keys::dead_letter_key(aggregate_type, p, group);
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg((limit - out.len()).min(1_000_000))
            .query_async(conn)
            .await?;
        for e in &page.ids {
            out.push(DeadLetter {
                id: format!("{p}/{}", e.id),
                entry: field(e, "dlq_entry"),
                group: field(e, "dlq_group"),
                handler: field(e, "dlq_handler"),
                error: field(e, "dlq_error"),
                attempts: field(e, "dlq_attempts").parse().unwrap_or(0),
                dead_lettered_at_ms: field(e, "dlq_at").parse().unwrap_or(0),
                event: RecordedEvent::from_entry(&key, e)?,
            });
        }
    }
    Ok(out)
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone)]
pub enum DeadLetterSelection {
    All,
    Ids(Vec<String>),
    EventType(String),
}

impl DeadLetterSelection {
    fn selects(&self, d: &DeadLetter) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.contains(&d.id),
            Self::EventType(t) => d.event.envelope.event_type == *t,
        }
    }
}

async fn delete_dead_letter(
    conn: &mut RedisConn,
    aggregate_type: &str,
    group: &str,
    id: &str,
) -> Result<u64, StoreError> {
    let Some((p, entry)) = id.split_once('/') else { return Ok(0) };
    let Ok(p) = p.parse::<u32>() else { return Ok(0) };
    let n: u64 =
        redis::cmd("XDEL").arg(keys::dead_letter_key(aggregate_type, p, group)).arg(entry).query_async(conn).await?;
    Ok(n)
}

/// Deletes the selected dead letters; returns how many.
pub async fn purge_dead_letters(
    conn: &mut RedisConn,
    aggregate_type: &str,
    partitions: u32,
    group: &str,
    selection: &DeadLetterSelection,
) -> Result<u64, StoreError> {
    let mut purged = 0;
    for d in list_dead_letters(conn, aggregate_type, partitions, group, usize::MAX).await? {
        if selection.selects(&d) {
            purged += delete_dead_letter(conn, aggregate_type, group, &d.id).await?;
        }
    }
    Ok(purged)
}

/// Runs the selected dead letters through `handler` again; each one that
/// succeeds leaves the dead-letter stream. Returns (replayed, still failing).
pub async fn replay_dead_letters<H: Handler>(
    conn: &mut RedisConn,
    handler: &H,
    aggregate_type: &str,
    partitions: u32,
    group: &str,
    selection: &DeadLetterSelection,
) -> Result<(u64, u64), StoreError> {
    let (mut replayed, mut failed) = (0, 0);
    for d in list_dead_letters(conn, aggregate_type, partitions, group, usize::MAX).await? {
        if !selection.selects(&d) {
            continue;
        }
        match handler.handle(&d.event).await {
            Ok(()) => replayed += delete_dead_letter(conn, aggregate_type, group, &d.id).await?,
            Err(e) => {
                tracing::warn!(dead_letter = %d.id, error = %e, "replay failed; the dead letter stays");
                failed += 1;
            }
        }
    }
    Ok((replayed, failed))
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().flatten().collect()
}
