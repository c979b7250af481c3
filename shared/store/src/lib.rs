//! The Redis event store and the partition-log subscriber.
//!
//! Owns the key layout ([`keys`]), the one server-side script that appends a
//! command's events atomically (version check + aggregate stream + partition
//! log), loading an aggregate's stream, and reading partition logs through
//! consumer groups ([`subscriber`]).
//!
//! Must not know about gRPC or any bounded context: it stores envelopes of
//! any [`allies_core::Aggregate`].

use allies_core::{
    Aggregate, DecodeError, DomainEvent, EventEnvelope, EventFormat, ExpectedVersion, Metadata, Snapshot,
};
use std::collections::HashMap;

use redis::streams::{StreamId, StreamRangeReply};
use redis::{AsyncCommands, Value};
use uuid::Uuid;

pub use conn::{RedisConn, RedisTarget};
pub use redis::RedisError;

pub mod archive;
pub mod breaker;
pub mod conn;
pub mod metrics;
pub mod priority;

pub mod keys;
pub mod subscriber;

/// Content type of proto3 JSON payloads, the default encoding.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of protobuf binary payloads.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";

/// Largest number of events one append may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 1000;

const READ_PAGE: usize = 1000;

/// Failure to talk to Redis or to understand what it answered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store unavailable: {0}")]
    Unavailable(#[from] redis::RedisError),
    #[error("corrupt entry in {stream} at {entry}: {reason}")]
    Corrupt { stream: String, entry: String, reason: String },
    #[error(
        "{stream}: versions before {first_kept} were archived and trimmed (wanted {wanted}); load from the snapshot or restore the archive"
    )]
    Trimmed { stream: String, wanted: u64, first_kept: u64 },
    #[error("archive: {0}")]
    Archive(String),
    #[error("cannot decode {stream} version {version}: {source}")]
    Decode {
        stream: String,
        version: u64,
        #[source]
        source: DecodeError,
    },
}

/// Why an append did not happen. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("version conflict: expected {expected}, actual {actual}")]
    Conflict { expected: ExpectedVersion, actual: u64 },
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error("command id {command_id} was already used for a different command")]
    CommandIdReused { command_id: String },
    #[error("cannot encode event: {0}")]
    Encode(#[from] DecodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redis::RedisError> for AppendError {
    fn from(e: redis::RedisError) -> Self {
        Self::Store(StoreError::Unavailable(e))
    }
}

/// An event ready to be appended: already encoded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub content_type: String,
    pub data: Vec<u8>,
}

impl NewEvent {
    /// Encodes a domain event as proto3 JSON with a fresh UUIDv7.
    pub fn encode<E: DomainEvent>(event: &E) -> Result<Self, DecodeError> {
        Self::encode_as(event, EventFormat::Json)
    }

    /// Encodes a domain event in `format` with a fresh UUIDv7.
    pub fn encode_as<E: DomainEvent>(event: &E, format: EventFormat) -> Result<Self, DecodeError> {
        let (content_type, data) = match format {
            EventFormat::Json => (CONTENT_TYPE_JSON, event.encode_json()?),
            EventFormat::Protobuf => (CONTENT_TYPE_PROTOBUF, event.encode_protobuf()?),
        };
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            content_type: content_type.to_owned(),
            data,
        })
    }
}

/// Current state written atomically with an append (the "hybrid" write):
/// fields of the aggregate's state hash `es:{type.p}:state:<id>`, readable in
/// one HGET by other services (for example a session's revocation status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateWrite {
    pub fields: Vec<(String, String)>,
    /// When the state hash expires, Unix ms (None: never).
    pub expire_at_ms: Option<i64>,
}

/// A client-supplied command id: a retry with the same id and the same
/// command returns the first result (same version, no new events); the same
/// id with a different command is refused. Decided inside the append script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub id: String,
    /// Identifies the command's content (e.g. a hash of its fields).
    pub fingerprint: String,
    /// How long the record is kept.
    pub ttl: std::time::Duration,
}

