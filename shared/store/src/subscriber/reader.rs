//! Reading one partition for one consumer group: new entries in batches
//! (the backpressure bound), applied in concurrent lanes by aggregate — one
//! aggregate's entries stay in log order in one lane — and acknowledged with
//! one XACK per stream once applied. A partition of an integration topic has
//! four priority streams, read in weighted rounds (see
//! [`priority`](crate::priority)).

use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;
use redis::streams::StreamId;
use tokio::sync::watch;

use super::{Handler, HandlerError, SubscriptionConfig, dead_letters};
use crate::metrics::SubscriberMetrics;
use crate::tail::lingers;
use crate::{Priority, RecordedEvent, RedisConn, RedisTarget, StoreError, StreamRead, keys};

/// An entry and the index of the stream it came from.
pub(crate) type Entry = (usize, StreamId);

/// Takes the lease when free (2), renews it when ours (1), else 0.
const LEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// What a lease has left when its holder renews it, at the latest: a
/// stall (a paused Redis, a starved process) shorter than this keeps it.
const RENEW_MARGIN: Duration = Duration::from_millis(2500);

/// Deletes the lease if it is ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

pub(crate) struct PartitionReader {
    pub(crate) target: RedisTarget,
    pub(crate) partition: u32,
    /// Highest priority first; one stream for a partition log.
    pub(crate) streams: Vec<String>,
    pub(crate) config: SubscriptionConfig,
    /// Whether this consumer has entries of its own waiting for a retry
    /// (a handler failed, or the breaker held them back): then pending
    /// entries are looked at every retry step; otherwise only every half
    /// `claim_idle`, for a dead consumer's entries — an idle reader costs
    /// one blocking read per `block`, not a poll per retry step.
    pub(crate) own_pending: std::sync::atomic::AtomicBool,
    /// Priority streams: the last blocking read found all four empty. Then
    /// the next read blocks on all four at once (it returns as soon as any
    /// has an entry) instead of a weighted round of four empty reads first.
    idle: std::sync::atomic::AtomicBool,
}

impl PartitionReader {
    pub(crate) fn new(target: RedisTarget, partition: u32, config: SubscriptionConfig) -> Self {
        Self {
            target,
            partition,
            streams: config.streams(partition),
            config,
            own_pending: Default::default(),
            idle: Default::default(),
        }
    }

