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
    /// stream or dead letter), in either layout ([`Fields`]). Verifies the
    /// payload's checksum.
    pub fn from_entry(key: &str, entry: &StreamId) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { stream: key.to_owned(), entry: entry.id.clone(), reason };
        let fields = Fields::of(entry).map_err(corrupt)?;
        let data = fields.slice("data").map_err(corrupt)?;
        // Entries written before checksums existed have none; any other mismatch is corruption.
        if fields.has("checksum") && fields.text("checksum").map_err(corrupt)? != checksum(data) {
            return Err(corrupt("payload checksum mismatch".into()));
        }
        Self::read(key, entry, &fields, data.to_vec())
    }

    /// As [`from_entry`](Self::from_entry) without the checksum check: for
    /// showing what a damaged entry holds (dead letters), never for folding.
    pub fn from_entry_unchecked(key: &str, entry: &StreamId, data: Vec<u8>) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { stream: key.to_owned(), entry: entry.id.clone(), reason };
        Self::read(key, entry, &Fields::of(entry).map_err(corrupt)?, data)
    }

    fn read(key: &str, entry: &StreamId, fields: &Fields<'_>, data: Vec<u8>) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { stream: key.to_owned(), entry: entry.id.clone(), reason };
        // Fields are read in place; only what the event keeps is copied.
        let text = |f: &str| fields.text(f).map_err(corrupt);
        let number = |f: &str| -> Result<i64, StoreError> {
            text(f)?.parse::<i64>().map_err(|_| corrupt(format!("field `{f}` is not a number")))
        };
        let event_id = Uuid::parse_str(text("event_id")?).map_err(|e| corrupt(format!("event_id: {e}")))?;
        let metadata: Metadata = serde_json::from_slice(fields.slice("metadata").map_err(corrupt)?)
            .map_err(|e| corrupt(format!("metadata: {e}")))?;
        // Aggregate-stream entries carry type, id and version in their key
        // and entry id; every other entry carries them as fields.
        let (aggregate_type, aggregate_id, version) = match keys::parse_stream_key(key) {
            Some((t, id)) if !fields.has("version") => {
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

/// The partition log's entries hold an event in one field, [`PACKED`]:
/// these envelope fields, each a little-endian u32 length and its bytes,
/// after a layout byte ([`PACKED_LAYOUT`]); the aggregate version, which
/// only the append script knows, stays a field of its own. One field
/// instead of eleven: Redis adds, logs (AOF) and answers two values per
/// entry instead of twenty-two, and every reader (each projector reads the
/// log twice) parses and allocates two. Aggregate streams, integration
/// streams and dead letters keep a field per value; readers take both
/// layouts ([`Fields`]), so logs written before are read as they were.
pub const PACKED: &str = "event";
/// The first byte of a [`PACKED`] value: its layout.
pub const PACKED_LAYOUT: u8 = 1;
/// The envelope fields a [`PACKED`] value holds, in order.
pub const PACKED_FIELDS: [&str; 10] = [
    "event_type",
    "aggregate_type",
    "aggregate_id",
    "event_id",
    "schema_version",
    "content_type",
    "created_at",
    "checksum",
    "metadata",
    "data",
];

/// Packs [`PACKED_FIELDS`]' values, in that order, into one [`PACKED`] value.
fn pack_into(out: &mut impl std::io::Write, values: [&[u8]; PACKED_FIELDS.len()]) -> std::io::Result<()> {
    out.write_all(&[PACKED_LAYOUT])?;
    for v in values {
        // An event is far below 4 GiB (the store bounds events and metadata).
        out.write_all(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes())?;
        out.write_all(v)?;
    }
    Ok(())
}

/// [`PACKED_FIELDS`]' values packed into one [`PACKED`] value, as one
/// command argument written straight into the command's buffer (no copy of
/// its own).
pub struct Packed<'a>(pub [&'a [u8]; PACKED_FIELDS.len()]);

impl redis::ToRedisArgs for Packed<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        // Writing into the command's own buffer cannot fail.
        let _ = pack_into(&mut arg, self.0);
    }
}

