//! The event store against a real, private redis-server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use allies_core::ExpectedVersion;
use allies_store::{
    AppendError, AppendRequest, AsOf, EventStore, EventStoreExt, NewEvent, RedisEventStore, StateWrite, keys, load,
    load_as_of, save_snapshot,
};
use allies_testkit::RedisServer;
use allies_testkit::fixtures::{Added, Counter, meta};
use uuid::Uuid;

async fn store(redis: &RedisServer) -> RedisEventStore {
    RedisEventStore::connect(&redis.url(), 16).await.expect("connect")
}

/// A typed append request of `events` on counter `id`.
fn typed(id: &str, expected: ExpectedVersion, events: &[Added]) -> AppendRequest {
    AppendRequest::typed::<Counter>(id, expected, &meta(), 0, events, allies_core::EventFormat::Json).unwrap()
}

/// The request a state_based / hybrid aggregate's append makes: events plus the state after them.
fn with_state_of(id: &str, expected: ExpectedVersion, events: &[Added], state: &Counter) -> AppendRequest {
    typed(id, expected, events).with_aggregate_state(serde_json::to_vec(state).unwrap(), 1)
}

#[tokio::test]
async fn append_and_load_round_trip_with_versions_and_metadata() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let m = meta();
    let events = [Added::new(2, 1), Added::new(3, 1)];
    let out =
        store.append_events::<Counter>("c1", ExpectedVersion::NoStream, &m, 1_700_000_000_000, &events).await.unwrap();
    assert_eq!(out.version, 2);
    assert_eq!(out.log_ids.len(), 2);
    assert!(out.consistency_token.starts_with(&format!("counter.{}@", out.partition)));

    let (state, version) = store.load_events::<Counter>("c1").await.unwrap();
    assert_eq!((state.total, version), (5, 2));

    let recs = store.read("counter", "c1", 2, usize::MAX).await.unwrap();
    assert_eq!(recs.len(), 1, "reading from version 2 returns only version 2");
    let env = recs[0].decode::<Added>().unwrap();
    assert_eq!(env.version, 2);
    assert_eq!(env.metadata, m);
    assert_eq!(env.recorded_at_ms, 1_700_000_000_000);
    assert_eq!(env.event_id.get_version_num(), 7, "event ids are UUIDv7");
    assert_eq!(env.payload, events[1]);

    // Both events are in the partition log too, in order, packed: two
    // values an entry, read back as the same events as the stream's.
    let log = keys::log_key("counter", out.partition);
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(&log).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    assert_eq!(entries.ids.len(), 2);
    let stream = store.read("counter", "c1", 1, usize::MAX).await.unwrap();
    for (entry, stored) in entries.ids.iter().zip(&stream) {
        let mut fields: Vec<&str> = entry.map.keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, ["event", "version"]);
        assert_eq!(&allies_store::RecordedEvent::from_entry(&log, entry).unwrap(), stored);
        assert_eq!(allies_store::entry_text(entry, "aggregate_id"), Some("c1"));
    }

    // A missing aggregate loads as the default state at version 0.
    let (state, version) = store.load_events::<Counter>("nope").await.unwrap();
    assert_eq!((state.total, version), (0, 0));
}

#[tokio::test]
async fn expected_version_checks_any_no_stream_and_exact() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let e = [Added::new(1, 0)];
    store.append_events::<Counter>("c", ExpectedVersion::Any, &meta(), 0, &e).await.unwrap();
    match store.append_events::<Counter>("c", ExpectedVersion::NoStream, &meta(), 0, &e).await {
        Err(AppendError::Conflict { expected: ExpectedVersion::NoStream, actual: 1 }) => {}
        other => panic!("expected conflict, got {other:?}"),
    }
    match store.append_events::<Counter>("c", ExpectedVersion::Exact(5), &meta(), 0, &e).await {
        Err(AppendError::Conflict { expected: ExpectedVersion::Exact(5), actual: 1 }) => {}
        other => panic!("expected conflict, got {other:?}"),
    }
    let out = store.append_events::<Counter>("c", ExpectedVersion::Exact(1), &meta(), 0, &e).await.unwrap();
    assert_eq!(out.version, 2);
    let out = store.append_events::<Counter>("c", ExpectedVersion::Any, &meta(), 0, &e).await.unwrap();
    assert_eq!(out.version, 3);
    // Conflicts wrote nothing: 3 events in the stream and in the log.
    let p = keys::partition_of("c", 16);
    assert_eq!(redis.raw(&["XLEN", &keys::stream_key("counter", p, "c")]).trim(), ":3");
    assert_eq!(redis.raw(&["XLEN", &keys::log_key("counter", p)]).trim(), ":3");
}

