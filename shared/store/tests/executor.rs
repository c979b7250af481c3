//! The command loop and hot-aggregate handles, on the in-memory store and on
//! a real redis-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use allies_core::{ErrorCode, ServiceError, SnapshotPolicy};
use allies_store::{
    AggregateHandle, AppendError, AppendOutcome, AppendRequest, CommandExecutor, CommandRecord, EventStore,
    ExecuteError, MemoryEventStore, Options, RecordedEvent, RedisEventStore, Storage, StoreError, StoredState,
};
use allies_testkit::RedisServer;
use allies_testkit::fixtures::{BelowZero, Counter, context, wait_until};

/// Wraps a store and counts reads and appends (to see what a handle asks for).
struct Counting<S> {
    inner: S,
    reads: AtomicUsize,
    appends: AtomicUsize,
    /// Command-record lookups (`command_outcome`).
    lookups: AtomicUsize,
    /// Answer every append with a conflict.
    always_conflict: bool,
}

impl<S> Counting<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            reads: AtomicUsize::new(0),
            appends: AtomicUsize::new(0),
            lookups: AtomicUsize::new(0),
            always_conflict: false,
        }
    }
}

#[async_trait::async_trait]
impl<S: EventStore> EventStore for Counting<S> {
    fn storage_of(&self, t: &str) -> Storage {
        self.inner.storage_of(t)
    }
    fn snapshot_policy(&self) -> SnapshotPolicy {
        self.inner.snapshot_policy()
    }
    fn format(&self) -> allies_core::EventFormat {
        self.inner.format()
    }
    fn partition_of(&self, id: &str) -> u32 {
        self.inner.partition_of(id)
    }
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.always_conflict {
            return Err(AppendError::Conflict { expected: request.expected, actual: 99 });
        }
        self.inner.append(request).await
    }
    async fn read(&self, t: &str, id: &str, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(t, id, from, limit).await
    }
    async fn snapshot(&self, t: &str, id: &str) -> Result<Option<Result<StoredState, String>>, StoreError> {
        self.inner.snapshot(t, id).await
    }
    async fn save_snapshot(&self, t: &str, id: &str, s: StoredState) -> Result<bool, StoreError> {
        self.inner.save_snapshot(t, id, s).await
    }
    async fn delete_snapshot(&self, t: &str, id: &str) -> Result<(), StoreError> {
        self.inner.delete_snapshot(t, id).await
    }
    async fn state(&self, t: &str, id: &str) -> Result<Option<Result<StoredState, String>>, StoreError> {
        self.inner.state(t, id).await
    }
    async fn command_outcome(
        &self,
        t: &str,
        id: &str,
        c: &CommandRecord,
    ) -> Result<Option<AppendOutcome>, AppendError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.command_outcome(t, id, c).await
    }
}

#[tokio::test]
async fn a_command_is_decided_appended_and_refusals_write_nothing() {
    let store = Arc::new(MemoryEventStore::new());
    let exec = CommandExecutor::new(store.clone());
    let done = exec.execute::<Counter>("c1", &5, &context(1)).await.unwrap();
    assert_eq!((done.state.total, done.version, done.events.len()), (5, 1, 1));
    assert!(done.consistency_token().starts_with("counter."), "{}", done.consistency_token());
    let e = exec.execute::<Counter>("c1", &-9, &context(2)).await.unwrap_err();
    assert!(matches!(&e, ExecuteError::Domain(BelowZero { total: 5, n: -9 })), "{e:?}");
    assert_eq!((e.code(), e.rule().unwrap().rule.as_str()), (ErrorCode::FailedPrecondition, "NOT_BELOW_ZERO"));
    let nothing = exec.execute::<Counter>("c1", &0, &context(3)).await.unwrap();
    assert_eq!((nothing.version, nothing.outcome.is_none()), (1, true), "no events, no append");
    assert_eq!(store.log().len(), 1, "only the accepted command wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_aggregate_all_land_through_retries_on_redis() {
    let redis = RedisServer::start();
    let store: Arc<dyn EventStore> = Arc::new(RedisEventStore::connect(&redis.url(), 16).await.unwrap());
    let exec = CommandExecutor::new(store.clone()).with_max_attempts(50);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move { exec.execute::<Counter>("hot", &1, &context(i)).await }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().unwrap().version);
    }
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>(), "each command landed once, at its own version");
    let loaded = allies_store::load::<Counter>(&*store, "hot").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (20, 20));
}

