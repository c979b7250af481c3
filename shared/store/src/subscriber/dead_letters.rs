//! Dead letters: entries a consumer group gave up on after their last
//! attempt, kept with the error in `es:{type.p}:dlq:<group>` (same slot as
//! the stream they came from), listed, replayed and purged by operators.
//!
//! A dead letter is always listable and purgeable, even when its payload is
//! damaged (a checksum that does not match, a missing field): it is then
//! shown with what could be read and a note, never an error for the whole list.

use redis::streams::StreamId;

use super::{Handler, HandlerError};
use crate::event::{field_bytes, field_text};
use crate::{RecordedEvent, RedisConn, StoreError, keys};

/// Moves one pending entry to the dead-letter stream and acks it, in one script.
pub(crate) async fn bury(
    conn: &mut RedisConn,
    stream: &str,
    dlq: &str,
    group: &str,
    entry: &str,
    error: &str,
    attempts: u32,
) -> Result<(), StoreError> {
    let now = crate::load::now_ms();
    let _: i64 = redis::Script::new(include_str!("dead_letter.lua"))
        .key(stream)
        .key(dlq)
        .arg(group)
        .arg(entry)
        .arg(group)
        .arg(error)
        .arg(attempts)
        .arg(now)
        .invoke_async(conn)
        .await?;
    Ok(())
}

/// An entry a consumer group gave up on, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// `<partition>/<dead-letter entry id>`: names it for replay and purge.
    pub id: String,
    /// The entry's id in the stream it was read from.
    pub entry: String,
    pub group: String,
    pub handler: String,
    pub error: String,
    pub attempts: u32,
    pub dead_lettered_at_ms: i64,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
    pub content_type: String,
    /// The payload as stored (possibly damaged).
    pub data: Vec<u8>,
    /// The event, when the entry is intact.
    pub event: Option<RecordedEvent>,
    /// Why the entry cannot be read as an event (None: intact).
    pub damage: Option<String>,
}

fn lenient(e: &StreamId, name: &str) -> String {
    field_text(e, name).unwrap_or_default()
}

fn dead_letter(partition: u32, key: &str, e: &StreamId) -> DeadLetter {
    let (event, damage) = match RecordedEvent::from_entry(key, e) {
        Ok(ev) => (Some(ev), None),
        Err(err) => (None, Some(err.to_string())),
    };
    DeadLetter {
        id: format!("{partition}/{}", e.id),
        entry: lenient(e, "dlq_entry"),
        group: lenient(e, "dlq_group"),
        handler: lenient(e, "dlq_handler"),
        error: lenient(e, "dlq_error"),
        attempts: lenient(e, "dlq_attempts").parse().unwrap_or(0),
        dead_lettered_at_ms: lenient(e, "dlq_at").parse().unwrap_or(0),
        event_type: lenient(e, "event_type"),
        aggregate_type: lenient(e, "aggregate_type"),
        aggregate_id: lenient(e, "aggregate_id"),
        version: lenient(e, "version").parse().unwrap_or(0),
        content_type: lenient(e, "content_type"),
        data: field_bytes(e, "data").unwrap_or_default(),
        event,
        damage,
    }
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
        out.extend(page.ids.iter().map(|e| dead_letter(p, &key, e)));
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
            Self::EventType(t) => d.event_type == *t,
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
/// succeeds leaves the dead-letter stream. A damaged one cannot succeed and
/// stays. Returns (replayed, still failing).
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
        let outcome = match &d.event {
            Some(event) => handler.handle(event).await,
            None => Err(HandlerError::new(format!("damaged entry: {}", d.damage.as_deref().unwrap_or("unreadable")))),
        };
        match outcome {
            Ok(()) => replayed += delete_dead_letter(conn, aggregate_type, group, &d.id).await?,
            Err(e) => {
                tracing::warn!(dead_letter = %d.id, error = %e, "replay failed; the dead letter stays");
                failed += 1;
            }
        }
    }
    Ok((replayed, failed))
}
