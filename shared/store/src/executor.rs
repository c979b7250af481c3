//! The command loop, generic over any aggregate and any [`EventStore`]:
//! load (per the type's storage strategy) → `decide` → append with the
//! expected version → on a conflict, a bounded, jittered retry of the whole
//! command → a snapshot off the command's path → a typed result or a typed
//! error that keeps domain refusals, conflicts and store failures apart.
//!
//! Model: disintegrate's `DecisionMaker::make` and esrs' `Manager`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_core::{Aggregate, CommandContext, ErrorCode, ExpectedVersion, ServiceError, Snapshot};

use crate::load::{self, Loaded};
use crate::metrics::ExecutorMetrics;
use crate::store::{AppendOutcome, AppendRequest, CommandRecord, EventStore, Publication, StateWrite, Storage};
use crate::{AppendError, StoreError};

/// How often a command is re-run after a version conflict before the caller
/// gets Aborted. Re-running is cheap (load + decide), and a hot aggregate —
/// one account logging in from many devices, a game session with four
/// players — needs more than a couple of tries; a jittered pause spreads the
/// contenders out.
pub const MAX_ATTEMPTS: u32 = 10;

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The aggregate's state after the command (shared with the hot handle
    /// that keeps it: no copy per command).
    pub state: Arc<A>,
    /// Its version after the command.
    pub version: u64,
    /// The events the command produced (empty: it changed nothing).
    pub events: Vec<A::Event>,
    /// Where the events went (None when there were none).
    pub outcome: Option<AppendOutcome>,
}

impl<A: Aggregate> Executed<A> {
    /// What a query waits for to read this write (empty when nothing was written).
    pub fn consistency_token(&self) -> String {
        self.outcome.as_ref().map(|o| o.consistency_token.clone()).unwrap_or_default()
    }

    /// True when the command id had already been applied: nothing was
    /// written, the outcome is the first one.
    pub fn duplicate(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| o.duplicate)
    }
}

/// Why a command did not happen. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// Concurrent writers kept winning.
    #[error("{aggregate_type} {aggregate_id} kept changing concurrently: gave up after {attempts} attempts")]
    Conflict { aggregate_type: &'static str, aggregate_id: String, attempts: u32 },
    /// The append refused (command id reused for another command, an event
    /// that does not encode) or the store failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Maintenance mode: a client's writes wait; reads and the services'
    /// own work go on.
    #[error("the fleet is in maintenance: writes are paused, reads go on; retry in {}s", .retry_after.as_secs())]
    Paused { retry_after: Duration },
}

/// Maintenance mode's switch, shared by every executor of a service: while
/// paused, a client's command is refused before anything is read or
/// written ([`ExecuteError::Paused`]: UNAVAILABLE with a retry delay).
#[derive(Debug, Clone, Default)]
pub struct WritesGate(Arc<std::sync::atomic::AtomicU64>);

impl WritesGate {
    /// Pauses a client's writes; callers are told to retry after `retry_after`.
    pub fn pause(&self, retry_after: Duration) {
        self.0.store(retry_after.as_secs().max(1), std::sync::atomic::Ordering::Release);
    }

    pub fn resume(&self) {
        self.0.store(0, std::sync::atomic::Ordering::Release);
    }

    /// The retry delay while paused.
    pub fn paused(&self) -> Option<Duration> {
        match self.0.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// Refuses a client's command while paused.
    pub fn check<E: std::error::Error + 'static>(&self, ctx: &CommandContext) -> Result<(), ExecuteError<E>> {
        match self.paused() {
            Some(retry_after) if ctx.from_client => Err(ExecuteError::Paused { retry_after }),
            _ => Ok(()),
        }
    }
}

impl<E: std::error::Error + 'static> ExecuteError<E> {
    /// The domain refusal, if that is what this is.
    pub fn domain(&self) -> Option<&E> {
        match self {
            Self::Domain(e) => Some(e),
            _ => None,
        }
    }

    /// Maps the domain error (to wrap it in a service's own error type).
    pub fn map_domain<F: std::error::Error + 'static>(self, f: impl FnOnce(E) -> F) -> ExecuteError<F> {
        match self {
            Self::Domain(e) => ExecuteError::Domain(f(e)),
            Self::Conflict { aggregate_type, aggregate_id, attempts } => {
                ExecuteError::Conflict { aggregate_type, aggregate_id, attempts }
            }
            Self::Append(e) => ExecuteError::Append(e),
            Self::Store(e) => ExecuteError::Store(e),
            Self::Paused { retry_after } => ExecuteError::Paused { retry_after },
        }
    }
}