#[tokio::test]
async fn a_conflict_that_never_ends_is_aborted_after_the_bounded_retries() {
    let mut counting = Counting::new(MemoryEventStore::new());
    counting.always_conflict = true;
    let store = Arc::new(counting);
    let exec = CommandExecutor::new(store.clone()).with_max_attempts(4);
    let e = exec.execute::<Counter>("c", &1, &context(1)).await.unwrap_err();
    assert!(matches!(e, ExecuteError::Conflict { attempts: 4, .. }), "{e:?}");
    assert_eq!(e.code(), ErrorCode::Aborted);
    assert_eq!(store.appends.load(Ordering::SeqCst), 4, "bounded: exactly max_attempts appends");
}

#[tokio::test]
async fn a_retried_command_id_answers_its_first_result_and_another_command_under_it_is_refused() {
    let store = Arc::new(MemoryEventStore::new());
    let exec = CommandExecutor::new(store.clone());
    let first =
        exec.execute_with::<Counter>("c", &3, &context(1), Options::default().command_id(Some("k1"))).await.unwrap();
    let again =
        exec.execute_with::<Counter>("c", &3, &context(2), Options::default().command_id(Some("k1"))).await.unwrap();
    assert!(again.duplicate() && !first.duplicate());
    assert_eq!((again.version, again.consistency_token()), (first.version, first.consistency_token()));
    assert_eq!(store.log().len(), 1, "the retry wrote nothing");
    let other = exec
        .execute_with::<Counter>("c", &4, &context(3), Options::default().command_id(Some("k1")))
        .await
        .unwrap_err();
    assert!(matches!(other, ExecuteError::Append(AppendError::CommandIdReused { .. })), "{other:?}");
    assert_eq!(other.code(), ErrorCode::FailedPrecondition);
}

/// A command with an id costs its append and nothing more: the append
/// finds a retry's record itself. A retry decided again is refused on the
/// state its first run made (5 - 5 = 0, and 0 - 5 is below zero) or
/// changes nothing: then the record is looked up, and the first result
/// answers. Through a hot handle, in memory and on Redis.
async fn a_command_ids_record_is_read_only_when_no_append_reads_it<S: EventStore>(store: S) {
    let counting = Arc::new(Counting::new(store));
    let exec = CommandExecutor::new(counting.clone());
    let handle = AggregateHandle::<Counter>::new(exec, "ids");
    let with_id = |id| Options::<Counter>::default().command_id(Some(id)).command_scope(Some("ann"));
    handle.execute(&5, &context(1), with_id("k1")).await.unwrap();
    let first = handle.execute(&-5, &context(2), with_id("k2")).await.unwrap();
    assert_eq!(counting.lookups.load(Ordering::SeqCst), 0, "two commands, no lookup");
    assert_eq!(counting.appends.load(Ordering::SeqCst), 2);
    let retry = handle.execute(&-5, &context(3), with_id("k2")).await.unwrap();
    assert!(retry.duplicate(), "a refused retry answers its first result");
    assert_eq!(
        (retry.version, retry.consistency_token(), &retry.events),
        (2, first.consistency_token(), &first.events)
    );
    assert_eq!(counting.lookups.load(Ordering::SeqCst), 1);
    let retry = handle.execute(&5, &context(4), with_id("k1")).await.unwrap();
    assert!(retry.duplicate() && retry.version == 1, "a retry that would append again: the append answers it");
    assert_eq!(counting.lookups.load(Ordering::SeqCst), 1, "no lookup: the append found the record");
    // Another caller's equal id is another command; refused on today's state.
    let other = |id| Options::<Counter>::default().command_id(Some(id)).command_scope(Some("bob"));
    let e = handle.execute(&-5, &context(5), other("k2")).await.unwrap_err();
    assert!(matches!(e, ExecuteError::Domain(BelowZero { total: 0, n: -5 })), "{e:?}");
    let bobs = handle.execute(&7, &context(6), other("k2")).await.unwrap();
    assert!(!bobs.duplicate() && bobs.version == 3, "{bobs:?}");
    // An id with a different command: refused whether the decision appends or not.
    let e = handle.execute(&1, &context(7), with_id("k1")).await.unwrap_err();
    assert!(matches!(e, ExecuteError::Append(AppendError::CommandIdReused { .. })), "{e:?}");
    let e = handle.execute(&-50, &context(8), with_id("k1")).await.unwrap_err();
    assert!(matches!(e, ExecuteError::Append(AppendError::CommandIdReused { .. })), "{e:?}");
    let (now, version) = handle.current().await.unwrap();
    assert_eq!((now.total, version), (7, 3));
}