#[tokio::test]
async fn empty_and_oversized_appends_are_refused_without_writing() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let r = store.append(AppendRequest::new("counter", "c", ExpectedVersion::Any, &meta(), 0, vec![])).await;
    assert!(matches!(r, Err(AppendError::Invalid(_))), "{r:?}");
    let one = NewEvent::encode(&Added::new(1, 0)).unwrap();
    let many = vec![one; allies_store::MAX_EVENTS_PER_APPEND + 1];
    let r = store.append(AppendRequest::new("counter", "c", ExpectedVersion::Any, &meta(), 0, many)).await;
    assert!(matches!(r, Err(AppendError::Invalid(_))), "{r:?}");
    assert_eq!(redis.raw(&["DBSIZE"]).trim(), ":0");
}

#[tokio::test]
async fn a_corrupt_entry_is_a_typed_error_naming_stream_and_entry() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let p = keys::partition_of("bad", 16);
    let stream = keys::stream_key("counter", p, "bad");
    redis.raw(&["XADD", &stream, "0-1", "event_id", "not-a-uuid"]);
    match store.load_events::<Counter>("bad").await {
        Err(allies_store::StoreError::Corrupt { stream: s, entry, .. }) => {
            assert_eq!(s, stream);
            assert_eq!(entry, "0-1");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // An entry with a foreign id makes the append script refuse, writing nothing.
    let stream2 = keys::stream_key("counter", keys::partition_of("bad2", 16), "bad2");
    redis.raw(&["XADD", &stream2, "5-0", "x", "y"]);
    let r = store.append_events::<Counter>("bad2", ExpectedVersion::Any, &meta(), 0, &[Added::new(1, 0)]).await;
    assert!(
        matches!(&r, Err(AppendError::Store(allies_store::StoreError::Corrupt { stream, .. })) if *stream == stream2),
        "{r:?}"
    );
    assert_eq!(redis.raw(&["XLEN", &stream2]).trim(), ":1");
}

#[tokio::test]
async fn loading_a_long_stream_reads_every_page() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let batch: Vec<Added> = (0..1000).map(|i| Added::new(i, 0)).collect();
    for _ in 0..3 {
        store.append_events::<Counter>("long", ExpectedVersion::Any, &meta(), 0, &batch).await.unwrap();
    }
    store.append_events::<Counter>("long", ExpectedVersion::Exact(3000), &meta(), 0, &batch[..5]).await.unwrap();
    let (state, version) = store.load_events::<Counter>("long").await.unwrap();
    assert_eq!(version, 3005);
    assert_eq!(state.total, 3 * (999 * 1000 / 2) + 10);
    assert_eq!(store.read("counter", "long", 2001, usize::MAX).await.unwrap().len(), 1005);
}

