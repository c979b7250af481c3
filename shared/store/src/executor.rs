//! The command loop, generic over any aggregate and any [`EventStore`], and
//! the only one: a one-off command ([`CommandExecutor::execute_with`]) and a
//! hot aggregate kept in memory ([`crate::AggregateHandle`]) both run
//! [`CommandExecutor::execute_on`], which differs only in where the state
//! it decides on comes from ([`Warm`]: loaded for this command, or kept
//! from earlier ones).
//!
//! 1. Load the state if it is not warm (per the type's storage strategy).
//! 2. `decide`; fold the events in place; append with the exact version.
//! 3. A retried command id answers its first result: the append script
//!    finds the id's record before it writes anything; a decision that
//!    appends nothing (refused, or nothing to do) looks the record up.
//! 4. Appended: done (a snapshot is written off the command's path when due).
//! 5. A refusal or "nothing to do" decided on a warm state is confirmed
//!    first: if the store holds anything newer, decide again on it — no
//!    replica refuses, or skips a step, on a state another one changed.
//! 6. A version conflict: the state is forgotten and loaded again; a
//!    bounded retry, jittered when the conflict was real contention (the
//!    state had just been loaded) rather than a warm state gone stale.
//! 7. Any other failure: the state (which may hold unstored events) is
//!    forgotten and the error returned; nothing was written.
//!
//! Model: disintegrate's `DecisionMaker::make` and esrs' `Manager`. The
//! maintenance gate, the options, the outcome types, tracing and metrics
//! live in their own files (`gate`, `options`, `outcome`, `trace`, `metrics`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_core::{Aggregate, CommandContext, ExpectedVersion, Snapshot};

use crate::load::{self, Loaded};
use crate::metrics::ExecutorMetrics;
use crate::options::fingerprint;
use crate::store::{AppendOutcome, AppendRequest, CommandRecord, EventStore, Storage};
use crate::{AppendError, ExecuteError, Executed, Options, StoreError, WritesGate};

/// How often a command is re-run after a version conflict before the caller
/// gets Aborted. Re-running is cheap (load + decide), and a hot aggregate —
/// one account logging in from many devices, a game session with four
/// players — needs more than a couple of tries; a jittered pause spreads the
/// contenders out.
pub const MAX_ATTEMPTS: u32 = 10;

/// Builds the empty state an aggregate starts from, carrying what it takes
/// from outside its events (a game's rules): see `Aggregate::adopt`.
pub type Seed<A> = Arc<dyn Fn() -> A + Send + Sync>;

/// The state a command decides on: empty (load it first), or loaded and
/// kept — for one command, or between commands by a hot handle.
pub struct Warm<A> {
    held: Option<Held<A>>,
    /// What a load starts from (`A::default()` when none).
    seed: Option<Seed<A>>,
}

struct Held<A> {
    state: Arc<A>,
    version: u64,
    /// The last snapshot (version, taken at ms), to know when one is due.
    snapshot: Option<(u64, i64)>,
}

impl<A> Default for Warm<A> {
    fn default() -> Self {
        Self { held: None, seed: None }
    }
}

impl<A: Snapshot> Warm<A> {
    /// An empty slot whose loads start from `seed`.
    pub fn seeded(seed: Seed<A>) -> Self {
        Self { held: None, seed: Some(seed) }
    }

    /// The empty state a load starts from.
    pub fn seed(&self) -> A {
        self.seed.as_ref().map_or_else(A::default, |s| s())
    }

    /// The state held and its version, without asking the store.
    pub fn get(&self) -> Option<(Arc<A>, u64)> {
        self.held.as_ref().map(|h| (h.state.clone(), h.version))
    }

    /// Drops the state: the next use loads it again.
    pub fn forget(&mut self) {
        self.held = None;
    }

    /// Loads the state unless held; true when it was loaded just now.
    async fn ensure(&mut self, store: &dyn EventStore, id: &str) -> Result<bool, StoreError> {
        if self.held.is_some() {
            return Ok(false);
        }
        let loaded: Loaded<A> = load::load_from(store, id, &self.seed()).await?;
        self.held = Some(Held { state: Arc::new(loaded.state), version: loaded.version, snapshot: loaded.snapshot });
        Ok(true)
    }

