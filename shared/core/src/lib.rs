//! The pure CQRS/ES core.
//!
//! Owns the shape of an aggregate (a *decider*: [`Aggregate::decide`] and
//! [`Aggregate::evolve`]), the event envelope and its metadata, the expected
//! version of an append, the one error model every layer shares
//! ([`error`]: codes, field and rule violations), and the given/when/then
//! test helper ([`testing`]).
//!
//! Must not know about Redis, gRPC, the clock or randomness: time, ids and the
//! acting user come in through commands and [`CommandContext`]. That is what
//! keeps every domain rule testable without I/O and every replay deterministic.

use std::fmt::Debug;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod calendar;
pub mod error;
pub mod flags;
pub mod settings;
pub mod testing;

pub use error::{ErrorCode, Failure, FieldViolation, Invalid, RuleViolation, ServiceError};

/// An aggregate as a decider: a pure function from (state, command) to events,
/// and a pure function folding an event into the state.
///
/// `Self` is the state; `Default` is the state before the first event.
pub trait Aggregate: Default + Debug {
    /// Stable name of the aggregate type, used in keys and envelopes (`user`).
    const TYPE: &'static str;
    type Command: Debug;
    type Event: DomainEvent;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides which events a command produces, or why it is refused.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Must not fail: events are facts.
    fn evolve(&mut self, event: &Self::Event);

    /// Takes what a state needs from outside its events — a game's rules,
    /// say — from `seed`, the empty state the service builds it from. Called
    /// on a state read back from a snapshot or a state hash (events are
    /// folded into a copy of the seed, which has it already). Default:
    /// nothing.
    fn adopt(&mut self, seed: &Self) {
        let _ = seed;
    }

    /// Rebuilds a state from a sequence of events.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for e in events {
            state.evolve(e);
        }
        state
    }
}

/// An aggregate whose state can be stored as a snapshot.
///
/// `SNAPSHOT_SCHEMA` names the shape of the serialized state: bump it when
/// the state's fields change, and every older snapshot is ignored (the state
/// is rebuilt from events and the snapshot replaced) — never a wrong state.
pub trait Snapshot: Aggregate + Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {
    const SNAPSHOT_SCHEMA: u32;
}

/// When to take a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// After this many events since the last snapshot (0: never by count).
    pub every: u64,
    /// When the last snapshot is older than this (ms) and events followed it.
    pub max_age_ms: Option<i64>,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self { every: 100, max_age_ms: None }
    }
}

impl SnapshotPolicy {
    /// Whether a state at `version` should be snapshotted, given the last
    /// snapshot's version and time (None: there is none).
    pub fn due(&self, version: u64, last: Option<(u64, i64)>, now_ms: i64) -> bool {
        let (snap_version, taken_at) = last.unwrap_or((0, i64::MIN));
        let since = version.saturating_sub(snap_version);
        if since == 0 {
            return false;
        }
        let by_count = self.every > 0 && since >= self.every;
        let by_age = self.max_age_ms.is_some_and(|age| last.is_some() && now_ms.saturating_sub(taken_at) >= age);
        by_count || by_age
    }
}

/// A domain event: knows its stable type name, its schema version and how to
/// turn itself into stored bytes and back.
pub trait DomainEvent: Sized + Clone + Debug + Send + Sync + 'static {
    /// Stable type name, e.g. `UserRegistered`.
    fn event_type(&self) -> &'static str;
    /// Version of the payload's schema, starting at 1.
    fn schema_version(&self) -> u32;
    /// Encodes the payload as proto3 JSON.
    fn encode_json(&self) -> Result<Vec<u8>, DecodeError>;
    /// Decodes a stored payload of the given type and schema version.
    fn decode_json(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, DecodeError>;

    /// Encodes the payload as protobuf binary, for event types with a
    /// protobuf schema. The default says the type has none.
    fn encode_protobuf(&self) -> Result<Vec<u8>, DecodeError> {
        Err(DecodeError::malformed(self.event_type(), "no protobuf encoding for this event type"))
    }

    /// Decodes a protobuf binary payload of the given type and schema version.
    fn decode_protobuf(event_type: &str, _schema_version: u32, _data: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(event_type, "no protobuf encoding for this event type"))
    }
}

/// How event payloads are written. Whatever is written, the entry's content
/// type says it, so a stream written half in each still loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventFormat {
    /// proto3 JSON, `application/json`: readable with redis-cli.
    #[default]
    Json,
    /// protobuf binary, `application/x-protobuf`: smaller, faster.
    Protobuf,
}

