//! `allies-bench`: measures the event store on a private redis-server and
//! prints a table. Every figure is next to what raw Redis does in the same run.
//!
//!     cargo run --release -p allies-bench            # all
//!     cargo run --release -p allies-bench -- append  # one: append | load | memory | replicas
//!
//! (Projection lag runs with the real projection: tests/e2e/examples/projection_bench.rs.)
//!
//! append: 50 concurrent writers, one event per append, each to its own
//!   aggregates with exact expected versions; the raw baseline is the same
//!   number of EVALSHA calls each doing two XADDs with the same fields — the
//!   floor of what one append costs in Redis.
//! load: one aggregate of 10,000 events, loaded without and with a snapshot.
//! memory: 100,000 one-event aggregates at the default stream node size and
//!   at the fleet's `stream-node-max-bytes 512`.
//! replicas: the append part against a master with one replica, without and
//!   with `REDIS_REPLICA_ACKS=1` (a WAIT for the replica after each append),
//!   beside the raw floor on that master: the cost of the promise that an
//!   acknowledged append survives a failover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_core::ExpectedVersion;
use allies_store::{EventStoreExt, RedisEventStore};
use allies_testkit::RedisServer;
use allies_testkit::fixtures::{Added, Counter, meta};
use uuid::Uuid;

const WRITERS: usize = 50;
const APPENDS_PER_WRITER: usize = 400;
const AGGREGATES_PER_WRITER: usize = 20;
const FLEET_REDIS: &[&str] = &["--stream-node-max-bytes", "512"];

/// The shared test aggregate, its event padded to the size of a game event
/// (a tower placed on a map, ~110 bytes of proto3 JSON), so the figures
/// stay comparable across releases.
fn event(i: usize) -> Added {
    Added {
        n: 100,
        writer: (i % 40) as u32,
        note: format!("archer tower {} placed at map cell {},{} for 100 gold", Uuid::now_v7(), i % 40, i / 40 % 30),
    }
}