#[tokio::test]
async fn a_command_ids_record_is_read_only_when_no_append_reads_it_in_memory() {
    a_command_ids_record_is_read_only_when_no_append_reads_it(MemoryEventStore::new()).await;
}

#[tokio::test]
async fn a_command_ids_record_is_read_only_when_no_append_reads_it_on_redis() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 16).await.unwrap();
    a_command_ids_record_is_read_only_when_no_append_reads_it(store).await;
}

/// A retry long after its command, with other commands in between, answers
/// exactly what the first execution answered: its events, the state right
/// after it, its version and consistency token (the response a service
/// builds from them is then the same), through the executor and a hot
/// handle, in memory and on Redis.
async fn a_late_retry_answers_the_first_execution(store: Arc<dyn EventStore>) {
    let exec = CommandExecutor::new(store.clone());
    let with_id = |id| Options::<Counter>::default().command_id(Some(id)).fingerprint("add 3");
    let first = exec.execute_with::<Counter>("late", &3, &context(1), with_id("k1")).await.unwrap();
    for i in 0..3 {
        exec.execute::<Counter>("late", &10, &context(2 + i)).await.unwrap();
    }
    let handle = AggregateHandle::<Counter>::new(exec.clone(), "late");
    for retry in [
        exec.execute_with::<Counter>("late", &3, &context(9), with_id("k1")).await.unwrap(),
        handle.execute(&3, &context(10), with_id("k1")).await.unwrap(),
    ] {
        assert!(retry.duplicate());
        assert_eq!(retry.events, first.events, "the first execution's events");
        assert_eq!(retry.state.total, 3, "the state right after the first execution, not today's 33");
        assert_eq!((retry.version, retry.consistency_token()), (first.version, first.consistency_token()));
    }
    let (now, version) = handle.current().await.unwrap();
    assert_eq!((now.total, version), (33, 4), "the retries wrote nothing");
}

#[tokio::test]
async fn a_late_retry_answers_the_first_execution_in_memory() {
    a_late_retry_answers_the_first_execution(Arc::new(MemoryEventStore::new())).await;
}

#[tokio::test]
async fn a_late_retry_answers_the_first_execution_on_redis() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 16).await.unwrap();
    a_late_retry_answers_the_first_execution(Arc::new(store)).await;
}

