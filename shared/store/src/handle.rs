//! Long-lived handles on hot aggregates: the state stays in memory, a
//! command decides on it, folds its events in place (no copy of the state
//! per command) and appends with the exact version, and only a conflict
//! (another replica wrote meanwhile) reads anything: the aggregate is
//! loaded again (snapshot and the events after it), then the command is
//! decided again.
//! A refusal or a "nothing to do" is checked the same way (one read of
//! anything newer) before it is answered, so no replica refuses, or skips a
//! step, on a state another one already changed.
//! Commands on one handle are serialized, so one replica never conflicts
//! with itself; several replicas stay correct through the version check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use allies_core::{Aggregate, CommandContext, Snapshot};
use tokio::sync::Mutex as AsyncMutex;

use crate::executor::{Attempt, CommandExecutor, ExecuteError, Executed, Options, jitter};
use crate::load;
use crate::store::Storage;

struct Cached<A> {
    state: Arc<A>,
    version: u64,
    snapshot: Option<(u64, i64)>,
}

/// See the module documentation.
pub struct AggregateHandle<A: Aggregate> {
    executor: CommandExecutor,
    id: String,
    cached: AsyncMutex<Option<Cached<A>>>,
}

impl<A: Snapshot> AggregateHandle<A>
where
    A::Command: Sync,
    A::Event: Sync,
{
    pub fn new(executor: CommandExecutor, id: &str) -> Self {
        Self { executor, id: id.to_owned(), cached: AsyncMutex::new(None) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    async fn ensure(&self, cached: &mut Option<Cached<A>>) -> Result<(), crate::StoreError> {
        if cached.is_none() {
            let loaded = load::load::<A>(&**self.executor.store(), &self.id).await?;
            *cached =
                Some(Cached { state: Arc::new(loaded.state), version: loaded.version, snapshot: loaded.snapshot });
        }
        Ok(())
    }

    /// Brings the cached state up to what the store holds.
    async fn refresh(&self, cached: &mut Cached<A>) -> Result<(), crate::StoreError> {
        let store = self.executor.store();
        if store.storage_of(A::TYPE) == Storage::StateBased {
            let loaded = load::load::<A>(&**store, &self.id).await?;
            (cached.state, cached.version) = (Arc::new(loaded.state), loaded.version);
        } else {
            // One read; the state is copied (if a reply still holds it)
            // only when there is news.
            let news = store.read(A::TYPE, &self.id, cached.version + 1, load::PAGE).await?;
            if news.is_empty() {
                return Ok(());
            }
            let state = Arc::make_mut(&mut cached.state);
            load::fold(state, &mut cached.version, &news)?;
            if news.len() == load::PAGE {
                load::catch_up(&**store, &self.id, state, &mut cached.version).await?;
            }
        }
        Ok(())
    }

    /// The state as this replica knows it, caught up with the store.
    pub async fn current(&self) -> Result<(Arc<A>, u64), crate::StoreError> {
        let mut guard = self.cached.lock().await;
        self.ensure(&mut guard).await?;
        let Some(cached) = guard.as_mut() else { unreachable!("ensured above") };
        self.refresh(cached).await?;
        Ok((cached.state.clone(), cached.version))
    }

    /// The cached state without asking the store (None before the first use).
    pub async fn cached(&self) -> Option<(Arc<A>, u64)> {
        self.cached.lock().await.as_ref().map(|c| (c.state.clone(), c.version))
    }

    /// Runs a command on the cached state (see the module documentation).
    pub async fn execute(
        &self,
        command: &A::Command,
        ctx: &CommandContext,
        options: Options<'_, A>,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        self.executor.gate().check(ctx)?;
        let started = Instant::now();
        let result = self.run(command, ctx, &options).await;
        self.executor.observe::<A, _>(A::TYPE, started, &result);
        result
    }

    async fn run(
        &self,
        command: &A::Command,
        ctx: &CommandContext,
        options: &Options<'_, A>,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let record = self.executor.record(command, options);
        if let Some(first) = self.executor.first_result::<A>(&self.id, record.as_ref()).await? {
            return Ok(first);
        }
        let mut guard = self.cached.lock().await;
        self.ensure(&mut guard).await?;
        let Some(cached) = guard.as_mut() else { unreachable!("ensured above") };
        let mut attempt = 1;
        loop {
            let tried = self
                .executor
                .attempt(&self.id, &mut cached.state, cached.version, cached.snapshot, command, ctx, options, &record)
                .await;
            match tried {
                Ok(Attempt::Done(done)) if done.outcome.is_none() && attempt < self.executor.max_attempts() => {
                    // "Nothing to do" must not come from a stale state either
                    // (a step another replica's events made due): if
                    // anything was written meanwhile, decide again on it.
                    drop(done);
                    let before = cached.version;
                    self.refresh(cached).await?;
                    if cached.version == before {
                        let state = cached.state.clone();
                        return Ok(Executed { state, version: before, events: Vec::new(), outcome: None });
                    }
                    attempt += 1;
                }
                Ok(Attempt::Done(done)) => {
                    if done.outcome.as_ref().is_some_and(|o| o.duplicate) {
                        // Another request with this command id won: the
                        // cached state holds our unstored events.
                        *guard = None;
                    } else if done.outcome.is_some() {
                        cached.version = done.version;
                        if self.executor.store().snapshot_policy().due(done.version, cached.snapshot, ctx.now_ms) {
                            cached.snapshot = Some((done.version, ctx.now_ms));
                        }
                    }
                    return Ok(done);
                }
                Ok(Attempt::Conflict) if attempt < self.executor.max_attempts() => {
                    // Another replica wrote: what we folded in was not
                    // stored. Load what the store holds, decide again.
                    self.executor.count_retry(A::TYPE);
                    let loaded = load::load::<A>(&**self.executor.store(), &self.id).await?;
                    (cached.state, cached.version, cached.snapshot) =
                        (Arc::new(loaded.state), loaded.version, loaded.snapshot);
                    if attempt > 1 {
                        tokio::time::sleep(jitter(attempt)).await;
                    }
                    attempt += 1;
                }
                Ok(Attempt::Conflict) => {
                    *guard = None;
                    return Err(ExecuteError::Conflict {
                        aggregate_type: A::TYPE,
                        aggregate_id: self.id.clone(),
                        attempts: attempt,
                    });
                }
                Err(ExecuteError::Domain(e)) => {
                    // A refusal must not come from a stale state (another
                    // replica may have changed what the rule looks at): if
                    // anything was written meanwhile, decide again on it.
                    let before = cached.version;
                    self.refresh(cached).await?;
                    if cached.version == before || attempt >= self.executor.max_attempts() {
                        return Err(ExecuteError::Domain(e));
                    }
                    attempt += 1;
                }
                Err(e) => {
                    // A failed append may or may not have been applied (a
                    // timeout), and the cached state holds the events: forget
                    // it, the next command reloads.
                    *guard = None;
                    return Err(e);
                }
            }
        }
    }
}

type Used<A> = (Arc<AggregateHandle<A>>, u64);

/// Handles of one aggregate type by id, at most `capacity` of them: the
/// least recently used is dropped (it reloads on its next use).
pub struct Handles<A: Aggregate> {
    executor: CommandExecutor,
    capacity: usize,
    /// Each handle with the tick of its last use.
    map: Mutex<HashMap<String, Used<A>>>,
    clock: std::sync::atomic::AtomicU64,
}

impl<A: Snapshot> Handles<A>
where
    A::Command: Sync,
    A::Event: Sync,
{
    pub fn new(executor: CommandExecutor, capacity: usize) -> Self {
        Self { executor, capacity: capacity.max(1), map: Mutex::new(HashMap::new()), clock: Default::default() }
    }

    /// The handle of aggregate `id` (created on first use).
    pub fn get(&self, id: &str) -> Arc<AggregateHandle<A>> {
        let tick = self.clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(mut map) = self.map.lock() else { return Arc::new(AggregateHandle::new(self.executor.clone(), id)) };
        if let Some((h, used)) = map.get_mut(id) {
            *used = tick;
            return h.clone();
        }
        if map.len() >= self.capacity
            && let Some(oldest) = map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let h = Arc::new(AggregateHandle::new(self.executor.clone(), id));
        map.insert(id.to_owned(), (h.clone(), tick));
        h
    }

    /// Forgets a handle (its aggregate is done).
    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn executor(&self) -> &CommandExecutor {
        &self.executor
    }
}