impl<E: ServiceError + 'static> ServiceError for ExecuteError<E> {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Domain(e) => e.code(),
            Self::Conflict { .. } => ErrorCode::Aborted,
            Self::Append(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Paused { .. } => ErrorCode::Unavailable,
        }
    }
    fn field_violations(&self) -> Vec<allies_core::FieldViolation> {
        match self {
            Self::Domain(e) => e.field_violations(),
            _ => Vec::new(),
        }
    }
    fn rule(&self) -> Option<allies_core::RuleViolation> {
        match self {
            Self::Domain(e) => e.rule(),
            Self::Append(e) => e.rule(),
            _ => None,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Domain(e) => e.retry_after(),
            Self::Conflict { .. } => Some(Duration::from_millis(50)),
            Self::Append(e) => e.retry_after(),
            Self::Store(e) => e.retry_after(),
            Self::Paused { retry_after } => Some(*retry_after),
        }
    }
    fn message(&self) -> String {
        match self {
            Self::Domain(e) => e.message(),
            Self::Append(e) => e.message(),
            Self::Store(e) => e.message(),
            Self::Conflict { .. } => format!("{self}; retry the command"),
            Self::Paused { .. } => self.to_string(),
        }
    }
}

/// Derives extra state-hash fields from the new state.
pub type StateFields<'a, A> = &'a (dyn Fn(&A) -> Option<StateWrite> + Send + Sync);
/// Derives the integration events a command publishes from its events.
pub type Publish<'a, A> = &'a (dyn Fn(&A, &[<A as Aggregate>::Event]) -> Vec<Publication> + Send + Sync);

/// Optional parts of a command's execution.
pub struct Options<'a, A: Aggregate> {
    /// The client's idempotency key (`x-command-id`).
    pub command_id: Option<&'a str>,
    /// What identifies the command's content for that key; default: its
    /// `Debug` form. A retry with the same id and another fingerprint is refused.
    pub fingerprint: Option<String>,
    pub state_fields: Option<StateFields<'a, A>>,
    pub publish: Option<Publish<'a, A>>,
}

impl<A: Aggregate> Default for Options<'_, A> {
    fn default() -> Self {
        Self { command_id: None, fingerprint: None, state_fields: None, publish: None }
    }
}

impl<'a, A: Aggregate> Options<'a, A> {
    pub fn command_id(mut self, id: Option<&'a str>) -> Self {
        self.command_id = id;
        self
    }
    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }
    pub fn state_fields(mut self, f: StateFields<'a, A>) -> Self {
        self.state_fields = Some(f);
        self
    }
    pub fn publish(mut self, f: Publish<'a, A>) -> Self {
        self.publish = Some(f);
        self
    }
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

/// The outcome of one decide-and-append attempt.
pub(crate) enum Attempt<A: Aggregate> {
    Done(Executed<A>),
    Conflict,
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

    pub(crate) fn gate(&self) -> &WritesGate {
        &self.gate
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

    /// Runs `command` on aggregate `id` with [`Options`].
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
        self.gate.check(ctx)?;
        let started = Instant::now();
        let result = self.run(id, command, ctx, &options).await;
        self.observe::<A, _>(A::TYPE, started, &result);
        result
    }