/// Optional parts of an append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    pub state: Option<StateWrite>,
    pub command: Option<CommandRecord>,
    /// Where the aggregate lives; with `aggregate_state` for state_based and hybrid.
    pub storage: Storage,
    /// The aggregate's serialized state after the events, and its schema.
    pub aggregate_state: Option<(Vec<u8>, u32)>,
}

/// A point in an aggregate's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Right after the event with this version.
    Version(u64),
    /// After every event recorded at or before this time (Unix ms).
    Time(i64),
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

/// An event as stored, payload still encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub envelope: EventEnvelope<()>,
    pub content_type: String,
    pub data: Vec<u8>,
}

impl RecordedEvent {
    /// Decodes the payload into the aggregate's event type.
    pub fn decode<E: DomainEvent>(&self) -> Result<EventEnvelope<E>, DecodeError> {
        let (t, v) = (&self.envelope.event_type, self.envelope.schema_version);
        let payload = match self.content_type.as_str() {
            CONTENT_TYPE_JSON => E::decode_json(t, v, &self.data)?,
            CONTENT_TYPE_PROTOBUF => E::decode_protobuf(t, v, &self.data)?,
            other => return Err(DecodeError::malformed(t, format!("unsupported content type `{other}`"))),
        };
        let e = &self.envelope;
        Ok(EventEnvelope {
            event_id: e.event_id,
            aggregate_type: e.aggregate_type.clone(),
            aggregate_id: e.aggregate_id.clone(),
            version: e.version,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            metadata: e.metadata.clone(),
            recorded_at_ms: e.recorded_at_ms,
            payload,
        })
    }

    /// Parses one stream entry (aggregate stream or partition log).
    pub fn from_entry(key: &str, entry: &StreamId) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { stream: key.to_owned(), entry: entry.id.clone(), reason };
        let bytes = |field: &str| -> Result<Vec<u8>, StoreError> {
            match entry.map.get(field) {
                Some(Value::BulkString(b)) => Ok(b.clone()),
                Some(Value::SimpleString(s)) => Ok(s.clone().into_bytes()),
                Some(other) => Err(corrupt(format!("field `{field}` has unexpected type {other:?}"))),
                None => Err(corrupt(format!("field `{field}` missing"))),
            }
        };
        let text = |field: &str| -> Result<String, StoreError> {
            String::from_utf8(bytes(field)?).map_err(|_| corrupt(format!("field `{field}` is not UTF-8")))
        };
        let number = |field: &str| -> Result<i64, StoreError> {
            text(field)?.parse::<i64>().map_err(|_| corrupt(format!("field `{field}` is not a number")))
        };
        let data = bytes("data")?;
        // Entries written before checksums existed have none; any other mismatch is corruption.
        if entry.map.contains_key("checksum") && text("checksum")? != checksum(&data) {
            return Err(corrupt("payload checksum mismatch".into()));
        }
        let event_id = Uuid::parse_str(&text("event_id")?).map_err(|e| corrupt(format!("event_id: {e}")))?;
        let metadata: Metadata =
            serde_json::from_slice(&bytes("metadata")?).map_err(|e| corrupt(format!("metadata: {e}")))?;
        // Aggregate-stream entries carry type, id and version in their key
        // and entry id; partition-log entries carry them as fields.
        let (aggregate_type, aggregate_id, version) = match keys::parse_stream_key(key) {
            Some((t, id)) if !entry.map.contains_key("version") => {
                let v = entry
                    .id
                    .strip_prefix("0-")
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| corrupt("entry id is not 0-<version>".into()))?;
                (t.to_owned(), id.to_owned(), v)
            }
            _ => (
                text("aggregate_type")?,
                text("aggregate_id")?,
                u64::try_from(number("version")?).map_err(|_| corrupt("negative version".into()))?,
            ),
        };
        let schema_version =
            u32::try_from(number("schema_version")?).map_err(|_| corrupt("bad schema_version".into()))?;
        Ok(Self {
            envelope: EventEnvelope {
                event_id,
                aggregate_type,
                aggregate_id,
                version,
                event_type: text("event_type")?,
                schema_version,
                metadata,
                recorded_at_ms: number("created_at")?,
                payload: (),
            },
            content_type: text("content_type")?,
            data,
        })
    }
}