fn used_memory(redis: &RedisServer) -> u64 {
    redis
        .raw(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The raw floor: one EVALSHA doing the two XADDs an append does.
const RAW: &str =
    "redis.call('XADD', KEYS[1], '*', unpack(ARGV)) return redis.call('XADD', KEYS[2], '*', unpack(ARGV))";

async fn raw_appends(url: &str) -> Duration {
    let client = redis::Client::open(url).expect("client");
    let conn = redis::aio::ConnectionManager::new(client).await.expect("connect");
    let script = Arc::new(redis::Script::new(RAW));
    let payload = serde_json::to_vec(&event(0)).expect("json");
    let meta = serde_json::to_string(&meta()).expect("json");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (mut conn, script, payload, meta) = (conn.clone(), script.clone(), payload.clone(), meta.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..APPENDS_PER_WRITER {
                let p = (w * 7 + i) % 16;
                let _: String = script
                    .key(format!("raw:{{board.{p}}}:stream:w{w}-{}", i % AGGREGATES_PER_WRITER))
                    .key(format!("raw:{{board.{p}}}:log"))
                    .arg("event_id")
                    .arg(Uuid::now_v7().to_string())
                    .arg("event_type")
                    .arg("TowerPlaced")
                    .arg("aggregate_type")
                    .arg("board")
                    .arg("aggregate_id")
                    .arg(format!("w{w}-{}", i % AGGREGATES_PER_WRITER))
                    .arg("version")
                    .arg(i / AGGREGATES_PER_WRITER + 1)
                    .arg("schema_version")
                    .arg(1)
                    .arg("content_type")
                    .arg("application/json")
                    .arg("data")
                    .arg(&payload)
                    .arg("metadata")
                    .arg(&meta)
                    .arg("created_at")
                    .arg(1_790_000_000_000i64)
                    .arg("checksum")
                    .arg("00000000")
                    .invoke_async(&mut conn)
                    .await
                    .expect("raw append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    start.elapsed()
}

async fn store_appends(store: &RedisEventStore, round: usize) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = [0u64; AGGREGATES_PER_WRITER];
            let m = meta();
            for i in 0..APPENDS_PER_WRITER {
                let k = i % AGGREGATES_PER_WRITER;
                let id = format!("r{round}-w{w}-{k}");
                let e = [event(i)];
                let out = store
                    .append_events::<Counter>(&id, ExpectedVersion::after_load(versions[k]), &m, 1_790_000_000_000, &e)
                    .await
                    .expect("append");
                versions[k] = out.version;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    start.elapsed()
}

/// Redis-side cost of one EVALSHA since the last reset, in microseconds.
fn evalsha_usec(redis: &RedisServer) -> f64 {
    let stats = redis.raw(&["INFO", "commandstats"]);
    let line = stats.lines().find(|l| l.starts_with("cmdstat_evalsha:")).unwrap_or_default().to_owned();
    line.split(',').find_map(|kv| kv.strip_prefix("usec_per_call=")).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

async fn bench_append() -> Vec<(String, String)> {
    let redis = RedisServer::start_with(FLEET_REDIS);
    let store = RedisEventStore::connect(&redis.url(), 16).await.expect("store");
    let total = (WRITERS * APPENDS_PER_WRITER) as f64;
    // Warm both paths (script load, connections), then alternate and keep each one's best.
    raw_appends(&redis.url()).await;
    store_appends(&store, 0).await;
    let mut raw_best = Duration::MAX;
    let mut store_best = Duration::MAX;
    let (mut raw_us, mut store_us) = (0.0, 0.0);
    for round in 1..=3 {
        redis.raw(&["CONFIG", "RESETSTAT"]);
        raw_best = raw_best.min(raw_appends(&redis.url()).await);
        raw_us = evalsha_usec(&redis);
        redis.raw(&["CONFIG", "RESETSTAT"]);
        store_best = store_best.min(store_appends(&store, round).await);
        store_us = evalsha_usec(&redis);
    }
    let raw_rate = total / raw_best.as_secs_f64();
    let store_rate = total / store_best.as_secs_f64();
    vec![
        ("append: raw EVALSHA with 2 XADDs (50 writers)".into(), format!("{raw_rate:.0} appends/s")),
        ("append: event store, 1 event, exact version (50 writers)".into(), format!("{store_rate:.0} appends/s")),
        ("append: ratio store / raw (target >= 0.8)".into(), format!("{:.2}", store_rate / raw_rate)),
        ("append: Redis CPU per call, raw / store".into(), format!("{raw_us:.1} us / {store_us:.1} us")),
    ]
}

async fn bench_replicas() -> Vec<(String, String)> {
    let redis = RedisServer::start_with(FLEET_REDIS);
    let _replica = redis.start_replica();
    let off = RedisEventStore::connect(&redis.url(), 16).await.expect("store");
    let on =
        off.clone().with_replica_acks(allies_store::ReplicaAcks { replicas: 1, timeout: Duration::from_millis(200) });
    let total = (WRITERS * APPENDS_PER_WRITER) as f64;
    raw_appends(&redis.url()).await;
    store_appends(&off, 0).await;
    let (mut raw_best, mut off_best, mut on_best) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for round in 1..=3 {
        raw_best = raw_best.min(raw_appends(&redis.url()).await);
        off_best = off_best.min(store_appends(&off, round * 2).await);
        on_best = on_best.min(store_appends(&on, round * 2 + 1).await);
    }
    let rate = |d: Duration| total / d.as_secs_f64();
    vec![
        (
            "replicas: raw EVALSHA, master with a replica (50 writers)".into(),
            format!("{:.0} appends/s", rate(raw_best)),
        ),
        ("replicas: event store, no replica acks".into(), format!("{:.0} appends/s", rate(off_best))),
        ("replicas: event store, REDIS_REPLICA_ACKS=1 (WAIT)".into(), format!("{:.0} appends/s", rate(on_best))),
        ("replicas: cost of WAIT, with / without".into(), format!("{:.2}", rate(on_best) / rate(off_best))),
    ]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn bench_load() -> Vec<(String, String)> {
    let redis = RedisServer::start_with(FLEET_REDIS);
    let store = RedisEventStore::connect(&redis.url(), 16).await.expect("store");
    let batch: Vec<Added> = (0..1000).map(event).collect();
    for _ in 0..10 {
        store.append_events::<Counter>("big", ExpectedVersion::Any, &meta(), 0, &batch).await.expect("append");
    }
    let mut plain = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (b, v) = store.load_events::<Counter>("big").await.expect("load");
        plain.push(t.elapsed());
        assert_eq!((b.total, v), (1_000_000, 10_000));
    }
    let (state, version) = store.load_events::<Counter>("big").await.expect("load");
    allies_store::save_snapshot(&store, "big", &state, version, 0).await.expect("snapshot");
    let mut snap = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let l = allies_store::load::<Counter>(&store, "big").await.expect("load");
        snap.push(t.elapsed());
        assert_eq!((l.state.total, l.version), (1_000_000, 10_000));
    }
    vec![
        (
            "load 10,000-event aggregate, no snapshot (median)".into(),
            format!("{:.2} ms", median(plain).as_secs_f64() * 1e3),
        ),
        (
            "load 10,000-event aggregate, snapshot (median; target <= 2 ms)".into(),
            format!("{:.3} ms", median(snap).as_secs_f64() * 1e3),
        ),
    ]
}

async fn memory_with(extra: &[&str], n: usize) -> (f64, f64) {
    let redis = RedisServer::start_with(extra);
    let store = RedisEventStore::connect(&redis.url(), 16).await.expect("store");
    let before = used_memory(&redis);
    let per = n / WRITERS;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let m = meta();
            for i in 0..per {
                let e = [event(i)];
                store
                    .append_events::<Counter>(&format!("m{w}-{i}"), ExpectedVersion::NoStream, &m, 0, &e)
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let delta = used_memory(&redis).saturating_sub(before) as f64;
    let total = (per * WRITERS) as f64;
    let logs: f64 = (0..16)
        .map(|p| {
            let key = format!("es:{{board.{p}}}:log");
            redis.raw(&["MEMORY", "USAGE", &key, "SAMPLES", "0"]).trim_start_matches(':').parse::<f64>().unwrap_or(0.0)
        })
        .sum();
    (delta / total, logs / total)
}

async fn bench_memory() -> Vec<(String, String)> {
    let n = 100_000;
    let (default_agg, default_log) = memory_with(&[], n).await;
    let (fleet_agg, fleet_log) = memory_with(FLEET_REDIS, n).await;
    vec![
        (
            "memory per aggregate, 100k one-event aggregates, default nodes".into(),
            format!("{default_agg:.0} B (log {default_log:.0} B/event)"),
        ),
        (
            "memory per aggregate, 100k one-event aggregates, node 512 B".into(),
            format!("{fleet_agg:.0} B (log {fleet_log:.0} B/event)"),
        ),
    ]
}

#[tokio::main]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let mut rows = Vec::new();
    if matches!(which.as_str(), "all" | "append") {
        rows.extend(bench_append().await);
    }
    if matches!(which.as_str(), "all" | "load") {
        rows.extend(bench_load().await);
    }
    if matches!(which.as_str(), "all" | "memory") {
        rows.extend(bench_memory().await);
    }
    if matches!(which.as_str(), "all" | "replicas") {
        rows.extend(bench_replicas().await);
    }
    if rows.is_empty() {
        eprintln!(
            "usage: allies-bench [all|append|load|memory|replicas] (projection lag: tests/e2e/examples/projection_bench.rs)"
        );
        std::process::exit(2);
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{:<width$}  result", "benchmark");
    println!("{}  {}", "-".repeat(width), "-".repeat(24));
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}