    /// Brings the held state up to what the store holds (loading it if
    /// empty); true when anything was newer. The state is copied (if a
    /// reply still holds it) only when there is news.
    pub async fn catch_up(&mut self, store: &dyn EventStore, id: &str) -> Result<bool, StoreError> {
        if self.ensure(store, id).await? {
            return Ok(true);
        }
        let seed = self.seed.as_ref().map(|s| s());
        let Some(held) = self.held.as_mut() else { return Ok(false) };
        let before = held.version;
        if store.storage_of(A::TYPE) == Storage::StateBased {
            let loaded: Loaded<A> = load::load_from(store, id, &seed.unwrap_or_default()).await?;
            (held.state, held.version) = (Arc::new(loaded.state), loaded.version);
        } else {
            let news = store.read(A::TYPE, id, held.version + 1, load::PAGE).await?;
            if news.is_empty() {
                return Ok(false);
            }
            let state = Arc::make_mut(&mut held.state);
            load::fold(state, &mut held.version, &news)?;
            if news.len() == load::PAGE {
                load::catch_up(store, id, state, &mut held.version).await?;
            }
        }
        Ok(held.version != before)
    }
}

/// What one decide-and-append did.
enum Decided<A: Aggregate> {
    /// The command changed nothing.
    Nothing,
    Appended(Executed<A>),
    /// Another request with this command id won the append: where its result is.
    Duplicate(AppendOutcome),
    /// Someone else appended first.
    Conflict,
}

/// Runs commands on aggregates. Cheap to clone.
#[derive(Clone)]
pub struct CommandExecutor {
    store: Arc<dyn EventStore>,
    max_attempts: u32,
    idempotency_ttl: Duration,
    metrics: Option<Arc<ExecutorMetrics>>,
    /// Maintenance mode's switch (a fresh, open one unless shared).
    gate: WritesGate,
}

