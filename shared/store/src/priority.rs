//! Priority streams for integration events: critical, high, normal, low.
//!
//! An aggregate publishes integration events with the same append script as
//! its domain events ([`AppendRequest::publish`](crate::AppendRequest)): each
//! lands on `es:{<type>.<p>}:ie:<topic>:<priority>`, in the aggregate's own
//! slot. A topic's four streams of one partition share that slot, so one
//! XREADGROUP can block on all four, on Redis Cluster too. A subscriber
//! ([`Source::Topic`](crate::subscriber::Source)) serves them by weighted
//! rounds: per round it takes up to 8 critical, 4 high, 2 normal and 1 low
//! entries, and a priority that has fewer hands its unused share down.
//! Higher priorities go first, and while all four are busy a low entry still
//! gets at least one place in every 15 — no starvation.

use allies_core::Metadata;

use crate::{NewEvent, Priority, RedisConn, StoreError, checksum, keys};

/// Writes an integration event straight to a topic's priority stream, for
/// tools and tests. Services publish through the append instead (no dual write).
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    conn: &mut RedisConn,
    topic: &str,
    aggregate_type: &str,
    partition: u32,
    priority: Priority,
    source: (&str, u64),
    metadata: &Metadata,
    event: &NewEvent,
) -> Result<String, StoreError> {
    let meta = serde_json::to_string(metadata).map_err(|e| StoreError::Archive(e.to_string()))?;
    let id: String = redis::cmd("XADD")
        .arg(keys::integration_key(topic, aggregate_type, partition, priority))
        .arg("*")
        .arg("event_id")
        .arg(event.event_id.to_string())
        .arg("event_type")
        .arg(&event.event_type)
        .arg("schema_version")
        .arg(event.schema_version)
        .arg("content_type")
        .arg(&event.content_type)
        .arg("data")
        .arg(&event.data)
        .arg("metadata")
        .arg(meta)
        .arg("created_at")
        .arg(crate::load::now_ms())
        .arg("checksum")
        .arg(checksum(&event.data))
        .arg("aggregate_type")
        .arg(aggregate_type)
        .arg("aggregate_id")
        .arg(source.0)
        .arg("version")
        .arg(source.1)
        .query_async(conn)
        .await?;
    Ok(id)
}