#[tokio::test]
async fn snapshots_are_taken_off_the_command_path_per_policy() {
    let store = Arc::new(MemoryEventStore::new().with_snapshot_policy(SnapshotPolicy { every: 3, max_age_ms: None }));
    let exec = CommandExecutor::new(store.clone());
    for i in 0..4 {
        exec.execute::<Counter>("s", &2, &context(i)).await.unwrap();
    }
    let s = store.clone();
    wait_until("a snapshot at version 3 or later", Duration::from_secs(5), move || {
        s.snapshot_of("counter", "s").is_some_and(|x| x.version >= 3)
    })
    .await;
    // The next load starts from it.
    let loaded = allies_store::load::<Counter>(&*store, "s").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (8, 4));
    assert!(loaded.snapshot.is_some_and(|(v, _)| v >= 3), "{:?}", loaded.snapshot);
}

#[tokio::test]
async fn state_based_and_hybrid_aggregates_run_through_the_same_loop() {
    for storage in [Storage::StateBased, Storage::Hybrid] {
        let store = Arc::new(MemoryEventStore::new().with_storage("counter", storage));
        let exec = CommandExecutor::new(store.clone());
        exec.execute::<Counter>("x", &2, &context(1)).await.unwrap();
        let done = exec.execute::<Counter>("x", &3, &context(2)).await.unwrap();
        assert_eq!((done.state.total, done.version), (5, 2), "{storage:?}");
        let loaded = allies_store::load::<Counter>(&*store, "x").await.unwrap();
        assert_eq!((loaded.state.total, loaded.version), (5, 2), "{storage:?}");
    }
}

#[tokio::test]
async fn two_handles_on_one_aggregate_stay_correct_and_read_only_on_a_conflict() {
    let store = Arc::new(Counting::new(MemoryEventStore::new()));
    let exec = CommandExecutor::new(store.clone());
    // Two replicas, each with its own handle on the same aggregate.
    let a = AggregateHandle::<Counter>::new(exec.clone(), "g");
    let b = AggregateHandle::<Counter>::new(exec.clone(), "g");
    a.execute(&1, &context(1), Options::default()).await.unwrap();
    let reads_after_first = store.reads.load(Ordering::SeqCst);
    for i in 0..5 {
        a.execute(&1, &context(2 + i), Options::default()).await.unwrap();
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), reads_after_first, "a warm handle reads nothing");
    // b loads once (version 6), then a writes: b is stale.
    b.execute(&10, &context(10), Options::default()).await.unwrap();
    a.execute(&100, &context(11), Options::default()).await.unwrap();
    let before = store.reads.load(Ordering::SeqCst);
    let done = b.execute(&1000, &context(12), Options::default()).await.unwrap();
    assert_eq!((done.state.total, done.version), (1116, 9), "re-decided on the caught-up state");
    assert!(store.reads.load(Ordering::SeqCst) > before, "the conflict made b catch up");
    // A refusal is never decided on a stale state: a is behind (b wrote), catches up first.
    let e = a.execute(&-2000, &context(13), Options::default()).await.unwrap_err();
    assert!(matches!(e, ExecuteError::Domain(BelowZero { total: 1116, .. })), "{e:?}");
    assert_eq!(a.current().await.unwrap(), (std::sync::Arc::new(Counter { total: 1116 }), 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_on_two_replicas_race_on_redis_without_losing_a_command() {
    let redis = RedisServer::start();
    let store: Arc<dyn EventStore> = Arc::new(RedisEventStore::connect(&redis.url(), 16).await.unwrap());
    let exec = CommandExecutor::new(store.clone()).with_max_attempts(50);
    let a = Arc::new(AggregateHandle::<Counter>::new(exec.clone(), "race"));
    let b = Arc::new(AggregateHandle::<Counter>::new(exec, "race"));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks
            .push(tokio::spawn(async move { h.execute(&1, &context(i), Options::default()).await.map(|d| d.version) }));
    }
    let mut versions: Vec<u64> = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=30).collect::<Vec<_>>());
    assert_eq!(b.current().await.unwrap(), (std::sync::Arc::new(Counter { total: 30 }), 30));
}