/// Content type of proto3 JSON payloads, the default encoding.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of protobuf binary payloads.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";

impl EventFormat {
    /// The content type an entry written in this format carries.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => CONTENT_TYPE_JSON,
            Self::Protobuf => CONTENT_TYPE_PROTOBUF,
        }
    }
}

/// Decodes a stored payload by its content type (upcasting older schemas).
pub fn decode_stored<E: DomainEvent>(
    event_type: &str,
    schema_version: u32,
    content_type: &str,
    data: &[u8],
) -> Result<E, DecodeError> {
    match content_type {
        CONTENT_TYPE_JSON => E::decode_json(event_type, schema_version, data),
        CONTENT_TYPE_PROTOBUF => E::decode_protobuf(event_type, schema_version, data),
        other => Err(DecodeError::malformed(event_type, format!("unsupported content type `{other}`"))),
    }
}

impl std::str::FromStr for EventFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "protobuf" => Ok(Self::Protobuf),
            other => Err(format!("unknown event format '{other}' (json or protobuf)")),
        }
    }
}

/// Why stored bytes could not become a domain event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownEventType(String),
    #[error("event type `{event_type}` has no schema version {schema_version}")]
    UnsupportedSchemaVersion { event_type: String, schema_version: u32 },
    #[error("malformed `{event_type}` payload: {reason}")]
    Malformed { event_type: String, reason: String },
}

impl DecodeError {
    pub fn malformed(event_type: &str, reason: impl ToString) -> Self {
        Self::Malformed { event_type: event_type.to_owned(), reason: reason.to_string() }
    }
}

/// Who and what caused a command; flows into every event's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The request (or saga) every resulting event belongs to.
    pub correlation_id: Uuid,
    /// The message that directly caused these events (the command id).
    pub causation_id: Uuid,
    /// The acting user, when the caller is authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// W3C trace context of the request, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Everything a command handler needs from the outside world, passed in so
/// the domain stays pure.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub metadata: Metadata,
    /// Wall-clock time of the request, Unix epoch milliseconds.
    pub now_ms: i64,
    /// A client's request (false: the service's own work — a reaction, a
    /// timer). Only a client's writes pause in maintenance mode.
    pub from_client: bool,
}

/// A stored event with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope<E> {
    /// UUIDv7: unique and time-ordered.
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Position of the event in its aggregate's stream, starting at 1.
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub metadata: Metadata,
    /// When the store recorded it, Unix epoch milliseconds.
    pub recorded_at_ms: i64,
    pub payload: E,
}

/// The condition an append places on the aggregate's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The aggregate must not exist yet.
    NoStream,
    /// The aggregate must be at exactly this version (0 = does not exist).
    Exact(u64),
}

impl ExpectedVersion {
    /// The natural expectation after loading an aggregate at `version`.
    pub fn after_load(version: u64) -> Self {
        if version == 0 { Self::NoStream } else { Self::Exact(version) }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_load_expects_no_stream_for_a_new_aggregate() {
        assert_eq!(ExpectedVersion::after_load(0), ExpectedVersion::NoStream);
        assert_eq!(ExpectedVersion::after_load(7), ExpectedVersion::Exact(7));
        assert_eq!(ExpectedVersion::Exact(3).to_string(), "3");
        assert_eq!(ExpectedVersion::NoStream.to_string(), "no stream");
    }

    #[test]
    fn snapshot_policy_by_count_and_by_age() {
        let p = SnapshotPolicy { every: 100, max_age_ms: Some(60_000) };
        assert!(!p.due(99, None, 0), "99 events, no snapshot yet");
        assert!(p.due(100, None, 0));
        assert!(!p.due(150, Some((100, 0)), 59_999));
        assert!(p.due(200, Some((100, 0)), 1), "100 events since the last one");
        assert!(p.due(101, Some((100, 0)), 60_000), "old snapshot with newer events");
        assert!(!p.due(100, Some((100, 0)), 1_000_000), "nothing new since the snapshot");
        let never = SnapshotPolicy { every: 0, max_age_ms: None };
        assert!(!never.due(10_000, None, 0));
    }

    #[test]
    fn metadata_omits_absent_user_in_json() {
        let m = Metadata { correlation_id: Uuid::nil(), causation_id: Uuid::nil(), user_id: None, traceparent: None };
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("user_id"), "{json}");
        let back: Metadata = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
