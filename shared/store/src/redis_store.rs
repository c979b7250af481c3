//! The Redis implementation of [`EventStore`], and the Redis-only operations
//! operators and read sides need (paged history, one state field, the
//! shared connection). Archive and restore are in [`archive`](crate::archive).

use std::collections::HashMap;
use std::sync::Arc;

use allies_core::{EventFormat, ExpectedVersion, SnapshotPolicy};
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Value};

use crate::store::{AppendOutcome, AppendRequest, CommandRecord, Damaged, EventStore, Storage, StoredState};
use crate::{AppendError, RecordedEvent, RedisConn, RedisTarget, StoreError, checksum, keys};

const READ_PAGE: usize = 1000;

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

/// The Redis event store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RedisEventStore {
    conn: RedisConn,
    partitions: u32,
    storage: Arc<HashMap<String, Storage>>,
    default_storage: Storage,
    snapshot_policy: SnapshotPolicy,
    format: EventFormat,
    snapshot_compression: SnapshotCompression,
    append_script: redis::Script,
    snapshot_script: redis::Script,
    replicas: ReplicaAcks,
}

/// How many replicas must hold an append before it is acknowledged
/// (`WAIT`), and how long to wait for them. Off (0) by default: Redis
/// replicates asynchronously, so a failover can lose the last
/// acknowledged appends of the failed master (see README, Redis Cluster).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaAcks {
    pub replicas: u32,
    pub timeout: std::time::Duration,
}

