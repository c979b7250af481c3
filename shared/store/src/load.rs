//! Loading an aggregate, written once for every [`EventStore`]: the storage
//! strategy decides where the state comes from (snapshot + later events, or
//! the state hash), and one fold turns stored events into state.

use allies_core::{Aggregate, Snapshot};

use crate::store::{AsOf, EventStore, Storage, StoredState};
use crate::{RecordedEvent, StoreError, keys};

pub(crate) const PAGE: usize = 1000;

/// An aggregate as loaded.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    /// 0 when the aggregate does not exist.
    pub version: u64,
    /// The snapshot the load started from (version, taken at ms), if any.
    pub snapshot: Option<(u64, i64)>,
}

/// Folds stored events into `state`, checking that they continue `version`
/// without a gap. The one place events become state.
pub fn fold<A: Aggregate>(state: &mut A, version: &mut u64, events: &[RecordedEvent]) -> Result<(), StoreError> {
    fold_seen(state, version, events, |_: &A::Event, _| {})
}

/// [`fold`], handing each event to `seen` once it is in the state (a live
/// view broadcasting what changed).
pub fn fold_seen<A: Aggregate>(
    state: &mut A,
    version: &mut u64,
    events: &[RecordedEvent],
    mut seen: impl FnMut(&A::Event, &RecordedEvent),
) -> Result<(), StoreError> {
    for rec in events {
        let env = &rec.envelope;
        let stream = || format!("{}/{}", env.aggregate_type, env.aggregate_id);
        if env.version != *version + 1 {
            return Err(StoreError::Corrupt {
                stream: stream(),
                entry: env.version.to_string(),
                reason: format!("expected version {}, found {}", *version + 1, env.version),
            });
        }
        let event = rec.typed::<A::Event>()?;
        state.evolve(&event.payload);
        *version = env.version;
        seen(&event.payload, rec);
    }
    Ok(())
}

/// Folds every event after `version` into `state` (catching a cached state
/// up). Returns how many were applied.
pub async fn catch_up<A: Aggregate>(
    store: &dyn EventStore,
    aggregate_id: &str,
    state: &mut A,
    version: &mut u64,
) -> Result<usize, StoreError> {
    catch_up_seen(store, aggregate_id, state, version, |_: &A::Event, _| {}).await
}

/// [`catch_up`], handing each event to `seen` (see [`fold_seen`]).
pub async fn catch_up_seen<A: Aggregate>(
    store: &dyn EventStore,
    aggregate_id: &str,
    state: &mut A,
    version: &mut u64,
    mut seen: impl FnMut(&A::Event, &RecordedEvent),
) -> Result<usize, StoreError> {
    let mut applied = 0;
    loop {
        let page = store.read(A::TYPE, aggregate_id, *version + 1, PAGE).await?;
        fold_seen(state, version, &page, &mut seen)?;
        applied += page.len();
        if page.len() < PAGE {
            return Ok(applied);
        }
    }
}

fn decode_state<A: Snapshot>(stored: &StoredState) -> Option<A> {
    (stored.schema == A::SNAPSHOT_SCHEMA).then(|| serde_json::from_slice(&stored.data).ok()).flatten()
}

/// Loads an aggregate the way its type is stored: event_sourced from its
/// snapshot + the events after it; state_based from its state hash; hybrid
/// from the state hash, falling back to the events. A snapshot of another
/// schema, with a bad checksum or that does not deserialize is never
/// trusted: the state is rebuilt from events and the snapshot replaced.
pub async fn load<A: Snapshot>(store: &dyn EventStore, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
    load_from(store, aggregate_id, &A::default()).await
}

/// As [`load`], building the state from `seed` (the empty state carrying
/// what the aggregate takes from outside its events, see
/// `Aggregate::adopt`): events are folded into a copy of it, a state read
/// back from a snapshot or a state hash adopts it.
pub async fn load_from<A: Snapshot>(
    store: &dyn EventStore,
    aggregate_id: &str,
    seed: &A,
) -> Result<Loaded<A>, StoreError> {
    let storage = store.storage_of(A::TYPE);
    if storage != Storage::EventSourced {
        match store.state(A::TYPE, aggregate_id).await? {
            Some(Ok(stored)) => match decode_state::<A>(&stored) {
                Some(mut state) => {
                    state.adopt(seed);
                    return Ok(Loaded { state, version: stored.version, snapshot: None });
                }
                None if storage == Storage::StateBased => {
                    return Err(StoreError::Corrupt {
                        stream: keys::state_key(A::TYPE, store.partition_of(aggregate_id), aggregate_id),
                        entry: stored.version.to_string(),
                        reason: format!(
                            "state of schema {} does not deserialize as schema {}, and there are no events to rebuild it from",
                            stored.schema,
                            A::SNAPSHOT_SCHEMA
                        ),
                    });
                }
                None => {}
            },
            Some(Err(damage)) if storage == Storage::StateBased => {
                return Err(StoreError::Corrupt { stream: damage, entry: "state".into(), reason: "unusable".into() });
            }
            None if storage == Storage::StateBased => {
                return Ok(Loaded { state: seed.clone(), version: 0, snapshot: None });
            }
            // hybrid without a usable state: the events are there.
            _ => {}
        }
    }
    load_from_snapshot(store, aggregate_id, seed).await
}