impl CommandExecutor {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            max_attempts: MAX_ATTEMPTS,
            idempotency_ttl: Duration::from_secs(86_400),
            metrics: None,
            gate: WritesGate::default(),
        }
    }

    /// How long command ids are remembered (cqrs.yaml `idempotency_ttl_secs`).
    pub fn with_idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<ExecutorMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Pauses a client's commands while `gate` is paused (maintenance mode).
    pub fn with_gate(mut self, gate: WritesGate) -> Self {
        self.gate = gate;
        self
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Runs `command` on aggregate `id`.
    pub async fn execute<A: Snapshot>(
        &self,
        id: &str,
        command: &A::Command,
        ctx: &CommandContext,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Sync,
        A::Event: Sync,
    {
        self.execute_with(id, command, ctx, Options::default()).await
    }

    /// Runs `command` on aggregate `id` with [`Options`], on a state loaded
    /// for it.
    pub async fn execute_with<A: Snapshot>(
        &self,
        id: &str,
        command: &A::Command,
        ctx: &CommandContext,
        options: Options<'_, A>,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Sync,
        A::Event: Sync,
    {
        self.execute_on(id, &mut Warm::default(), command, ctx, options).await
    }

    /// Runs `command` on aggregate `id`, deciding on `warm` (loaded first
    /// if empty, kept up to date after). See the module documentation.
    pub async fn execute_on<A: Snapshot>(
        &self,
        id: &str,
        warm: &mut Warm<A>,
        command: &A::Command,
        ctx: &CommandContext,
        options: Options<'_, A>,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Sync,
        A::Event: Sync,
    {
        self.gate.check(ctx)?;
        let started = Instant::now();
        let result = self.run(id, warm, command, ctx, &options).await;
        if let Some(m) = &self.metrics {
            let outcome = result.as_ref().map_or_else(ExecuteError::outcome_label, |_| "ok");
            m.observe_command(A::TYPE, outcome, started.elapsed());
        }
        result
    }

    /// The loop (module documentation, steps 1–7).
    async fn run<A: Snapshot>(
        &self,
        id: &str,
        warm: &mut Warm<A>,
        command: &A::Command,
        ctx: &CommandContext,
        options: &Options<'_, A>,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        // A retried command id is answered by its first result: by the
        // append script when this decision appends (it looks at the id's
        // record before anything else, atomically), and here when it does
        // not (a retry decided again on a state the first run changed is
        // often refused: "the cell is taken"). So the record is read only
        // when no append will read it: one Redis call less per command.
        let record = self.record(command, options);
        let mut attempt = 1;
        loop {
            let fresh = warm.ensure(&*self.store, id).await?;
            let Some(held) = warm.held.as_mut() else { unreachable!("ensured above") };
            let version = held.version;
            let decided = self.attempt(id, held, command, ctx, options, &record).await;
            let last = attempt >= self.max_attempts;
            match decided {
                Ok(Decided::Appended(done)) => {
                    held.version = done.version;
                    if self.store.storage_of(A::TYPE) == Storage::EventSourced
                        && self.store.snapshot_policy().due(done.version, held.snapshot, ctx.now_ms)
                    {
                        held.snapshot = Some((done.version, ctx.now_ms));
                        self.snapshot_later(id, &held.state, done.version, ctx.now_ms);
                    }
                    return Ok(done);
                }
                Ok(Decided::Duplicate(first)) => {
                    // The held state has our unstored events in it.
                    warm.forget();
                    return self.replay_first::<A>(id, first, warm.seed()).await;
                }
                Ok(Decided::Nothing) => {
                    if fresh || last || !warm.catch_up(&*self.store, id).await? {
                        if let Some(first) = self.first_result::<A>(id, record.as_ref(), warm).await? {
                            return Ok(first);
                        }
                        let state = held_state(warm);
                        return Ok(Executed { state, version, events: Vec::new(), outcome: None });
                    }
                }
                Err(ExecuteError::Domain(refusal)) => {
                    if fresh || last || !warm.catch_up(&*self.store, id).await? {
                        if let Some(first) = self.first_result::<A>(id, record.as_ref(), warm).await? {
                            return Ok(first);
                        }
                        return Err(ExecuteError::Domain(refusal));
                    }
                }
                Ok(Decided::Conflict) => {
                    warm.forget();
                    if last {
                        return Err(ExecuteError::Conflict {
                            aggregate_type: A::TYPE,
                            aggregate_id: id.to_owned(),
                            attempts: attempt,
                        });
                    }
                    if let Some(m) = &self.metrics {
                        m.count_retry(A::TYPE);
                    }
                    if fresh {
                        tokio::time::sleep(jitter(attempt)).await;
                    }
                }
                Err(e) => {
                    // A failed append may or may not have been applied (a
                    // timeout), and the held state has the events in it.
                    warm.forget();
                    return Err(e);
                }
            }
            attempt += 1;
        }
    }

    /// Decides on `held` and appends with its exact version.
    ///
    /// The events are folded into the state in place (copied only when
    /// someone else still holds it — a reply being written, a snapshot being
    /// saved), so a hot aggregate is not copied per command. After anything
    /// but `Appended`, `Nothing` or a refusal the state holds events that
    /// were not stored: the caller must forget it.
    async fn attempt<A: Snapshot>(
        &self,
        id: &str,
        held: &mut Held<A>,
        command: &A::Command,
        ctx: &CommandContext,
        options: &Options<'_, A>,
        record: &Option<CommandRecord>,
    ) -> Result<Decided<A>, ExecuteError<A::Error>> {
        let events = held.state.decide(command).map_err(ExecuteError::Domain)?;
        if events.is_empty() {
            return Ok(Decided::Nothing);
        }
        let next = Arc::make_mut(&mut held.state);
        for e in &events {
            next.evolve(e);
        }
        let next = &*held.state;
        let storage = self.store.storage_of(A::TYPE);
        let log = crate::keys::log_key(A::TYPE, self.store.partition_of(id));
        let (span, traced) = crate::trace::append_span(&log, A::TYPE, id, &ctx.metadata);
        let mut request = AppendRequest::typed::<A>(
            id,
            ExpectedVersion::after_load(held.version),
            traced.as_ref().unwrap_or(&ctx.metadata),
            ctx.now_ms,
            &events,
            self.store.format(),
        )?;
        if storage != Storage::EventSourced {
            let data = serde_json::to_vec(next).map_err(|e| AppendError::Invalid(format!("state: {e}")))?;
            request = request.with_aggregate_state(data, A::SNAPSHOT_SCHEMA);
        }
        if let Some(f) = options.state_fields.and_then(|f| f(next)) {
            request = request.with_state_fields(f);
        }
        if let Some(publish) = options.publish {
            request = request.with_publications(publish(next, &events));
        }
        if let Some(r) = record {
            request = request.with_command(r.clone());
        }
        let append_started = Instant::now();
        let appended = span.scope(self.store.append(request)).await;
        drop(span);
        if let Some(m) = &self.metrics {
            m.observe_append(A::TYPE, append_started.elapsed(), appended.is_ok());
        }
        match appended {
            Ok(outcome) if outcome.duplicate => Ok(Decided::Duplicate(outcome)),
            Ok(outcome) => Ok(Decided::Appended(Executed {
                state: held.state.clone(),
                version: outcome.version,
                events,
                outcome: Some(outcome),
            })),
            Err(AppendError::Conflict { .. }) => {
                if let Some(m) = &self.metrics {
                    m.count_conflict(A::TYPE);
                }
                Ok(Decided::Conflict)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The first result of the options' command id on aggregate `id`, if
    /// that command was already applied (a retry); an error if the id was
    /// used for another command. Lets a service answer a retry before doing
    /// expensive work (hashing a password, say); `execute` checks it too.
    /// Needs an explicit fingerprint.
    pub async fn first_result_of<A: Snapshot>(
        &self,
        id: &str,
        options: &Options<'_, A>,
    ) -> Result<Option<Executed<A>>, ExecuteError<A::Error>> {
        let (Some(command_id), Some(fingerprint)) = (options.command_id, &options.fingerprint) else { return Ok(None) };
        let record = CommandRecord {
            id: command_id.to_owned(),
            scope: options.command_scope.unwrap_or_default().to_owned(),
            fingerprint: fingerprint.clone(),
            ttl: self.idempotency_ttl,
        };
        self.first_result::<A>(id, Some(&record), &Warm::default()).await
    }

    /// The idempotency record of this execution, if the caller gave a command id.
    fn record<A: Aggregate>(&self, command: &A::Command, options: &Options<'_, A>) -> Option<CommandRecord> {
        options.command_id.map(|id| CommandRecord {
            id: id.to_owned(),
            scope: options.command_scope.unwrap_or_default().to_owned(),
            fingerprint: options
                .fingerprint
                .clone()
                .unwrap_or_else(|| fingerprint(&format!("{}\n{command:?}", A::TYPE))),
            ttl: self.idempotency_ttl,
        })
    }

    /// A retried command id answers with its first result before anything
    /// is decided again.
    async fn first_result<A: Snapshot>(
        &self,
        id: &str,
        record: Option<&CommandRecord>,
        warm: &Warm<A>,
    ) -> Result<Option<Executed<A>>, ExecuteError<A::Error>> {
        let Some(record) = record else { return Ok(None) };
        let Some(first) = self.store.command_outcome(A::TYPE, id, record).await? else { return Ok(None) };
        Ok(Some(self.replay_first::<A>(id, first, warm.seed()).await?))
    }

    /// What a command id's first execution answered, rebuilt from the store:
    /// the state right after its append and the events it appended, so a
    /// retry builds the very same response (the same tower id, the same
    /// version and consistency token) however much happened since.
    /// A state-based aggregate keeps no history: its current state answers.
    async fn replay_first<A: Snapshot>(
        &self,
        id: &str,
        first: AppendOutcome,
        seed: A,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let count = first.log_ids.len() as u64;
        let (state, events) = if self.store.storage_of(A::TYPE) == Storage::StateBased || count == 0 {
            let loaded: Loaded<A> = load::load_from(&*self.store, id, &seed).await?;
            (loaded.state, Vec::new())
        } else {
            let at = crate::store::AsOf::Version(first.version);
            let (state, _) = load::load_as_of_from::<A>(&*self.store, id, at, seed).await?;
            let from = first.version.saturating_sub(count) + 1;
            let recorded = self.store.read(A::TYPE, id, from, count as usize).await?;
            let events = recorded
                .iter()
                .filter(|r| r.envelope.version <= first.version)
                .map(|r| r.typed::<A::Event>().map(|e| e.payload))
                .collect::<Result<Vec<_>, _>>()?;
            (state, events)
        };
        Ok(Executed { state: Arc::new(state), version: first.version, events, outcome: Some(first) })
    }

    /// Writes a snapshot off the command's path: the reply does not wait for it.
    fn snapshot_later<A: Snapshot>(&self, id: &str, state: &Arc<A>, version: u64, now_ms: i64) {
        let (store, id, state) = (self.store.clone(), id.to_owned(), state.clone());
        tokio::spawn(async move {
            if let Err(e) = load::save_snapshot(&*store, &id, &*state, version, now_ms).await {
                tracing::warn!(aggregate_type = A::TYPE, aggregate_id = id, error = %e, "snapshot not written");
            }
        });
    }
}

/// The state a warm slot holds after `catch_up` found nothing newer.
fn held_state<A: Snapshot>(warm: &Warm<A>) -> Arc<A> {
    warm.held.as_ref().map(|h| h.state.clone()).unwrap_or_else(|| Arc::new(A::default()))
}

/// A pause before the `attempt`-th retry: random, growing with the attempt.
fn jitter(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    Duration::from_micros(random % (500 * u64::from(attempt.max(1))))
}
