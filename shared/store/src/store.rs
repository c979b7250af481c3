//! The narrow event-store surface every application layer stands on: one
//! append, one read, snapshots and the state hash. Two implementations:
//! Redis ([`RedisEventStore`](crate::RedisEventStore)) and memory
//! ([`MemoryEventStore`](crate::MemoryEventStore), for application tests).
//! Loading and folding an aggregate is written once on top of it
//! ([`load`](crate::load)), as is the command loop ([`executor`](crate::executor)).

use std::time::Duration;

use allies_core::{Aggregate, EventFormat, ExpectedVersion, Metadata, SnapshotPolicy};

use crate::{AppendError, NewEvent, RecordedEvent, StoreError};

/// Storage strategy of an aggregate type (`configs/cqrs.yaml`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Storage {
    /// The events are the truth: a stream per aggregate, plus snapshots.
    #[default]
    EventSourced,
    /// The current state (a hash) is the truth, with version-checked writes;
    /// the events still reach the partition log atomically.
    StateBased,
    /// Both the stream and the state hash, written by one script; loads read
    /// the state and fall back to the events.
    Hybrid,
}

impl Storage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventSourced => "event_sourced",
            Self::StateBased => "state_based",
            Self::Hybrid => "hybrid",
        }
    }
}

impl std::str::FromStr for Storage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "event_sourced" => Ok(Self::EventSourced),
            "state_based" => Ok(Self::StateBased),
            "hybrid" => Ok(Self::Hybrid),
            other => Err(format!("unknown storage strategy '{other}' (event_sourced, state_based or hybrid)")),
        }
    }
}

/// Extra fields of the aggregate's state hash written atomically with an
/// append, readable by other services in one HGET (a session's revocation
/// status, for example).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateWrite {
    pub fields: Vec<(String, String)>,
    /// When the state hash expires, Unix ms (None: never).
    pub expire_at_ms: Option<i64>,
}

/// A client-supplied command id: a retry with the same id and the same
/// command returns the first result (same version, no new events); the same
/// id with a different command is refused. Decided inside the append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub id: String,
    /// Whose id it is ('' = nobody's in particular: a reaction, a login):
    /// the record's key holds both, so equal ids of two callers are two
    /// records.
    pub scope: String,
    /// Identifies the command's content (e.g. a hash of its fields).
    pub fingerprint: String,
    /// How long the record is kept.
    pub ttl: Duration,
}

impl CommandRecord {
    /// The id as the record's key names it: `<scope>/<id>`, or the id.
    pub fn key_id(&self) -> std::borrow::Cow<'_, str> {
        if self.scope.is_empty() { self.id.as_str().into() } else { format!("{}/{}", self.scope, self.id).into() }
    }
}

/// Priority of an integration event (see [`priority`](crate::priority)).
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

    /// Entries per weighted round.
    pub fn weight(self) -> usize {
        match self {
            Self::Critical => 8,
            Self::High => 4,
            Self::Normal => 2,
            Self::Low => 1,
        }
    }
}

/// An integration event published by the same append as the domain events
/// (no dual write): it lands on `topic`'s stream of the aggregate's partition.
#[derive(Debug, Clone)]
pub struct Publication {
    pub topic: String,
    pub priority: Priority,
    pub event: NewEvent,
}

/// One command's append: everything the one atomic script writes.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub expected: ExpectedVersion,
    pub metadata: Metadata,
    pub recorded_at_ms: i64,
    pub events: Vec<NewEvent>,
    /// Extra fields of the state hash.
    pub state_fields: Option<StateWrite>,
    /// The aggregate's serialized state after the events and its schema:
    /// required for state_based and hybrid types, ignored otherwise.
    pub aggregate_state: Option<(Vec<u8>, u32)>,
    pub command: Option<CommandRecord>,
    /// Integration events, written by the same script.
    pub publish: Vec<Publication>,
}

impl AppendRequest {
    pub fn new(
        aggregate_type: &str,
        aggregate_id: &str,
        expected: ExpectedVersion,
        metadata: &Metadata,
        recorded_at_ms: i64,
        events: Vec<NewEvent>,
    ) -> Self {
        Self {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            expected,
            metadata: metadata.clone(),
            recorded_at_ms,
            events,
            state_fields: None,
            aggregate_state: None,
            command: None,
            publish: Vec::new(),
        }
    }

    /// Encodes an aggregate's typed events in `format`.
    pub fn typed<A: Aggregate>(
        aggregate_id: &str,
        expected: ExpectedVersion,
        metadata: &Metadata,
        recorded_at_ms: i64,
        events: &[A::Event],
        format: EventFormat,
    ) -> Result<Self, AppendError> {
        let encoded = events.iter().map(|e| NewEvent::encode_as(e, format)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(A::TYPE, aggregate_id, expected, metadata, recorded_at_ms, encoded))
    }

