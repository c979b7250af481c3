//! Events as they are written (encoded, [`NewEvent`]) and as they are read
//! back (envelope + still-encoded payload, [`RecordedEvent`]).

use allies_core::{DecodeError, DomainEvent, EventEnvelope, EventFormat, Metadata};
use redis::Value;
use redis::streams::StreamId;
use uuid::Uuid;

use crate::{StoreError, keys};

pub use allies_core::{CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF};

/// CRC-32 (IEEE) of a payload, hex: stored with every event, verified on load.
pub fn checksum(data: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(data))
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
        let data = match format {
            EventFormat::Json => event.encode_json()?,
            EventFormat::Protobuf => event.encode_protobuf()?,
        };
        let content_type = format.content_type();
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            content_type: content_type.to_owned(),
            data,
        })
    }
}

/// An event as stored, payload still encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub envelope: EventEnvelope<()>,
    pub content_type: String,
    pub data: Vec<u8>,
}

impl RecordedEvent {
    /// Decodes the payload into a typed event (upcasting older schemas).
    pub fn decode<E: DomainEvent>(&self) -> Result<EventEnvelope<E>, DecodeError> {
        let e = &self.envelope;
        let payload = allies_core::decode_stored(&e.event_type, e.schema_version, &self.content_type, &self.data)?;
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

    /// [`decode`](Self::decode), failing as the store does: a
    /// `StoreError::Decode` naming `<type>/<id>` and the version.
    pub fn typed<E: DomainEvent>(&self) -> Result<EventEnvelope<E>, StoreError> {
        self.decode().map_err(|source| StoreError::Decode {
            stream: format!("{}/{}", self.envelope.aggregate_type, self.envelope.aggregate_id),
            version: self.envelope.version,
            source,
        })
    }

    /// Parses one stream entry (aggregate stream, partition log, integration
    /// stream or dead letter). Verifies the payload's checksum.
    pub fn from_entry(key: &str, entry: &StreamId) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { stream: key.to_owned(), entry: entry.id.clone(), reason };
        let data = field_slice(entry, "data").map_err(corrupt)?;
        // Entries written before checksums existed have none; any other mismatch is corruption.
        if entry.map.contains_key("checksum") && field_str(entry, "checksum").map_err(corrupt)? != checksum(data) {
            return Err(corrupt("payload checksum mismatch".into()));
        }
        Self::from_entry_unchecked(key, entry, data.to_vec())
    }

    /// As [`from_entry`](Self::from_entry) without the checksum check: for
    /// showing what a damaged entry holds (dead letters), never for folding.
    pub fn from_entry_unchecked(key: &str, entry: &StreamId, data: Vec<u8>) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { stream: key.to_owned(), entry: entry.id.clone(), reason };
        // Fields are read in place; only what the event keeps is copied.
        let text = |f: &str| field_str(entry, f).map_err(corrupt);
        let number = |f: &str| -> Result<i64, StoreError> {
            text(f)?.parse::<i64>().map_err(|_| corrupt(format!("field `{f}` is not a number")))
        };
        let event_id = Uuid::parse_str(text("event_id")?).map_err(|e| corrupt(format!("event_id: {e}")))?;
        let metadata: Metadata = serde_json::from_slice(field_slice(entry, "metadata").map_err(corrupt)?)
            .map_err(|e| corrupt(format!("metadata: {e}")))?;
        // Aggregate-stream entries carry type, id and version in their key
        // and entry id; every other entry carries them as fields.
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
                text("aggregate_type")?.to_owned(),
                text("aggregate_id")?.to_owned(),
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
                event_type: text("event_type")?.to_owned(),
                schema_version,
                metadata,
                recorded_at_ms: number("created_at")?,
                payload: (),
            },
            content_type: text("content_type")?.to_owned(),
            data,
        })
    }
}

/// A field of a stream entry, borrowed. The error names the field and the
/// value's type, never the value.
fn field_slice<'e>(entry: &'e StreamId, field: &str) -> Result<&'e [u8], String> {
    match entry.map.get(field) {
        Some(Value::BulkString(b)) => Ok(b),
        Some(Value::SimpleString(s)) => Ok(s.as_bytes()),
        Some(other) => Err(format!("field `{field}` has unexpected type {}", kind(other))),
        None => Err(format!("field `{field}` missing")),
    }
}