/// 50 writers race on one aggregate with exact expected versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_writers_never_lose_or_duplicate_an_append() {
    let redis = RedisServer::start();
    let store = Arc::new(store(&redis).await);
    const WRITERS: u32 = 50;
    const ATTEMPTS: u32 = 20;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            let mut conflicts = 0u32;
            for _ in 0..ATTEMPTS {
                let version = store.read("counter", "hot", 1, usize::MAX).await.unwrap().len() as u64;
                let ev = NewEvent::encode(&Added::new(1, w)).unwrap();
                let id = ev.event_id;
                match store
                    .append(AppendRequest::new(
                        "counter",
                        "hot",
                        ExpectedVersion::after_load(version),
                        &meta(),
                        0,
                        vec![ev],
                    ))
                    .await
                {
                    Ok(out) => {
                        assert_eq!(out.version, version + 1);
                        wins.push((id, out.version, out.log_ids[0].clone()));
                    }
                    Err(AppendError::Conflict { expected, actual }) => {
                        assert_eq!(expected, ExpectedVersion::after_load(version));
                        assert!(actual > version, "a conflict reports the newer actual version");
                        conflicts += 1;
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            (wins, conflicts)
        }));
    }
    let mut wins = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (w, c) = t.await.unwrap();
        wins.extend(w);
        conflicts += c;
    }
    assert_eq!(wins.len() as u32 + conflicts, WRITERS * ATTEMPTS, "every attempt either won or got the conflict");
    assert!(conflicts > 0, "the race produced no conflict; the test did not exercise concurrency");

    let stream = store.read("counter", "hot", 1, usize::MAX).await.unwrap();
    let versions: Vec<u64> = stream.iter().map(|r| r.envelope.version).collect();
    assert_eq!(versions, (1..=wins.len() as u64).collect::<Vec<_>>(), "versions 1..N, no gap, no duplicate");
    let by_id: HashMap<Uuid, u64> = stream.iter().map(|r| (r.envelope.event_id, r.envelope.version)).collect();
    assert_eq!(by_id.len(), stream.len(), "no event id twice");
    for (id, version, _) in &wins {
        assert_eq!(by_id.get(id), Some(version), "a reported success is present at its version");
    }
    // The partition log holds exactly the winners, each once, in version order.
    let log_ids: HashSet<&String> = wins.iter().map(|(_, _, l)| l).collect();
    assert_eq!(log_ids.len(), wins.len());
    let p = keys::partition_of("hot", 16);
    assert_eq!(redis.raw(&["XLEN", &keys::log_key("counter", p)]).trim(), format!(":{}", wins.len()));
}

#[tokio::test]
async fn state_is_written_with_the_events_and_not_on_conflict() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let e = [Added::new(1, 0)];
    let state = StateWrite {
        fields: vec![("status".into(), "active".into()), ("owner".into(), "u1".into())],
        expire_at_ms: Some(4_102_444_800_000),
    };
    let out = store.append(typed("s1", ExpectedVersion::NoStream, &e).with_state_fields(state)).await.unwrap();
    assert_eq!(store.state_field("counter", "s1", "status").await.unwrap().as_deref(), Some("active"));
    assert_eq!(store.state_field("counter", "s1", "version").await.unwrap().as_deref(), Some("1"));
    let key = keys::state_key("counter", out.partition, "s1");
    assert!(redis.raw(&["PEXPIRETIME", &key]).contains("4102444800000"));

    // A conflicting append changes neither the stream nor the state.
    let revoked = StateWrite { fields: vec![("status".into(), "revoked".into())], expire_at_ms: None };
    let r = store.append(typed("s1", ExpectedVersion::NoStream, &e).with_state_fields(revoked.clone())).await;
    assert!(matches!(r, Err(AppendError::Conflict { .. })), "{r:?}");
    assert_eq!(store.state_field("counter", "s1", "status").await.unwrap().as_deref(), Some("active"));
    let r = store.append(typed("s1", ExpectedVersion::Exact(1), &e).with_state_fields(revoked)).await;
    assert_eq!(r.unwrap().version, 2);
    assert_eq!(store.state_field("counter", "s1", "status").await.unwrap().as_deref(), Some("revoked"));
    assert_eq!(store.state_field("counter", "nope", "status").await.unwrap(), None);
}

fn command(id: &str, fingerprint: &str) -> allies_store::CommandRecord {
    allies_store::CommandRecord {
        id: id.into(),
        scope: String::new(),
        fingerprint: fingerprint.into(),
        ttl: std::time::Duration::from_secs(60),
    }
}

