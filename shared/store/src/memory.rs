//! An in-memory [`EventStore`] for application tests: the same contract as
//! Redis (version checks, idempotency records, state hashes, snapshots,
//! publications) without a server. Not for production: nothing is durable
//! and nothing is shared between processes.

use std::collections::HashMap;
use std::sync::Mutex;

use allies_core::{EventEnvelope, EventFormat, ExpectedVersion, SnapshotPolicy};

use crate::store::{
    AppendOutcome, AppendRequest, CommandRecord, Damaged, EventStore, Publication, Storage, StoredState,
};
use crate::{AppendError, RecordedEvent, StoreError, keys};

#[derive(Default)]
struct Inner {
    streams: HashMap<(String, String), Vec<RecordedEvent>>,
    states: HashMap<(String, String), StoredState>,
    snapshots: HashMap<(String, String), StoredState>,
    commands: HashMap<(String, String, String), (String, AppendOutcome)>,
    /// Every appended event in commit order (the partition logs, merged).
    log: Vec<RecordedEvent>,
    published: Vec<Publication>,
}

/// See the module documentation.
#[derive(Default)]
pub struct MemoryEventStore {
    inner: Mutex<Inner>,
    storage: HashMap<String, Storage>,
    snapshot_policy: SnapshotPolicy,
    partitions: u32,
}

impl MemoryEventStore {
    pub fn new() -> Self {
        Self { partitions: 16, ..Default::default() }
    }

    pub fn with_storage(mut self, aggregate_type: &str, storage: Storage) -> Self {
        self.storage.insert(aggregate_type.to_owned(), storage);
        self
    }

    pub fn with_snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    /// Every event appended so far, in commit order.
    pub fn log(&self) -> Vec<RecordedEvent> {
        self.inner.lock().map(|i| i.log.clone()).unwrap_or_default()
    }

    /// Every integration event published so far.
    pub fn published(&self) -> Vec<Publication> {
        self.inner.lock().map(|i| i.published.clone()).unwrap_or_default()
    }

    /// The stored snapshot of an aggregate, if any.
    pub fn snapshot_of(&self, aggregate_type: &str, aggregate_id: &str) -> Option<StoredState> {
        self.inner.lock().ok()?.snapshots.get(&(aggregate_type.to_owned(), aggregate_id.to_owned())).cloned()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Corrupt {
            stream: "memory".into(),
            entry: "-".into(),
            reason: "poisoned".into(),
        })
    }
}

#[async_trait::async_trait]
impl EventStore for MemoryEventStore {
    fn storage_of(&self, aggregate_type: &str) -> Storage {
        self.storage.get(aggregate_type).copied().unwrap_or_default()
    }

    fn snapshot_policy(&self) -> SnapshotPolicy {
        self.snapshot_policy
    }

    fn format(&self) -> EventFormat {
        EventFormat::Json
    }

    fn partition_of(&self, aggregate_id: &str) -> u32 {
        keys::partition_of(aggregate_id, self.partitions.max(1))
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let storage = self.storage_of(&request.aggregate_type);
        request.validate(storage)?;
        let key = (request.aggregate_type.clone(), request.aggregate_id.clone());
        let partition = self.partition_of(&request.aggregate_id);
        let mut inner = self.lock()?;
        if let Some(c) = &request.command {
            let ck = (key.0.clone(), key.1.clone(), c.key_id().into_owned());
            if let Some((fingerprint, first)) = inner.commands.get(&ck) {
                if *fingerprint != c.fingerprint {
                    return Err(AppendError::CommandIdReused { command_id: c.id.clone() });
                }
                return Ok(AppendOutcome { duplicate: true, ..first.clone() });
            }
        }
        let current = match storage {
            Storage::StateBased => inner.states.get(&key).map(|s| s.version).unwrap_or(0),
            _ => inner.streams.get(&key).map(|s| s.len() as u64).unwrap_or(0),
        };
        let ok = match request.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => v == current,
        };
        if !ok {
            return Err(AppendError::Conflict { expected: request.expected, actual: current });
        }
        let mut log_ids = Vec::new();
        for (i, e) in request.events.iter().enumerate() {
            let rec = RecordedEvent {
                envelope: EventEnvelope {
                    event_id: e.event_id,
                    aggregate_type: key.0.clone(),
                    aggregate_id: key.1.clone(),
                    version: current + i as u64 + 1,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    metadata: request.metadata.clone(),
                    recorded_at_ms: request.recorded_at_ms,
                    payload: (),
                },
                content_type: e.content_type.clone(),
                data: e.data.clone(),
            };
            log_ids.push(format!("{}-0", inner.log.len() + 1));
            inner.log.push(rec.clone());
            if storage != Storage::StateBased {
                inner.streams.entry(key.clone()).or_default().push(rec);
            }
        }
        let version = current + request.events.len() as u64;
        if let (Some((data, schema)), Storage::StateBased | Storage::Hybrid) = (&request.aggregate_state, storage) {
            inner.states.insert(
                key.clone(),
                StoredState { version, schema: *schema, data: data.clone(), taken_at_ms: request.recorded_at_ms },
            );
        }
        inner.published.extend(request.publish.iter().cloned());
        let last = log_ids.last().cloned().unwrap_or_default();
        let outcome = AppendOutcome {
            version,
            partition,
            log_ids,
            consistency_token: format!("{}.{partition}@{last}", key.0),
            duplicate: false,
        };
        if let Some(c) = &request.command {
            inner.commands.insert((key.0, key.1, c.key_id().into_owned()), (c.fingerprint.clone(), outcome.clone()));
        }
        Ok(outcome)
    }

    async fn read(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock()?;
        let events = inner.streams.get(&(aggregate_type.to_owned(), aggregate_id.to_owned()));
        Ok(events.map(|e| e.iter().skip(from.max(1) as usize - 1).take(limit).cloned().collect()).unwrap_or_default())
    }

    async fn snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Result<StoredState, Damaged>>, StoreError> {
        Ok(self.lock()?.snapshots.get(&(aggregate_type.to_owned(), aggregate_id.to_owned())).cloned().map(Ok))
    }

    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        snapshot: StoredState,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let key = (aggregate_type.to_owned(), aggregate_id.to_owned());
        if inner.snapshots.get(&key).is_some_and(|s| s.schema == snapshot.schema && s.version >= snapshot.version) {
            return Ok(false);
        }
        inner.snapshots.insert(key, snapshot);
        Ok(true)
    }

    async fn delete_snapshot(&self, aggregate_type: &str, aggregate_id: &str) -> Result<(), StoreError> {
        self.lock()?.snapshots.remove(&(aggregate_type.to_owned(), aggregate_id.to_owned()));
        Ok(())
    }

    async fn state(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Result<StoredState, Damaged>>, StoreError> {
        Ok(self.lock()?.states.get(&(aggregate_type.to_owned(), aggregate_id.to_owned())).cloned().map(Ok))
    }

    async fn command_outcome(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command: &CommandRecord,
    ) -> Result<Option<AppendOutcome>, AppendError> {
        let inner = self.lock()?;
        match inner.commands.get(&(aggregate_type.to_owned(), aggregate_id.to_owned(), command.key_id().into_owned())) {
            Some((f, _)) if *f != command.fingerprint => {
                Err(AppendError::CommandIdReused { command_id: command.id.clone() })
            }
            Some((_, outcome)) => Ok(Some(AppendOutcome { duplicate: true, ..outcome.clone() })),
            None => Ok(None),
        }
    }
}
