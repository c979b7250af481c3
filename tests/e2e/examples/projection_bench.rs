//! Projection throughput and lag with the real user projection of the
//! projector (moved here from `allies-bench`: a tool never depends on a
//! service crate; the test harness may). On a private redis-server:
//!
//!     cargo run --release -p allies-e2e --example projection_bench
//!
//! catch-up on a 50,000-event backlog beside its floor (the same writes sent
//! to Redis as plain pipelined commands, no log read, no script), the lag (event recorded → applied)
//! at half and a fifth of that rate offered for 5 s, and a rebuild from the
//! start, printed beside each other; then the games projection catching up
//! on 20,000 tower events of 50 games played at once (that part alone:
//! `PROJECTION_BENCH=games`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_core::ExpectedVersion;
use allies_store::{AppendRequest, EventStore, RedisEventStore};
use allies_testkit::RedisServer;
use allies_testkit::fixtures::meta;
use uuid::Uuid;

/// The projector binary's allocator, so the projection here costs what it costs there.
#[global_allocator]
static ALLOC: allies_platform::Allocator = allies_platform::Allocator;

const WRITERS: usize = 50;
const FLEET_REDIS: &[&str] = &["--stream-node-max-bytes", "512"];

/// Wraps the real user projection and records each event's age when applied.
struct Timed {
    inner: projector::manager::Applier,
    lags: std::sync::Mutex<Vec<Duration>>,
    applied: std::sync::atomic::AtomicUsize,
}