#[tokio::test]
async fn a_retried_command_id_returns_the_first_result_and_writes_nothing() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let e = [Added::new(1, 0)];
    let first =
        store.append(typed("c", ExpectedVersion::NoStream, &e).with_command(command("cmd-1", "f1"))).await.unwrap();
    assert!(!first.duplicate);
    // The retry would conflict on its expected version; the record answers first.
    let again =
        store.append(typed("c", ExpectedVersion::NoStream, &e).with_command(command("cmd-1", "f1"))).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.version, &again.log_ids, &again.consistency_token),
        (first.version, &first.log_ids, &first.consistency_token)
    );
    assert_eq!(store.read("counter", "c", 1, usize::MAX).await.unwrap().len(), 1, "no new event");
    // The same id for a different command is refused, writing nothing.
    let r = store.append(typed("c", ExpectedVersion::Any, &e).with_command(command("cmd-1", "f2"))).await;
    assert!(matches!(r, Err(AppendError::CommandIdReused { ref command_id }) if command_id == "cmd-1"), "{r:?}");
    // A new id is a new command.
    let next =
        store.append(typed("c", ExpectedVersion::Exact(1), &e).with_command(command("cmd-2", "f1"))).await.unwrap();
    assert_eq!((next.version, next.duplicate), (2, false));
    // Records expire.
    let key = keys::command_key("counter", keys::partition_of("c", 16), "c", "cmd-1");
    let ttl: i64 = redis.raw(&["PTTL", &key]).trim_start_matches(':').parse().unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

/// Redis forgets its scripts on a restart (they are not in the AOF), a
/// `SCRIPT FLUSH` or a failover to a node that never ran them: the append
/// then hears `NOSCRIPT`, loads the script and runs the same command again,
/// once — the events are written once and a retry still answers from its record.
#[tokio::test]
async fn an_append_after_redis_forgot_its_scripts_loads_the_script_and_writes_once() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let e = [Added::new(1, 0)];
    let first =
        store.append(typed("c", ExpectedVersion::NoStream, &e).with_command(command("cmd-1", "f1"))).await.unwrap();
    assert_eq!((first.version, first.duplicate), (1, false));
    assert_eq!(redis.raw(&["SCRIPT", "FLUSH"]).trim(), "+OK");
    let second = store.append(typed("c", ExpectedVersion::Exact(1), &e)).await.unwrap();
    assert_eq!((second.version, second.duplicate), (2, false));
    assert_eq!(redis.raw(&["SCRIPT", "FLUSH"]).trim(), "+OK");
    let again =
        store.append(typed("c", ExpectedVersion::NoStream, &e).with_command(command("cmd-1", "f1"))).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.version, &again.log_ids), (first.version, &first.log_ids));
    assert_eq!(store.read("counter", "c", 1, usize::MAX).await.unwrap().len(), 2, "each event once");
    let log = keys::log_key("counter", keys::partition_of("c", 16));
    assert_eq!(redis.raw(&["XLEN", &log]).trim_start_matches(':').trim(), "2", "the log holds each event once");
}

#[tokio::test]
async fn one_command_id_of_two_callers_is_two_commands_and_each_ones_retry_answers_its_own() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let e = [Added::new(1, 0)];
    let of = |scope: &str| allies_store::CommandRecord { scope: scope.into(), ..command("1", "f1") };
    let ann = store.append(typed("c", ExpectedVersion::Any, &e).with_command(of("ann"))).await.unwrap();
    let bob = store.append(typed("c", ExpectedVersion::Any, &e).with_command(of("bob"))).await.unwrap();
    assert_eq!((ann.version, ann.duplicate, bob.version, bob.duplicate), (1, false, 2, false));
    let again = store.append(typed("c", ExpectedVersion::Any, &e).with_command(of("bob"))).await.unwrap();
    assert_eq!((again.duplicate, again.version, &again.log_ids), (true, 2, &bob.log_ids));
    let found = store.command_outcome("counter", "c", &of("ann")).await.unwrap().expect("ann's record");
    assert_eq!((found.version, &found.log_ids), (1, &ann.log_ids));
    // An error names the id the caller sent, not its scope.
    let r = store.append(
        typed("c", ExpectedVersion::Any, &e)
            .with_command(allies_store::CommandRecord { fingerprint: "f2".into(), ..of("ann") }),
    );
    assert!(matches!(r.await, Err(AppendError::CommandIdReused { ref command_id }) if command_id == "1"));
    assert_eq!(store.read("counter", "c", 1, usize::MAX).await.unwrap().len(), 2);
    let key = keys::command_key("counter", keys::partition_of("c", 16), "c", "bob/1");
    assert_eq!(redis.raw(&["EXISTS", &key]), ":1", "the record's key names its scope");
}