/// The Redis event store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EventStore {
    conn: RedisConn,
    partitions: u32,
    storage: std::sync::Arc<HashMap<String, Storage>>,
    default_storage: Storage,
    snapshot_policy: allies_core::SnapshotPolicy,
    format: EventFormat,
    snapshot_compression: SnapshotCompression,
    append_script: redis::Script,
    snapshot_script: redis::Script,
}

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

/// How snapshot states are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SnapshotCompression {
    /// Plain JSON (readable with redis-cli).
    None,
    /// JSON compressed with LZ4 (block format, size prepended).
    #[default]
    Lz4,
}

impl std::str::FromStr for SnapshotCompression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "lz4" => Ok(Self::Lz4),
            other => Err(format!("unknown snapshot compression '{other}' (none or lz4)")),
        }
    }
}

/// An aggregate loaded from its latest snapshot plus the events after it.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    pub version: u64,
    /// The snapshot used (version, taken at ms), if any.
    pub snapshot: Option<(u64, i64)>,
}

impl EventStore {
    /// Connects to Redis. `partitions` is P in `partition = hash(id) mod P`;
    /// it must stay the same for the lifetime of the data.
    /// Connects to Redis or Redis Cluster (see [`RedisTarget::parse`]).
    pub async fn connect(redis_url: &str, partitions: u32) -> Result<Self, StoreError> {
        let conn = RedisTarget::parse(redis_url)?.connect().await?;
        Ok(Self::with_connection(conn, partitions))
    }

    pub fn with_connection(conn: RedisConn, partitions: u32) -> Self {
        Self {
            conn,
            partitions: partitions.max(1),
            storage: Default::default(),
            default_storage: Storage::EventSourced,
            snapshot_policy: allies_core::SnapshotPolicy::default(),
            format: EventFormat::Json,
            snapshot_compression: SnapshotCompression::Lz4,
            append_script: redis::Script::new(include_str!("append.lua")),
            snapshot_script: redis::Script::new(include_str!("snapshot.lua")),
        }
    }