async fn load_from_snapshot<A: Snapshot>(
    store: &dyn EventStore,
    aggregate_id: &str,
    seed: &A,
) -> Result<Loaded<A>, StoreError> {
    let snapshot = store.snapshot(A::TYPE, aggregate_id).await?;
    if let Some(Ok(stored)) = &snapshot
        && let Some(mut state) = decode_state::<A>(stored)
    {
        state.adopt(seed);
        let mut version = stored.version;
        catch_up(store, aggregate_id, &mut state, &mut version).await?;
        return Ok(Loaded { state, version, snapshot: Some((stored.version, stored.taken_at_ms)) });
    }
    let (mut state, mut version) = (seed.clone(), 0);
    catch_up(store, aggregate_id, &mut state, &mut version).await?;
    if snapshot.is_some() {
        tracing::warn!(
            aggregate_type = A::TYPE,
            aggregate_id,
            "snapshot unusable (schema, checksum or shape); rebuilt from events and replaced"
        );
        store.delete_snapshot(A::TYPE, aggregate_id).await?;
        save_snapshot(store, aggregate_id, &state, version, now_ms()).await?;
    }
    Ok(Loaded { state, version, snapshot: None })
}

/// Stores `state` at `version` as the aggregate's snapshot (unless a newer one exists).
pub async fn save_snapshot<A: Snapshot>(
    store: &dyn EventStore,
    aggregate_id: &str,
    state: &A,
    version: u64,
    taken_at_ms: i64,
) -> Result<bool, StoreError> {
    let data = serde_json::to_vec(state).map_err(|e| StoreError::Corrupt {
        stream: format!("{}/{aggregate_id}", A::TYPE),
        entry: version.to_string(),
        reason: format!("state does not serialize: {e}"),
    })?;
    store
        .save_snapshot(A::TYPE, aggregate_id, StoredState { version, schema: A::SNAPSHOT_SCHEMA, data, taken_at_ms })
        .await
}

/// Time travel: the aggregate's state as of a version or a time, folded from
/// its events, and the version that state has (0 if nothing had happened yet).
pub async fn load_as_of<A: Aggregate>(
    store: &dyn EventStore,
    aggregate_id: &str,
    as_of: AsOf,
) -> Result<(A, u64), StoreError> {
    load_as_of_from(store, aggregate_id, as_of, A::default()).await
}

/// As [`load_as_of`], folding into `seed`.
pub async fn load_as_of_from<A: Aggregate>(
    store: &dyn EventStore,
    aggregate_id: &str,
    as_of: AsOf,
    seed: A,
) -> Result<(A, u64), StoreError> {
    let (mut state, mut version) = (seed, 0u64);
    loop {
        let page = store.read(A::TYPE, aggregate_id, version + 1, PAGE).await?;
        let n = page.len();
        let keep: Vec<RecordedEvent> = page
            .into_iter()
            .take_while(|r| match as_of {
                AsOf::Version(v) => r.envelope.version <= v,
                AsOf::Time(t) => r.envelope.recorded_at_ms <= t,
            })
            .collect();
        let stopped = keep.len() < n;
        fold(&mut state, &mut version, &keep)?;
        if stopped || n < PAGE {
            return Ok((state, version));
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Typed conveniences over any [`EventStore`].
#[async_trait::async_trait]
pub trait EventStoreExt: EventStore {
    /// Encodes and appends an aggregate's typed events.
    async fn append_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        expected: allies_core::ExpectedVersion,
        metadata: &allies_core::Metadata,
        recorded_at_ms: i64,
        events: &[A::Event],
    ) -> Result<crate::AppendOutcome, crate::AppendError>
    where
        A::Event: Sync,
    {
        let request =
            crate::AppendRequest::typed::<A>(aggregate_id, expected, metadata, recorded_at_ms, events, self.format())?;
        self.append(request).await
    }

    /// Folds every event of an aggregate (no snapshot): state and version.
    async fn load_events<A: Aggregate + Send>(&self, aggregate_id: &str) -> Result<(A, u64), StoreError>
    where
        Self: Sized,
    {
        let (mut state, mut version) = (A::default(), 0);
        catch_up(self, aggregate_id, &mut state, &mut version).await?;
        Ok((state, version))
    }
}

impl<T: EventStore + ?Sized> EventStoreExt for T {}