#[tokio::test]
async fn a_command_record_is_one_string_and_a_record_of_the_older_layout_still_answers() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let e = [Added::new(1, 0), Added::new(2, 0)];
    let first = store.append(typed("c", ExpectedVersion::Any, &e).with_command(command("new", "f1"))).await.unwrap();
    let key = |id: &str| keys::command_key("counter", keys::partition_of("c", 16), "c", id);
    assert_eq!(redis.raw(&["TYPE", &key("new")]), "+string");
    assert_eq!(
        redis.raw(&["GET", &key("new")]),
        format!("2 {} {}\nf1", first.log_ids[0], first.log_ids[1]),
        "version, log ids, then the fingerprint"
    );
    // A record as the script wrote it before records were strings: a hash
    // with the fingerprint and the result as JSON, expiring.
    let (v, ids) = (first.version, &first.log_ids);
    let json = format!(r#"["ok",{v},"{}","{}"]"#, ids[0], ids[1]);
    redis.raw(&["HSET", &key("old"), "fingerprint", "f9", "result", &json]);
    redis.raw(&["PEXPIRE", &key("old"), "60000"]);
    for (id, fingerprint) in [("new", "f1"), ("old", "f9")] {
        // A retry the append meets (the script reads the record) ...
        let again = store
            .append(typed("c", ExpectedVersion::Exact(0), &e).with_command(command(id, fingerprint)))
            .await
            .unwrap();
        assert_eq!((again.duplicate, again.version, &again.log_ids), (true, 2, &first.log_ids), "{id}");
        // ... and one the executor looks up (a refused retry).
        let found = store.command_outcome("counter", "c", &command(id, fingerprint)).await.unwrap().expect(id);
        assert_eq!(
            (found.duplicate, found.version, &found.log_ids, &found.consistency_token),
            (true, 2, &first.log_ids, &first.consistency_token),
            "{id}"
        );
        // Another command under the id is refused either way, writing nothing.
        let r = store.append(typed("c", ExpectedVersion::Any, &e).with_command(command(id, "other"))).await;
        assert!(matches!(r, Err(AppendError::CommandIdReused { .. })), "{id}: {r:?}");
        let r = store.command_outcome("counter", "c", &command(id, "other")).await;
        assert!(matches!(r, Err(AppendError::CommandIdReused { .. })), "{id}: {r:?}");
    }
    assert!(store.command_outcome("counter", "c", &command("never", "f1")).await.unwrap().is_none());
    assert_eq!(store.read("counter", "c", 1, usize::MAX).await.unwrap().len(), 2, "nothing written twice");
}