impl RedisEventStore {
    /// Connects to Redis or Redis Cluster (see [`RedisTarget::parse`]).
    /// `partitions` is P in `partition = hash(id) mod P`; it must stay the
    /// same for the lifetime of the data.
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
            snapshot_policy: SnapshotPolicy::default(),
            format: EventFormat::Json,
            snapshot_compression: SnapshotCompression::Lz4,
            append_script: redis::Script::new(include_str!("append.lua")),
            snapshot_script: redis::Script::new(include_str!("snapshot.lua")),
            replicas: ReplicaAcks::default(),
        }
    }

    /// Acknowledge an append only once `acks.replicas` replicas hold it.
    pub fn with_replica_acks(mut self, acks: ReplicaAcks) -> Self {
        self.replicas = acks;
        self
    }

    /// With replica acks on: waits until enough replicas hold every write
    /// up to now on the master of `stream`'s slot; a shortfall is
    /// [`AppendError::NotReplicated`] (written, not acknowledged: a retry
    /// with the same command id answers it without writing again). `probe`
    /// writes first, for an answer that another connection wrote.
    async fn confirm_replicated(&self, stream: &str, probe: bool) -> Result<(), AppendError> {
        let ReplicaAcks { replicas, timeout } = self.replicas;
        if replicas == 0 {
            return Ok(());
        }
        let probe_key = probe.then(|| format!("{}:replicated", stream.split(":stream:").next().unwrap_or(stream)));
        let acked = self.conn.clone().wait_for_replicas(stream, replicas, timeout, probe_key.as_deref()).await?;
        if acked < replicas {
            return Err(AppendError::NotReplicated { stream: stream.to_owned(), acked, wanted: replicas });
        }
        Ok(())
    }

    /// Writes new events in `format` (reading handles both).
    pub fn with_format(mut self, format: EventFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets the storage strategy per aggregate type, and for the others.
    pub fn with_storage(mut self, per_type: HashMap<String, Storage>, default: Storage) -> Self {
        self.storage = Arc::new(per_type);
        self.default_storage = default;
        self
    }

    pub fn with_snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    pub fn with_snapshot_compression(mut self, compression: SnapshotCompression) -> Self {
        self.snapshot_compression = compression;
        self
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// A shared connection for other short commands (never for blocking ones).
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
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

    /// One page of an aggregate's history as stored: events with version
    /// `from..=to` (`to` None: to the end), at most `limit`. No continuity
    /// check: this is the operator's view of what is there.
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

    /// Whether anything is stored for the aggregate: events, trimmed events
    /// or a state hash.
    pub async fn exists(&self, aggregate_type: &str, aggregate_id: &str) -> Result<bool, StoreError> {
        let p = self.partition_of(aggregate_id);
        let mut conn = self.conn.clone();
        let n: u64 = redis::cmd("EXISTS")
            .arg(keys::stream_key(aggregate_type, p, aggregate_id))
            .arg(keys::trimmed_key(aggregate_type, p, aggregate_id))
            .arg(keys::state_key(aggregate_type, p, aggregate_id))
            .query_async(&mut conn)
            .await?;
        Ok(n > 0)
    }

    fn read_stored(
        &self,
        key: &str,
        fields: &HashMap<String, Vec<u8>>,
        data_field: &str,
    ) -> Result<StoredState, Damaged> {
        let text = |f: &str| fields.get(f).and_then(|v| std::str::from_utf8(v).ok());
        let schema: u32 = text("schema").and_then(|s| s.parse().ok()).ok_or("no schema")?;
        let version: u64 = text("version").and_then(|s| s.parse().ok()).ok_or("no version")?;
        let taken_at_ms: i64 = text("taken_at_ms").and_then(|s| s.parse().ok()).unwrap_or(0);
        let raw = fields.get(data_field).ok_or("no data")?;
        if let Some(sum) = text("checksum")
            && sum != checksum(raw)
        {
            return Err(format!("{key}: checksum mismatch"));
        }
        let data = match text("encoding").unwrap_or("json") {
            "json" => raw.clone(),
            "json+lz4" => lz4_flex::decompress_size_prepended(raw).map_err(|e| format!("{key}: {e}"))?,
            other => return Err(format!("{key}: unknown encoding {other}")),
        };
        Ok(StoredState { version, schema, data, taken_at_ms })
    }
}

#[async_trait::async_trait]
impl EventStore for RedisEventStore {
    async fn history(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        archive_dir: &std::path::Path,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.full_history(aggregate_type, aggregate_id, archive_dir).await
    }

    fn storage_of(&self, aggregate_type: &str) -> Storage {
        self.storage.get(aggregate_type).copied().unwrap_or(self.default_storage)
    }

    fn snapshot_policy(&self) -> SnapshotPolicy {
        self.snapshot_policy
    }

    fn format(&self) -> EventFormat {
        self.format
    }

    fn partition_of(&self, aggregate_id: &str) -> u32 {
        keys::partition_of(aggregate_id, self.partitions)
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let storage = self.storage_of(&request.aggregate_type);
        request.validate(storage)?;
        let (atype, aid) = (request.aggregate_type.as_str(), request.aggregate_id.as_str());
        let partition = self.partition_of(aid);
        let stream = keys::stream_key(atype, partition, aid);
        let meta =
            serde_json::to_string(&request.metadata).map_err(|e| AppendError::Invalid(format!("metadata: {e}")))?;
        let command_id = request.command.as_ref().map(|c| c.key_id()).unwrap_or_default();
        let state = request.state_fields.as_ref();
        let (fields, expire_at) = state.map_or((&[][..], 0), |s| (&s.fields[..], s.expire_at_ms.unwrap_or(0)));
        // One EVALSHA built in place: every value is written once into the
        // command's buffer (a script invocation would hold each in a vector
        // of its own first, then copy it), the packed event too.
        let nkeys = 5 + request.publish.len();
        let bytes = meta.len() * (1 + request.events.len())
            + request.events.iter().map(|e| 2 * e.data.len() + 256).sum::<usize>()
            + request.publish.iter().map(|p| p.event.data.len() + 128).sum::<usize>()
            + fields.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>()
            + 512;
        let args = 3 + nkeys + 15 + 2 * fields.len() + 7 * request.events.len() + 6 * request.publish.len();
        let mut cmd = redis::Cmd::with_capacity(args, bytes);
        cmd.arg("EVALSHA").arg(self.append_script.get_hash()).arg(nkeys);
        cmd.arg(&stream)
            .arg(keys::log_key(atype, partition))
            .arg(keys::state_key(atype, partition, aid))
            .arg(keys::command_key(atype, partition, aid, &command_id))
            .arg(keys::trimmed_key(atype, partition, aid));
        for p in &request.publish {
            cmd.arg(keys::integration_key(&p.topic, atype, partition, p.priority));
        }
        match request.expected {
            ExpectedVersion::Any => cmd.arg("any"),
            ExpectedVersion::NoStream => cmd.arg("none"),
            ExpectedVersion::Exact(v) => cmd.arg(v),
        };
        cmd.arg(atype).arg(aid).arg(&meta).arg(request.recorded_at_ms).arg(request.events.len());
        cmd.arg(fields.len()).arg(expire_at);
        match &request.command {
            Some(c) => cmd.arg(&c.id).arg(&c.fingerprint).arg(c.ttl.as_millis().max(1) as u64),
            None => cmd.arg("").arg("").arg(0),
        };
        cmd.arg(storage.as_str());
        match (&request.aggregate_state, storage) {
            (Some((data, schema)), Storage::StateBased | Storage::Hybrid) => cmd.arg(data).arg(*schema),
            _ => cmd.arg("").arg(0),
        };
        cmd.arg(request.publish.len());
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        let created_at = request.recorded_at_ms.to_string();
        for e in &request.events {
            let (id, schema, sum) = (e.event_id.to_string(), e.schema_version.to_string(), checksum(&e.data));
            cmd.arg(&id).arg(&e.event_type).arg(&schema).arg(&e.content_type).arg(&e.data).arg(&sum);
            cmd.arg(crate::event::Packed([
                e.event_type.as_bytes(),
                atype.as_bytes(),
                aid.as_bytes(),
                id.as_bytes(),
                schema.as_bytes(),
                e.content_type.as_bytes(),
                created_at.as_bytes(),
                sum.as_bytes(),
                meta.as_bytes(),
                &e.data,
            ]));
        }
        for e in request.publish.iter().map(|p| &p.event) {
            cmd.arg(e.event_id.to_string())
                .arg(&e.event_type)
                .arg(e.schema_version)
                .arg(&e.content_type)
                .arg(&e.data)
                .arg(checksum(&e.data));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = eval_sha(&self.append_script, &cmd, &mut conn).await.map_err(|e| {
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
        let sent_id = request.command.as_ref().map(|c| c.id.as_str()).unwrap_or("");
        let outcome = parse_append_reply(&stream, request.expected, partition, atype, reply, sent_id)?;
        self.confirm_replicated(&stream, outcome.duplicate).await?;
        Ok(outcome)
    }

    async fn read(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = from.max(1);
        let partition = self.partition_of(aggregate_id);
        let stream = keys::stream_key(aggregate_type, partition, aggregate_id);
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        loop {
            let start = format!("0-{}", from + out.len() as u64);
            let want = (limit - out.len()).min(READ_PAGE);
            let page: StreamRangeReply = conn.xrange_count(&stream, &start, "+", want).await?;
            let n = page.ids.len();
            for entry in &page.ids {
                let rec = RecordedEvent::from_entry(&stream, entry)?;
                let expected_version = from + out.len() as u64;
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
            if n < want || out.len() >= limit {
                if out.is_empty() {
                    // Nothing from here on: fine, unless these versions were trimmed.
                    let trimmed: Option<u64> =
                        conn.get(keys::trimmed_key(aggregate_type, partition, aggregate_id)).await?;
                    if let Some(t) = trimmed.filter(|t| from <= *t) {
                        return Err(StoreError::Trimmed { stream, wanted: from, first_kept: t + 1 });
                    }
                }
                return Ok(out);
            }
        }
    }

    async fn snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Result<StoredState, Damaged>>, StoreError> {
        let key = keys::snapshot_key(aggregate_type, self.partition_of(aggregate_id), aggregate_id);
        let mut conn = self.conn.clone();
        let fields: HashMap<String, Vec<u8>> = conn.hgetall(&key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.read_stored(&key, &fields, "data")))
    }

    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        snapshot: StoredState,
    ) -> Result<bool, StoreError> {
        if snapshot.version == 0 {
            return Ok(false);
        }
        let key = keys::snapshot_key(aggregate_type, self.partition_of(aggregate_id), aggregate_id);
        let (data, encoding) = match self.snapshot_compression {
            SnapshotCompression::None => (snapshot.data, "json"),
            SnapshotCompression::Lz4 => (lz4_flex::compress_prepend_size(&snapshot.data), "json+lz4"),
        };
        let mut conn = self.conn.clone();
        let written: i64 = self
            .snapshot_script
            .key(&key)
            .arg(snapshot.version)
            .arg(snapshot.schema)
            .arg(&data)
            .arg(checksum(&data))
            .arg(snapshot.taken_at_ms)
            .arg(encoding)
            .invoke_async(&mut conn)
            .await?;
        Ok(written == 1)
    }

    async fn delete_snapshot(&self, aggregate_type: &str, aggregate_id: &str) -> Result<(), StoreError> {
        let key = keys::snapshot_key(aggregate_type, self.partition_of(aggregate_id), aggregate_id);
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(&key).await?;
        Ok(())
    }

    async fn state(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Result<StoredState, Damaged>>, StoreError> {
        let key = keys::state_key(aggregate_type, self.partition_of(aggregate_id), aggregate_id);
        let mut conn = self.conn.clone();
        let (version, schema, state): (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>) =
            redis::cmd("HMGET").arg(&key).arg("version").arg("schema").arg("state").query_async(&mut conn).await?;
        match (version, schema, state) {
            (None, _, _) => Ok(None),
            (Some(v), Some(s), Some(data)) => {
                let fields: HashMap<String, Vec<u8>> =
                    [("version".to_owned(), v), ("schema".to_owned(), s), ("state".to_owned(), data)].into();
                Ok(Some(self.read_stored(&key, &fields, "state")))
            }
            // A state hash with only extra fields (a session's status), or half-written.
            _ => Ok(Some(Err(format!("{key}: no serialized state")))),
        }
    }

    async fn command_outcome(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command: &CommandRecord,
    ) -> Result<Option<AppendOutcome>, AppendError> {
        let partition = self.partition_of(aggregate_id);
        let key = keys::command_key(aggregate_type, partition, aggregate_id, &command.key_id());
        let mut conn = self.conn.clone();
        let corrupt =
            || StoreError::Corrupt { stream: key.clone(), entry: "-".into(), reason: "bad command record".into() };
        // '<version> <log id>...\n<fingerprint>' (append.lua), or a hash
        // of the older layout until the last one expires.
        let record: Result<Option<String>, redis::RedisError> =
            redis::cmd("GET").arg(&key).query_async(&mut conn).await;
        let (fingerprint, reply) = match record {
            Ok(None) => return Ok(None),
            Ok(Some(record)) => {
                let (head, fingerprint) = record.split_once('\n').ok_or_else(corrupt)?;
                let mut parts = head.split(' ');
                let version: i64 = parts.next().and_then(|v| v.parse().ok()).ok_or_else(corrupt)?;
                let reply = [Value::SimpleString("ok".into()), Value::Int(version)]
                    .into_iter()
                    .chain(parts.map(|id| Value::BulkString(id.as_bytes().to_vec())))
                    .collect();
                (fingerprint.to_owned(), reply)
            }
            Err(e) if e.code() == Some("WRONGTYPE") => {
                let (fingerprint, result): (Option<String>, Option<String>) =
                    redis::cmd("HMGET").arg(&key).arg("fingerprint").arg("result").query_async(&mut conn).await?;
                let (Some(fingerprint), Some(result)) = (fingerprint, result) else { return Ok(None) };
                let items: Vec<serde_json::Value> = serde_json::from_str(&result).map_err(|_| corrupt())?;
                let reply: Vec<Value> = items
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::Number(n) => Value::Int(n.as_i64().unwrap_or_default()),
                        other => Value::BulkString(other.as_str().unwrap_or_default().as_bytes().to_vec()),
                    })
                    .collect();
                (fingerprint, reply)
            }
            Err(e) => return Err(e.into()),
        };
        if fingerprint != command.fingerprint {
            return Err(AppendError::CommandIdReused { command_id: command.id.clone() });
        }
        let stream = keys::stream_key(aggregate_type, partition, aggregate_id);
        let mut outcome =
            parse_append_reply(&stream, ExpectedVersion::Any, partition, aggregate_type, reply, &command.id)?;
        outcome.duplicate = true;
        self.confirm_replicated(&stream, true).await?;
        Ok(Some(outcome))
    }
}

/// Runs an EVALSHA command of `script` (built by the caller, arguments in
/// place); when Redis does not know the script yet (a restart, a flush, a
/// new node), loads it and runs the command again.
async fn eval_sha<T: redis::FromRedisValue>(
    script: &redis::Script,
    cmd: &redis::Cmd,
    conn: &mut RedisConn,
) -> redis::RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

fn parse_append_reply(
    stream: &str,
    expected: ExpectedVersion,
    partition: u32,
    aggregate_type: &str,
    reply: Vec<Value>,
    command_id: &str,
) -> Result<AppendOutcome, AppendError> {
    let bad = |what: &str| {
        AppendError::Store(StoreError::Corrupt {
            stream: stream.to_owned(),
            entry: "-".into(),
            reason: format!("unexpected append reply: {what}"),
        })
    };
    fn bytes(v: &Value) -> Option<&[u8]> {
        match v {
            Value::BulkString(b) => Some(b),
            Value::SimpleString(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    let int = |v: &Value| -> Option<u64> {
        match v {
            Value::Int(i) => u64::try_from(*i).ok(),
            other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
        }
    };
    let text = |v: Value| -> Option<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b).ok(),
            Value::SimpleString(s) => Some(s),
            _ => None,
        }
    };
    let status = reply.first().and_then(bytes).ok_or_else(|| bad("no status"))?;
    if status == b"mismatch" {
        return Err(AppendError::CommandIdReused { command_id: command_id.to_owned() });
    }
    let version = reply.get(1).and_then(int).ok_or_else(|| bad("no version"))?;
    match status {
        b"conflict" => Err(AppendError::Conflict { expected, actual: version }),
        b"ok" | b"duplicate" => {
            let duplicate = status == b"duplicate";
            let log_ids =
                reply.into_iter().skip(2).map(text).collect::<Option<Vec<_>>>().ok_or_else(|| bad("log ids"))?;
            let last = log_ids.last().ok_or_else(|| bad("no log ids"))?;
            Ok(AppendOutcome {
                version,
                partition,
                consistency_token: format!("{aggregate_type}.{partition}@{last}"),
                log_ids,
                duplicate,
            })
        }
        other => Err(bad(&String::from_utf8_lossy(other))),
    }
}