    pub fn with_state_fields(mut self, state: StateWrite) -> Self {
        self.state_fields = Some(state);
        self
    }

    pub fn with_aggregate_state(mut self, data: Vec<u8>, schema: u32) -> Self {
        self.aggregate_state = Some((data, schema));
        self
    }

    pub fn with_command(mut self, command: CommandRecord) -> Self {
        self.command = Some(command);
        self
    }

    pub fn with_publications(mut self, publish: Vec<Publication>) -> Self {
        self.publish = publish;
        self
    }

    /// Checks what every implementation refuses the same way.
    pub(crate) fn validate(&self, storage: Storage) -> Result<(), AppendError> {
        if self.events.is_empty() || self.events.len() > crate::MAX_EVENTS_PER_APPEND {
            return Err(AppendError::Invalid(format!(
                "an append carries 1 to {} events, got {}",
                crate::MAX_EVENTS_PER_APPEND,
                self.events.len()
            )));
        }
        if self.aggregate_id.is_empty() || self.aggregate_type.is_empty() {
            return Err(AppendError::Invalid("aggregate type and id must not be empty".into()));
        }
        if self.command.as_ref().is_some_and(|c| c.id.len() > 128) {
            return Err(AppendError::Invalid("command id longer than 128 bytes".into()));
        }
        if storage != Storage::EventSourced && self.aggregate_state.is_none() {
            return Err(AppendError::Invalid(format!("{} storage needs the aggregate state", storage.as_str())));
        }
        Ok(())
    }
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Aggregate version after the append.
    pub version: u64,
    pub partition: u32,
    /// Entry ids of the events in the partition log, in order.
    pub log_ids: Vec<String>,
    /// `<aggregate_type>.<partition>@<last log id>`: what a query waits for
    /// to read its own write.
    pub consistency_token: String,
    /// True when this was a retry of an already applied command id: nothing
    /// was written, the fields describe the first append.
    pub duplicate: bool,
}

/// A serialized aggregate state: a snapshot, or the state hash of a
/// state_based / hybrid aggregate. `data` is plain JSON (decompressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub version: u64,
    pub schema: u32,
    pub data: Vec<u8>,
    pub taken_at_ms: i64,
}

/// A stored state that is there but cannot be used (bad checksum, unknown
/// encoding): the aggregate is rebuilt from its events instead.
pub type Damaged = String;

/// A point in an aggregate's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Right after the event with this version.
    Version(u64),
    /// After every event recorded at or before this time (Unix ms).
    Time(i64),
}

/// The event store every application layer uses.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Storage strategy of an aggregate type.
    fn storage_of(&self, aggregate_type: &str) -> Storage;

    /// When the command loop takes snapshots.
    fn snapshot_policy(&self) -> SnapshotPolicy;

    /// How new events are encoded.
    fn format(&self) -> EventFormat;

    /// Partition of an aggregate (stable hash of its id).
    fn partition_of(&self, aggregate_id: &str) -> u32;

    /// Appends one command's events atomically: checks the expected
    /// version, writes the events (stream and/or state per the type's
    /// storage, partition log, integration streams) and the command record.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError>;

    /// Events of an aggregate with version >= `from` (1 = all), at most
    /// `limit`, in version order. Versions trimmed from Redis are
    /// [`StoreError::Trimmed`].
    async fn read(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The aggregate's latest snapshot (None: none).
    async fn snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Result<StoredState, Damaged>>, StoreError>;

    /// Stores a snapshot unless one at the same or a newer version of the
    /// same schema exists. Returns whether it was written.
    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        snapshot: StoredState,
    ) -> Result<bool, StoreError>;

    async fn delete_snapshot(&self, aggregate_type: &str, aggregate_id: &str) -> Result<(), StoreError>;

    /// The state hash of a state_based / hybrid aggregate (None: none yet).
    async fn state(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Result<StoredState, Damaged>>, StoreError>;

    /// The recorded first result of a command id, if any: lets a service
    /// answer a retry before doing expensive work. The append stays the authority.
    async fn command_outcome(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command: &CommandRecord,
    ) -> Result<Option<AppendOutcome>, AppendError>;

    /// The aggregate's whole history, versions 1..=N: events archived to
    /// files under `archive_dir` (a store that archives) and the ones it
    /// still holds. By default, what [`read`](Self::read) holds.
    async fn history(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        archive_dir: &std::path::Path,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let _ = archive_dir;
        self.read(aggregate_type, aggregate_id, 1, usize::MAX).await
    }
}