#[tokio::test]
async fn a_corrupted_payload_fails_its_checksum_with_stream_and_version() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    store.append_events::<Counter>("k", ExpectedVersion::Any, &meta(), 0, &[Added::new(1, 0)]).await.unwrap();
    let p = keys::partition_of("k", 16);
    let stream = keys::stream_key("counter", p, "k");
    // Rewrite entry 0-2 with a flipped payload but the original checksum.
    let raw = redis.raw(&["XRANGE", &stream, "-", "+"]);
    let fields: Vec<&str> = raw.lines().skip(1).collect();
    let mut args: Vec<String> = vec!["XADD".into(), stream.clone(), "0-2".into()];
    for pair in fields.chunks(2) {
        let (f, v) = (pair[0], pair[1]);
        let v = match f {
            "data" => v.replace("\"n\":1", "\"n\":9"),
            "version" => "2".into(),
            _ => v.to_owned(),
        };
        args.push(f.into());
        args.push(v);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    redis.raw(&args);
    match store.load_events::<Counter>("k").await {
        Err(allies_store::StoreError::Corrupt { stream: s, entry, reason }) => {
            assert_eq!((s.as_str(), entry.as_str()), (stream.as_str(), "0-2"));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected a checksum failure, got {other:?}"),
    }
}

#[tokio::test]
async fn time_travel_by_version_and_time_and_paged_history() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    for (i, at) in [100, 200, 300, 400, 500].into_iter().enumerate() {
        let e = [Added::new(1 << i, 0)];
        store.append_events::<Counter>("tt", ExpectedVersion::Exact(i as u64), &meta(), at, &e).await.unwrap();
    }
    let at = |s: (Counter, u64)| (s.0.total, s.1);
    assert_eq!(at(load_as_of::<Counter>(&store, "tt", AsOf::Version(3)).await.unwrap()), (1 + 2 + 4, 3));
    assert_eq!(at(load_as_of::<Counter>(&store, "tt", AsOf::Version(99)).await.unwrap()), (31, 5));
    assert_eq!(at(load_as_of::<Counter>(&store, "tt", AsOf::Version(0)).await.unwrap()), (0, 0));
    assert_eq!(at(load_as_of::<Counter>(&store, "tt", AsOf::Time(250)).await.unwrap()), (1 + 2, 2));
    assert_eq!(at(load_as_of::<Counter>(&store, "tt", AsOf::Time(500)).await.unwrap()), (31, 5));
    assert_eq!(at(load_as_of::<Counter>(&store, "tt", AsOf::Time(50)).await.unwrap()), (0, 0));

    let page1 = store.read_range("counter", "tt", 1, None, 2).await.unwrap();
    let page2 = store.read_range("counter", "tt", 3, None, 2).await.unwrap();
    let page3 = store.read_range("counter", "tt", 5, None, 2).await.unwrap();
    let versions: Vec<u64> = [page1, page2, page3].concat().iter().map(|r| r.envelope.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert!(store.read_range("counter", "tt", 6, None, 2).await.unwrap().is_empty());
    assert_eq!(store.read_range("counter", "tt", 2, Some(3), 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn snapshots_load_with_the_events_after_them_and_bad_ones_are_replaced() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let batch: Vec<Added> = (0..10).map(|i| Added::new(i, 0)).collect();
    store.append_events::<Counter>("sn", ExpectedVersion::Any, &meta(), 0, &batch).await.unwrap();
    let (state, v) = store.load_events::<Counter>("sn").await.unwrap();
    assert!(save_snapshot(&store, "sn", &state, v, 1_000).await.unwrap());
    assert!(
        !save_snapshot(&store, "sn", &Counter { total: -1 }, 5, 2_000).await.unwrap(),
        "an older snapshot never wins"
    );
    store.append_events::<Counter>("sn", ExpectedVersion::Exact(10), &meta(), 0, &batch[..3]).await.unwrap();

    let loaded = load::<Counter>(&store, "sn").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version, loaded.snapshot), (45 + 3, 13, Some((10, 1_000))));

    // A snapshot whose state is wrong for its checksum is ignored, not trusted.
    let key = keys::snapshot_key("counter", keys::partition_of("sn", 16), "sn");
    redis.raw(&["HSET", &key, "data", "999999"]);
    let loaded = load::<Counter>(&store, "sn").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version, loaded.snapshot), (48, 13, None), "rebuilt from events");
    let replaced = load::<Counter>(&store, "sn").await.unwrap();
    assert_eq!((replaced.state.total, replaced.snapshot.map(|s| s.0)), (48, Some(13)), "and the snapshot replaced");

    // A snapshot of another schema is ignored too.
    redis.raw(&["HSET", &key, "schema", "0"]);
    let loaded = load::<Counter>(&store, "sn").await.unwrap();
    assert_eq!((loaded.state.total, loaded.snapshot), (48, None));
    // No snapshot at all: plain load.
    let none = load::<Counter>(&store, "nothing").await.unwrap();
    assert_eq!((none.version, none.snapshot), (0, None));
}