    async fn run<A: Snapshot>(
        &self,
        id: &str,
        command: &A::Command,
        ctx: &CommandContext,
        options: &Options<'_, A>,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let record = self.record(command, options);
        if let Some(first) = self.first_result::<A>(id, record.as_ref()).await? {
            return Ok(first);
        }
        let mut attempt = 1;
        loop {
            let loaded: Loaded<A> = load::load(&*self.store, id).await?;
            let mut state = Arc::new(loaded.state);
            match self.attempt(id, &mut state, loaded.version, loaded.snapshot, command, ctx, options, &record).await? {
                Attempt::Done(done) => return Ok(done),
                Attempt::Conflict if attempt < self.max_attempts => {
                    self.count_retry(A::TYPE);
                    tokio::time::sleep(jitter(attempt)).await;
                    attempt += 1;
                }
                Attempt::Conflict => {
                    return Err(ExecuteError::Conflict {
                        aggregate_type: A::TYPE,
                        aggregate_id: id.to_owned(),
                        attempts: attempt,
                    });
                }
            }
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
        let record =
            CommandRecord { id: command_id.to_owned(), fingerprint: fingerprint.clone(), ttl: self.idempotency_ttl };
        self.first_result::<A>(id, Some(&record)).await
    }

    /// The idempotency record of this execution, if the caller gave a command id.
    pub(crate) fn record<A: Aggregate>(&self, command: &A::Command, options: &Options<'_, A>) -> Option<CommandRecord> {
        options.command_id.map(|id| CommandRecord {
            id: id.to_owned(),
            fingerprint: options
                .fingerprint
                .clone()
                .unwrap_or_else(|| fingerprint(&format!("{}\n{command:?}", A::TYPE))),
            ttl: self.idempotency_ttl,
        })
    }

    /// A retried command id answers with its first result before anything
    /// is decided again.
    pub(crate) async fn first_result<A: Snapshot>(
        &self,
        id: &str,
        record: Option<&CommandRecord>,
    ) -> Result<Option<Executed<A>>, ExecuteError<A::Error>> {
        let Some(record) = record else { return Ok(None) };
        let Some(first) = self.store.command_outcome(A::TYPE, id, record).await? else { return Ok(None) };
        Ok(Some(self.replay_first::<A>(id, first).await?))
    }

    /// What a command id's first execution answered, rebuilt from the store:
    /// the state right after its append and the events it appended, so a
    /// retry builds the very same response (the same tower id, the same
    /// version and consistency token) however much happened since.
    /// A state-based aggregate keeps no history: its current state answers.
    pub(crate) async fn replay_first<A: Snapshot>(
        &self,
        id: &str,
        first: AppendOutcome,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let count = first.log_ids.len() as u64;
        let (state, events) = if self.store.storage_of(A::TYPE) == Storage::StateBased || count == 0 {
            let loaded: Loaded<A> = load::load(&*self.store, id).await?;
            (loaded.state, Vec::new())
        } else {
            let (state, _) =
                load::load_as_of::<A>(&*self.store, id, crate::store::AsOf::Version(first.version)).await?;
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

    /// Decides on `state` (at `version`) and appends with that exact version.
    ///
    /// The events are folded into `state` in place (copied only when
    /// someone else still holds it — a reply being written, a snapshot being
    /// saved), so a hot aggregate is not copied per command. After a
    /// `Conflict` or an error other than the domain's refusal, `state` holds
    /// events that were not stored: the caller must load it again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn attempt<A: Snapshot>(
        &self,
        id: &str,
        state: &mut Arc<A>,
        version: u64,
        last_snapshot: Option<(u64, i64)>,
        command: &A::Command,
        ctx: &CommandContext,
        options: &Options<'_, A>,
        record: &Option<CommandRecord>,
    ) -> Result<Attempt<A>, ExecuteError<A::Error>> {
        let events = state.decide(command).map_err(ExecuteError::Domain)?;
        if events.is_empty() {
            return Ok(Attempt::Done(Executed { state: state.clone(), version, events, outcome: None }));
        }
        {
            let next = Arc::make_mut(state);
            for e in &events {
                next.evolve(e);
            }
        }
        let next = &*state;
        let storage = self.store.storage_of(A::TYPE);
        // The append is a producer span; its context goes into the events'
        // metadata, so consumers link to where each event was created.
        // OTel messaging conventions: "{operation} {destination}", the real stream.
        let log = crate::keys::log_key(A::TYPE, self.store.partition_of(id));
        let span = tracing::trace_span!(target: crate::trace::TARGET, "append",
            otel.name = %format_args!("send {log}"), otel.kind = "producer",
            messaging.system = "redis", messaging.operation.type = "send", messaging.operation.name = "send",
            messaging.destination.name = %log,
            aggregate.type = A::TYPE, aggregate.id = %id,
            trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
        crate::trace::stamp(&span);
        let traced;
        let metadata = match crate::trace::traceparent_of(&span) {
            Some(tp) => {
                traced = allies_core::Metadata { traceparent: Some(tp), ..ctx.metadata.clone() };
                &traced
            }
            None => &ctx.metadata,
        };
        let mut request = AppendRequest::typed::<A>(
            id,
            ExpectedVersion::after_load(version),
            metadata,
            ctx.now_ms,
            &events,
            self.store.format(),
        )?;
        if storage != Storage::EventSourced {
            let data = serde_json::to_vec(&**next).map_err(|e| AppendError::Invalid(format!("state: {e}")))?;
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
        let appended = tracing::Instrument::instrument(self.store.append(request), span).await;
        if let Some(m) = &self.metrics {
            m.observe_append(A::TYPE, append_started.elapsed(), appended.is_ok());
        }
        match appended {
            Ok(outcome) if outcome.duplicate => {
                // The same command id won a race with us: answer its result.
                Ok(Attempt::Done(self.replay_first::<A>(id, outcome).await?))
            }
            Ok(outcome) => {
                if storage == Storage::EventSourced
                    && self.store.snapshot_policy().due(outcome.version, last_snapshot, ctx.now_ms)
                {
                    self.snapshot_later(id, state, outcome.version, ctx.now_ms);
                }
                Ok(Attempt::Done(Executed {
                    state: state.clone(),
                    version: outcome.version,
                    events,
                    outcome: Some(outcome),
                }))
            }
            Err(AppendError::Conflict { .. }) => {
                if let Some(m) = &self.metrics {
                    m.count_conflict(A::TYPE);
                }
                Ok(Attempt::Conflict)
            }
            Err(e) => Err(e.into()),
        }
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

    pub(crate) fn count_retry(&self, aggregate_type: &str) {
        if let Some(m) = &self.metrics {
            m.count_retry(aggregate_type);
        }
    }

    pub(crate) fn observe<A: Aggregate, T>(
        &self,
        aggregate_type: &str,
        started: Instant,
        result: &Result<T, ExecuteError<A::Error>>,
    ) {
        let Some(m) = &self.metrics else { return };
        let outcome = match result {
            Ok(_) => "ok",
            Err(ExecuteError::Domain(_)) => "refused",
            Err(ExecuteError::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        m.observe_command(aggregate_type, outcome, started.elapsed());
    }
}

/// A pause before the `attempt`-th retry: random, growing with the attempt.
pub(crate) fn jitter(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    Duration::from_micros(random % (500 * u64::from(attempt.max(1))))
}

/// SHA-free content fingerprint: FNV-1a 64 of the text, hex.
pub fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
