//! Consumer groups on the partition logs (domain events) and on integration
//! topics (events other services publish).
//!
//! One consumer group per projection or subscribing service, one consumer
//! name per process instance. Every partition is read by its own task on its
//! own connection (a blocking `XREADGROUP` must never sit on a shared
//! multiplexed connection). The runtime is split by concern:
//!
//! - [`reader`]: reading, concurrent lanes by aggregate, acknowledging;
//! - [`retry`]: retry policies and recovery of pending entries (own
//!   failures after their backoff, a dead consumer's after `claim_idle`);
//! - [`dead_letters`]: entries given up on, listed, replayed, purged;
//! - [`position`]: consistency tokens (read-your-writes) and group positions.
//!
//! An entry is acknowledged only after its handler succeeded, so a crash
//! redelivers it and handlers must be idempotent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Priority, RecordedEvent, RedisTarget, keys};

pub mod dead_letters;
pub mod position;
pub mod reader;
pub mod retry;

pub use dead_letters::{DeadLetter, DeadLetterSelection, list_dead_letters, purge_dead_letters, replay_dead_letters};
pub use position::{ConsistencyToken, GroupPosition, group_position, group_positions, has_applied};
pub use retry::{Backoff, RetryPolicy};

/// Why a handler could not apply an entry. The entry stays pending.
///
/// A **transient** failure (Redis unavailable, a failover, writes not yet
/// on a replica) is retried for as long as it lasts and never dead-letters
/// the entry: dead letters are for events a handler cannot apply, not for
/// an outage (a Redis Cluster failover outlasts the retry budget).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
    transient: bool,
}

impl HandlerError {
    /// A handler's failure (its message is kept for the retry log and the
    /// dead letter).
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false }
    }

    /// From any error: not transient.
    pub fn of(e: impl std::fmt::Display) -> Self {
        Self::new(e.to_string())
    }

    /// An outage, not the event's fault: retried, never dead-lettered.
    pub fn transient(e: impl std::fmt::Display) -> Self {
        Self { message: e.to_string(), transient: true }
    }

    /// From an error that knows its code: UNAVAILABLE is transient.
    pub fn of_service<E: allies_core::ServiceError + std::fmt::Display>(e: E) -> Self {
        Self { message: e.to_string(), transient: e.code() == allies_core::ErrorCode::Unavailable }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a subscription does with each entry.
pub trait Handler: Send + Sync + 'static {
    /// Applies one event. Must be idempotent: an entry can be delivered again
    /// after a crash between applying and acknowledging.
    fn handle(&self, event: &RecordedEvent) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Whether [`handle_all`](Self::handle_all) applies several events
    /// more cheaply than one by one (a read model's writes in one script
    /// rather than one round trip each). Only such a handler is given a
    /// read's entries together.
    fn batches(&self) -> bool {
        false
    }

    /// Applies several events as `handle` of each in log order would, and
    /// as idempotently. On an error the runtime applies them again one by
    /// one, so retries and dead letters stay per entry: a part applied
    /// before the error must be harmless to apply again.
    fn handle_all(&self, events: &[RecordedEvent]) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for event in events {
                self.handle(event).await?;
            }
            Ok(())
        }
    }

    /// Called before what `handle` applied is acknowledged: a handler that
    /// writes outside the event store waits here until its writes are on
    /// enough replicas (`REDIS_REPLICA_ACKS`), so a failover cannot keep
    /// the acknowledgement and lose the write. An error leaves the entries
    /// pending: they are delivered again.
    fn confirm(&self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }
}

/// What a subscription reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The partition logs of the aggregate type: its domain events.
    Log,
    /// An integration topic published by aggregates of the type: per
    /// partition four priority streams, served by weighted rounds
    /// (see [`priority`](crate::priority)).
    Topic(String),
}

#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Consumer group, one per projection or subscriber: `rm.user`.
    pub group: String,
    /// Consumer name, stable per process instance (hostname / pod name), so a
    /// restarted instance finds its own pending entries.
    pub consumer: String,
    pub aggregate_type: String,
    pub source: Source,
    pub partitions: u32,
    /// Entries per read.
    pub batch: usize,
    /// How long one XREADGROUP blocks.
    pub block: Duration,
    /// After a read that found entries but not all it asked for (fewer
    /// than `batch`; on priority streams, no priority got its whole share
    /// of the round), the next read waits this long (what arrives meanwhile comes in one read: one
    /// XREADGROUP, one apply, one XACK for several appends). A reader that
    /// found nothing blocks as before, so a quiet log's first entry is read
    /// at once; under load an entry waits at most this much longer.
    pub linger: Duration,
    /// Entries pending on another consumer longer than this are claimed (a
    /// dead or stuck consumer); a live consumer acks well before.
    pub claim_idle: Duration,
    /// Retries of a failing entry; after the last attempt it is dead-lettered.
    /// Shared by every partition reader; replaced whole while running
    /// (the projector follows the live configuration's retry keys).
    pub retry: crate::Tunable<RetryPolicy>,
    /// Per event type retry policies (override `retry`).
    pub retry_by_event_type: std::collections::HashMap<String, RetryPolicy>,
    /// Where to count what happens (None: not counted).
    pub metrics: Option<Arc<crate::metrics::SubscriberMetrics>>,
    /// Entries of a batch are applied in this many concurrent lanes, split by
    /// aggregate id (one aggregate's entries stay in order in one lane).
    pub lanes: usize,
    /// The handler's circuit breaker, shared by all partitions.
    pub breaker: Arc<crate::breaker::CircuitBreaker>,
}

impl SubscriptionConfig {
    pub fn new(group: &str, consumer: &str, aggregate_type: &str, partitions: u32) -> Self {
        Self {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            aggregate_type: aggregate_type.to_owned(),
            source: Source::Log,
            partitions: partitions.max(1),
            batch: 128,
            block: Duration::from_secs(2),
            linger: Duration::ZERO,
            claim_idle: Duration::from_secs(30),
            retry: crate::Tunable::new(RetryPolicy::default()),
            retry_by_event_type: Default::default(),
            metrics: None,
            lanes: 8,
            breaker: Default::default(),
        }
    }

    /// The streams of one partition this subscription reads, highest priority first.
    pub fn streams(&self, partition: u32) -> Vec<String> {
        match &self.source {
            Source::Log => vec![keys::log_key(&self.aggregate_type, partition)],
            Source::Topic(topic) => Priority::ALL
                .iter()
                .map(|p| keys::integration_key(topic, &self.aggregate_type, partition, *p))
                .collect(),
        }
    }
}

/// Runs a subscription on every partition until `shutdown` turns true.
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
        let reader = reader::PartitionReader::new(target.clone(), partition, config.clone());
        tasks.spawn(reader.run(handler.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}