#[tokio::test]
async fn snapshots_are_compressed_with_lz4_or_stored_plain_and_both_load() {
    let redis = RedisServer::start();
    let lz4 = store(&redis).await;
    let plain = store(&redis).await.with_snapshot_compression(allies_store::SnapshotCompression::None);
    let batch: Vec<Added> = (0..5).map(|i| Added::new(i, 0)).collect();
    for id in ["z", "p"] {
        lz4.append_events::<Counter>(id, ExpectedVersion::Any, &meta(), 0, &batch).await.unwrap();
    }
    save_snapshot(&lz4, "z", &Counter { total: 10 }, 5, 1).await.unwrap();
    save_snapshot(&plain, "p", &Counter { total: 10 }, 5, 1).await.unwrap();
    let zkey = keys::snapshot_key("counter", keys::partition_of("z", 16), "z");
    let pkey = keys::snapshot_key("counter", keys::partition_of("p", 16), "p");
    assert_eq!(redis.raw(&["HGET", &zkey, "encoding"]), "json+lz4");
    assert_eq!(redis.raw(&["HGET", &pkey, "data"]), "10");
    for (s, id) in [(&plain, "z"), (&lz4, "p")] {
        let l = load::<Counter>(s, id).await.unwrap();
        assert_eq!((l.state.total, l.snapshot.map(|s| s.0)), (10, Some(5)), "{id}");
    }
    // Garbage that claims to be lz4 is ignored, never trusted or panicked on.
    redis.raw(&["HSET", &zkey, "data", "\x01\x02garbage", "checksum", &allies_store::checksum(b"\x01\x02garbage")]);
    let l = load::<Counter>(&lz4, "z").await.unwrap();
    assert_eq!((l.state.total, l.snapshot), (10, None));
}

async fn with_storage(redis: &RedisServer, storage: allies_store::Storage) -> RedisEventStore {
    let mut per_type = std::collections::HashMap::new();
    per_type.insert("counter".to_owned(), storage);
    store(redis).await.with_storage(per_type, allies_store::Storage::EventSourced)
}

#[tokio::test]
async fn state_based_aggregates_keep_a_version_checked_state_and_publish_events() {
    let redis = RedisServer::start();
    let store = with_storage(&redis, allies_store::Storage::StateBased).await;
    let none = load::<Counter>(&store, "sb").await.unwrap();
    assert_eq!((none.state.total, none.version), (0, 0));
    let e = [Added::new(5, 0)];
    let out = store.append(with_state_of("sb", ExpectedVersion::NoStream, &e, &Counter { total: 5 })).await.unwrap();
    assert_eq!(out.version, 1);
    let r = store.append(with_state_of("sb", ExpectedVersion::NoStream, &e, &Counter { total: 99 })).await;
    assert!(matches!(r, Err(AppendError::Conflict { actual: 1, .. })), "{r:?}");
    store.append(with_state_of("sb", ExpectedVersion::Exact(1), &e, &Counter { total: 10 })).await.unwrap();
    let loaded = load::<Counter>(&store, "sb").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (10, 2));
    let p = keys::partition_of("sb", 16);
    assert_eq!(redis.raw(&["EXISTS", &keys::stream_key("counter", p, "sb")]), ":0", "no event stream");
    assert_eq!(redis.raw(&["XLEN", &keys::log_key("counter", p)]), ":2", "events still published");
    // A state of another schema cannot be rebuilt: a typed error, not a wrong state.
    redis.raw(&["HSET", &keys::state_key("counter", p, "sb"), "schema", "7"]);
    assert!(matches!(load::<Counter>(&store, "sb").await, Err(allies_store::StoreError::Corrupt { .. })));
}

#[tokio::test]
async fn hybrid_aggregates_write_both_and_fall_back_to_events() {
    let redis = RedisServer::start();
    let store = with_storage(&redis, allies_store::Storage::Hybrid).await;
    let e = [Added::new(3, 0)];
    for (v, total) in [(0u64, 3i64), (1, 6)] {
        store.append(with_state_of("hy", ExpectedVersion::after_load(v), &e, &Counter { total })).await.unwrap();
    }
    let p = keys::partition_of("hy", 16);
    assert_eq!(redis.raw(&["XLEN", &keys::stream_key("counter", p, "hy")]), ":2");
    assert_eq!(redis.raw(&["HGET", &keys::state_key("counter", p, "hy"), "state"]), "6");
    let loaded = load::<Counter>(&store, "hy").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (6, 2));
    // Without its state hash the aggregate is rebuilt from its events.
    redis.raw(&["DEL", &keys::state_key("counter", p, "hy")]);
    let loaded = load::<Counter>(&store, "hy").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (6, 2));
    // A state_based/hybrid write without the state is refused.
    let r = store.append(typed("hy", ExpectedVersion::Any, &e)).await;
    assert!(matches!(r, Err(AppendError::Invalid(_))), "{r:?}");
}