    /// Writes new events in `format` (reading handles both).
    pub fn with_format(mut self, format: EventFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets the storage strategy per aggregate type, and for the others.
    pub fn with_storage(mut self, per_type: HashMap<String, Storage>, default: Storage) -> Self {
        self.storage = std::sync::Arc::new(per_type);
        self.default_storage = default;
        self
    }

    /// When callers should snapshot event-sourced aggregates.
    pub fn with_snapshot_policy(mut self, policy: allies_core::SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    pub fn snapshot_policy(&self) -> allies_core::SnapshotPolicy {
        self.snapshot_policy
    }

    /// The storage strategy of an aggregate type.
    pub fn storage_of(&self, aggregate_type: &str) -> Storage {
        self.storage.get(aggregate_type).copied().unwrap_or(self.default_storage)
    }

    /// Stores new snapshots with `compression` (reading handles both).
    pub fn with_snapshot_compression(mut self, compression: SnapshotCompression) -> Self {
        self.snapshot_compression = compression;
        self
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn partition_of(&self, aggregate_id: &str) -> u32 {
        keys::partition_of(aggregate_id, self.partitions)
    }

    /// A shared connection for other short commands (never for blocking ones).
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Appends events to one aggregate in one server-side script: checks
    /// `expected`, adds the events to the aggregate's stream (versions
    /// `actual+1..`) and to its partition log. All or nothing.
    pub async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected: ExpectedVersion,
        metadata: &Metadata,
        recorded_at_ms: i64,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, AppendError> {
        self.append_with(
            aggregate_type,
            aggregate_id,
            expected,
            metadata,
            recorded_at_ms,
            events,
            &AppendOptions::default(),
        )
        .await
    }

    /// As [`append`](Self::append), and in the same script: writes
    /// `options.state` to the aggregate's state hash (with its new `version`),
    /// and checks and records `options.command` for idempotency.
    #[allow(clippy::too_many_arguments)]
    pub async fn append_with(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected: ExpectedVersion,
        metadata: &Metadata,
        recorded_at_ms: i64,
        events: &[NewEvent],
        options: &AppendOptions,
    ) -> Result<AppendOutcome, AppendError> {
        if events.is_empty() || events.len() > MAX_EVENTS_PER_APPEND {
            return Err(AppendError::Invalid(format!(
                "an append carries 1 to {MAX_EVENTS_PER_APPEND} events, got {}",
                events.len()
            )));
        }
        if aggregate_id.is_empty() || aggregate_type.is_empty() {
            return Err(AppendError::Invalid("aggregate type and id must not be empty".into()));
        }
        let partition = self.partition_of(aggregate_id);
        let stream = keys::stream_key(aggregate_type, partition, aggregate_id);
        let log = keys::log_key(aggregate_type, partition);
        let meta = serde_json::to_string(metadata).map_err(|e| AppendError::Invalid(format!("metadata: {e}")))?;
        let mut inv = self.append_script.key(&stream);
        let command_id = options.command.as_ref().map(|c| c.id.as_str()).unwrap_or("");
        if command_id.len() > 128 {
            return Err(AppendError::Invalid("command id longer than 128 bytes".into()));
        }
        inv.key(&log)
            .key(keys::state_key(aggregate_type, partition, aggregate_id))
            .key(keys::command_key(aggregate_type, partition, aggregate_id, command_id))
            .key(keys::trimmed_key(aggregate_type, partition, aggregate_id));
        inv.arg(match expected {
            ExpectedVersion::Any => "any".to_owned(),
            ExpectedVersion::NoStream => "none".to_owned(),
            ExpectedVersion::Exact(v) => v.to_string(),
        });
        let no_state = StateWrite::default();
        let state = options.state.as_ref().unwrap_or(&no_state);
        inv.arg(aggregate_type).arg(aggregate_id).arg(meta).arg(recorded_at_ms).arg(events.len());
        inv.arg(state.fields.len()).arg(state.expire_at_ms.unwrap_or(0));
        match &options.command {
            Some(c) => inv.arg(&c.id).arg(&c.fingerprint).arg(c.ttl.as_millis().max(1) as u64),
            None => inv.arg("").arg("").arg(0),
        };
        if options.storage != Storage::EventSourced && options.aggregate_state.is_none() {
            return Err(AppendError::Invalid(format!(
                "{} storage needs the aggregate state",
                options.storage.as_str()
            )));
        }
        inv.arg(options.storage.as_str());
        match &options.aggregate_state {
            Some((data, schema)) => inv.arg(data).arg(*schema),
            None => inv.arg("").arg(0),
        };
        for (field, value) in &state.fields {
            inv.arg(field).arg(value);
        }
        for e in events {
            inv.arg(e.event_id.to_string())
                .arg(&e.event_type)
                .arg(e.schema_version)
                .arg(&e.content_type)
                .arg(&e.data)
                .arg(checksum(&e.data));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(|e| {
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) {
                // The script refused (for example a stream whose ids break the
                // version invariant): nothing was written.
                AppendError::Store(StoreError::Corrupt {
                    stream: stream.clone(),
                    entry: "-".into(),
                    reason: e.to_string(),
                })
            } else {
                AppendError::from(e)
            }
        })?;
        parse_append_reply(&stream, expected, partition, aggregate_type, &reply, command_id)
    }

    /// Encodes and appends an aggregate's events.
    pub async fn append_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        metadata: &Metadata,
        recorded_at_ms: i64,
        events: &[A::Event],
    ) -> Result<AppendOutcome, AppendError> {
        let encoded = events.iter().map(|e| NewEvent::encode_as(e, self.format)).collect::<Result<Vec<_>, _>>()?;
        self.append(A::TYPE, aggregate_id, expected, metadata, recorded_at_ms, &encoded).await
    }

    /// Encodes and appends an aggregate's events with [`AppendOptions`].
    pub async fn append_events_with<A: Aggregate>(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        metadata: &Metadata,
        recorded_at_ms: i64,
        events: &[A::Event],
        options: &AppendOptions,
    ) -> Result<AppendOutcome, AppendError> {
        let encoded = events.iter().map(|e| NewEvent::encode_as(e, self.format)).collect::<Result<Vec<_>, _>>()?;
        self.append_with(A::TYPE, aggregate_id, expected, metadata, recorded_at_ms, &encoded, options).await
    }

    /// The recorded first result of `command_id` on an aggregate, if any:
    /// lets a service answer a retry before doing expensive work. The append
    /// script stays the authority.
    pub async fn command_outcome(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command: &CommandRecord,
    ) -> Result<Option<AppendOutcome>, AppendError> {
        let partition = self.partition_of(aggregate_id);
        let key = keys::command_key(aggregate_type, partition, aggregate_id, &command.id);
        let mut conn = self.conn.clone();
        let (fingerprint, result): (Option<String>, Option<String>) =
            redis::cmd("HMGET").arg(&key).arg("fingerprint").arg("result").query_async(&mut conn).await?;
        let (Some(fingerprint), Some(result)) = (fingerprint, result) else { return Ok(None) };
        if fingerprint != command.fingerprint {
            return Err(AppendError::CommandIdReused { command_id: command.id.clone() });
        }
        let corrupt =
            || StoreError::Corrupt { stream: key.clone(), entry: "-".into(), reason: "bad command record".into() };
        let items: Vec<serde_json::Value> = serde_json::from_str(&result).map_err(|_| corrupt())?;
        let reply: Vec<Value> = items
            .iter()
            .map(|v| match v {
                serde_json::Value::Number(n) => Value::Int(n.as_i64().unwrap_or_default()),
                other => Value::BulkString(other.as_str().unwrap_or_default().as_bytes().to_vec()),
            })
            .collect();
        let stream = keys::stream_key(aggregate_type, partition, aggregate_id);
        let mut outcome =
            parse_append_reply(&stream, ExpectedVersion::Any, partition, aggregate_type, &reply, &command.id)?;
        outcome.duplicate = true;
        Ok(Some(outcome))
    }

    /// Reads one field of an aggregate's state hash (None if absent).
    pub async fn state_field(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        field: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = keys::state_key(aggregate_type, self.partition_of(aggregate_id), aggregate_id);
        let mut conn = self.conn.clone();
        Ok(conn.hget(key, field).await?)
    }

    /// Reads an aggregate's events with version >= `from_version` (1 = all).
    pub async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let partition = self.partition_of(aggregate_id);
        let stream = keys::stream_key(aggregate_type, partition, aggregate_id);
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut start = format!("0-{}", from_version.max(1));
        loop {
            let page: StreamRangeReply = conn.xrange_count(&stream, &start, "+", READ_PAGE).await?;
            let n = page.ids.len();
            for entry in &page.ids {
                let rec = RecordedEvent::from_entry(&stream, entry)?;
                let expected_version = from_version.max(1) + out.len() as u64;
                if out.is_empty() && rec.envelope.version > expected_version {
                    return Err(StoreError::Trimmed {
                        stream: stream.clone(),
                        wanted: expected_version,
                        first_kept: rec.envelope.version,
                    });
                }
                if rec.envelope.version != expected_version || entry.id != format!("0-{}", rec.envelope.version) {
                    return Err(StoreError::Corrupt {
                        stream: stream.clone(),
                        entry: entry.id.clone(),
                        reason: format!("expected version {expected_version}, found {}", rec.envelope.version),
                    });
                }
                out.push(rec);
            }
            if n < READ_PAGE {
                if out.is_empty() {
                    // Nothing from here on: fine, unless these versions were trimmed.
                    let trimmed: Option<u64> =
                        conn.get(keys::trimmed_key(aggregate_type, partition, aggregate_id)).await?;
                    if let Some(t) = trimmed.filter(|t| from_version.max(1) <= *t) {
                        return Err(StoreError::Trimmed { stream, wanted: from_version.max(1), first_kept: t + 1 });
                    }
                }
                return Ok(out);
            }
            start = format!("0-{}", from_version.max(1) + out.len() as u64);
        }
    }

    /// One page of an aggregate's history: events with version `from..=to`
    /// (`to` None: to the end), at most `limit`. The next page starts at the
    /// last returned version + 1.
    pub async fn read_range(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
        to: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = keys::stream_key(aggregate_type, self.partition_of(aggregate_id), aggregate_id);
        let end = to.map(|v| format!("0-{v}")).unwrap_or_else(|| "+".into());
        let mut conn = self.conn.clone();
        let page: StreamRangeReply =
            conn.xrange_count(&stream, format!("0-{}", from.max(1)), end, limit.max(1)).await?;
        page.ids.iter().map(|entry| RecordedEvent::from_entry(&stream, entry)).collect()
    }

    /// Time travel: the aggregate's state as of a version or a time, and the
    /// version that state has (0 if nothing had happened yet).
    pub async fn load_as_of<A: Aggregate>(&self, aggregate_id: &str, as_of: AsOf) -> Result<(A, u64), StoreError> {
        let stream = keys::stream_key(A::TYPE, self.partition_of(aggregate_id), aggregate_id);
        let to = match as_of {
            AsOf::Version(v) => Some(v),
            AsOf::Time(_) => None,
        };
        let mut state = A::default();
        let mut version = 0;
        loop {
            let page = self.read_range(A::TYPE, aggregate_id, version + 1, to, READ_PAGE).await?;
            for rec in &page {
                if let AsOf::Time(t) = as_of
                    && rec.envelope.recorded_at_ms > t
                {
                    return Ok((state, version));
                }
                let env = rec.decode::<A::Event>().map_err(|source| StoreError::Decode {
                    stream: stream.clone(),
                    version: rec.envelope.version,
                    source,
                })?;
                state.evolve(&env.payload);
                version = env.version;
            }
            if page.len() < READ_PAGE {
                return Ok((state, version));
            }
        }
    }

    /// Stores `state` (at `version`) as the aggregate's snapshot, unless a
    /// snapshot at the same or a newer version exists. Returns whether written.
    pub async fn save_snapshot<A: Snapshot>(
        &self,
        aggregate_id: &str,
        state: &A,
        version: u64,
        taken_at_ms: i64,
    ) -> Result<bool, StoreError> {
        if version == 0 {
            return Ok(false);
        }
        let key = keys::snapshot_key(A::TYPE, self.partition_of(aggregate_id), aggregate_id);
        let data = serde_json::to_vec(state).map_err(|e| StoreError::Corrupt {
            stream: key.clone(),
            entry: version.to_string(),
            reason: format!("state does not serialize: {e}"),
        })?;
        let (data, encoding) = match self.snapshot_compression {
            SnapshotCompression::None => (data, "json"),
            SnapshotCompression::Lz4 => (lz4_flex::compress_prepend_size(&data), "json+lz4"),
        };
        let mut conn = self.conn.clone();
        let written: i64 = self
            .snapshot_script
            .key(&key)
            .arg(version)
            .arg(A::SNAPSHOT_SCHEMA)
            .arg(&data)
            .arg(checksum(&data))
            .arg(taken_at_ms)
            .arg(encoding)
            .invoke_async(&mut conn)
            .await?;
        Ok(written == 1)
    }

    /// Loads an aggregate from its latest snapshot and the events after it.
    /// A snapshot of another schema, or one that fails its checksum or does
    /// not deserialize, is ignored: the state is rebuilt from all events and
    /// the snapshot replaced.
    pub async fn load_with_snapshot<A: Snapshot>(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let key = keys::snapshot_key(A::TYPE, self.partition_of(aggregate_id), aggregate_id);
        let mut conn = self.conn.clone();
        let snap: HashMap<String, Vec<u8>> = conn.hgetall(&key).await?;
        let usable = (|| {
            let text = |f: &str| snap.get(f).and_then(|v| std::str::from_utf8(v).ok());
            let schema: u32 = text("schema")?.parse().ok()?;
            let version: u64 = text("version")?.parse().ok()?;
            let taken_at: i64 = text("taken_at_ms")?.parse().ok()?;
            let data = snap.get("data")?;
            if schema != A::SNAPSHOT_SCHEMA || text("checksum")? != checksum(data) {
                return None;
            }
            let state: A = match text("encoding").unwrap_or("json") {
                "json" => serde_json::from_slice(data).ok()?,
                "json+lz4" => serde_json::from_slice(&lz4_flex::decompress_size_prepended(data).ok()?).ok()?,
                _ => return None,
            };
            Some((state, version, taken_at))
        })();
        if let Some((mut state, snap_version, taken_at)) = usable {
            let mut version = snap_version;
            let stream = keys::stream_key(A::TYPE, self.partition_of(aggregate_id), aggregate_id);
            for rec in self.read_stream(A::TYPE, aggregate_id, snap_version + 1).await? {
                let env = rec.decode::<A::Event>().map_err(|source| StoreError::Decode {
                    stream: stream.clone(),
                    version: rec.envelope.version,
                    source,
                })?;
                state.evolve(&env.payload);
                version = env.version;
            }
            return Ok(Loaded { state, version, snapshot: Some((snap_version, taken_at)) });
        }
        let (state, version) = self.load::<A>(aggregate_id).await?;
        if !snap.is_empty() {
            tracing::warn!(key, "snapshot unusable (schema, checksum or shape); rebuilt from events and replaced");
            let _ = conn.del::<_, i64>(&key).await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default();
            self.save_snapshot(aggregate_id, &state, version, now).await?;
        }
        Ok(Loaded { state, version, snapshot: None })
    }

    /// Loads an aggregate the way its type is stored: event_sourced from
    /// snapshot + events; state_based from its state hash; hybrid from the
    /// state hash, falling back to the events when it is missing or of
    /// another schema.
    pub async fn load_aggregate<A: Snapshot>(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let storage = self.storage_of(A::TYPE);
        if storage == Storage::EventSourced {
            return self.load_with_snapshot(aggregate_id).await;
        }
        let key = keys::state_key(A::TYPE, self.partition_of(aggregate_id), aggregate_id);
        let mut conn = self.conn.clone();
        let (version, schema, state): (Option<u64>, Option<u32>, Option<Vec<u8>>) =
            redis::cmd("HMGET").arg(&key).arg("version").arg("schema").arg("state").query_async(&mut conn).await?;
        match (version, schema, state) {
            (Some(version), Some(schema), Some(data)) if schema == A::SNAPSHOT_SCHEMA => {
                match serde_json::from_slice::<A>(&data) {
                    Ok(state) => return Ok(Loaded { state, version, snapshot: None }),
                    Err(e) if storage == Storage::StateBased => {
                        return Err(StoreError::Corrupt {
                            stream: key,
                            entry: version.to_string(),
                            reason: e.to_string(),
                        });
                    }
                    Err(_) => {}
                }
            }
            (None, _, _) if storage == Storage::StateBased => {
                return Ok(Loaded { state: A::default(), version: 0, snapshot: None });
            }
            (_, schema, _) if storage == Storage::StateBased => {
                return Err(StoreError::Corrupt {
                    stream: key,
                    entry: "state".into(),
                    reason: format!(
                        "state schema {schema:?} is not {} and there are no events to rebuild it from",
                        A::SNAPSHOT_SCHEMA
                    ),
                });
            }
            _ => {}
        }
        // hybrid without a usable state: the events are there.
        self.load_with_snapshot(aggregate_id).await
    }

    /// Appends an aggregate's events the way its type is stored, with the
    /// state after them (`state`) for state_based and hybrid types.
    #[allow(clippy::too_many_arguments)]
    pub async fn save_aggregate<A: Snapshot>(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        metadata: &Metadata,
        recorded_at_ms: i64,
        events: &[A::Event],
        state: &A,
        mut options: AppendOptions,
    ) -> Result<AppendOutcome, AppendError> {
        options.storage = self.storage_of(A::TYPE);
        if options.storage != Storage::EventSourced {
            let data = serde_json::to_vec(state).map_err(|e| AppendError::Invalid(format!("state: {e}")))?;
            options.aggregate_state = Some((data, A::SNAPSHOT_SCHEMA));
        }
        self.append_events_with::<A>(aggregate_id, expected, metadata, recorded_at_ms, events, &options).await
    }

    /// Loads an aggregate: folds all its events. Returns the state and its
    /// version (0 when the aggregate does not exist).
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<(A, u64), StoreError> {
        let records = self.read_stream(A::TYPE, aggregate_id, 1).await?;
        let mut state = A::default();
        let mut version = 0;
        for rec in &records {
            let env = rec.decode::<A::Event>().map_err(|source| StoreError::Decode {
                stream: keys::stream_key(A::TYPE, self.partition_of(aggregate_id), aggregate_id),
                version: rec.envelope.version,
                source,
            })?;
            state.evolve(&env.payload);
            version = env.version;
        }
        Ok((state, version))
    }
}

fn parse_append_reply(
    stream: &str,
    expected: ExpectedVersion,
    partition: u32,
    aggregate_type: &str,
    reply: &[Value],
    command_id: &str,
) -> Result<AppendOutcome, AppendError> {
    let bad = |what: &str| {
        AppendError::Store(StoreError::Corrupt {
            stream: stream.to_owned(),
            entry: "-".into(),
            reason: format!("unexpected append reply: {what}"),
        })
    };
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    };
    let int = |v: &Value| -> Option<u64> {
        match v {
            Value::Int(i) => u64::try_from(*i).ok(),
            other => text(other)?.parse().ok(),
        }
    };
    let status = reply.first().and_then(text).ok_or_else(|| bad("no status"))?;
    if status == "mismatch" {
        return Err(AppendError::CommandIdReused { command_id: command_id.to_owned() });
    }
    let version = reply.get(1).and_then(int).ok_or_else(|| bad("no version"))?;
    match status.as_str() {
        "conflict" => Err(AppendError::Conflict { expected, actual: version }),
        "ok" | "duplicate" => {
            let log_ids = reply[2..].iter().map(text).collect::<Option<Vec<_>>>().ok_or_else(|| bad("log ids"))?;
            let last = log_ids.last().cloned().ok_or_else(|| bad("no log ids"))?;
            Ok(AppendOutcome {
                version,
                partition,
                log_ids,
                consistency_token: format!("{aggregate_type}.{partition}@{last}"),
                duplicate: status == "duplicate",
            })
        }
        other => Err(bad(other)),
    }
}

/// CRC-32 (IEEE) of a payload, hex: stored with every event, verified on load.
pub fn checksum(data: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(data))
}
