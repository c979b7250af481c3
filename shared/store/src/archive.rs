//! Retention: archive an aggregate's events up to its snapshot into
//! compressed JSON lines, then trim them from Redis; read or restore the full
//! history from the archive. Nothing is trimmed that was not written and
//! fsynced to the archive first, and appends keep their version check after
//! trimming (the append script counts trimmed events).
//!
//! Layout: `<dir>/<aggregate_type>/<aggregate_id>/<from>-<to>.jsonl.lz4`, each
//! file one LZ4 block (size prepended) of JSON lines
//! `{"id":"0-<version>","fields":{…}}`; a field that is not UTF-8 (protobuf
//! payloads) is stored base64 under `<name>:b64`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use redis::streams::{StreamId, StreamRangeReply};
use redis::{AsyncCommands, Value};

use crate::{EventStore, RecordedEvent, RedisEventStore, StoreError, keys};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Events written to the archive and trimmed from Redis.
    pub archived: u64,
    /// Versions `from..=to` of this run (none when there was nothing to do).
    pub range: Option<(u64, u64)>,
    pub file: Option<PathBuf>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Archive(e.to_string())
}

fn aggregate_dir(dir: &Path, aggregate_type: &str, aggregate_id: &str) -> Result<PathBuf, StoreError> {
    let safe =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && s != "..";
    if !safe(aggregate_type) || !safe(aggregate_id) {
        return Err(err(format!("cannot archive {aggregate_type}/{aggregate_id}: unsafe path component")));
    }
    Ok(dir.join(aggregate_type).join(aggregate_id))
}

fn to_line(entry: &StreamId) -> Result<String, StoreError> {
    let mut fields = BTreeMap::new();
    for (name, value) in &entry.map {
        let bytes = match value {
            Value::BulkString(b) => b.clone(),
            Value::SimpleString(s) => s.clone().into_bytes(),
            other => return Err(err(format!("entry {} field {name}: unexpected {other:?}", entry.id))),
        };
        match String::from_utf8(bytes) {
            Ok(s) => fields.insert(name.clone(), s),
            Err(e) => fields.insert(format!("{name}:b64"), STANDARD.encode(e.into_bytes())),
        };
    }
    serde_json::to_string(&serde_json::json!({ "id": entry.id, "fields": fields })).map_err(err)
}

fn from_line(line: &str) -> Result<StreamId, StoreError> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(err)?;
    let id = v["id"].as_str().ok_or_else(|| err("archive line without id"))?.to_owned();
    let mut map = std::collections::HashMap::new();
    for (name, value) in v["fields"].as_object().ok_or_else(|| err("archive line without fields"))? {
        let text = value.as_str().ok_or_else(|| err("archive field is not a string"))?;
        match name.strip_suffix(":b64") {
            Some(plain) => map.insert(plain.to_owned(), Value::BulkString(STANDARD.decode(text).map_err(err)?)),
            None => map.insert(name.clone(), Value::BulkString(text.as_bytes().to_vec())),
        };
    }
    Ok(StreamId { id, map, ..Default::default() })
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().ok_or_else(|| err("archive path has no parent"))?;
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

/// The archived segments of an aggregate, in version order.
fn segments(dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>, StoreError> {
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(range) = name.strip_suffix(".jsonl.lz4") else { continue };
        let (from, to) = range.split_once('-').ok_or_else(|| err(format!("bad archive file name {name}")))?;
        out.push((from.parse().map_err(err)?, to.parse().map_err(err)?, path));
    }
    out.sort();
    Ok(out)
}

impl RedisEventStore {
    /// Archives the events up to the aggregate's snapshot, then trims them.
    pub async fn archive_and_trim(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        dir: &Path,
    ) -> Result<ArchiveReport, StoreError> {
        let target = aggregate_dir(dir, aggregate_type, aggregate_id)?;
        let p = self.partition_of(aggregate_id);
        let (stream, trimmed_key) =
            (keys::stream_key(aggregate_type, p, aggregate_id), keys::trimmed_key(aggregate_type, p, aggregate_id));
        let mut conn = self.connection();
        let snapshot: Option<u64> = conn.hget(keys::snapshot_key(aggregate_type, p, aggregate_id), "version").await?;
        let snapshot = snapshot.ok_or_else(|| {
            err(format!("{stream} has no snapshot, and only events up to a snapshot may be trimmed: take one first"))
        })?;
        let trimmed: u64 = conn.get::<_, Option<u64>>(&trimmed_key).await?.unwrap_or(0);
        if snapshot <= trimmed {
            return Ok(ArchiveReport { archived: 0, range: None, file: None });
        }
        let (from, to) = (trimmed + 1, snapshot);
        let page: StreamRangeReply = conn.xrange(&stream, format!("0-{from}"), format!("0-{to}")).await?;
        let expected: Vec<String> = (from..=to).map(|v| format!("0-{v}")).collect();
        let got: Vec<String> = page.ids.iter().map(|e| e.id.clone()).collect();
        if got != expected {
            return Err(err(format!("{stream}: versions {from}..={to} are not all present; nothing trimmed")));
        }
        let mut text = String::new();
        for entry in &page.ids {
            text.push_str(&to_line(entry)?);
            text.push('\n');
        }
        let file = target.join(format!("{from}-{to}.jsonl.lz4"));
        write_durably(&file, &lz4_flex::compress_prepend_size(text.as_bytes()))?;
        let removed: i64 = redis::Script::new(include_str!("trim.lua"))
            .key(&stream)
            .key(&trimmed_key)
            .arg(trimmed)
            .arg(to)
            .invoke_async(&mut conn)
            .await?;
        if removed < 0 {
            return Err(err(format!(
                "{stream} was trimmed concurrently; the archive file stays, nothing else changed"
            )));
        }
        Ok(ArchiveReport { archived: removed as u64, range: Some((from, to)), file: Some(file) })
    }