    pub(crate) fn owes_retries(&self, yes: bool) {
        self.own_pending.store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    async fn connect(&self) -> RedisResult<RedisConn> {
        let mut conn = self.target.dedicated(self.config.block + Duration::from_secs(10)).await?;
        for stream in &self.streams {
            let created: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(&self.config.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                other => other?,
            }
        }
        Ok(conn)
    }

    pub(crate) async fn run<H: Handler>(self, handler: Arc<H>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() {
            match self.session(&*handler, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(stream = %self.streams[0], group = %self.config.group, error = %e,
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

    /// The partition's lease key for this group, in the streams' slot.
    fn lease_key(&self) -> String {
        let tag = self.streams[0].split_once('{').and_then(|(_, rest)| rest.split_once('}')).map(|(t, _)| t);
        format!("es:{{{}}}:lease:{}", tag.unwrap_or_default(), self.config.group)
    }

    /// How long a lease lasts unrenewed (renewed every third of it): a dead
    /// holder's partitions move within this. The new holder takes over
    /// every entry the old one had taken at once, before anything newer.
    fn lease_ttl(&self) -> Duration {
        self.config.claim_idle.clamp(Duration::from_millis(750), Duration::from_secs(5))
    }

    /// How often the holder renews its lease: a third of its time, or as
    /// late as [`RENEW_MARGIN`] before it runs out when that is later (the
    /// fleet's 5 s lease: every 2.5 s, one renewal and one blocking read per
    /// cycle on an idle partition instead of three of each per 5 s).
    fn renew_every(&self) -> Duration {
        let ttl = self.lease_ttl();
        (ttl / 3).max(ttl.saturating_sub(RENEW_MARGIN))
    }

    /// Takes or renews this partition's lease for this consumer: 2 taken
    /// now, 1 renewed, 0 another consumer holds it.
    async fn lease(&self, conn: &mut RedisConn) -> Result<u8, StoreError> {
        let held: u8 = redis::Script::new(LEASE)
            .key(self.lease_key())
            .arg(&self.config.consumer)
            .arg(self.lease_ttl().as_millis() as u64)
            .invoke_async(conn)
            .await?;
        Ok(held)
    }

    /// Whether another consumer still has entries of this partition pending.
    async fn others_pending(&self, conn: &mut RedisConn) -> Result<bool, StoreError> {
        for stream in &self.streams {
            let page: Vec<(String, String, u64, u32)> = redis::cmd("XPENDING")
                .arg(stream)
                .arg(&self.config.group)
                .arg("-")
                .arg("+")
                .arg(100)
                .query_async(conn)
                .await?;
            if page.iter().any(|(_, owner, _, _)| *owner != self.config.consumer) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Gives the lease up (a clean stop), so another replica takes the
    /// partition at once instead of after the lease's time.
    async fn release(&self, conn: &mut RedisConn) {
        let _: RedisResult<u8> =
            redis::Script::new(RELEASE).key(self.lease_key()).arg(&self.config.consumer).invoke_async(conn).await;
    }

    /// One connection's lifetime: pending entries first, then new ones.
    /// Ok(()) means shutdown was requested.
    ///
    /// One consumer of the group reads a partition at a time (a lease per
    /// partition and group): one aggregate's entries are then applied in log
    /// order even with several replicas in the group. The others wait and
    /// take the partition over when the holder stops (it releases) or dies
    /// (its lease runs out); the new holder first finishes what the old one
    /// had taken, then reads on.
    async fn session<H: Handler>(&self, handler: &H, shutdown: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        let mut conn = self.connect().await?;
        let result = self.holding(&mut conn, handler, shutdown).await;
        if result.is_ok() {
            self.release(&mut conn).await;
        }
        result
    }

    async fn holding<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let renew_every = self.renew_every();
        // Another consumer holds the partition: stand by until it is free.
        while self.lease(conn).await? == 0 {
            tokio::select! {
                _ = tokio::time::sleep(renew_every.min(self.config.block)) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
        let mut renewed = tokio::time::Instant::now();
        // What this consumer had taken (before a crash or a restart), then
        // what a dead holder had taken: claimable once idle for
        // `claim_idle` (what the jobs' takeover relies on). Nothing newer is
        // read until they are done, so one aggregate's entries stay in order.
        loop {
            if !self.recover(conn, handler, shutdown, true).await? {
                return Ok(());
            }
            if !self.others_pending(conn).await? {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep((self.config.claim_idle / 10).max(Duration::from_millis(50))) => {}
                _ = shutdown.changed() => return Ok(()),
            }
            if renewed.elapsed() >= renew_every {
                self.lease(conn).await?;
                renewed = tokio::time::Instant::now();
            }
        }
        let claims_every = (self.config.claim_idle / 2).max(Duration::from_millis(50));
        let mut last_recovery = tokio::time::Instant::now();
        loop {
            if renewed.elapsed() >= renew_every {
                if self.lease(conn).await? == 0 {
                    // Lost (this process stalled past the lease): another
                    // consumer holds the partition now. Stand by.
                    tracing::warn!(stream = %self.streams[0], group = %self.config.group, "partition lease lost");
                    return Box::pin(self.holding(conn, handler, shutdown)).await;
                }
                renewed = tokio::time::Instant::now();
            }
            let every = if self.own_pending.load(std::sync::atomic::Ordering::Relaxed) {
                claims_every.min(self.config.retry.get().base).max(Duration::from_millis(50))
            } else {
                claims_every
            };
            let paused = self.config.breaker.remaining_open();
            if !paused.is_zero() {
                // Open breaker: read nothing, retry nothing; entries wait in the log.
                tokio::select! {
                    _ = tokio::time::sleep(paused.min(every)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                continue;
            }
            // Never 0: a BLOCK of 0 waits forever.
            let block = self
                .config
                .block
                .min(every.saturating_sub(last_recovery.elapsed()))
                .min(renew_every.saturating_sub(renewed.elapsed()))
                .max(Duration::from_millis(1));
            let (entries, full) = tokio::select! {
                r = self.read(conn, block) => r?,
                _ = shutdown.changed() => return Ok(()),
            };
            if !self.process(conn, handler, &entries, shutdown).await? {
                return Ok(());
            }
            if lingers(self.config.linger, entries.len(), full) {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.linger) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            if last_recovery.elapsed() >= every {
                last_recovery = tokio::time::Instant::now();
                self.owes_retries(false);
                if !self.recover(conn, handler, shutdown, false).await? {
                    return Ok(());
                }
            }
        }
    }

    /// One XREADGROUP of `count` new entries on the given streams.
    async fn read_streams(
        &self,
        conn: &mut RedisConn,
        indexes: &[usize],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.config.group).arg(&self.config.consumer);
        cmd.arg("COUNT").arg(count.max(1));
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS");
        for i in indexes {
            cmd.arg(&self.streams[*i]);
        }
        for _ in indexes {
            cmd.arg(">");
        }
        let reply: StreamRead = cmd.query_async(conn).await?;
        let mut out = Vec::new();
        for key in reply.keys {
            let i = self.streams.iter().position(|s| *s == key.key).unwrap_or(0);
            out.extend(key.ids.into_iter().map(|e| (i, e)));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// New entries: a blocking read on a partition log; on priority streams
    /// one weighted round (up to 8 critical, 4 high, 2 normal, 1 low, an
    /// unused share handed down), or when all are empty a blocking read on
    /// all four at once (they share one slot). With them, whether a read got
    /// all it asked for (more may be waiting: the reader reads on at once).
    async fn read(&self, conn: &mut RedisConn, block: Duration) -> Result<(Vec<Entry>, bool), StoreError> {
        if self.streams.len() == 1 {
            let got = self.read_streams(conn, &[0], self.config.batch, Some(block)).await?;
            let full = got.len() >= self.config.batch;
            return Ok((got, full));
        }
        use std::sync::atomic::Ordering::Relaxed;
        let all: Vec<usize> = (0..self.streams.len()).collect();
        if self.idle.load(Relaxed) {
            let woken = self.read_streams(conn, &all, 1, Some(block)).await?;
            self.idle.store(woken.is_empty(), Relaxed);
            let full = !woken.is_empty();
            return Ok((woken, full));
        }
        let mut round = Vec::new();
        let mut carry = 0;
        let mut full = false;
        for (i, p) in Priority::ALL.iter().enumerate().take(self.streams.len()) {
            let budget = p.weight() + carry;
            let got = self.read_streams(conn, &[i], budget, None).await?;
            full |= got.len() >= budget;
            carry = budget - got.len();
            round.extend(got);
        }
        if round.is_empty() {
            round = self.read_streams(conn, &all, 1, Some(block)).await?;
            self.idle.store(round.is_empty(), Relaxed);
            full = !round.is_empty();
        }
        Ok((round, full))
    }

    /// Handles and acks entries. Returns false if shutdown was requested
    /// (the rest of the batch stays pending).
    async fn process<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        entries: &[Entry],
        shutdown: &watch::Receiver<bool>,
    ) -> Result<bool, StoreError> {
        if handler.batches()
            && self.streams.len() == 1
            && entries.len() > 1
            && let Some(acks) = self.handle_together(conn, handler, entries).await
        {
            self.ack(conn, handler, &acks).await?;
            return Ok(!*shutdown.borrow());
        }
        // Lanes by aggregate: entries of one aggregate stay in one lane, in
        // order; lanes run concurrently; the successes are acked per stream
        // in one XACK once applied.
        let lanes = self.config.lanes.max(1);
        let mut by_lane: Vec<Vec<&Entry>> = vec![Vec::new(); lanes];
        for entry in entries {
            let aggregate = crate::event::entry_text(&entry.1, "aggregate_id").unwrap_or_default();
            by_lane[keys::partition_of(aggregate, lanes as u32) as usize].push(entry);
        }
        let runs = by_lane.into_iter().filter(|l| !l.is_empty()).map(|lane| {
            let mut conn = conn.clone();
            async move {
                let mut acks = Vec::with_capacity(lane.len());
                for (stream, entry) in lane {
                    if *shutdown.borrow() {
                        break;
                    }
                    if self.handle_entry(&mut conn, handler, *stream, entry, 1).await? {
                        acks.push((*stream, entry.id.clone()));
                    }
                }
                Ok::<_, StoreError>(acks)
            }
        });
        let mut acks: Vec<(usize, String)> = Vec::with_capacity(entries.len());
        let mut failure = None;
        for result in join_all(runs).await {
            match result {
                Ok(a) => acks.extend(a),
                Err(e) => failure = Some(e),
            }
        }
        self.ack(conn, handler, &acks).await?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(!*shutdown.borrow())
    }

    /// A consumer span for an entry, linked to the event's creation
    /// context: built only when that was recorded (parent-based sampling).
    fn consumer_span(
        &self,
        key: &str,
        entry: &StreamId,
        event: &RecordedEvent,
    ) -> (crate::trace::Span, Option<crate::trace::Decision>) {
        use opentelemetry::KeyValue;
        let traceparent = event.envelope.metadata.traceparent.as_deref();
        let decision = crate::trace::linked([traceparent]);
        if !crate::trace::on() || !crate::trace::Decision::builds(decision) {
            return (crate::trace::Span::none(), decision);
        }
        let span = crate::trace::Span::start(
            format!("process {key}"),
            opentelemetry::trace::SpanKind::Consumer,
            crate::trace::Parent::Root,
            self.process_attributes(
                key,
                [
                    KeyValue::new("messaging.message.id", entry.id.clone()),
                    KeyValue::new("event.id", event.envelope.event_id.to_string()),
                    KeyValue::new("event.type", event.envelope.event_type.clone()),
                ],
            ),
            crate::trace::link(traceparent).into_iter().collect(),
        );
        let decision = crate::trace::settle(decision, &span);
        (span, decision)
    }

    /// A consumer span's attributes (OTel messaging conventions): the
    /// system, the operation, the stream and the group, then `more`.
    fn process_attributes<const N: usize>(
        &self,
        key: &str,
        more: [opentelemetry::KeyValue; N],
    ) -> Vec<opentelemetry::KeyValue> {
        use opentelemetry::KeyValue;
        let mut attributes = Vec::with_capacity(5 + N);
        attributes.extend([
            KeyValue::new("messaging.system", "redis"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", key.to_owned()),
            KeyValue::new("messaging.consumer.group.name", self.config.group.clone()),
        ]);
        attributes.extend(more);
        attributes
    }

    /// The consumer span of a read's entries applied together (the
    /// OpenTelemetry messaging conventions' batch `process`): one span,
    /// `messaging.batch.message_count`, and a link to each event's creation
    /// context naming its entry — built when one of them was recorded
    /// (parent-based sampling). One span per entry cost the projector about
    /// 15 µs of CPU per game command with every trace sampled.
    fn batch_span(&self, key: &str, entries: &[Entry], events: &[RecordedEvent]) -> crate::trace::Span {
        use opentelemetry::KeyValue;
        let traceparents = || events.iter().map(|e| e.envelope.metadata.traceparent.as_deref());
        if !crate::trace::on() || !crate::trace::Decision::builds(crate::trace::linked(traceparents())) {
            return crate::trace::Span::none();
        }
        let links = entries
            .iter()
            .zip(traceparents())
            .filter_map(|((_, entry), traceparent)| crate::trace::link_message(traceparent, &entry.id))
            .collect();
        crate::trace::Span::start(
            format!("process {key}"),
            opentelemetry::trace::SpanKind::Consumer,
            crate::trace::Parent::Root,
            self.process_attributes(key, [KeyValue::new("messaging.batch.message_count", events.len() as i64)]),
            links,
        )
    }

    /// A read's entries of a partition log applied together
    /// ([`Handler::handle_all`]) in log order, for a handler that
    /// [batches](Handler::batches): what to ack, or None when they go one
    /// by one instead — an entry deleted or unreadable, an open breaker, or
    /// a failure (the one-by-one path applies them again, idempotently, so
    /// retries and dead letters stay per entry).
    async fn handle_together<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        entries: &[Entry],
    ) -> Option<Vec<(usize, String)>> {
        let key = &self.streams[0];
        let mut events = Vec::with_capacity(entries.len());
        for (_, entry) in entries {
            if entry.map.is_empty() {
                return None;
            }
            events.push(RecordedEvent::from_entry(key, entry).ok()?);
        }
        let permit = self.config.breaker.permit();
        if permit == crate::breaker::Permit::Denied {
            return None;
        }
        // One span covers the apply they share, linked to each event's creation.
        let span = self.batch_span(key, entries, &events);
        let started = std::time::Instant::now();
        let ids: Vec<&str> = entries.iter().map(|(_, e)| e.id.as_str()).collect();
        let outcome = self.keeping_fresh(conn, key, &ids, handler.handle_all(&events)).await;
        drop(span);
        let labels = SubscriberMetrics::labels(&self.config.group);
        if let Err(error) = outcome {
            if permit == crate::breaker::Permit::Trial {
                self.config.breaker.record(permit, false);
            }
            tracing::debug!(stream = %key, group = %self.config.group, entries = entries.len(), %error,
                "entries applied together failed; applying them one by one");
            return None;
        }
        self.config.breaker.record(permit, true);
        if let Some(m) = &self.config.metrics {
            let each = started.elapsed().as_secs_f64() / entries.len() as f64;
            let seconds = m.handler_seconds.get_or_create(&labels);
            for _ in entries {
                seconds.observe(each);
            }
            m.processed.get_or_create(&labels).inc_by(entries.len() as u64);
        }
        Some(entries.iter().map(|(stream, entry)| (*stream, entry.id.clone())).collect())
    }

    /// Confirms the handler's writes, then acknowledges `acks` (one XACK per stream).
    async fn ack<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        acks: &[(usize, String)],
    ) -> Result<(), StoreError> {
        if acks.is_empty() {
            return Ok(());
        }
        handler.confirm().await.map_err(unconfirmed)?;
        for (i, stream) in self.streams.iter().enumerate() {
            let ids: Vec<&String> = acks.iter().filter(|(s, _)| *s == i).map(|(_, id)| id).collect();
            if !ids.is_empty() {
                let _: i64 = redis::cmd("XACK").arg(stream).arg(&self.config.group).arg(&ids).query_async(conn).await?;
            }
        }
        Ok(())
    }

    /// As [`handle_entry`](Self::handle_entry), acking a success at once.
    pub(crate) async fn process_one<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        stream: usize,
        entry: &StreamId,
        attempt: u32,
    ) -> Result<(), StoreError> {
        if self.handle_entry(conn, handler, stream, entry, attempt).await? {
            handler.confirm().await.map_err(unconfirmed)?;
            let _: i64 = redis::cmd("XACK")
                .arg(&self.streams[stream])
                .arg(&self.config.group)
                .arg(&entry.id)
                .query_async(conn)
                .await?;
        }
        Ok(())
    }

    /// Applies one entry delivered for the `attempt`-th time. Returns true
    /// when it should be acked (applied, or gone from the stream); on failure
    /// leaves it pending for a retry, or after the last attempt moves it to
    /// the dead-letter stream (and acks it) in one script.
    async fn handle_entry<H: Handler>(
        &self,
        conn: &mut RedisConn,
        handler: &H,
        stream: usize,
        entry: &StreamId,
        attempt: u32,
    ) -> Result<bool, StoreError> {
        if entry.map.is_empty() {
            // Pending entry that no longer exists in the stream: nothing to apply.
            return Ok(true);
        }
        let permit = self.config.breaker.permit();
        if permit == crate::breaker::Permit::Denied {
            // Left pending; delivered again once the breaker lets entries through.
            self.owes_retries(true);
            return Ok(false);
        }
        let key = &self.streams[stream];
        let started = std::time::Instant::now();
        let (event_type, outcome) = match RecordedEvent::from_entry(key, entry) {
            Ok(event) => {
                // A consumer span per entry, linked to the event's creation
                // context: recorded when that was (parent-based sampling).
                let (span, decision) = self.consumer_span(key, entry, &event);
                let work = span.scope_with(decision, handler.handle(&event));
                let handled = self.keeping_fresh(conn, key, &[entry.id.as_str()], work).await;
                drop(span);
                (Some(event.envelope.event_type.clone()), handled)
            }
            Err(e) => (None, Err(HandlerError::new(e.to_string()))),
        };
        self.config.breaker.record(permit, outcome.is_ok());
        let labels = SubscriberMetrics::labels(&self.config.group);
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
        let retry = self.config.retry.get();
        let policy = retry.for_event(event_type.as_deref(), &self.config.retry_by_event_type);
        // An outage is not the event's fault: retried while it lasts (the
        // breaker paces it), never buried.
        if error.is_transient() || attempt < policy.max_attempts {
            tracing::warn!(stream = %key, entry = %entry.id, group = %self.config.group, attempt,
                retry_in = ?policy.delay(attempt, &entry.id), %error, "entry failed; will retry");
            self.owes_retries(true);
            return Ok(false);
        }
        let dlq = keys::dead_letter_key(&self.config.aggregate_type, self.partition, &self.config.group);
        dead_letters::bury(conn, key, &dlq, &self.config.group, &entry.id, &error.to_string(), attempt).await?;
        tracing::error!(stream = %key, entry = %entry.id, group = %self.config.group, attempt, %error,
            dead_letters = %dlq, "entry dead-lettered after its last attempt");
        if let Some(m) = &self.config.metrics {
            m.dead_lettered.get_or_create(&labels).inc();
        }
        Ok(false)
    }
}

/// KEYS: stream. ARGV: group, consumer, entry id. Resets the entry's idle
/// time if this consumer still owns it (one that another consumer claimed
/// meanwhile is left alone).
const KEEP_FRESH: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
";

impl PartitionReader {
    /// Runs a handler; while it runs longer than a third of `claim_idle`
    /// (a report, a maintenance job), resets its entry's idle time every
    /// third of it, so another consumer claims the entry only when this one
    /// is gone — never while it is still working. A handler that finishes
    /// sooner (every projection) costs nothing extra.
    async fn keeping_fresh<F: std::future::Future>(
        &self,
        conn: &mut RedisConn,
        stream: &str,
        ids: &[&str],
        work: F,
    ) -> F::Output {
        let every = (self.config.claim_idle / 3).max(Duration::from_millis(20));
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tokio::time::sleep(every) => {
                    // Built here, not per entry: only a long handler gets this far.
                    let script = redis::Script::new(KEEP_FRESH);
                    for &id in ids {
                        let kept: RedisResult<i64> = script
                            .key(stream)
                            .arg(&self.config.group)
                            .arg(&self.config.consumer)
                            .arg(id)
                            .invoke_async(conn)
                            .await;
                        match kept {
                            Ok(1) => {}
                            Ok(_) => tracing::warn!(stream, entry = id, group = %self.config.group,
                                "a long handler's entry was claimed by another consumer"),
                            Err(e) => tracing::warn!(stream, entry = id, error = %e, "cannot keep a long handler's entry"),
                        }
                    }
                }
            }
        }
    }
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
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

/// A handler's writes not confirmed by the replicas: like a lost
/// connection, the entries stay pending and the session starts again.
fn unconfirmed(e: HandlerError) -> StoreError {
    StoreError::Unavailable(std::io::Error::other(format!("handler writes not confirmed: {e}")).into())
}
