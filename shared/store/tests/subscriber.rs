//! The subscriber runtime against a real redis-server: claims, retries,
//! dead letters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allies_core::ExpectedVersion;
use allies_store::subscriber::{self, Backoff, Handler, HandlerError, RetryPolicy, SubscriptionConfig};
use allies_store::{AppendRequest, EventStore, NewEvent, RecordedEvent, RedisEventStore, RedisTarget, keys};
use allies_testkit::RedisServer;
use allies_testkit::fixtures::meta;
use uuid::Uuid;

/// Counts applications per event id; fails every delivery of "poison" events.
#[derive(Default)]
struct Counting {
    applied: Mutex<HashMap<Uuid, u32>>,
    failures: Mutex<u32>,
}

impl Handler for Counting {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.envelope.event_type == "Poison" {
            *self.failures.lock().unwrap() += 1;
            return Err(HandlerError::new("cannot apply Poison"));
        }
        *self.applied.lock().unwrap().entry(event.envelope.event_id).or_default() += 1;
        Ok(())
    }
}

fn event(t: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: t.into(),
        schema_version: 1,
        content_type: allies_store::CONTENT_TYPE_JSON.into(),
        data: b"{}".to_vec(),
    }
}

async fn wait_until(what: &str, f: impl FnMut() -> bool) {
    allies_testkit::fixtures::wait_until(what, Duration::from_secs(10), f).await
}

/// Appends raw events to one aggregate.
async fn append(store: &RedisEventStore, t: &str, id: &str, expected: ExpectedVersion, events: Vec<NewEvent>) {
    store.append(AppendRequest::new(t, id, expected, &meta(), 0, events)).await.unwrap();
}

fn config(consumer: &str) -> SubscriptionConfig {
    let mut c = SubscriptionConfig::new("rm.test", consumer, "thing", 1);
    c.claim_idle = Duration::from_millis(300);
    c.retry = allies_store::Tunable::new(RetryPolicy {
        backoff: Backoff::Fixed,
        base: Duration::from_millis(50),
        max_delay: Duration::from_secs(1),
        max_attempts: 3,
    });
    c
}