    /// The aggregate's full history: archived events, then the ones still in
    /// Redis. Checked to be versions 1..=N with no gap.
    pub async fn full_history(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        dir: &Path,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let p = self.partition_of(aggregate_id);
        let stream = keys::stream_key(aggregate_type, p, aggregate_id);
        let mut out = Vec::new();
        for (from, to, path) in segments(&aggregate_dir(dir, aggregate_type, aggregate_id)?)? {
            let bytes = std::fs::read(&path).map_err(err)?;
            let text = lz4_flex::decompress_size_prepended(&bytes).map_err(err)?;
            let text = String::from_utf8(text).map_err(err)?;
            for line in text.lines().filter(|l| !l.is_empty()) {
                out.push(RecordedEvent::from_entry(&stream, &from_line(line)?)?);
            }
            if out.last().map(|r| r.envelope.version) != Some(to) || from != out.len() as u64 - (to - from) {
                return Err(err(format!("{} does not hold versions {from}..={to}", path.display())));
            }
        }
        let trimmed: u64 = self
            .connection()
            .get::<_, Option<u64>>(keys::trimmed_key(aggregate_type, p, aggregate_id))
            .await?
            .unwrap_or(0);
        if out.len() as u64 != trimmed {
            return Err(err(format!("archive holds {} events but {trimmed} were trimmed from {stream}", out.len())));
        }
        out.extend(self.read(aggregate_type, aggregate_id, trimmed + 1, usize::MAX).await?);
        for (i, rec) in out.iter().enumerate() {
            if rec.envelope.version != i as u64 + 1 {
                return Err(err(format!("history of {stream} has a gap at version {}", i + 1)));
            }
        }
        Ok(out)
    }

    /// Puts the archived events back into Redis, so the stream holds the full
    /// history again. Retries if events are appended while it works.
    pub async fn restore_from_archive(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        dir: &Path,
    ) -> Result<u64, StoreError> {
        let p = self.partition_of(aggregate_id);
        let stream = keys::stream_key(aggregate_type, p, aggregate_id);
        let rebuilt = format!("es:{}:restore:{aggregate_id}", keys::tag(aggregate_type, p));
        let trimmed_key = keys::trimmed_key(aggregate_type, p, aggregate_id);
        if segments(&aggregate_dir(dir, aggregate_type, aggregate_id)?)?.is_empty() {
            return Err(StoreError::NotFound(format!(
                "an archive of {aggregate_type} {aggregate_id} in {}",
                dir.display()
            )));
        }
        for _ in 0..5 {
            let history = self.full_history(aggregate_type, aggregate_id, dir).await?;
            let mut conn = self.connection();
            let _: i64 = conn.del(&rebuilt).await?;
            for chunk in history.chunks(500) {
                let mut pipe = redis::pipe();
                for rec in chunk {
                    let e = &rec.envelope;
                    pipe.cmd("XADD")
                        .arg(&rebuilt)
                        .arg(format!("0-{}", e.version))
                        .arg("event_id")
                        .arg(e.event_id.to_string())
                        .arg("event_type")
                        .arg(&e.event_type)
                        .arg("schema_version")
                        .arg(e.schema_version)
                        .arg("content_type")
                        .arg(&rec.content_type)
                        .arg("data")
                        .arg(&rec.data)
                        .arg("metadata")
                        .arg(serde_json::to_string(&e.metadata).map_err(err)?)
                        .arg("created_at")
                        .arg(e.recorded_at_ms)
                        .arg("checksum")
                        .arg(crate::checksum(&rec.data))
                        .ignore();
                }
                let _: () = pipe.query_async(&mut conn).await?;
            }
            let swapped: i64 = redis::Script::new(include_str!("restore.lua"))
                .key(&stream)
                .key(&rebuilt)
                .key(&trimmed_key)
                .arg(history.len())
                .invoke_async(&mut conn)
                .await?;
            if swapped == 1 {
                return Ok(history.len() as u64);
            }
        }
        Err(err(format!("{stream} kept changing during the restore; try again")))
    }
}