#[tokio::test]
async fn archive_trims_only_what_is_archived_and_restores_the_full_history() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let archive = tempfile::tempdir().unwrap();
    let batch: Vec<Added> = (1..=10).map(|n| Added::new(n, 0)).collect();
    store.append_events::<Counter>("ar", ExpectedVersion::NoStream, &meta(), 0, &batch).await.unwrap();

    // Without a snapshot nothing may be trimmed.
    assert!(store.archive_and_trim("counter", "ar", archive.path()).await.is_err());
    assert_eq!(store.read("counter", "ar", 1, usize::MAX).await.unwrap().len(), 10);

    let (state8, _) = load_as_of::<Counter>(&store, "ar", AsOf::Version(8)).await.unwrap();
    assert!(save_snapshot(&store, "ar", &state8, 8, 1).await.unwrap());
    let report = store.archive_and_trim("counter", "ar", archive.path()).await.unwrap();
    assert_eq!((report.archived, report.range), (8, Some((1, 8))));
    let file = report.file.unwrap();
    let text = lz4_flex_decompress(&std::fs::read(&file).unwrap());
    assert_eq!(text.lines().count(), 8, "one JSON line per event");
    assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));

    // Redis keeps only 9..10; the version check still works.
    let p = keys::partition_of("ar", 16);
    assert_eq!(redis.raw(&["XLEN", &keys::stream_key("counter", p, "ar")]), ":2");
    let e = [Added::new(100, 0)];
    let r = store.append_events::<Counter>("ar", ExpectedVersion::Exact(2), &meta(), 0, &e).await;
    assert!(matches!(r, Err(AppendError::Conflict { actual: 10, .. })), "{r:?}");
    assert_eq!(
        store.append_events::<Counter>("ar", ExpectedVersion::Exact(10), &meta(), 0, &e).await.unwrap().version,
        11
    );
    // Loading without the snapshot is a typed error, with it the right state.
    assert!(matches!(
        store.load_events::<Counter>("ar").await,
        Err(allies_store::StoreError::Trimmed { first_kept: 9, .. })
    ));
    let l = load::<Counter>(&store, "ar").await.unwrap();
    assert_eq!((l.state.total, l.version), (55 + 100, 11));
    // Nothing new to archive until the next snapshot.
    assert_eq!(store.archive_and_trim("counter", "ar", archive.path()).await.unwrap().archived, 0);

    // The full history reads back from archive + Redis, and restores into Redis.
    let history = store.full_history("counter", "ar", archive.path()).await.unwrap();
    assert_eq!(history.iter().map(|r| r.envelope.version).collect::<Vec<_>>(), (1..=11).collect::<Vec<_>>());
    assert_eq!(store.restore_from_archive("counter", "ar", archive.path()).await.unwrap(), 11);
    let (state, v) = store.load_events::<Counter>("ar").await.unwrap();
    assert_eq!((state.total, v), (155, 11));
    assert_eq!(
        store.append_events::<Counter>("ar", ExpectedVersion::Exact(11), &meta(), 0, &e).await.unwrap().version,
        12
    );
}

fn lz4_flex_decompress(bytes: &[u8]) -> String {
    // The archive format: one LZ4 block, uncompressed size prepended (u32 LE).
    let size = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let out = lz4_block_decode(&bytes[4..], size);
    String::from_utf8(out).unwrap()
}

/// A minimal LZ4 block decoder, so the test checks the file format itself.
fn lz4_block_decode(src: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut i = 0;
    while i < src.len() {
        let token = src[i];
        i += 1;
        let mut lit = (token >> 4) as usize;
        if lit == 15 {
            loop {
                let b = src[i];
                i += 1;
                lit += b as usize;
                if b != 255 {
                    break;
                }
            }
        }
        out.extend_from_slice(&src[i..i + lit]);
        i += lit;
        if i >= src.len() {
            break;
        }
        let offset = u16::from_le_bytes([src[i], src[i + 1]]) as usize;
        i += 2;
        let mut len = (token & 15) as usize;
        if len == 15 {
            loop {
                let b = src[i];
                i += 1;
                len += b as usize;
                if b != 255 {
                    break;
                }
            }
        }
        len += 4;
        let start = out.len() - offset;
        for k in 0..len {
            let b = out[start + k];
            out.push(b);
        }
    }
    out
}