impl Timed {
    fn applied(&self, events: &[allies_store::RecordedEvent]) {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        if let Ok(mut l) = self.lags.lock() {
            l.extend(events.iter().map(|e| Duration::from_millis((now - e.envelope.recorded_at_ms).max(0) as u64)));
        }
        self.applied.fetch_add(events.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl allies_store::subscriber::Handler for Timed {
    async fn handle(&self, event: &allies_store::RecordedEvent) -> Result<(), allies_store::subscriber::HandlerError> {
        allies_store::subscriber::Handler::handle(&self.inner, event).await?;
        self.applied(std::slice::from_ref(event));
        Ok(())
    }

    fn batches(&self) -> bool {
        allies_store::subscriber::Handler::batches(&self.inner)
    }

    async fn handle_all(
        &self,
        events: &[allies_store::RecordedEvent],
    ) -> Result<(), allies_store::subscriber::HandlerError> {
        allies_store::subscriber::Handler::handle_all(&self.inner, events).await?;
        self.applied(events);
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
    ns: &str,
) -> (Arc<Timed>, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    run_projection_of(url, store, group, ns, Arc::new(projector::projections::users::Users), "user").await
}

async fn run_projection_of(
    url: &str,
    store: &RedisEventStore,
    group: &str,
    ns: &str,
    projection: Arc<dyn projector::registry::Projection>,
    aggregate_type: &str,
) -> (Arc<Timed>, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let handler = Arc::new(Timed {
        inner: projector::manager::Applier {
            projection,
            view: projector::readmodel::Namespace::new(store.connection(), ns),
            replicas: Default::default(),
        },
        lags: Default::default(),
        applied: Default::default(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut config = allies_store::subscriber::SubscriptionConfig::new(group, "bench", aggregate_type, 16);
    config.linger = linger();
    let target = allies_store::RedisTarget::parse(url).expect("url");
    let task = tokio::spawn(allies_store::subscriber::run(target, config, handler.clone(), stopped));
    (handler, stop, task)
}

/// The fleet's `SUBSCRIBER_LINGER_MS` (its default unless set), as the
/// projector's readers use it.
fn linger() -> Duration {
    allies_platform::env::Env::from_process()
        .value_ms(&allies_core::settings::SUBSCRIBER_LINGER)
        .expect("SUBSCRIBER_LINGER_MS")
}

/// Forks Redis made so far (an AOF rewrite or a snapshot is one).
fn forks(redis: &RedisServer) -> u64 {
    redis.raw(&["INFO", "stats"]).lines().find_map(|l| l.strip_prefix("total_forks:")?.trim().parse().ok()).unwrap_or(0)
}

/// CPU used so far by this process (the projection, and the writers when
/// they run) and by Redis.
fn cpu(redis: &RedisServer) -> [Duration; 2] {
    [allies_testkit::cpu_time(std::process::id()), allies_testkit::cpu_time(redis.pid())]
}

/// The CPU each event cost the projection and Redis between two readings:
/// which of the two bounds the rate (both share the two cores).
fn per_event(before: &[Duration; 2], after: &[Duration; 2], events: usize) -> String {
    let us = |i: usize| after[i].saturating_sub(before[i]).as_secs_f64() * 1e6 / events.max(1) as f64;
    format!("CPU per event: projection {:.1} µs, Redis {:.1} µs", us(0), us(1))
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

async fn bench_projection() -> (Vec<(String, String)>, Vec<String>) {
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
    let cpu_before = cpu(&redis);
    redis.raw(&["CONFIG", "RESETSTAT"]);
    let started = Instant::now();
    let (h, stop, task) = run_projection(&redis.url(), &store, "rm.bench", "rm").await;
    wait_applied(&h, n).await;
    let catch_up = started.elapsed();
    let catch_up_cpu = per_event(&cpu_before, &cpu(&redis), n);
    let catch_up_redis = redis_by_command(&redis, n);
    let rate = n as f64 / catch_up.as_secs_f64();
    let (floor, floor_cpu) = raw_writes_floor(&redis, &store, n).await;
    // Lag at a fixed offered load (half and a fifth of that rate), appending
    // for 5 s with the projection live; writers, projection and Redis share the cores.
    let mut lag_rows = Vec::new();
    let mut written = n;
    // Half the rate twice: as Redis is configured (an AOF rewrite may fall
    // in the window: a forked child rewriting the file on the same two
    // cores), and with automatic rewrites put off for the window; then a
    // fifth. Each row says how many forks the window saw.
    for (share, rewrites) in [(0.5, true), (0.5, false), (0.2, true)] {
        if let Ok(mut l) = h.lags.lock() {
            l.clear();
        }
        redis.raw(&["CONFIG", "SET", "auto-aof-rewrite-percentage", if rewrites { "100" } else { "0" }]);
        let forks_before = forks(&redis);
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
        let forked = forks(&redis) - forks_before;
        lag_rows.push((
            format!(
                "projection lag at {offered:.0} events/s offered ({:.0}% of max{}; linger {} ms; p99 target <= 50 ms at 50%)",
                share * 100.0,
                if rewrites { "" } else { ", AOF rewrites off" },
                linger().as_millis()
            ),
            format!("p50 {} ms, p99 {} ms ({forked} fork(s) in the window)", p50.as_millis(), p99.as_millis()),
        ));
    }
    let _ = stop.send(true);
    let _ = task.await;
    // Rebuild: a new group reading every log from the start into a new
    // generation's namespace (as the manager's blue/green rebuild does: it
    // writes every model afresh, not over the ones catch-up wrote).
    let all = written;
    let cpu_before = cpu(&redis);
    let started = Instant::now();
    let (h, stop, task) = run_projection(&redis.url(), &store, "rm.rebuild", "rm.g1").await;
    wait_applied(&h, all).await;
    let rebuild = all as f64 / started.elapsed().as_secs_f64();
    let rebuild_cpu = per_event(&cpu_before, &cpu(&redis), all);
    let _ = stop.send(true);
    let _ = task.await;
    let rows = vec![
        (
            format!("projection: catch up on {n} UserRegistered (target >= 25000/s)"),
            format!("{rate:.0} events/s = {:.2}× the floor ({catch_up_cpu})", rate / floor),
        ),
        (
            format!("floor: the same writes as plain commands, pipelined 128 events at a time ({n})"),
            format!("{floor:.0} events/s ({floor_cpu})"),
        ),
        lag_rows[0].clone(),
        lag_rows[1].clone(),
        lag_rows[2].clone(),
        (format!("projection rebuild from the start ({all} events)"), format!("{rebuild:.0} events/s ({rebuild_cpu})")),
    ];
    let mut rows = rows;
    let (games, games_notes) = games_catch_up(&redis, &store).await;
    rows.push(games);
    let mut notes =
        vec![format!("Redis per event while catching up, by command (INFO commandstats): {catch_up_redis}")];
    notes.extend(games_notes);
    (rows, notes)
}

/// The floor beside the catch-up: the writes the user projection makes for
/// `n` registrations (per event: the version read, the model's eight
/// fields, the username, name and registration indexes, the role set),
/// sent by 16 tasks (the partitions' readers) as plain commands pipelined
/// 128 events at a time, with no log read, no decode and no script, on the
/// same Redis. Returns events/s and the Redis CPU per event.
async fn raw_writes_floor(redis: &RedisServer, store: &RedisEventStore, n: usize) -> (f64, String) {
    const TASKS: usize = 16;
    const BATCH: usize = 128;
    let cpu_before = cpu(redis);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut conn = store.connection();
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (t..n).step_by(TASKS).collect();
            for batch in mine.chunks(BATCH) {
                let mut pipe = redis::pipe();
                for &i in batch {
                    let id = Uuid::now_v7().to_string();
                    let (name, key) = (format!("bench{i}"), format!("floor:user:{id}"));
                    pipe.hget(&key, "_version").ignore();
                    pipe.hset_multiple(
                        &key,
                        &[
                            ("_version", "1".to_owned()),
                            ("user_id", id.clone()),
                            ("display_name", name.clone()),
                            ("username", name.clone()),
                            ("email", format!("{name}@example.com")),
                            ("roles", "player".to_owned()),
                            ("registered_at_ms", "1".to_owned()),
                            ("profile_version", "1".to_owned()),
                        ],
                    )
                    .ignore();
                    pipe.hset("floor:username", &name, &id).ignore();
                    pipe.zadd("floor:name", format!("{name}\t{id}"), 0).ignore();
                    pipe.zadd("floor:registered", &id, 1).ignore();
                    pipe.sadd("floor:role:player", &id).ignore();
                }
                let () = pipe.query_async(&mut conn).await.expect("pipelined writes");
            }
        }));
    }
    for t in tasks {
        t.await.expect("floor writer");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    (rate, per_event(&cpu_before, &cpu(redis), n).replace("projection", "client"))
}

/// A game's tower event as timesquare records it.
fn tower_event(session: usize, i: usize) -> allies_store::NewEvent {
    use allies_contracts::timesquare::events::v1::{TowerPlaced, TowerUpgraded};
    let player_id = format!("0193b3d2-7a4c-7cc0-8a51-{session:012}");
    let (tower_id, (x, y)) = ((i / 3) as u32, ((i / 3 % 20) as i32, (i / 60) as i32));
    let gold_after = 10_000 - i as i64 * 40;
    let (event_type, data) = if i.is_multiple_of(3) {
        let e = TowerPlaced {
            tower_id,
            player_id,
            tower_type: "arrow".into(),
            x,
            y,
            cost: 50,
            gold_after,
            wave: 0,
            tick: 0,
        };
        ("TowerPlaced", serde_json::to_vec(&e))
    } else {
        let e = TowerUpgraded {
            tower_id,
            player_id,
            tower_type: "arrow".into(),
            x,
            y,
            level: (i % 3) as u32,
            cost: 40,
            gold_after,
            wave: 0,
            tick: 0,
        };
        ("TowerUpgraded", serde_json::to_vec(&e))
    };
    allies_store::NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        content_type: allies_store::CONTENT_TYPE_JSON.into(),
        data: data.expect("json"),
    }
}

/// The games projection catching up on a backlog of tower events: 50
/// sessions played at once (each command its own append, the sessions'
/// events interleaved in the logs as live play leaves them), then read by
/// the real games projection from the start.
async fn games_catch_up(redis: &RedisServer, store: &RedisEventStore) -> ((String, String), Vec<String>) {
    const SESSIONS: usize = 50;
    const EACH: usize = 400;
    let mut tasks = Vec::new();
    for session in 0..SESSIONS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("0193b3d2-7a4c-7cc0-8a51-27f1c2d{session:05}");
            for i in 0..EACH {
                let request = AppendRequest::new(
                    projector::projections::games::AGGREGATE_TYPE,
                    &id,
                    ExpectedVersion::Exact(i as u64),
                    &meta(),
                    now_ms(),
                    vec![tower_event(session, i)],
                );
                store.append(request).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let n = SESSIONS * EACH;
    let cpu_before = cpu(redis);
    redis.raw(&["CONFIG", "RESETSTAT"]);
    let started = Instant::now();
    let games = Arc::new(projector::projections::games::Games);
    let aggregate_type = projector::projections::games::AGGREGATE_TYPE;
    let (h, stop, task) = run_projection_of(&redis.url(), store, "rm.games", "rm", games, aggregate_type).await;
    wait_applied(&h, n).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let used = per_event(&cpu_before, &cpu(redis), n);
    let by_command = redis_by_command(redis, n);
    let _ = stop.send(true);
    let _ = task.await;
    (
        (
            format!("projection: catch up on {n} tower events of {SESSIONS} games"),
            format!("{rate:.0} events/s ({used})"),
        ),
        vec![format!("Redis per tower event while the games projection catches up: {by_command}")],
    )
}

/// Redis's time per event by command since the last `CONFIG RESETSTAT`
/// (a script's inner calls are counted in the script's time too).
fn redis_by_command(redis: &RedisServer, events: usize) -> String {
    let stats = redis.raw(&["INFO", "commandstats"]);
    let mut rows: Vec<(String, f64, f64)> = stats
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| rest.split(',').find_map(|kv| kv.strip_prefix(k)?.parse::<f64>().ok());
            Some((name.to_owned(), field("calls=")? / events as f64, field("usec=")? / events as f64))
        })
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows.iter().take(8).map(|(n, calls, us)| format!("{n} {calls:.2}× {us:.1} µs")).collect::<Vec<_>>().join(", ")
}

/// The user projection catching up on a Redis Cluster (three masters, a
/// replica each): the Cluster path writes each model with its own script,
/// then the event's index writes (other slots).
async fn cluster_catch_up() -> (String, String) {
    let cluster = allies_testkit::RedisCluster::start();
    let store = RedisEventStore::connect(&cluster.url(), 16).await.expect("cluster store");
    let n = 20_000;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(WRITERS) {
                let id = Uuid::now_v7().to_string();
                let request =
                    AppendRequest::new("user", &id, ExpectedVersion::NoStream, &meta(), now_ms(), vec![registered(i)]);
                store.append(request).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid()).collect();
    let redis_cpu = || pids.iter().map(|p| allies_testkit::cpu_time(*p)).sum::<Duration>();
    let (own, redis) = (allies_testkit::cpu_time(std::process::id()), redis_cpu());
    let started = Instant::now();
    let (h, stop, task) = run_projection(&cluster.url(), &store, "rm.bench", "rm").await;
    wait_applied(&h, n).await;
    let took = started.elapsed();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let _ = stop.send(true);
    let _ = task.await;
    (
        format!("projection on a Redis Cluster (3 masters + 3 replicas): catch up on {n} UserRegistered"),
        format!(
            "{:.0} events/s (CPU per event: projection {:.1} µs, the six Redis nodes {:.1} µs; {:.0}% of the two cores busy)",
            n as f64 / took.as_secs_f64(),
            us(allies_testkit::cpu_time(std::process::id()).saturating_sub(own)),
            us(redis_cpu().saturating_sub(redis)),
            (allies_testkit::cpu_time(std::process::id()).saturating_sub(own) + redis_cpu().saturating_sub(redis))
                .as_secs_f64()
                / took.as_secs_f64()
                / 2.0
                * 100.0
        ),
    )
}

#[tokio::main]
async fn main() {
    if std::env::var("PROJECTION_BENCH").is_ok_and(|v| v == "cluster") {
        let (k, v) = cluster_catch_up().await;
        println!("{k}: {v}");
        return;
    }
    // `PROJECTION_BENCH=games`: only the games projection's catch-up.
    let (rows, notes) = if std::env::var("PROJECTION_BENCH").is_ok_and(|v| v == "games") {
        let redis = RedisServer::start_with(FLEET_REDIS);
        let store = RedisEventStore::connect(&redis.url(), 16).await.expect("store");
        let (row, notes) = games_catch_up(&redis, &store).await;
        (vec![row], notes)
    } else {
        bench_projection().await
    };
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{:<width$}  result", "benchmark");
    println!("{}  {}", "-".repeat(width), "-".repeat(24));
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
    for note in notes {
        println!("\n{note}");
    }
}