/// The values of a [`PACKED`] value, borrowed; an error says what is wrong
/// with it, never what it holds.
fn unpack(packed: &[u8]) -> Result<[&[u8]; PACKED_FIELDS.len()], String> {
    let Some((&layout, mut rest)) = packed.split_first() else {
        return Err(format!("field `{PACKED}` is empty"));
    };
    if layout != PACKED_LAYOUT {
        return Err(format!("field `{PACKED}` has unknown layout {layout}"));
    }
    let mut values: [&[u8]; PACKED_FIELDS.len()] = [&[]; PACKED_FIELDS.len()];
    for (value, name) in values.iter_mut().zip(PACKED_FIELDS) {
        let cut = |rest: &[u8]| -> Option<(usize, usize)> {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            (rest.len() - 4 >= len).then_some((4, 4 + len))
        };
        let (from, to) = cut(rest).ok_or_else(|| format!("field `{PACKED}` ends inside `{name}`"))?;
        *value = &rest[from..to];
        rest = &rest[to..];
    }
    if !rest.is_empty() {
        return Err(format!("field `{PACKED}` has {} bytes after `data`", rest.len()));
    }
    Ok(values)
}

/// A stream entry's fields, whichever layout it has: a field per value, or
/// the partition log's [`PACKED`] event beside its plain fields.
pub struct Fields<'e> {
    entry: &'e StreamId,
    packed: Option<[&'e [u8]; PACKED_FIELDS.len()]>,
}

impl<'e> Fields<'e> {
    /// Reads the layout of `entry` (a damaged [`PACKED`] value is an error).
    pub fn of(entry: &'e StreamId) -> Result<Self, String> {
        let packed = match entry.map.get(PACKED) {
            None => None,
            Some(_) => Some(unpack(field_slice(entry, PACKED)?)?),
        };
        Ok(Self { entry, packed })
    }

    /// Whether the entry has `field`.
    pub fn has(&self, field: &str) -> bool {
        self.entry.map.contains_key(field) || self.packed_slot(field).is_some()
    }

    fn packed_slot(&self, field: &str) -> Option<&'e [u8]> {
        let values = self.packed.as_ref()?;
        PACKED_FIELDS.iter().position(|f| *f == field).map(|i| values[i])
    }

    /// A field, borrowed. The error names the field and the value's type,
    /// never the value.
    pub fn slice(&self, field: &str) -> Result<&'e [u8], String> {
        match self.packed_slot(field) {
            Some(v) if !self.entry.map.contains_key(field) => Ok(v),
            _ => field_slice(self.entry, field),
        }
    }

    /// A field as UTF-8 text, borrowed.
    pub fn text(&self, field: &str) -> Result<&'e str, String> {
        std::str::from_utf8(self.slice(field)?).map_err(|_| format!("field `{field}` is not UTF-8"))
    }
}

/// One field of a stream entry as text, in either layout ([`Fields`]): for
/// code that looks at an entry (its type, its aggregate) before, or instead
/// of, reading the whole event. None when it is missing, not text or the
/// entry is damaged.
pub fn entry_text<'e>(entry: &'e StreamId, field: &str) -> Option<&'e str> {
    Fields::of(entry).ok()?.text(field).ok()
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

/// A field of a stream entry as bytes, in either layout.
pub(crate) fn field_bytes(entry: &StreamId, field: &str) -> Result<Vec<u8>, String> {
    Fields::of(entry)?.slice(field).map(<[u8]>::to_vec)
}