/// A field of a stream entry as UTF-8 text, borrowed.
fn field_str<'e>(entry: &'e StreamId, field: &str) -> Result<&'e str, String> {
    std::str::from_utf8(field_slice(entry, field)?).map_err(|_| format!("field `{field}` is not UTF-8"))
}

/// A RESP value's kind, for an error.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::Array(_) | Value::Set(_) => "array",
        Value::Map(_) => "map",
        Value::Double(_) => "double",
        Value::Boolean(_) => "boolean",
        _ => "other",
    }
}

/// A field of a stream entry as bytes.
pub(crate) fn field_bytes(entry: &StreamId, field: &str) -> Result<Vec<u8>, String> {
    field_slice(entry, field).map(<[u8]>::to_vec)
}

/// A field of a stream entry as UTF-8 text.
pub(crate) fn field_text(entry: &StreamId, field: &str) -> Result<String, String> {
    field_str(entry, field).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A partition-log entry as the append script writes it.
    fn log_entry(data: &str) -> StreamId {
        let fields = [
            ("event_id", "6f1c1e9a-3a57-4a43-9d7e-0f5c9b0f7a11".to_owned()),
            ("event_type", "TowerPlaced".to_owned()),
            ("schema_version", "2".to_owned()),
            ("content_type", CONTENT_TYPE_JSON.to_owned()),
            ("data", data.to_owned()),
            (
                "metadata",
                r#"{"correlation_id":"6f1c1e9a-3a57-4a43-9d7e-0f5c9b0f7a12","causation_id":"6f1c1e9a-3a57-4a43-9d7e-0f5c9b0f7a13","user_id":"u1"}"#
                    .to_owned(),
            ),
            ("created_at", "1700000000123".to_owned()),
            ("checksum", checksum(data.as_bytes())),
            ("aggregate_type", "game".to_owned()),
            ("aggregate_id", "g-1".to_owned()),
            ("version", "7".to_owned()),
        ];
        StreamId {
            id: "1-1".into(),
            map: fields.into_iter().map(|(k, v)| (k.to_owned(), bulk(&v))).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_entry_is_read_field_by_field_and_a_bad_field_is_named_without_its_value() {
        let entry = log_entry(r#"{"x":1}"#);
        let e = RecordedEvent::from_entry("es:{game.0}:log", &entry).expect("a well-formed entry");
        assert_eq!(e.envelope.event_id.to_string(), "6f1c1e9a-3a57-4a43-9d7e-0f5c9b0f7a11");
        assert_eq!((e.envelope.aggregate_type.as_str(), e.envelope.aggregate_id.as_str()), ("game", "g-1"));
        assert_eq!((e.envelope.version, e.envelope.schema_version), (7, 2));
        assert_eq!((e.envelope.event_type.as_str(), e.content_type.as_str()), ("TowerPlaced", CONTENT_TYPE_JSON));
        assert_eq!(e.envelope.recorded_at_ms, 1_700_000_000_123);
        assert_eq!(e.envelope.metadata.user_id.as_deref(), Some("u1"));
        assert_eq!(e.data, br#"{"x":1}"#);

        let reason = |entry: &StreamId| match RecordedEvent::from_entry("es:{game.0}:log", entry) {
            Err(StoreError::Corrupt { reason, entry, .. }) => {
                assert_eq!(entry, "1-1");
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        };
        let mut tampered = log_entry(r#"{"x":1}"#);
        tampered.map.insert("data".into(), bulk(r#"{"x":2}"#));
        assert_eq!(reason(&tampered), "payload checksum mismatch");

        let mut huge = log_entry(r#"{"x":1}"#);
        huge.map.insert("event_type".into(), Value::Array(vec![bulk(&"v".repeat(100_000))]));
        let why = reason(&huge);
        assert_eq!(why, "field `event_type` has unexpected type array");

        let mut missing = log_entry(r#"{"x":1}"#);
        missing.map.remove("aggregate_id");
        assert_eq!(reason(&missing), "field `aggregate_id` missing");

        let mut not_text = log_entry(r#"{"x":1}"#);
        not_text.map.insert("content_type".into(), Value::BulkString(vec![0xff, 0xfe]));
        assert_eq!(reason(&not_text), "field `content_type` is not UTF-8");

        let mut not_number = log_entry(r#"{"x":1}"#);
        not_number.map.insert("version".into(), bulk("seven"));
        assert_eq!(reason(&not_number), "field `version` is not a number");
    }
}