#[test]
fn retry_policies_grow_as_configured() {
    let p = |backoff| RetryPolicy {
        backoff,
        base: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        max_attempts: 5,
    };
    assert_eq!(p(Backoff::Fixed).delay(3, "x"), Duration::from_millis(100));
    assert_eq!(p(Backoff::Linear).delay(3, "x"), Duration::from_millis(300));
    for n in 1..=6 {
        let d = p(Backoff::Exponential).delay(n, "1-0");
        let full = Duration::from_millis(100 * (1 << (n - 1))).min(Duration::from_secs(1));
        assert!(d >= full / 2 && d <= full, "attempt {n}: {d:?} outside [{:?}, {full:?}]", full / 2);
    }
    // Jitter spreads entries that failed together.
    let ds: std::collections::HashSet<_> =
        (0..20).map(|i| p(Backoff::Exponential).delay(4, &format!("{i}-0"))).collect();
    assert!(ds.len() > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_its_attempts_while_others_flow() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let handler = Arc::new(Counting::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(subscriber::run(
        RedisTarget::parse(&redis.url()).unwrap(),
        config("c1"),
        handler.clone(),
        stopped,
    ));

    let mut good = Vec::new();
    for i in 0..20 {
        let e = if i == 5 { event("Poison") } else { event("Fine") };
        if i != 5 {
            good.push(e.event_id);
        }
        append(&store, "thing", &format!("a{i}"), ExpectedVersion::NoStream, vec![e]).await;
    }
    let dlq = keys::dead_letter_key("thing", 0, "rm.test");
    wait_until("poison dead-lettered", || redis.raw(&["XLEN", &dlq]) == ":1").await;
    wait_until("good events applied", || handler.applied.lock().unwrap().len() == good.len()).await;
    assert_eq!(*handler.failures.lock().unwrap(), 3, "three attempts, then the dead-letter stream");
    let dead = redis.raw(&["XRANGE", &dlq, "-", "+"]);
    for needle in ["Poison", "dlq_error", "cannot apply Poison", "dlq_attempts", "dlq_handler", "rm.test"] {
        assert!(dead.contains(needle), "{needle} missing in {dead}");
    }
    assert!(handler.applied.lock().unwrap().values().all(|n| *n == 1));
    wait_until("nothing pending", || redis.raw(&["XPENDING", &keys::log_key("thing", 0), "rm.test"]).starts_with(":0"))
        .await;
    // Later events still flow.
    let late = event("Fine");
    let late_id = late.event_id;
    append(&store, "thing", "late", ExpectedVersion::NoStream, vec![late]).await;
    wait_until("late event applied", || handler.applied.lock().unwrap().contains_key(&late_id)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_entries_are_claimed_and_applied_once() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let log = keys::log_key("thing", 0);
    let mut ids = Vec::new();
    for i in 0..30 {
        let e = event("Fine");
        ids.push(e.event_id);
        append(&store, "thing", &format!("b{i}"), ExpectedVersion::NoStream, vec![e]).await;
    }
    // Consumer "dead" takes a batch mid-way and is killed before acking it.
    redis.raw(&["XGROUP", "CREATE", &log, "rm.test", "0", "MKSTREAM"]);
    let taken = redis.raw(&["XREADGROUP", "GROUP", "rm.test", "dead", "COUNT", "12", "STREAMS", &log, ">"]);
    assert!(taken.contains("Fine"));
    assert!(redis.raw(&["XPENDING", &log, "rm.test"]).starts_with(":12"));

    let handler = Arc::new(Counting::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(subscriber::run(
        RedisTarget::parse(&redis.url()).unwrap(),
        config("alive"),
        handler.clone(),
        stopped,
    ));
    wait_until("all applied", || handler.applied.lock().unwrap().len() == 30).await;
    wait_until("nothing pending", || redis.raw(&["XPENDING", &log, "rm.test"]).starts_with(":0")).await;
    let applied = handler.applied.lock().unwrap().clone();
    assert!(ids.iter().all(|id| applied.get(id) == Some(&1)), "every event applied exactly once: {applied:?}");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Fails "Poison" until told otherwise.
#[derive(Default)]
struct Toggle {
    heal: std::sync::atomic::AtomicBool,
    applied: Mutex<Vec<Uuid>>,
}

impl Handler for Toggle {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.envelope.event_type == "Poison" && !self.heal.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HandlerError::new("not yet"));
        }
        self.applied.lock().unwrap().push(event.envelope.event_id);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_listed_replayed_and_purged() {
    use allies_store::subscriber::{DeadLetterSelection, list_dead_letters, purge_dead_letters, replay_dead_letters};
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 2).await.unwrap();
    let handler = Arc::new(Toggle::default());
    let mut c = config("c");
    c.partitions = 2;
    c.retry = allies_store::Tunable::new(RetryPolicy { max_attempts: 1, ..c.retry.get() });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(subscriber::run(RedisTarget::parse(&redis.url()).unwrap(), c, handler.clone(), stopped));
    let mut poison = Vec::new();
    for i in 0..4 {
        let e = event("Poison");
        poison.push(e.event_id);
        append(&store, "thing", &format!("p{i}"), ExpectedVersion::NoStream, vec![e]).await;
    }
    let mut conn = store.connection();
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let d = list_dead_letters(&mut conn, "thing", 2, "rm.test", 100).await.unwrap();
        if d.len() == 4 || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.len(), 4);
    assert!(dead.iter().all(|d| d.error == "not yet" && d.attempts == 1 && d.handler == "rm.test"));
    let mut events: Vec<Uuid> = dead.iter().map(|d| d.event.as_ref().unwrap().envelope.event_id).collect();
    events.sort();
    poison.sort();
    assert_eq!(events, poison, "the dead letters carry the original events");

    // Still failing: replay keeps them.
    let all = DeadLetterSelection::All;
    assert_eq!(replay_dead_letters(&mut conn, &*handler, "thing", 2, "rm.test", &all).await.unwrap(), (0, 4));
    // One by id after the fix, then purge one, then replay the rest.
    handler.heal.store(true, std::sync::atomic::Ordering::SeqCst);
    let one = DeadLetterSelection::Ids(vec![dead[0].id.clone()]);
    assert_eq!(replay_dead_letters(&mut conn, &*handler, "thing", 2, "rm.test", &one).await.unwrap(), (1, 0));
    let purge = DeadLetterSelection::Ids(vec![dead[1].id.clone()]);
    assert_eq!(purge_dead_letters(&mut conn, "thing", 2, "rm.test", &purge).await.unwrap(), 1);
    let by_type = DeadLetterSelection::EventType("Poison".into());
    assert_eq!(replay_dead_letters(&mut conn, &*handler, "thing", 2, "rm.test", &by_type).await.unwrap(), (2, 0));
    assert!(list_dead_letters(&mut conn, "thing", 2, "rm.test", 100).await.unwrap().is_empty());
    assert_eq!(handler.applied.lock().unwrap().len(), 3);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Records the order in which each aggregate's versions are applied, with
/// uneven handler times so concurrent lanes interleave.
#[derive(Default)]
struct OrderCheck {
    seen: Mutex<HashMap<String, Vec<u64>>>,
}

impl Handler for OrderCheck {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let e = &event.envelope;
        tokio::time::sleep(Duration::from_micros((e.version % 3) * 300)).await;
        self.seen.lock().unwrap().entry(e.aggregate_id.clone()).or_default().push(e.version);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lanes_keep_each_aggregates_order() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    // 12 aggregates, 20 events each, interleaved in the log.
    for v in 0..20u64 {
        for a in 0..12 {
            let e = event("Fine");
            append(&store, "thing", &format!("agg{a}"), ExpectedVersion::Exact(v), vec![e]).await;
        }
    }
    let handler = Arc::new(OrderCheck::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task =
        tokio::spawn(subscriber::run(RedisTarget::parse(&redis.url()).unwrap(), config("c"), handler.clone(), stopped));
    wait_until("all applied", || handler.seen.lock().unwrap().values().map(Vec::len).sum::<usize>() == 240).await;
    for (aggregate, versions) in handler.seen.lock().unwrap().iter() {
        assert_eq!(versions, &(1..=20).collect::<Vec<u64>>(), "{aggregate} applied out of order");
    }
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Applies a read's events together; a read holding a Poison event fails
/// as a whole (nothing of it applied), and alone a Poison event always fails.
#[derive(Default)]
struct Together {
    seen: Mutex<HashMap<String, Vec<u64>>>,
    applied: Mutex<HashMap<Uuid, u32>>,
    together: Mutex<Vec<usize>>,
    poison_alone: Mutex<u32>,
}

impl Together {
    fn apply(&self, e: &RecordedEvent) {
        let e = &e.envelope;
        self.seen.lock().unwrap().entry(e.aggregate_id.clone()).or_default().push(e.version);
        *self.applied.lock().unwrap().entry(e.event_id).or_default() += 1;
    }
}

impl Handler for Together {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.envelope.event_type == "Poison" {
            *self.poison_alone.lock().unwrap() += 1;
            return Err(HandlerError::new("cannot apply Poison"));
        }
        self.apply(event);
        Ok(())
    }

    fn batches(&self) -> bool {
        true
    }

    async fn handle_all(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        if events.iter().any(|e| e.envelope.event_type == "Poison") {
            return Err(HandlerError::new("a Poison event in the read"));
        }
        self.together.lock().unwrap().push(events.len());
        events.iter().for_each(|e| self.apply(e));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_handler_gets_a_reads_entries_together_and_a_failed_read_goes_one_by_one() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    // 6 aggregates, 10 events each, interleaved; one Poison among them.
    let mut good = Vec::new();
    for v in 0..10u64 {
        for a in 0..6 {
            let e = if v == 4 && a == 2 { event("Poison") } else { event("Fine") };
            if e.event_type == "Fine" {
                good.push(e.event_id);
            }
            append(&store, "thing", &format!("agg{a}"), ExpectedVersion::Exact(v), vec![e]).await;
        }
    }
    let handler = Arc::new(Together::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task =
        tokio::spawn(subscriber::run(RedisTarget::parse(&redis.url()).unwrap(), config("c"), handler.clone(), stopped));
    let dlq = keys::dead_letter_key("thing", 0, "rm.test");
    wait_until("poison dead-lettered", || redis.raw(&["XLEN", &dlq]) == ":1").await;
    wait_until("good events applied", || handler.applied.lock().unwrap().len() == good.len()).await;
    // The first read held all 60 entries: it failed together, went one by
    // one, and only the Poison event was retried and buried.
    assert_eq!(*handler.poison_alone.lock().unwrap(), 3, "three attempts alone, then the dead-letter stream");
    assert!(handler.applied.lock().unwrap().values().all(|n| *n == 1), "each event applied once");
    for (aggregate, versions) in handler.seen.lock().unwrap().iter() {
        let expected: Vec<u64> = (1..=10).filter(|v| !(aggregate == "agg2" && *v == 5)).collect();
        assert_eq!(versions, &expected, "{aggregate} applied out of order");
    }
    wait_until("nothing pending", || redis.raw(&["XPENDING", &keys::log_key("thing", 0), "rm.test"]).starts_with(":0"))
        .await;

    // Later reads without a Poison event are applied together, in order
    // (appended while the subscriber is stopped: its next read holds them).
    stop.send(true).unwrap();
    task.await.unwrap();
    for v in 10..30u64 {
        for a in 0..6 {
            append(&store, "thing", &format!("agg{a}"), ExpectedVersion::Exact(v), vec![event("Fine")]).await;
        }
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task =
        tokio::spawn(subscriber::run(RedisTarget::parse(&redis.url()).unwrap(), config("c"), handler.clone(), stopped));
    wait_until("later events applied", || handler.applied.lock().unwrap().len() == good.len() + 120).await;
    assert_eq!(handler.together.lock().unwrap().as_slice(), &[120], "one read, applied together");
    for (aggregate, versions) in handler.seen.lock().unwrap().iter() {
        let expected: Vec<u64> = (1..=30).filter(|v| !(aggregate == "agg2" && *v == 5)).collect();
        assert_eq!(versions, &expected, "{aggregate} applied out of order");
    }
    assert!(handler.applied.lock().unwrap().values().all(|n| *n == 1), "each event applied once");
    wait_until("nothing pending", || redis.raw(&["XPENDING", &keys::log_key("thing", 0), "rm.test"]).starts_with(":0"))
        .await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Fails every call while `down`, counting calls.
#[derive(Default)]
struct Flaky {
    up: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicUsize,
    applied: std::sync::atomic::AtomicUsize,
}

impl Handler for Flaky {
    async fn handle(&self, _event: &RecordedEvent) -> Result<(), HandlerError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        if !self.up.load(SeqCst) {
            return Err(HandlerError::new("downstream is down"));
        }
        self.applied.fetch_add(1, SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_stops_delivery_and_keeps_entries_pending() {
    use allies_store::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
    use std::sync::atomic::Ordering::SeqCst;
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let handler = Arc::new(Flaky::default());
    let mut c = config("c");
    c.lanes = 1;
    c.retry = allies_store::Tunable::new(RetryPolicy { max_attempts: 3, ..c.retry.get() });
    c.breaker =
        Arc::new(CircuitBreaker::new(BreakerConfig { failure_threshold: 3, open_for: Duration::from_millis(600) }));
    let breaker = c.breaker.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(subscriber::run(RedisTarget::parse(&redis.url()).unwrap(), c, handler.clone(), stopped));
    for i in 0..10 {
        append(&store, "thing", &format!("f{i}"), ExpectedVersion::NoStream, vec![event("Fine")]).await;
    }
    wait_until("breaker open", || breaker.state() == BreakerState::Open).await;
    let calls = handler.calls.load(SeqCst);
    assert_eq!(calls, 3, "the breaker opened after three failures");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.calls.load(SeqCst), 3, "no delivery while open");
    assert!(redis.raw(&["XLEN", &keys::dead_letter_key("thing", 0, "rm.test")]) == ":0", "nothing burned its retries");
    // The downstream recovers: a half-open trial succeeds, everything is applied.
    handler.up.store(true, SeqCst);
    wait_until("all applied", || handler.applied.load(SeqCst) == 10).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(redis.raw(&["XLEN", &keys::dead_letter_key("thing", 0, "rm.test")]), ":0");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Records the order of handled event types.
#[derive(Default)]
struct Recorder {
    order: Mutex<Vec<String>>,
}

impl Handler for Recorder {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.order.lock().unwrap().push(event.envelope.event_type.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_streams_serve_higher_first_without_starving_lower() {
    use allies_store::{Priority, Publication};
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    // Published by the same append as a domain event (no dual write).
    // Low first: a plain FIFO would serve all of them before any critical.
    let mut version = 0;
    for (p, t, n) in
        [(Priority::Low, "Low", 60), (Priority::Normal, "Normal", 30), (Priority::Critical, "Critical", 60)]
    {
        for _ in 0..n {
            let publish = vec![Publication { topic: "ops".into(), priority: p, event: event(t) }];
            let request = AppendRequest::new(
                "game_session",
                "g1",
                ExpectedVersion::after_load(version),
                &meta(),
                0,
                vec![event("Played")],
            )
            .with_publications(publish);
            version = store.append(request).await.unwrap().version;
        }
    }
    let low = keys::integration_key("ops", "game_session", 0, Priority::Low);
    assert_eq!(redis.raw(&["XLEN", &low]), ":60", "each publication on its priority stream");
    let handler = Arc::new(Recorder::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let target = RedisTarget::parse(&redis.url()).unwrap();
    let mut config = SubscriptionConfig::new("ops.sub", "c", "game_session", 1);
    config.source = subscriber::Source::Topic("ops".into());
    // A round is at most 15 entries, far below a batch: one that got a
    // priority's whole share reads on at once (more may be waiting), so a
    // backlog never waits a linger per round (10 rounds here: ≥ 10 s).
    config.linger = Duration::from_secs(1);
    let started = Instant::now();
    let task = tokio::spawn(subscriber::run(target, config, handler.clone(), stopped));
    wait_until("all handled", || handler.order.lock().unwrap().len() == 150).await;
    assert!(started.elapsed() < Duration::from_secs(5), "a backlog lingered: {:?}", started.elapsed());
    let order = handler.order.lock().unwrap().clone();
    let first_round = &order[..15];
    // One round: 8 critical first, then normal with high's unused share (2 + 4), then 1 low.
    let count = |t: &str| first_round.iter().filter(|x| *x == t).count();
    assert_eq!((count("Critical"), count("Normal"), count("Low")), (8, 6, 1), "{first_round:?}");
    assert!(first_round[..8].iter().all(|t| t == "Critical"), "higher priorities go first: {first_round:?}");
    let last_critical = order.iter().rposition(|t| t == "Critical").unwrap();
    let last_low = order.iter().rposition(|t| t == "Low").unwrap();
    assert!(last_critical < last_low, "critical drains before low");
    assert!(order[..60].iter().filter(|t| *t == "Low").count() >= 4, "low keeps moving while critical is busy");
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(redis.raw(&["XPENDING", &low, "ops.sub"]).starts_with(":0"));
}

/// A damaged entry (its checksum does not match its data) is dead-lettered
/// like any failure, and then neither hides the other dead letters nor
/// resists a purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_with_a_damaged_payload_is_listed_with_a_note_and_purged() {
    use allies_store::subscriber::{DeadLetterSelection, list_dead_letters, purge_dead_letters};
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let log = keys::log_key("thing", 0);
    redis.raw(&[
        "XADD", &log, "*", "event_id", "0190f1a2-0000-7000-8000-000000000001", "event_type", "Fine",
        "aggregate_type", "thing", "aggregate_id", "damaged", "version", "1", "schema_version", "1",
        "content_type", "application/json", "data", "{\"x\":1}", "checksum", "00000000", "metadata",
        r#"{"correlation_id":"0190f1a2-0000-7000-8000-000000000002","causation_id":"0190f1a2-0000-7000-8000-000000000003"}"#,
        "created_at", "1",
    ]);
    append(&store, "thing", "ok", ExpectedVersion::NoStream, vec![event("Poison")]).await;
    let handler = Arc::new(Counting::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let target = RedisTarget::parse(&redis.url()).unwrap();
    let task = tokio::spawn(subscriber::run(target, config("c1"), handler.clone(), stopped));
    let dlq = keys::dead_letter_key("thing", 0, "rm.test");
    wait_until("both dead-lettered", || redis.raw(&["XLEN", &dlq]) == ":2").await;
    let mut conn = store.connection();
    let dead = list_dead_letters(&mut conn, "thing", 1, "rm.test", 10).await.expect("listable despite the damage");
    assert_eq!(dead.len(), 2);
    let damaged = dead.iter().find(|d| d.aggregate_id == "damaged").unwrap();
    assert!(damaged.event.is_none());
    assert!(damaged.damage.as_deref().unwrap_or_default().contains("checksum"), "{damaged:?}");
    assert!(damaged.error.contains("checksum"), "{}", damaged.error);
    assert_eq!((damaged.event_type.as_str(), damaged.data.as_slice()), ("Fine", &b"{\"x\":1}"[..]));
    let healthy = dead.iter().find(|d| d.aggregate_id == "ok").unwrap();
    assert!(healthy.event.is_some() && healthy.damage.is_none());
    let purged =
        purge_dead_letters(&mut conn, "thing", 1, "rm.test", &DeadLetterSelection::Ids(vec![damaged.id.clone()]))
            .await
            .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(redis.raw(&["XLEN", &dlq]), ":1");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Fails with a transient error (an outage) its first `outage` deliveries.
#[derive(Default)]
struct Outage {
    outage: u32,
    deliveries: Mutex<u32>,
    applied: Mutex<u32>,
}

impl Handler for Outage {
    async fn handle(&self, _event: &RecordedEvent) -> Result<(), HandlerError> {
        let mut d = self.deliveries.lock().unwrap();
        *d += 1;
        if *d <= self.outage {
            return Err(HandlerError::transient("redis unavailable: a failover is under way"));
        }
        *self.applied.lock().unwrap() += 1;
        Ok(())
    }
}

/// An outage outlasting the retry budget (a Redis Cluster failover takes
/// seconds) does not dead-letter the event: it is applied once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_budget_never_dead_letters_an_event() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let handler = Arc::new(Outage { outage: 7, ..Default::default() });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(subscriber::run(
        RedisTarget::parse(&redis.url()).unwrap(),
        config("c1"),
        handler.clone(),
        stopped,
    ));
    append(&store, "thing", "a", ExpectedVersion::NoStream, vec![event("Fine")]).await;
    wait_until("applied after the outage", || *handler.applied.lock().unwrap() == 1).await;
    assert_eq!(*handler.deliveries.lock().unwrap(), 8, "7 failed deliveries (the budget is 3), then applied");
    assert_eq!(redis.raw(&["XLEN", &keys::dead_letter_key("thing", 0, "rm.test")]), ":0", "nothing dead-lettered");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A group's lag is what it has not been handed: 0 once it has the last
/// entry, whatever Redis's `entries-read` counter says (after a failover a
/// promoted replica's counter can be short: `XGROUP SETID … ENTRIESREAD`
/// sets it the same way here), counted when a little behind, Redis's
/// estimate when far behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_lag_is_what_it_was_not_handed_not_a_stale_counter() {
    let redis = RedisServer::start();
    let mut conn = RedisTarget::parse(&redis.url()).unwrap().connect().await.unwrap();
    let stream = "es:{thing.0}:log";
    let mut ids = Vec::new();
    for i in 0..150 {
        let id: String = redis::cmd("XADD").arg(stream).arg("*").arg("n").arg(i).query_async(&mut conn).await.unwrap();
        ids.push(id);
    }
    let group = |name: &str, at: &str, read: u64| {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(stream).arg(name).arg(at).arg("ENTRIESREAD").arg(read);
        cmd
    };
    // Handed every entry, but the counter says 5 of 150 were read.
    let _: () = group("stale", &ids[149], 5).query_async(&mut conn).await.unwrap();
    // Three behind, counter right.
    let _: () = group("near", &ids[146], 147).query_async(&mut conn).await.unwrap();
    // Three behind, the counter says it has read them all (Redis: lag 0).
    let _: () = group("short", &ids[146], 150).query_async(&mut conn).await.unwrap();
    // 140 behind: more than counted, Redis's estimate.
    let _: () = group("far", &ids[9], 10).query_async(&mut conn).await.unwrap();
    let lag = |positions: &[(String, subscriber::GroupPosition)], name: &str| {
        positions.iter().find(|(n, _)| n == name).map(|(_, p)| p.lag).unwrap()
    };
    let positions = subscriber::group_positions(&mut conn, stream).await.unwrap();
    assert_eq!(lag(&positions, "stale"), 0, "handed the last entry: not behind, whatever the counter says");
    assert_eq!(lag(&positions, "near"), 3);
    assert_eq!(lag(&positions, "short"), 3, "counted, not the counter's 0");
    assert_eq!(lag(&positions, "far"), 140);
    assert_eq!(subscriber::group_positions(&mut conn, "es:{thing.0}:none").await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_reader_lingers_so_what_arrives_meanwhile_comes_in_one_read_and_a_quiet_logs_first_entry_at_once() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let handler = Arc::new(Together::default());
    let linger = Duration::from_secs(2);
    let mut c = config("c");
    c.linger = linger;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(subscriber::run(RedisTarget::parse(&redis.url()).unwrap(), c, handler.clone(), stopped));
    // The group is made and the reader blocks on an empty log.
    wait_until("the group made", || redis.raw(&["XINFO", "GROUPS", &keys::log_key("thing", 0)]).contains("rm.test"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A quiet log: its first entry is read at once, not after the linger.
    let appended = Instant::now();
    append(&store, "thing", "solo", ExpectedVersion::NoStream, vec![event("Fine")]).await;
    wait_until("the first entry applied", || handler.applied.lock().unwrap().len() == 1).await;
    let first = appended.elapsed();
    assert!(first < linger * 3 / 4, "a quiet log's first entry waited {first:?}");

    // The reader found an entry, so it waits before its next read: five
    // appends made meanwhile come in one read, applied together.
    for a in 0..5 {
        append(&store, "thing", &format!("busy{a}"), ExpectedVersion::NoStream, vec![event("Fine")]).await;
    }
    wait_until("the five applied", || handler.applied.lock().unwrap().len() == 6).await;
    assert_eq!(*handler.together.lock().unwrap(), vec![5], "one read of five, after the linger");
    assert!(handler.applied.lock().unwrap().values().all(|n| *n == 1));
    stop.send(true).unwrap();
    task.await.unwrap();
}
