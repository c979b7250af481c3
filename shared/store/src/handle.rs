//! Long-lived handles on hot aggregates: the state stays in memory between
//! commands ([`Warm`]), so a command decides on it, folds its events in
//! place (no copy of the state per command) and appends with the exact
//! version; only a conflict (another replica wrote meanwhile), a refusal
//! or a "nothing to do" reads anything — the one command loop
//! ([`CommandExecutor::execute_on`]) decides when.
//! Commands on one handle are serialized, so one replica never conflicts
//! with itself; several replicas stay correct through the version check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use allies_core::{Aggregate, CommandContext, Snapshot};
use tokio::sync::Mutex as AsyncMutex;

use crate::executor::{CommandExecutor, Seed, Warm};
use crate::{ExecuteError, Executed, Options};

/// See the module documentation.
pub struct AggregateHandle<A: Aggregate> {
    executor: CommandExecutor,
    id: String,
    warm: AsyncMutex<Warm<A>>,
}

impl<A: Snapshot> AggregateHandle<A>
where
    A::Command: Sync,
    A::Event: Sync,
{
    pub fn new(executor: CommandExecutor, id: &str) -> Self {
        Self { executor, id: id.to_owned(), warm: AsyncMutex::new(Warm::default()) }
    }

    /// A handle whose loads start from `seed` (see `Aggregate::adopt`).
    pub fn seeded(executor: CommandExecutor, id: &str, seed: Seed<A>) -> Self {
        Self { executor, id: id.to_owned(), warm: AsyncMutex::new(Warm::seeded(seed)) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The state as this replica knows it, caught up with the store.
    pub async fn current(&self) -> Result<(Arc<A>, u64), crate::StoreError> {
        let mut warm = self.warm.lock().await;
        warm.catch_up(&**self.executor.store(), &self.id).await?;
        Ok(warm.get().unwrap_or_default())
    }

    /// The cached state without asking the store (None before the first use).
    pub async fn cached(&self) -> Option<(Arc<A>, u64)> {
        self.warm.lock().await.get()
    }

    /// Runs a command on the warm state (see the module documentation).
    pub async fn execute(
        &self,
        command: &A::Command,
        ctx: &CommandContext,
        options: Options<'_, A>,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let mut warm = self.warm.lock().await;
        self.executor.execute_on(&self.id, &mut warm, command, ctx, options).await
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
    /// What each handle's loads start from (None: `A::default()`).
    seed: Option<Seed<A>>,
}

impl<A: Snapshot> Handles<A>
where
    A::Command: Sync,
    A::Event: Sync,
{
    pub fn new(executor: CommandExecutor, capacity: usize) -> Self {
        let map = Mutex::new(HashMap::new());
        Self { executor, capacity: capacity.max(1), map, clock: Default::default(), seed: None }
    }

    /// Handles whose loads start from `seed` (see `Aggregate::adopt`).
    pub fn seeded(executor: CommandExecutor, capacity: usize, seed: Seed<A>) -> Self {
        Self { seed: Some(seed), ..Self::new(executor, capacity) }
    }

    fn handle(&self, id: &str) -> AggregateHandle<A> {
        match &self.seed {
            Some(seed) => AggregateHandle::seeded(self.executor.clone(), id, seed.clone()),
            None => AggregateHandle::new(self.executor.clone(), id),
        }
    }

    /// The empty state a load starts from.
    pub fn seed(&self) -> A {
        self.seed.as_ref().map_or_else(A::default, |s| s())
    }

    /// The handle of aggregate `id` (created on first use).
    pub fn get(&self, id: &str) -> Arc<AggregateHandle<A>> {
        let tick = self.clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(mut map) = self.map.lock() else { return Arc::new(self.handle(id)) };
        if let Some((h, used)) = map.get_mut(id) {
            *used = tick;
            return h.clone();
        }
        if map.len() >= self.capacity
            && let Some(oldest) = map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let h = Arc::new(self.handle(id));
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
