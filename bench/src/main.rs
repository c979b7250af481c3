//! `allies-bench`: measures the event store on a private redis-server and
//! prints a table. Every figure is next to what raw Redis does in the same run.
//!
//!     cargo run --release -p allies-bench            # all
//!     cargo run --release -p allies-bench -- append  # one: append | load | memory
//!
//! append: 50 concurrent writers, one event per append, each to its own
//!   aggregates with exact expected versions; the raw baseline is the same
//!   number of EVALSHA calls each doing two XADDs with the same fields — the
//!   floor of what one append costs in Redis.
//! load: one aggregate of 10,000 events, loaded without and with a snapshot.
//! memory: 100,000 one-event aggregates at the default stream node size and
//!   at the fleet's `stream-node-max-bytes 512`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_core::ExpectedVersion;
use allies_store::{AppendRequest, EventStore, EventStoreExt, RedisEventStore};
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

/// Wraps the real user projection and records each event's age when applied.
struct Timed {
    inner: projector::manager::Applier,
    lags: std::sync::Mutex<Vec<Duration>>,
    applied: std::sync::atomic::AtomicUsize,
}

impl allies_store::subscriber::Handler for Timed {
    async fn handle(&self, event: &allies_store::RecordedEvent) -> Result<(), allies_store::subscriber::HandlerError> {
        allies_store::subscriber::Handler::handle(&self.inner, event).await?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        let lag = Duration::from_millis((now - event.envelope.recorded_at_ms).max(0) as u64);
        if let Ok(mut l) = self.lags.lock() {
            l.push(lag);
        }
        self.applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

fn registered(i: usize) -> allies_store::NewEvent {
    let e = allies_contracts::guardian::events::v1::UserRegistered {
        user_id: Uuid::now_v7().to_string(),
        username: format!("bench{i}"),
        email: format!("bench{i}@example.com"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
            .into(),
        roles: vec!["player".into()],
        registered_at_ms: 1,
        display_name: format!("bench{i}"),
    };
    allies_store::NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "UserRegistered".into(),
        schema_version: 2,
        content_type: allies_store::CONTENT_TYPE_JSON.into(),
        data: serde_json::to_vec(&e).expect("json"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

async fn run_projection(
    url: &str,
    store: &RedisEventStore,
    group: &str,
    until: usize,
) -> (Arc<Timed>, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let handler = Arc::new(Timed {
        inner: projector::manager::Applier {
            projection: Arc::new(projector::projections::users::Users),
            view: projector::readmodel::View::new(store.connection(), "rm"),
        },
        lags: Default::default(),
        applied: Default::default(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = allies_store::subscriber::SubscriptionConfig::new(group, "bench", "user", 16);
    let target = allies_store::RedisTarget::parse(url).expect("url");
    let task = tokio::spawn(allies_store::subscriber::run(target, config, handler.clone(), stopped));
    let _ = until;
    (handler, stop, task)
}

async fn wait_applied(h: &Timed, n: usize) {
    while h.applied.load(std::sync::atomic::Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench_projection() -> Vec<(String, String)> {
    let redis = RedisServer::start_with(FLEET_REDIS);
    let store = RedisEventStore::connect(&redis.url(), 16).await.expect("store");
    let n = 50_000;
    // Write the backlog (50 concurrent writers).
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(WRITERS) {
                let e = registered(i);
                store
                    .append(AppendRequest::new(
                        "user",
                        &Uuid::now_v7().to_string(),
                        ExpectedVersion::NoStream,
                        &meta(),
                        now_ms(),
                        vec![e],
                    ))
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    // Throughput: a projection catching up on the whole backlog.
    let started = Instant::now();
    let (h, stop, task) = run_projection(&redis.url(), &store, "rm.bench", n).await;
    wait_applied(&h, n).await;
    let catch_up = started.elapsed();
    let rate = n as f64 / catch_up.as_secs_f64();
    // Lag at a fixed offered load (half and a fifth of that rate), appending
    // for 5 s with the projection live; writers, projection and Redis share the cores.
    let mut lag_rows = Vec::new();
    let mut written = n;
    for share in [0.5, 0.2] {
        if let Ok(mut l) = h.lags.lock() {
            l.clear();
        }
        let offered = (rate * share).max(100.0);
        let total = (offered * 5.0) as usize;
        let interval = Duration::from_secs_f64(5.0 / total as f64 * WRITERS as f64);
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            let base = written;
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for i in (w..total).step_by(WRITERS) {
                    tick.tick().await;
                    let e = registered(base + i);
                    let id = Uuid::now_v7().to_string();
                    store
                        .append(AppendRequest::new("user", &id, ExpectedVersion::NoStream, &meta(), now_ms(), vec![e]))
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        written += total;
        wait_applied(&h, written).await;
        let mut lags = h.lags.lock().map(|l| l.clone()).unwrap_or_default();
        let (p50, p99) = (pct(&mut lags, 0.5), pct(&mut lags, 0.99));
        lag_rows.push((
            format!(
                "projection lag at {offered:.0} events/s offered ({:.0}% of max; p99 target <= 50 ms at 50%)",
                share * 100.0
            ),
            format!("p50 {} ms, p99 {} ms", p50.as_millis(), p99.as_millis()),
        ));
    }
    let _ = stop.send(true);
    let _ = task.await;
    // Rebuild: a new group reading every log from the start.
    let all = written;
    let started = Instant::now();
    let (h, stop, task) = run_projection(&redis.url(), &store, "rm.rebuild", all).await;
    wait_applied(&h, all).await;
    let rebuild = all as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = task.await;
    vec![
        (format!("projection: catch up on {n} UserRegistered (target >= 20000/s)"), format!("{rate:.0} events/s")),
        lag_rows[0].clone(),
        lag_rows[1].clone(),
        (format!("projection rebuild from the start ({all} events)"), format!("{rebuild:.0} events/s")),
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
    if matches!(which.as_str(), "all" | "projection") {
        rows.extend(bench_projection().await);
    }
    if rows.is_empty() {
        eprintln!("usage: allies-bench [all|append|load|memory|projection]");
        std::process::exit(2);
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{:<width$}  result", "benchmark");
    println!("{}  {}", "-".repeat(width), "-".repeat(24));
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}