/// A field of a stream entry as UTF-8 text, in either layout.
pub(crate) fn field_text(entry: &StreamId, field: &str) -> Result<String, String> {
    Fields::of(entry)?.text(field).map(str::to_owned)
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

    /// `entry` as the append script writes it to a partition log now: the
    /// envelope packed into one field, the version beside it.
    fn packed(entry: &StreamId) -> StreamId {
        let value = |f: &str| field_slice(entry, f).expect("field");
        let mut values: [&[u8]; PACKED_FIELDS.len()] = [&[]; PACKED_FIELDS.len()];
        for (v, f) in values.iter_mut().zip(PACKED_FIELDS) {
            *v = value(f);
        }
        let packed = redis::ToRedisArgs::to_redis_args(&Packed(values)).remove(0);
        let map = [(PACKED.to_owned(), Value::BulkString(packed)), ("version".to_owned(), bulk("7"))];
        StreamId { id: entry.id.clone(), map: map.into_iter().collect(), ..Default::default() }
    }

    #[test]
    fn a_packed_log_entry_reads_as_the_same_event_as_one_with_a_field_per_value() {
        let fielded = log_entry(r#"{"x":1}"#);
        let entry = packed(&fielded);
        assert_eq!(entry.map.len(), 2, "two values an entry instead of twenty-two");
        let key = "es:{game.0}:log";
        assert_eq!(
            RecordedEvent::from_entry(key, &entry).expect("packed"),
            RecordedEvent::from_entry(key, &fielded).expect("fielded")
        );
        for f in PACKED_FIELDS.iter().chain(&["version"]) {
            assert_eq!(entry_text(&entry, f), entry_text(&fielded, f), "{f}");
        }
        assert_eq!(entry_text(&entry, "aggregate_id"), Some("g-1"));
        assert_eq!(entry_text(&entry, "nothing"), None);
        // A plain field beside the packed value wins (dead letters add theirs).
        let mut dead = entry.clone();
        dead.map.insert("dlq_error".into(), bulk("boom"));
        assert_eq!(field_text(&dead, "dlq_error").as_deref(), Ok("boom"));
        assert_eq!(field_text(&dead, "event_type").as_deref(), Ok("TowerPlaced"));
    }

    #[test]
    fn a_damaged_packed_entry_is_corrupt_and_the_reason_names_no_value() {
        let entry = packed(&log_entry(r#"{"secret":1}"#));
        let blob = match &entry.map[PACKED] {
            Value::BulkString(b) => b.clone(),
            _ => unreachable!(),
        };
        let with = |blob: Vec<u8>| {
            let mut e = entry.clone();
            e.map.insert(PACKED.into(), Value::BulkString(blob));
            e
        };
        let reason = |entry: &StreamId| match RecordedEvent::from_entry("es:{game.0}:log", entry) {
            Err(StoreError::Corrupt { reason, .. }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        };
        assert_eq!(reason(&with(blob[..blob.len() - 3].to_vec())), "field `event` ends inside `data`");
        assert_eq!(reason(&with(blob[..16].to_vec())), "field `event` ends inside `aggregate_type`");
        assert_eq!(reason(&with(Vec::new())), "field `event` is empty");
        let mut later = blob.clone();
        later[0] = 2;
        assert_eq!(reason(&with(later)), "field `event` has unknown layout 2");
        let mut longer = blob.clone();
        longer.extend_from_slice(b"xyz");
        assert_eq!(reason(&with(longer)), "field `event` has 3 bytes after `data`");
        // A length past the end (here: the first one, 4 GiB) is refused, not read.
        let mut huge = blob.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(reason(&with(huge)), "field `event` ends inside `event_type`");
        // The payload still has its checksum.
        let mut tampered = blob;
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert_eq!(reason(&with(tampered)), "payload checksum mismatch");
        assert_eq!(entry_text(&with(vec![1, 2, 3]), "event_type"), None);
        for r in [reason(&with(vec![1, 2, 3])), reason(&with(b"\x01{\"secret\"".to_vec()))] {
            assert!(!r.contains("secret"), "{r}");
        }
    }
}
