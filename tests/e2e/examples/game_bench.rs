//! The game's benchmarks, printed as tables (release build, real binaries,
//! a private redis-server per part):
//!
//!     cargo build --release --bins --examples
//!     target/release/examples/game_bench                 # all parts
//!     target/release/examples/game_bench commands sim    # some: commands | sim | watchers | memory | matchmaker | matchmaking | tracing | idle | queries | lists
//!
//! commands: 50 players, each on their own session, PlaceTower and
//!   UpgradeTower through gRPC with a bearer token (timesquare verifies the
//!   EdDSA JWT on every call), beside the raw Redis floor in the same run:
//!   the same number of EVALSHA calls doing the two XADDs an append does;
//!   every process's CPU per game command and per WhoAmI, and the ratio
//!   the CPU would allow if timesquare spent on a game command only what
//!   it spends on a WhoAmI (what work in timesquare alone could buy), and
//!   the ratio if every part of a game command cost only its floor measured
//!   in the same run (timesquare a WhoAmI's part plus a Redis round trip's
//!   client side, Redis the raw EVALSHA's part; the design's ceiling here);
//!   then the same on fresh sessions with an x-command-id on every call,
//!   as the web client sends (what a real client's command costs).
//! sim: the deterministic simulation in process: a late wave (wave 20) with
//!   4 players, 100 towers and 200+ enemies alive, ticks per second.
//! watchers: 200 gRPC watchers of one session during a wave: frames per
//!   second delivered and their lag (receive time - the frame's server time).
//! memory: one finished 4-player, 20-wave session: the Redis memory of its
//!   stream, snapshot, log entries, read model and indexes.
//! matchmaker: the matchmaker's pure pass over 10,000 waiting tickets
//!   (ratings spread 800–2200, three difficulties, one or two preferred maps
//!   of four or none, parties of 1–3, 2–4 players wanted), the time of one
//!   pass, and passes (with waiting time advancing) until every ticket is
//!   matched or expired.
//! tracing: the commands part with tracing off, then on (100% sampling,
//!   OTLP/gRPC to a collector in this process), then as deployed (parent-based,
//!   10% of new traces), then on with nothing sampled, in interleaved rounds
//!   (GAME_BENCH_ROUNDS, default 2; GAME_BENCH_TRACING=off,full,deployed,none
//!   picks some): each one's cost beside "off".
//! idle: the whole fleet (one replica of each service) with nothing
//!   happening: Redis commands per second over 20 s by command, and the
//!   connections each service holds (what an idle fleet costs Redis).
//! queries: GetUser under h2load (50 connections × 10 streams, a bearer
//!   token on every request) beside raw HGETALL of the same read model by
//!   redis-benchmark in the same run (needs nghttp2-client and redis-tools).
//! lists: ListUsers over 2,000 users written into the read model (guardian
//!   and the projector; `ALLIES_E2E_REDIS=cluster` for a Redis Cluster): a
//!   page of 100 in registration order, and a username-prefix page in
//!   registration order that scans 2,000 index entries to fill it, each
//!   call timed one at a time, beside the same Redis reads made straight
//!   from a client (each batch at once) in the same run.
//! matchmaking: the whole fleet, 1,000 players (ratings spread by a played
//!   history) arriving over 10 s; each calls FindMatch (2–4 players,
//!   normal), watches its ticket, confirms when matched; the time from
//!   FindMatch to its ticket's `ready` (match confirmed, session joined).
//!
//! The bench rules (a copy of configs/game-rules.yaml) give a deep purse so
//! the command loop never runs out of gold, and a "bench" difficulty with
//! tanky, slow enemies and eight times as many of them per wave so the
//! late wave holds 200+ at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_contracts::timesquare::v1::game_update::Update;
use allies_contracts::timesquare::v1::*;
use allies_core::Aggregate;
use allies_e2e::game::{Gamer, build_greedily, start_wave, state, wave_over};
use allies_e2e::{Fleet, bearer};
use allies_testkit::RedisServer;
use timesquare_domain::rules::{Difficulty, Rules, SHIPPED};
use timesquare_domain::{Book, GameCommand, GameSession, Phase, Who};

const CLIENTS: usize = 50;

/// Game commands each client sends: a tower on each of its first 133
/// free cells, each upgraded twice (the board has about 180).
const COMMANDS_PER_CLIENT: usize = 400;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn bench_rules() -> Rules {
    let mut r = Rules::parse(SHIPPED).expect("shipped rules");
    r.economy.start_gold = 100_000_000;
    r.difficulties.insert(
        "bench".into(),
        Difficulty { enemy_hp_pct: 1000, enemy_speed_pct: 50, bounty_pct: 100, start_gold_pct: 100, lives: 1_000_000 },
    );
    for e in r.enemies.values_mut() {
        e.hp *= 10;
    }
    for map in r.maps.values_mut() {
        for g in &mut map.spawn_groups {
            g.count *= 8;
            g.count_per_wave_pm *= 8;
            g.interval_ticks = (g.interval_ticks / 4).max(1);
        }
    }
    r.validate().expect("bench rules are valid");
    r
}

fn rules_file(dir: &std::path::Path) -> String {
    let path = dir.join("bench-rules.yaml");
    std::fs::write(&path, serde_norway::to_string(&bench_rules()).expect("yaml")).expect("write rules");
    path.display().to_string()
}

fn used_memory(redis: &RedisServer) -> i64 {
    redis
        .raw(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn memory_of(redis: &RedisServer, key: &str) -> i64 {
    redis.raw(&["MEMORY", "USAGE", key, "SAMPLES", "0"]).trim().trim_start_matches(':').parse().unwrap_or(0)
}

async fn gamers(fleet: &Fleet, prefix: &str, n: usize) -> Vec<Gamer> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(fleet.gamer(&format!("{prefix}{i:03}")).await);
    }
    out
}

/// A solo session, started, for `who`.
async fn solo(games: &mut allies_e2e::game::Games, who: &Gamer, difficulty: &str) -> String {
    allies_e2e::game::started_game(games, &[who], "meadow", difficulty).await
}

async fn commands(services: &[&str], title: &str) {
    commands_with(services, title, &[], true).await;
}

/// A variable of the fleet's environment.
type Env<'a> = (&'a str, &'a str);

/// What one run of [`commands_with`] measured.
struct Measured {
    per_s: f64,
    floor_per_s: f64,
    p99: Duration,
    /// CPU per game command of every fleet process and Redis (not the bench's clients).
    fleet_cpu_us: f64,
}

/// Runs the game part (and, with `ids`, the game part again on fresh
/// sessions with an `x-command-id` on every call, as real clients send).
async fn commands_with(services: &[&str], title: &str, extra: &[(&str, &str)], ids: bool) -> Measured {
    let per_client = COMMANDS_PER_CLIENT;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_file(dir.path());
    let mut env = vec![
        ("RUST_LOG", "warn"),
        ("TIMESQUARE_RULES", rules.as_str()),
        ("AUTH_RATE_PER_USERNAME", "1000000"),
        ("AUTH_RATE_PER_CLIENT", "1000000"),
        // The benchmark's clients send as fast as they can: no per-player limit.
        ("TIMESQUARE_COMMANDS_PER_SEC", "0"),
    ];
    env.extend_from_slice(extra);
    let fleet = Fleet::start_only(services, &env);
    let players = gamers(&fleet, "cmd", CLIENTS).await;
    let mut setup = fleet.game().await;
    let mut sessions = Vec::new();
    for p in &players {
        sessions.push(solo(&mut setup, p, "normal").await);
    }
    // Fresh sessions for the part with command ids (the first part's are full of towers).
    let mut id_sessions = Vec::new();
    for p in players.iter().filter(|_| ids) {
        id_sessions.push(solo(&mut setup, p, "normal").await);
    }
    let view = state(&mut setup, &sessions[0], &players[0]).await;
    let board = view.board.clone().unwrap_or_default();
    let path: BTreeSet<(i32, i32)> =
        board.path.iter().map(|c| (c.x, c.y)).chain(board.blocked.iter().map(|c| (c.x, c.y))).collect();
    let cells: Vec<(i32, i32)> =
        (0..board.width).flat_map(|x| (0..board.height).map(move |y| (x, y))).filter(|c| !path.contains(c)).collect();
    let cells = Arc::new(cells);

    // CPU of every process, read before and after each part.
    let pids: Vec<(String, u32)> = fleet
        .services
        .iter()
        .map(|s| (s.name.clone(), s.pid()))
        .chain([
            ("redis-server".to_owned(), fleet.redis().pid()),
            ("the bench's 50 clients".to_owned(), std::process::id()),
        ])
        .collect();
    let cpu_now = || -> Vec<Duration> { pids.iter().map(|(_, p)| allies_testkit::cpu_time(*p)).collect() };
    let used_since = |before: &[Duration]| -> Vec<Duration> {
        cpu_now().iter().zip(before).map(|(now, before)| now.saturating_sub(*before)).collect()
    };

    // The gRPC floor: WhoAmI does the same token check and nothing else.
    let floor_cpu_before = cpu_now();
    let floor_started = Instant::now();
    let mut tasks = Vec::new();
    for p in players.iter().cloned() {
        let endpoint = fleet.endpoint("timesquare");
        tasks.push(tokio::spawn(async move {
            let channel =
                tonic::transport::Channel::from_shared(endpoint).expect("endpoint").connect().await.expect("connect");
            let mut c = allies_contracts::timesquare::v1::player_service_client::PlayerServiceClient::new(channel);
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                c.who_am_i(bearer(WhoAmIRequest {}, &p.token)).await.expect("whoami");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut floor = Vec::new();
    for t in tasks {
        floor.extend(t.await.expect("client"));
    }
    let floor_time = floor_started.elapsed();
    let floor_cpu = used_since(&floor_cpu_before);
    floor.sort();

    let cpu_before = cpu_now();
    fleet.raw(&["CONFIG", "RESETSTAT"]);
    let Played { mut place, mut upgrade, failed, time: game_time } =
        play(&fleet.endpoint("timesquare"), &players, &sessions, &cells, false).await;
    let cpu: Vec<(String, Duration)> = pids.iter().map(|(name, _)| name.clone()).zip(used_since(&cpu_before)).collect();
    let total = place.len() + upgrade.len();
    let mut all: Vec<Duration> = place.iter().chain(upgrade.iter()).copied().collect();
    all.sort();
    place.sort();
    upgrade.sort();

    let stats = fleet.raw(&["INFO", "commandstats"]);
    // The raw floor on the same Redis, same concurrency, same count; with
    // what it costs Redis and the calling process (a redis-rs round trip's
    // client side, what timesquare pays at least to append).
    let raw_cpu_before = cpu_now();
    let (raw_time, mut raw) = raw_appends(&fleet.redis_url(), CLIENTS, per_client).await;
    let raw_cpu = used_since(&raw_cpu_before);
    raw.sort();

    println!("\n## Game commands through gRPC ({CLIENTS} clients, {CLIENTS} sessions, auth on every call; {title})\n");
    println!("| path | ops | ops/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    println!(
        "| PlaceTower + UpgradeTower | {total} | {:.0} | {} | {} |",
        total as f64 / game_time.as_secs_f64(),
        ms(pct(&all, 0.5)),
        ms(pct(&all, 0.99))
    );
    println!("| · PlaceTower | {} | | {} | {} |", place.len(), ms(pct(&place, 0.5)), ms(pct(&place, 0.99)));
    println!("| · UpgradeTower | {} | | {} | {} |", upgrade.len(), ms(pct(&upgrade, 0.5)), ms(pct(&upgrade, 0.99)));
    println!(
        "| WhoAmI (the same auth, no game, no store) | {} | {:.0} | {} | {} |",
        floor.len(),
        floor.len() as f64 / floor_time.as_secs_f64(),
        ms(pct(&floor, 0.5)),
        ms(pct(&floor, 0.99))
    );
    println!(
        "| raw Redis EVALSHA (2 XADD) | {} | {:.0} | {} | {} |",
        raw.len(),
        raw.len() as f64 / raw_time.as_secs_f64(),
        ms(pct(&raw, 0.5)),
        ms(pct(&raw, 0.99))
    );
    println!("\nrefused or failed: {failed}");
    println!(
        "\nCPU used during the {:.1} s of commands (2 cores = {:.1} CPU-s available):\n",
        game_time.as_secs_f64(),
        2.0 * game_time.as_secs_f64()
    );
    print_commandstats(&stats, total, "the game commands");
    let per = |used: Duration, n: usize| used.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!("| process | CPU-s | µs per command | µs per WhoAmI (the floor's part) |");
    println!("|---|---|---|---|");
    for ((name, used), floor_used) in cpu.iter().zip(&floor_cpu) {
        let (game_us, floor_us) = (per(*used, total), per(*floor_used, floor.len()));
        println!("| {name} | {:.2} | {game_us:.0} | {floor_us:.0} |", used.as_secs_f64());
    }
    // Both parts keep the two cores busy, so the ratio of their rates is
    // about the inverse ratio of the CPU each operation costs everything
    // together; and what the ratio could be if timesquare spent on a game
    // command no more than on a WhoAmI (Redis, the projector and the
    // clients as measured) bounds what work in timesquare alone can buy.
    let (game_all, floor_all) =
        (per(cpu.iter().map(|(_, d)| *d).sum(), total), per(floor_cpu.iter().sum(), floor.len()));
    let timesquare = pids.iter().position(|(n, _)| n == "timesquare");
    let (ts_game, ts_floor) = timesquare.map_or((0.0, 0.0), |i| (per(cpu[i].1, total), per(floor_cpu[i], floor.len())));
    println!(
        "\nCPU per operation, every process above: game command {game_all:.0} µs, WhoAmI {floor_all:.0} µs — \
         {:.2}× (measured rates: {:.2}×); with timesquare's part of a game command cut to a WhoAmI's ({ts_game:.0} → {ts_floor:.0} µs): {:.2}×",
        floor_all / game_all,
        total as f64 / game_time.as_secs_f64() / (floor.len() as f64 / floor_time.as_secs_f64()),
        floor_all / (game_all - ts_game + ts_floor).max(1.0),
    );
    // Every part of a game command at its own floor, measured in this run:
    // what the design (a signed call, an atomic append of two XADDs, a
    // projection) could reach on this machine if nothing cost more than it must.
    let part = |name: &str| pids.iter().position(|(n, _)| n == name);
    let us = |name: &str, of: &[Duration], n: usize| part(name).map_or(0.0, |i| per(of[i], n));
    let clients = "the bench's 50 clients";
    let game_cpu: Vec<Duration> = cpu.iter().map(|(_, d)| *d).collect();
    let floors = Floors {
        timesquare: ts_floor,
        round_trip: us(clients, &raw_cpu, raw.len()),
        redis: us("redis-server", &raw_cpu, raw.len()),
        projector: us("projector", &game_cpu, total),
        clients: us(clients, &game_cpu, total),
        whoami: floor_all,
    };
    println!("\n{}", floors.line());
    let fleet_cpu: Duration = cpu.iter().filter(|(n, _)| !n.starts_with("the bench")).map(|(_, d)| *d).sum();
    if ids {
        // What a real client's calls cost: the web client sends an
        // x-command-id on every command (a retry answers the first reply).
        let cpu_before = cpu_now();
        fleet.raw(&["CONFIG", "RESETSTAT"]);
        let Played { place, upgrade, failed, time } =
            play(&fleet.endpoint("timesquare"), &players, &id_sessions, &cells, true).await;
        let used: Vec<(String, Duration)> =
            pids.iter().map(|(name, _)| name.clone()).zip(used_since(&cpu_before)).collect();
        let stats = fleet.raw(&["INFO", "commandstats"]);
        let n = place.len() + upgrade.len();
        let mut all: Vec<Duration> = place.iter().chain(upgrade.iter()).copied().collect();
        all.sort();
        let rate = n as f64 / time.as_secs_f64();
        println!("\n### The same, with an x-command-id on every call (as the web client sends)\n");
        println!("| path | ops | ops/s | p50 | p99 | ÷ without ids | ÷ WhoAmI |");
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| PlaceTower + UpgradeTower, each with its own id | {n} | {rate:.0} | {} | {} | {:.2}× | {:.2}× |",
            ms(pct(&all, 0.5)),
            ms(pct(&all, 0.99)),
            rate / (total as f64 / game_time.as_secs_f64()),
            rate / (floor.len() as f64 / floor_time.as_secs_f64()),
        );
        println!("\nrefused or failed: {failed}\n");
        print_commandstats(&stats, n, "the game commands with ids");
        println!("| process | µs per command without ids | with ids |");
        println!("|---|---|---|");
        for ((name, without), (_, with)) in cpu.iter().zip(&used) {
            println!("| {name} | {:.0} | {:.0} |", per(*without, total), per(*with, n));
        }
    }
    Measured {
        per_s: total as f64 / game_time.as_secs_f64(),
        floor_per_s: floor.len() as f64 / floor_time.as_secs_f64(),
        p99: pct(&all, 0.99),
        fleet_cpu_us: fleet_cpu.as_secs_f64() * 1e6 / total.max(1) as f64,
    }
}

/// µs of CPU per operation: a game command's parts each at its floor,
/// all measured in one run, and a WhoAmI's (every process).
struct Floors {
    /// timesquare's part of a WhoAmI (the signed call, no store).
    timesquare: f64,
    /// The calling process's part of one raw EVALSHA (a Redis round trip's client side).
    round_trip: f64,
    /// Redis's part of one raw EVALSHA doing two XADDs (the atomic append, no checks).
    redis: f64,
    /// The projector's part of a game command, as measured (no floor of its own).
    projector: f64,
    /// The bench's clients' part of a game command, as measured.
    clients: f64,
    whoami: f64,
}

impl Floors {
    fn sum(&self) -> f64 {
        self.timesquare + self.round_trip + self.redis + self.projector + self.clients
    }

    /// The ratio to WhoAmI the design allows on this machine, with the
    /// projector as measured and with it elsewhere.
    fn line(&self) -> String {
        let all = self.sum();
        let elsewhere = all - self.projector;
        format!(
            "Every part of a game command at its floor (this run): timesquare a WhoAmI's {:.0} µs + a Redis round trip's \
             client side {:.0} µs (the raw floor's caller), Redis the raw EVALSHA's {:.0} µs, the projector {:.0} µs and \
             the clients {:.0} µs as measured: {all:.0} µs against a WhoAmI's {:.0} µs — at most {:.2}× on this machine \
             ({:.2}× with the projector elsewhere)",
            self.timesquare,
            self.round_trip,
            self.redis,
            self.projector,
            self.clients,
            self.whoami,
            self.whoami / all.max(1.0),
            self.whoami / elsewhere.max(1.0),
        )
    }
}

/// One game part's latencies, refusals and wall time.
struct Played {
    place: Vec<Duration>,
    upgrade: Vec<Duration>,
    failed: usize,
    time: Duration,
}

/// Every client its own connection, its own session; place, upgrade,
/// upgrade, next cell. With `ids`, every call carries its own x-command-id.
async fn play(
    endpoint: &str,
    players: &[Gamer],
    sessions: &[String],
    cells: &Arc<Vec<(i32, i32)>>,
    ids: bool,
) -> Played {
    let per_client = COMMANDS_PER_CLIENT;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (p, sid) in players.iter().cloned().zip(sessions.iter().cloned()) {
        let (endpoint, cells) = (endpoint.to_owned(), cells.clone());
        tasks.push(tokio::spawn(async move {
            let mut g = Fleet::game_at(&endpoint).await;
            let (mut place, mut upgrade, mut failed) = (Vec::new(), Vec::new(), 0usize);
            let mut tower = 0;
            for i in 0..per_client {
                let cell = cells[(i / 3) % cells.len()];
                let t = Instant::now();
                if i % 3 == 0 {
                    let r =
                        PlaceTowerRequest { session_id: sid.clone(), tower_type: "arrow".into(), x: cell.0, y: cell.1 };
                    match g.place_tower(with_id(bearer(r, &p.token), ids.then(|| format!("{sid}-{i}")))).await {
                        Ok(r) => {
                            tower = r.into_inner().tower_id;
                            place.push(t.elapsed());
                        }
                        Err(_) => failed += 1,
                    }
                } else {
                    let r = TowerRequest { session_id: sid.clone(), tower_id: tower };
                    match g.upgrade_tower(with_id(bearer(r, &p.token), ids.then(|| format!("{sid}-{i}")))).await {
                        Ok(_) => upgrade.push(t.elapsed()),
                        Err(_) => failed += 1,
                    }
                }
            }
            (place, upgrade, failed)
        }));
    }
    let (mut place, mut upgrade, mut failed) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (p, u, f) = t.await.expect("client");
        place.extend(p);
        upgrade.extend(u);
        failed += f;
    }
    Played { place, upgrade, failed, time: started.elapsed() }
}

/// `request` with `x-command-id: id`, when there is one.
fn with_id<T>(mut request: tonic::Request<T>, id: Option<String>) -> tonic::Request<T> {
    if let Some(id) = id {
        request.metadata_mut().insert("x-command-id", id.parse().expect("ASCII id"));
    }
    request
}

/// The eight commands Redis spent most time on (`INFO commandstats`), per game command.
fn print_commandstats(stats: &str, total: usize, during: &str) {
    let mut by_cost: Vec<(String, u64, u64)> = stats
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| rest.split(',').find_map(|kv| kv.strip_prefix(k)?.parse::<u64>().ok());
            Some((name.to_owned(), field("calls=")?, field("usec=")?))
        })
        .collect();
    by_cost.sort_by_key(|(_, _, usec)| std::cmp::Reverse(*usec));
    println!("Redis time by command during {during} (INFO commandstats):\n");
    println!("| command | calls | calls per game command | µs per game command |");
    println!("|---|---|---|---|");
    for (name, calls, usec) in by_cost.iter().take(8) {
        println!("| {name} | {calls} | {:.2} | {:.1} |", *calls as f64 / total as f64, *usec as f64 / total as f64);
    }
    println!();
}

const RAW: &str =
    "redis.call('XADD', KEYS[1], '*', unpack(ARGV)) return redis.call('XADD', KEYS[2], '*', unpack(ARGV))";

async fn raw_appends(url: &str, writers: usize, each: usize) -> (Duration, Vec<Duration>) {
    let client = redis::Client::open(url).expect("client");
    let conn = redis::aio::ConnectionManager::new(client).await.expect("connect");
    let script = Arc::new(redis::Script::new(RAW));
    let payload = r#"{"towerId":12,"playerId":"0193b3d2-7a4c-7cc0-8a51-27f1c2d1e001","towerType":"arrow","x":4,"y":7,"cost":50,"goldAfter":1450,"wave":3,"tick":0}"#;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (mut conn, script) = (conn.clone(), script.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(each);
            for i in 0..each {
                let p = (w * 7 + i) % 16;
                let t = Instant::now();
                let _: String = script
                    .key(format!("raw:{{game.{p}}}:stream:w{w}"))
                    .key(format!("raw:{{game.{p}}}:log"))
                    .arg("event_id")
                    .arg(uuid::Uuid::now_v7().to_string())
                    .arg("event_type")
                    .arg("TowerPlaced")
                    .arg("aggregate_id")
                    .arg(format!("w{w}"))
                    .arg("version")
                    .arg(i + 1)
                    .arg("data")
                    .arg(payload)
                    .invoke_async(&mut conn)
                    .await
                    .expect("raw append");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    (start.elapsed(), all)
}

fn apply(state: &mut GameSession, cmd: &GameCommand) -> bool {
    match state.decide(cmd) {
        Ok(events) => {
            for e in &events {
                state.evolve(e);
            }
            true
        }
        Err(_) => false,
    }
}

fn sim() {
    let book = Book::default().with(bench_rules()).expect("the bench rules");
    let t0 = 1_750_000_000_000i64;
    let who = |i: usize| Who { user_id: format!("p{i}"), display_name: format!("p{i}") };
    let mut s = GameSession::with_rules(book);
    let create = GameCommand::Create {
        session_id: "0193b3d2-7a4c-7cc0-8a51-27f1c2d1e0aa".into(),
        host: who(0),
        map: "meadow".into(),
        difficulty: "bench".into(),
        max_players: 4,
        private: false,
        invite_hash: String::new(),
        match_id: String::new(),
        rules_version: 1,
        flags: BTreeSet::new(),
        reserved: Vec::new(),
        now_ms: t0,
    };
    assert!(apply(&mut s, &create));
    for i in 1..4 {
        assert!(apply(&mut s, &GameCommand::Join { who: who(i), invite_hash: None, now_ms: t0 }));
    }
    for i in 0..4 {
        assert!(apply(&mut s, &GameCommand::SetReady { user_id: format!("p{i}"), ready: true, now_ms: t0 }));
    }
    assert!(apply(&mut s, &GameCommand::Start { user_id: "p0".into(), now_ms: t0 }));
    // 25 towers per player, nearest to the path first, mixed kinds and levels.
    let rules = s.rules().expect("rules");
    let map = &rules.maps["meadow"];
    let path = map.path_cells();
    let kinds = ["arrow", "cannon", "frost"];
    for seat in 0..4 {
        let zone = map.zone(4, seat);
        let mut cells: Vec<(i32, i32)> = (0..map.width)
            .flat_map(|x| (0..map.height).map(move |y| (x, y)))
            .filter(|(x, y)| map.buildable(*x, *y) && timesquare_domain::rules::in_zone(zone, *x, *y))
            .collect();
        cells.sort_by_key(|(x, y)| path.iter().map(|(px, py)| (px - x).abs() + (py - y).abs()).min().unwrap_or(99));
        for (k, (x, y)) in cells.into_iter().take(25).enumerate() {
            let place = GameCommand::Place {
                user_id: format!("p{seat}"),
                tower_type: kinds[k % 3].into(),
                x,
                y,
                flags: BTreeSet::new(),
                now_ms: t0,
            };
            assert!(apply(&mut s, &place), "tower at ({x}, {y})");
            let id = s.next_tower - 1;
            for _ in 0..(k % 3) {
                apply(&mut s, &GameCommand::Upgrade { user_id: format!("p{seat}"), tower_id: id, now_ms: t0 });
            }
        }
    }
    assert_eq!(s.towers.len(), 100);
    // Waves 1 to 19, each run to its end (that is simulation too, counted apart).
    let mut now = t0;
    let early = Instant::now();
    let mut early_ticks = 0u64;
    while s.wave < 19 {
        now += 1_000;
        assert!(apply(&mut s, &GameCommand::StartWave { user_id: "p0".into(), tick_ms: 50, now_ms: now }));
        now += 100_000_000;
        let events = s.decide(&GameCommand::Settle { now_ms: now }).expect("the wave ends");
        for e in &events {
            if let allies_contracts::timesquare::events::GameEvent::WaveCompleted(w) = e {
                early_ticks += u64::from(w.end_tick);
            }
            s.evolve(e);
        }
    }
    let early_time = early.elapsed();
    now += 1_000;
    assert!(apply(&mut s, &GameCommand::StartWave { user_id: "p0".into(), tick_ms: 50, now_ms: now }));
    // Wave 20, tick by tick.
    let (mut busy_ticks, mut busy_time, mut peak, mut tick) = (0u64, Duration::ZERO, 0usize, 0u32);
    let wave_start = Instant::now();
    while s.phase == Phase::InWave && s.battle.as_ref().is_some_and(|b| b.ended.is_none()) && tick < 200_000 {
        tick += 1;
        let alive = s.battle.as_ref().map(|b| b.enemies.len()).unwrap_or(0);
        let t = Instant::now();
        s.advance(tick);
        let took = t.elapsed();
        peak = peak.max(alive);
        if alive >= 200 {
            busy_ticks += 1;
            busy_time += took;
        }
    }
    let wave_time = wave_start.elapsed();
    println!("\n## Simulation (wave 20, 4 players, {} towers, in process, one core)\n", s.towers.len());
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| waves 1-19 run to their end | {early_ticks} ticks in {:.2} s = {:.0} ticks/s |",
        early_time.as_secs_f64(),
        early_ticks as f64 / early_time.as_secs_f64()
    );
    println!("| wave 20 | {tick} ticks (peak {peak} enemies alive) |");
    println!("| ticks/s, whole wave | {:.0} |", f64::from(tick) / wave_time.as_secs_f64());
    println!(
        "| ticks/s with ≥ 200 enemies alive | {:.0} ({busy_ticks} ticks) |",
        busy_ticks as f64 / busy_time.as_secs_f64().max(1e-9)
    );
    println!(
        "| real-time sessions per core at 20 ticks/s (≥ 200 enemies) | {:.0} |",
        busy_ticks as f64 / busy_time.as_secs_f64().max(1e-9) / 20.0
    );
}

async fn watchers() {
    const WATCHERS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_file(dir.path());
    for frame_ms in ["200", "50"] {
        let env = [("RUST_LOG", "warn"), ("TIMESQUARE_RULES", rules.as_str()), ("TIMESQUARE_FRAME_MS", frame_ms)];
        let fleet = Fleet::start(&env);
        let ann = fleet.gamer("ann").await;
        let mut g = fleet.game().await;
        let sid = solo(&mut g, &ann, "bench").await;
        let mut tasks = Vec::new();
        let channels: Vec<_> = futures(&fleet, 10).await;
        for i in 0..WATCHERS {
            let mut client = channels[i % channels.len()].clone();
            let (sid, token) = (sid.clone(), ann.token.clone());
            tasks.push(tokio::spawn(async move {
                let request = WatchGameSessionRequest { session_id: sid, from_version: 0 };
                let mut stream = client.watch_game_session(bearer(request, &token)).await.expect("watch").into_inner();
                let (mut frames, mut lags) = (0usize, Vec::new());
                let until = Instant::now() + Duration::from_secs(12);
                while let Ok(Ok(Some(u))) = tokio::time::timeout_at(until.into(), stream.message()).await {
                    if let Some(Update::Frame(f)) = u.update {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0);
                        frames += 1;
                        lags.push(Duration::from_millis((now - f.at_ms).max(0) as u64));
                    }
                }
                (frames, lags)
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        start_wave(&mut g, &sid, &ann).await.expect("wave");
        let started = Instant::now();
        let (mut frames, mut lags, mut least) = (0usize, Vec::new(), usize::MAX);
        for t in tasks {
            let (f, l) = t.await.expect("watcher");
            frames += f;
            least = least.min(f);
            lags.extend(l);
        }
        let window = started.elapsed().min(Duration::from_secs(12));
        lags.sort();
        println!(
            "\n## {WATCHERS} watchers of one session, frames every {frame_ms} ms (gRPC streams over 10 connections)\n"
        );
        println!("| measure | value |");
        println!("|---|---|");
        println!(
            "| frames delivered | {frames} in {:.1} s = {:.0}/s |",
            window.as_secs_f64(),
            frames as f64 / window.as_secs_f64()
        );
        println!(
            "| per watcher | {:.1}/s (the slowest got {least}) |",
            frames as f64 / WATCHERS as f64 / window.as_secs_f64()
        );
        println!(
            "| lag p50 / p99 / max | {} / {} / {} |",
            ms(pct(&lags, 0.5)),
            ms(pct(&lags, 0.99)),
            ms(lags.last().copied().unwrap_or_default())
        );
    }
}

async fn futures(fleet: &Fleet, n: usize) -> Vec<allies_e2e::game::Games> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Fleet::game_at(&fleet.endpoint("timesquare")).await);
    }
    out
}

async fn memory() {
    let env = [("RUST_LOG", "warn"), ("TIMESQUARE_TICK_MS", "1"), ("TIMESQUARE_SETTLE_MS", "20")];
    let fleet = Fleet::start(&env);
    let team = gamers(&fleet, "mem", 4).await;
    let mut g = fleet.game().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = used_memory(fleet.redis());
    let refs: Vec<&Gamer> = team.iter().collect();
    let sid = allies_e2e::game::started_game(&mut g, &refs, "meadow", "easy").await;
    let mut waves = 0;
    loop {
        build_greedily(&mut g, &sid, &refs).await;
        start_wave(&mut g, &sid, refs[0]).await.expect("wave");
        waves += 1;
        if wave_over(&mut g, &sid, refs[0]).await.phase == "ended" {
            break;
        }
    }
    let end = state(&mut g, &sid, refs[0]).await;
    // Let the projector and the sweeper's group catch up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = used_memory(fleet.redis());
    let mut keys: Vec<String> = fleet
        .redis()
        .raw(&["KEYS", &format!("*{sid}*")])
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    keys.sort();
    println!(
        "\n## Redis memory of one finished game ({} players, {waves} waves, {}, {} events, {} towers)\n",
        team.len(),
        end.outcome,
        end.version,
        end.towers.len()
    );
    println!("| key | bytes |");
    println!("|---|---|");
    let mut total = 0;
    for k in &keys {
        let m = memory_of(fleet.redis(), k);
        total += m;
        println!("| `{k}` | {m} |");
    }
    let logs: i64 = (0..16).map(|p| memory_of(fleet.redis(), &format!("es:{{game_session.{p}}}:log"))).sum();
    println!("| the partition log (only this game's entries) | {logs} |");
    let histories: i64 = team.iter().map(|p| memory_of(fleet.redis(), &format!("rm:user:{}:games", p.id))).sum();
    println!("| 4 players' history entries (`rm:user:<id>:games`) | {histories} |");
    println!("| **total of the keys above** | **{}** |", total + logs + histories);
    println!(
        "\n(The per-event cost: {:.0} B in the session's stream, {:.0} B in the log. used_memory moved {before} → {after}; \
         allocator slack makes that delta meaningless at this size.)",
        keys.iter().filter(|k| k.contains(":stream:")).map(|k| memory_of(fleet.redis(), k)).sum::<i64>() as f64
            / end.version as f64,
        logs as f64 / end.version as f64
    );
}

/// 10,000 random tickets, as the matchmaker's waiting set holds them.
fn tickets(n: usize, seed: u64) -> Vec<timesquare_domain::matchmaker::Waiting> {
    let mut rng = timesquare_domain::sim::Rng(seed);
    let maps = ["meadow", "canyon", "marsh", "ridge"];
    let difficulties = ["easy", "normal", "hard"];
    (0..n)
        .map(|i| {
            let party = 1 + rng.up_to(2) as usize;
            let base = 800 + rng.up_to(1_400) as i32;
            let players: Vec<(String, i32)> =
                (0..party).map(|p| (format!("u{i}-{p}"), base + rng.up_to(100) as i32)).collect();
            let rating = players.iter().map(|p| p.1).sum::<i32>() / party as i32;
            let wanted: Vec<String> = match rng.up_to(2) {
                0 => vec![],
                1 => vec![maps[rng.up_to(3) as usize].to_owned()],
                _ => vec![maps[rng.up_to(3) as usize].to_owned(), maps[rng.up_to(3) as usize].to_owned()],
            };
            let min = (2 + rng.up_to(1)).max(party as u32);
            let max = (min + rng.up_to(2)).min(4).max(party as u32);
            let created = -(rng.up_to(30_000) as i64);
            timesquare_domain::matchmaker::Waiting {
                ticket_id: format!("t{i:05}"),
                players,
                rating,
                maps: wanted,
                difficulty: difficulties[rng.up_to(2) as usize].to_owned(),
                min_players: min,
                max_players: max,
                created_at_ms: created,
                expires_at_ms: created + 120_000,
            }
        })
        .collect()
}

/// One line of a benchmark table.
fn row(label: &str, value: String) {
    println!("{label:<58} {value}");
}

fn matchmaker() {
    use timesquare_domain::matchmaker::{Settings, pass};
    let maps: Vec<String> = ["meadow", "canyon", "marsh", "ridge"].iter().map(|m| m.to_string()).collect();
    let settings = Settings::default();
    let waiting = tickets(10_000, 7);
    let players: usize = waiting.iter().map(|t| t.players.len()).sum();
    let mut times = Vec::new();
    let mut first = None;
    for _ in 0..15 {
        let t = Instant::now();
        let p = pass(&waiting, 0, &settings, &maps);
        times.push(t.elapsed());
        first.get_or_insert(p);
    }
    times.sort();
    let first = first.unwrap_or_default();
    let grouped: usize = first.groups.iter().map(|g| g.players.len()).sum();
    let spread = first.groups.iter().map(|g| g.spread).max().unwrap_or(0);
    // Nobody is ever in two groups, and no group breaks a ticket's bounds.
    let mut seen = BTreeSet::new();
    assert!(first.groups.iter().flat_map(|g| &g.players).all(|(u, _, _)| seen.insert(u.clone())));
    // Passes every 250 ms until nothing is left waiting.
    let mut left = waiting.clone();
    let (mut now, mut passes, mut slowest, mut matched, mut expired) = (0i64, 0, Duration::ZERO, 0usize, 0usize);
    while !left.is_empty() && passes < 2_000 {
        let t = Instant::now();
        let p = pass(&left, now, &settings, &maps);
        slowest = slowest.max(t.elapsed());
        let gone: BTreeSet<&String> = p.groups.iter().flat_map(|g| &g.tickets).chain(&p.expired).collect();
        matched += p.groups.iter().map(|g| g.tickets.len()).sum::<usize>();
        expired += p.expired.len();
        left = left.iter().filter(|t| !gone.contains(&t.ticket_id)).cloned().collect();
        now += 250;
        passes += 1;
    }
    println!("\n== matchmaker: one pass over 10,000 waiting tickets ({players} players) ==");
    row(
        "one pass, median of 15 (min / max)",
        format!("{} ({} / {})", ms(pct(&times, 0.5)), ms(times[0]), ms(times[times.len() - 1])),
    );
    row(
        "first pass: groups formed, players grouped",
        format!("{} groups, {grouped} players, widest spread {spread}", first.groups.len()),
    );
    row(
        "passes every 250 ms until none wait (simulated time)",
        format!("{passes} passes, {:.1} s", now as f64 / 1000.0),
    );
    row("tickets matched / expired", format!("{matched} / {expired}"));
    row("slowest pass on the way", ms(slowest));
}

async fn matchmaking() {
    use allies_contracts::timesquare::v1::{ConfirmMatchRequest, FindMatchRequest, WatchTicketRequest};
    use allies_e2e::matchmaking::{gamers, publish_game, wait_player};
    const PLAYERS: usize = 1_000;
    const ARRIVAL: Duration = Duration::from_secs(10);
    let env = [("AUTH_RATE_PER_CLIENT", "1000000"), ("AUTH_RATE_PER_USERNAME", "1000000")];
    let fleet = Fleet::start(&env);
    let t = Instant::now();
    let players = gamers(&fleet, "m", PLAYERS, 16).await;
    let registered = t.elapsed();
    // A history per player spreads the ratings (0–3 hard victories, 0–2 easy defeats).
    for (i, p) in players.iter().enumerate() {
        for _ in 0..(i % 4) {
            publish_game(&fleet, &[p], "meadow", "hard", "victory", 20).await;
        }
        for _ in 0..(i % 3) {
            publish_game(&fleet, &[p], "meadow", "easy", "defeat", 2).await;
        }
    }
    let mut mm = fleet.matchmaking().await;
    let last = players.last().expect("players");
    let settled = (PLAYERS - 1) % 4 + (PLAYERS - 1) % 3;
    wait_player(&mut mm, last, |p| p.games_played as usize == settled).await;
    let endpoint = fleet.endpoint("timesquare");
    // Streams spread over 20 connections (an HTTP/2 connection carries 200 at most).
    let mut channels = Vec::new();
    for _ in 0..20 {
        channels.push(Fleet::matchmaking_at(&endpoint).await);
    }
    let pid = fleet.service("timesquare").pid();
    let cpu = allies_testkit::cpu_time(pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, who) in players.into_iter().enumerate() {
        let mut mm = channels[i % channels.len()].clone();
        let at = start + ARRIVAL * i as u32 / PLAYERS as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let begun = Instant::now();
            let request = FindMatchRequest {
                maps: vec![],
                difficulty: "normal".into(),
                min_players: 2,
                max_players: 4,
                party: vec![],
            };
            let ticket = match mm.find_match(bearer(request, &who.token)).await {
                Ok(t) => t.into_inner(),
                Err(e) => return (begun.elapsed(), None, format!("FindMatch: {}", e.message())),
            };
            let queued = begun.elapsed();
            let request = WatchTicketRequest { ticket_id: ticket.ticket_id.clone() };
            let Ok(stream) = mm.watch_ticket(bearer(request, &who.token)).await else {
                return (queued, None, "watch refused".to_owned());
            };
            let mut stream = stream.into_inner();
            let mut confirmed = String::new();
            while let Ok(Ok(Some(v))) = tokio::time::timeout(Duration::from_secs(120), stream.message()).await {
                match v.status.as_str() {
                    "matched" if confirmed != v.match_id => {
                        let request = ConfirmMatchRequest { match_id: v.match_id.clone() };
                        if mm.confirm_match(bearer(request, &who.token)).await.is_ok() {
                            confirmed = v.match_id.clone();
                        }
                    }
                    "ready" => return (queued, Some(begun.elapsed()), String::new()),
                    "expired" | "cancelled" => return (queued, None, v.status.clone()),
                    _ => {}
                }
            }
            (queued, None, "no final status".to_owned())
        }));
    }
    let (mut queued, mut ready, mut failed) = (Vec::new(), Vec::new(), BTreeMap::<String, usize>::new());
    for t in tasks {
        let Ok((q, r, why)) = t.await else { continue };
        queued.push(q);
        match r {
            Some(r) => ready.push(r),
            None => *failed.entry(why).or_default() += 1,
        }
    }
    let took = start.elapsed();
    let cpu = allies_testkit::cpu_time(pid).saturating_sub(cpu);
    queued.sort();
    ready.sort();
    let store = allies_store::RedisEventStore::connect(&fleet.redis_url(), 16).await.expect("store");
    let mut formed = 0;
    for p in 0..16 {
        let log = allies_store::keys::log_key("match", p);
        let mut c = store.connection();
        let r: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(&log).arg("-").arg("+").query_async(&mut c).await.unwrap_or_default();
        for e in r.ids {
            if allies_store::entry_text(&e, "event_type") == Some("MatchReady") {
                formed += 1;
            }
        }
    }
    println!("\n== matchmaking: {PLAYERS} players arriving over {} s, FindMatch to ready ==", ARRIVAL.as_secs());
    row("players registered and logged in", format!("{} s", registered.as_secs()));
    row("FindMatch latency p50 / p99", format!("{} / {}", ms(pct(&queued, 0.5)), ms(pct(&queued, 0.99))));
    row(
        "FindMatch to ready p50 / p99 / max",
        format!(
            "{} / {} / {}",
            ms(pct(&ready, 0.5)),
            ms(pct(&ready, 0.99)),
            ms(ready.last().copied().unwrap_or_default())
        ),
    );
    row("players ready / not", format!("{} / {} {failed:?}", ready.len(), PLAYERS - ready.len()));
    row("matches ready", format!("{formed} (avg {:.2} players)", ready.len() as f64 / formed.max(1) as f64));
    row("timesquare CPU over the run (wall)", format!("{:.1} s ({:.1} s)", cpu.as_secs_f64(), took.as_secs_f64()));
}

/// The game command benchmark (append and projection on every command)
/// with tracing off, on at 100% sampling exporting to a local collector, and
/// as deployed (parent-based, 10% of new traces), and on with nothing
/// sampled, in `GAME_BENCH_ROUNDS` interleaved rounds (default 2;
/// `GAME_BENCH_TRACING=off,full,deployed,none` picks some, e.g. to profile
/// one; every other round runs them in reverse order), then each one's cost
/// beside "off": of the means, and the median of each round beside its own
/// "off".
async fn tracing_cost() {
    let all = ["guardian", "timesquare", "command", "projector"];
    let (sink, endpoint) = allies_e2e::otlp::Collector::start().await;
    let full = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
    ];
    // As deployed (deploy/k8s): a tenth of the traces a client starts.
    let deployed = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
    ];
    // On, and nothing sampled: what tracing costs before any span.
    let none = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ];
    let configs: [(&str, &str, &[Env]); 4] = [
        ("off", "tracing off (no OTLP endpoint)", &[]),
        ("full", "tracing on: 100% sampled, OTLP to a local collector", &full),
        ("deployed", "tracing on as deployed: parent-based, 10% of new traces", &deployed),
        ("none", "tracing on, 0% of new traces sampled", &none),
    ];
    let picked = std::env::var("GAME_BENCH_TRACING").unwrap_or_else(|_| "off,full,deployed,none".into());
    let rounds = std::env::var("GAME_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2usize).max(1);
    let mut results: BTreeMap<&str, Vec<(Measured, usize)>> = BTreeMap::new();
    let chosen: Vec<_> = configs.iter().filter(|(n, _, _)| picked.split(',').any(|p| p.trim() == *n)).collect();
    for round in 1..=rounds {
        // Every other round in reverse order (off, full, …, full, off, …):
        // a host that drifts over the run weighs on every setting alike.
        let order: Vec<_> = if round % 2 == 1 { chosen.iter().collect() } else { chosen.iter().rev().collect() };
        for (name, what, env) in order {
            let before = sink.count();
            let m = commands_with(&all, &format!("the whole fleet, {what}; round {round}"), env, false).await;
            if *name != "off" {
                // The batch exporters' last spans.
                tokio::time::sleep(Duration::from_secs(6)).await;
            }
            let spans = sink.count() - before;
            println!("\nspans received by the collector: {spans}");
            results.entry(name).or_default().push((m, spans));
        }
    }
    let mean =
        |v: &[(Measured, usize)], f: fn(&Measured) -> f64| v.iter().map(|(m, _)| f(m)).sum::<f64>() / v.len() as f64;
    println!(
        "\n## Tracing's cost ({} game commands a run, mean of {rounds} rounds; a collector in the bench's process)\n",
        CLIENTS * COMMANDS_PER_CLIENT
    );
    println!(
        "| tracing | commands/s (each round) | wall × off | fleet CPU µs/command | CPU × off | p99 | WhoAmI/s | spans a run |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let off = results.get("off");
    let mut paired = Vec::new();
    for (name, _, _) in &configs {
        let Some(v) = results.get(name) else { continue };
        let (per_s, cpu) = (mean(v, |m| m.per_s), mean(v, |m| m.fleet_cpu_us));
        let each: Vec<String> = v.iter().map(|(m, _)| format!("{:.0}", m.per_s)).collect();
        let (wall_x, cpu_x) = match off {
            Some(o) => {
                (format!("{:.2}×", mean(o, |m| m.per_s) / per_s), format!("{:.2}×", cpu / mean(o, |m| m.fleet_cpu_us)))
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {name} | {per_s:.0} ({}) | {wall_x} | {cpu:.0} | {cpu_x} | {} | {:.0} | {} |",
            each.join(", "),
            ms(Duration::from_secs_f64(mean(v, |m| m.p99.as_secs_f64()))),
            mean(v, |m| m.floor_per_s),
            v.iter().map(|(_, s)| s).sum::<usize>() / v.len()
        );
        if let Some(o) = off.filter(|_| *name != "off") {
            let wall: Vec<f64> = o.iter().zip(v).map(|((o, _), (m, _))| o.per_s / m.per_s).collect();
            let cpu: Vec<f64> = o.iter().zip(v).map(|((o, _), (m, _))| m.fleet_cpu_us / o.fleet_cpu_us).collect();
            paired.push((name, wall, cpu));
        }
    }
    if paired.is_empty() {
        return;
    }
    // Each round's cost beside the same round's "off": the host's drift
    // between rounds (±25% on this VM within minutes) cancels out of each.
    println!("\nEach round beside its own \"off\" (median, then every round):\n");
    println!("| tracing | wall × off | CPU × off |");
    println!("|---|---|---|");
    let show = |x: &[f64]| {
        let each: Vec<String> = x.iter().map(|r| format!("{r:.2}")).collect();
        format!("{:.2}× ({})", median(x), each.join(", "))
    };
    for (name, wall, cpu) in paired {
        println!("| {name} | {} | {} |", show(&wall), show(&cpu));
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A tool's output line starting with `prefix`, the rest of it.
fn line_after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find_map(|l| l.trim_start().strip_prefix(prefix)).unwrap_or("")
}

/// The first number in `text` (digits, '.', ',' as a thousands mark).
fn number(text: &str) -> f64 {
    let start = text.find(|c: char| c.is_ascii_digit()).unwrap_or(text.len());
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    digits.parse().unwrap_or(0.0)
}

/// GetUser under h2load (50 connections × 10 concurrent streams, the
/// caller's bearer token on every request) beside the raw floor in the same
/// run: `redis-benchmark` HGETALL of the same read model, 50 connections ×
/// 10 pipelined. Both are C load generators on the same two cores.
/// ListUsers' two shapes, each call's time and the projector's CPU,
/// beside its Redis reads made straight from a client in the same run.
async fn lists() {
    use allies_contracts::projector::v1::ListUsersRequest;
    use projector::readmodel::Namespace;
    const USERS: usize = 2_000;
    const CALLS: usize = 100;
    let fleet = Fleet::start_only(&["guardian", "projector"], &[("RUST_LOG", "warn")]);
    let on = if fleet.cluster.is_none() { "one Redis" } else { "a three-master Redis Cluster" };
    let who = fleet.gamer("lister").await;
    let target = allies_store::RedisTarget::parse(&fleet.redis_url()).expect("url");
    let view = Namespace::new(target.connect().await.expect("connect"), projector::readmodel::DEFAULT_NAMESPACE);
    let mut conn = view.conn.clone();
    // Written as the user projection writes them; one user in twenty has a
    // username starting "zed", so a prefix page of 100 scans all 2,000.
    let ids: Vec<String> = (0..USERS).map(|i| format!("0190a000-0000-7000-8000-{i:012}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let name = if i % 20 == 19 { format!("zed{i:04}") } else { format!("lst{i:04}") };
        let registered = (1_700_000_000_000u64 + i as u64).to_string();
        let _: () = redis::cmd("HSET")
            .arg(view.key(&format!("user:{id}")))
            .arg(&[
                ("user_id", id.as_str()),
                ("username", &name),
                ("display_name", &name),
                ("email", &format!("{name}@example.com")),
                ("roles", "player"),
                ("registered_at_ms", &registered),
                ("profile_version", "1"),
                ("_version", "1"),
            ])
            .query_async(&mut conn)
            .await
            .expect("seed user");
        let _: () = redis::cmd("ZADD")
            .arg(view.key("user:idx:registered"))
            .arg(&registered)
            .arg(id)
            .query_async(&mut conn)
            .await
            .expect("seed index");
    }
    let mut q = fleet.projector().await;
    let projector = fleet.service("projector").pid();
    let mut raw = RawRedis::connect(&fleet.redis_url(), ids.iter().map(|id| view.key(&format!("user:{id}"))));
    let request =
        |prefix: &str| ListUsersRequest { username_prefix: prefix.into(), page_size: 100, ..Default::default() };
    let key = |id: &String| view.key(&format!("user:{id}"));
    println!(
        "\nListUsers over {USERS} users on {on}, {CALLS} calls of each one at a time (a player's list: others' public profiles)\n"
    );
    println!(
        "| query | p50 | p99 | projector CPU per call | floor: its Redis commands as raw RESP, each batch at once, p50 | the floor's round trips |"
    );
    println!("|---|---|---|---|---|---|");
    for (shape, prefix) in [("a page of 100, registration order", ""), ("prefix \"zed\": 2,000 scanned for 100", "zed")]
    {
        let mut took = Vec::with_capacity(CALLS);
        let cpu = allies_testkit::cpu_time(projector);
        let mut found = 0;
        for _ in 0..CALLS {
            let t = Instant::now();
            let page = q.list_users(bearer(request(prefix), &who.token)).await.expect("ListUsers").into_inner();
            took.push(t.elapsed());
            found = page.users.len();
        }
        let cpu = allies_testkit::cpu_time(projector).saturating_sub(cpu) / CALLS as u32;
        assert_eq!(found, 100, "{shape}: a full page");
        took.sort();
        // The floor: the same commands as raw RESP on plain sockets, each
        // batch written to its nodes at once and its replies skipped, not
        // parsed (the ids each chunk keeps known beforehand).
        let mut floor = Vec::with_capacity(CALLS);
        let mut trips = 0;
        let index = view.key("user:idx:registered");
        let hmget = ["user_id", "username", "display_name", "registered_at_ms", "profile_version"];
        for _ in 0..CALLS {
            let t = Instant::now();
            trips = 0;
            let mut shown = 0;
            for (chunk, page) in ids.chunks(200).enumerate() {
                let (from, to) = ((chunk * 200).to_string(), (chunk * 200 + 199).to_string());
                raw.batch(vec![(index.clone(), resp(&["ZRANGE", &index, &from, &to]))]);
                trips += 1;
                let kept: Vec<&String> = if prefix.is_empty() {
                    page.iter().take(100).collect()
                } else {
                    raw.batch(page.iter().map(|id| (key(id), resp(&["HGET", &key(id), "username"]))).collect());
                    trips += 1;
                    page.iter().enumerate().filter(|(i, _)| (chunk * 200 + i) % 20 == 19).map(|(_, id)| id).collect()
                };
                raw.batch(
                    kept.iter()
                        .map(|id| {
                            let k = key(id);
                            let mut args = vec!["HMGET", &k];
                            args.extend(hmget);
                            (k.clone(), resp(&args))
                        })
                        .collect(),
                );
                trips += 1;
                shown += kept.len();
                if shown >= 100 {
                    break;
                }
            }
            floor.push(t.elapsed());
        }
        floor.sort();
        println!(
            "| {shape} | {} | {} | {:.0} µs | {} | {trips} |",
            ms(pct(&took, 0.5)),
            ms(pct(&took, 0.99)),
            cpu.as_secs_f64() * 1e6,
            ms(pct(&floor, 0.5)),
        );
    }
}

/// Redis at its floor: plain sockets to every node, commands written as
/// raw RESP, replies read and skipped. Each key's node is found once (on a
/// Cluster the others answer MOVED).
struct RawRedis {
    nodes: Vec<(std::io::BufWriter<std::net::TcpStream>, std::io::BufReader<std::net::TcpStream>)>,
    node_of: std::collections::HashMap<String, usize>,
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

impl RawRedis {
    fn connect(url: &str, keys: impl Iterator<Item = String>) -> Self {
        let mut nodes: Vec<_> = url
            .split(',')
            .map(|u| {
                let s = std::net::TcpStream::connect(u.trim().trim_start_matches("redis://")).expect("node");
                s.set_nodelay(true).expect("nodelay");
                (std::io::BufWriter::new(s.try_clone().expect("clone")), std::io::BufReader::new(s))
            })
            .collect();
        let mut node_of = std::collections::HashMap::new();
        for key in keys.chain([format!("{}:user:idx:registered", projector::readmodel::DEFAULT_NAMESPACE)]) {
            let owner = (0..nodes.len())
                .find(|&n| {
                    let (w, r) = &mut nodes[n];
                    std::io::Write::write_all(w, &resp(&["TYPE", &key])).expect("write");
                    std::io::Write::flush(w).expect("flush");
                    let mut line = String::new();
                    std::io::BufRead::read_line(r, &mut line).expect("read");
                    !line.starts_with("-MOVED")
                })
                .expect("a node holds the key");
            node_of.insert(key, owner);
        }
        Self { nodes, node_of }
    }

    /// Writes every command to its key's node, then reads every reply.
    fn batch(&mut self, cmds: Vec<(String, Vec<u8>)>) {
        let mut expected = vec![0usize; self.nodes.len()];
        for (key, cmd) in &cmds {
            let n = self.node_of[key];
            std::io::Write::write_all(&mut self.nodes[n].0, cmd).expect("write");
            expected[n] += 1;
        }
        for (n, count) in expected.into_iter().enumerate() {
            std::io::Write::flush(&mut self.nodes[n].0).expect("flush");
            for _ in 0..count {
                skip_reply(&mut self.nodes[n].1);
            }
        }
    }
}

/// Reads one RESP reply without keeping it.
fn skip_reply(r: &mut impl std::io::BufRead) {
    let mut line = String::new();
    r.read_line(&mut line).expect("reply");
    let n: i64 = line[1..].trim_end().parse().unwrap_or(0);
    match line.as_bytes()[0] {
        b'$' if n >= 0 => {
            let mut body = vec![0; n as usize + 2];
            r.read_exact(&mut body).expect("bulk");
        }
        b'*' => (0..n.max(0)).for_each(|_| skip_reply(r)),
        b'-' => panic!("Redis refused a floor command: {line}"),
        _ => {}
    }
}

async fn queries() {
    use allies_contracts::projector::v1::GetUserRequest;
    use prost::Message;
    for tool in ["h2load", "redis-benchmark"] {
        if std::process::Command::new(tool).arg("--help").output().is_err() {
            println!("\nqueries: `{tool}` is not installed (apt-get install nghttp2-client redis-tools); skipped");
            return;
        }
    }
    let all = ["guardian", "timesquare", "command", "projector"];
    let env = [("RUST_LOG", "warn"), ("AUTH_RATE_PER_USERNAME", "1000000"), ("AUTH_RATE_PER_CLIENT", "1000000")];
    let fleet = Fleet::start_only(&all, &env);
    let who = fleet.gamer("query000").await;
    let other = fleet.gamer("query001").await;
    // `who` reads `other`'s public profile: the usual case of a query.
    let request = GetUserRequest { user_id: other.id.clone(), ..Default::default() };
    let mut q = fleet.projector().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match q.get_user(bearer(request.clone(), &who.token)).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert!(Instant::now() < deadline, "the user was not projected: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let reply_bytes = 5 + answer.encoded_len() as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("get_user.grpc");
    let message = request.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    std::fs::write(&body, framed).expect("request body");
    let key = fleet
        .raw(&["KEYS", &format!("*user:{}", other.id)])
        .lines()
        .find(|k| fleet.raw(&["TYPE", k]).contains("hash"))
        .expect("the user's read model")
        .to_owned();
    let fields = fleet.raw(&["HLEN", &key]).trim_start_matches(':').to_owned();

    let n: u64 = 200_000;
    let projector = fleet.service("projector").pid();
    let cpu_before = allies_testkit::cpu_time(projector);
    let url = format!("{}/defense_allies.projector.v1.ProjectorQueryService/GetUser", fleet.endpoint("projector"));
    let out = std::process::Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", "50", "-m", "10", "-t", "1", "-d"])
        .arg(&body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("authorization: Bearer {}", who.token)])
        .arg(&url)
        .output()
        .expect("h2load");
    let projector_cpu = allies_testkit::cpu_time(projector).saturating_sub(cpu_before);
    let h2 = String::from_utf8_lossy(&out.stdout);
    let rate = number(line_after(&h2, "finished in").split_once(',').map_or("", |(_, r)| r));
    let succeeded = number(line_after(&h2, "requests:").split(',').find(|p| p.contains("succeeded")).unwrap_or(""));
    let latency = line_after(&h2, "time for request:").to_owned();
    // A gRPC error is a trailers-only answer with HTTP 200: no DATA. So every
    // answer was the user only if the DATA received covers every reply.
    // "traffic: … total, … headers (…), 14.50MB (15200000) data": the exact count in parentheses.
    let data_part = line_after(&h2, "traffic:").rsplit(',').find(|p| p.contains("data")).unwrap_or("");
    let data = number(data_part.split_once('(').map_or("", |(_, r)| r));
    let answered = (data as u64) / reply_bytes;

    let port = fleet.redis().port().to_string();
    let floor_of = |pipeline: &str| {
        let out = std::process::Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port, "-c", "50", "-P", pipeline, "-n", "500000", "--csv"])
            .args(["HGETALL", &key])
            .output()
            .expect("redis-benchmark");
        // "test","rps","avg_latency_ms",… then "HGETALL …","123456.79",…
        let csv = String::from_utf8_lossy(&out.stdout).into_owned();
        let row = csv.lines().nth(1).unwrap_or("").to_owned();
        number(row.split(',').nth(1).unwrap_or(""))
    };
    let raw = floor_of("10");
    let raw_unpipelined = floor_of("1");

    println!("\n## Queries: GetUser under h2load beside raw HGETALL (the whole fleet on this machine)\n");
    println!("| path | requests/s | |");
    println!("|---|---|---|");
    println!(
        "| GetUser, h2load 50 connections × 10 streams, bearer token, {n} requests | {rate:.0} | {succeeded:.0} HTTP-succeeded, {answered} carried the user ({reply_bytes} B each); request time {latency} |"
    );
    println!(
        "| raw `HGETALL` of the same read model ({fields} fields), redis-benchmark 50 connections × 10 pipelined | {raw:.0} | GetUser: {:.2}× of it |",
        rate / raw.max(1.0)
    );
    println!(
        "| raw `HGETALL`, redis-benchmark 50 connections, one at a time | {raw_unpipelined:.0} | GetUser: {:.2}× of it |",
        rate / raw_unpipelined.max(1.0)
    );
    println!("| projector CPU per GetUser | {:.1} µs | |", projector_cpu.as_secs_f64() * 1e6 / succeeded.max(1.0));
    if answered < n {
        println!("\n(h2load's report)\n{h2}{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The idle fleet's cost to Redis: commands per second by command, and
/// connections by service, measured over 20 s after 10 s to settle.
async fn idle() {
    let fleet = Fleet::start(&[]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    fleet.raw(&["CONFIG", "RESETSTAT"]);
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let stats = fleet.raw(&["INFO", "commandstats"]);
    let clients = fleet.raw(&["CLIENT", "LIST"]);
    let memory = fleet.raw(&["INFO", "memory"]);
    // cmdstat_<name>:calls=<n>,usec=…
    let mut by_command: Vec<(u64, String)> = stats
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').next()?.strip_prefix("calls=")?.parse().ok()?;
            Some((calls, name.to_owned()))
        })
        .collect();
    by_command.sort_by(|a, b| b.cmp(a));
    let total: u64 = by_command.iter().map(|(n, _)| n).sum();
    let per_s = |n: u64| n as f64 / window.as_secs_f64();
    println!("\nThe idle fleet (one replica of each service, nothing happening), 20 s of Redis INFO commandstats:\n");
    println!("| idle fleet | |\n|---|---|");
    println!("| Redis commands per second (scripts' inner commands counted too) | {:.0} |", per_s(total));
    let top: Vec<String> = by_command.iter().take(10).map(|(n, c)| format!("{c} {:.0}", per_s(*n))).collect();
    println!("| by command, per second | {} |", top.join(", "));
    let mut users: BTreeMap<String, usize> = BTreeMap::new();
    for line in clients.lines() {
        if let Some(user) = line.split_whitespace().find_map(|f| f.strip_prefix("user=")) {
            *users.entry(user.to_owned()).or_default() += 1;
        }
    }
    let held: Vec<String> = users.iter().filter(|(u, _)| *u != "default").map(|(u, n)| format!("{u} {n}")).collect();
    println!("| connections by service | {} (total {}) |", held.join(", "), users.values().sum::<usize>());
    let buffers = memory.lines().find_map(|l| l.strip_prefix("mem_clients_normal:")).unwrap_or("?").trim().to_owned();
    println!("| Redis memory of client buffers (mem_clients_normal) | {buffers} bytes |");
}

#[tokio::main]
async fn main() {
    let counters = allies_testkit::cpu_counters();
    let parts: Vec<String> = std::env::args().skip(1).collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    if want("commands") {
        commands(&["guardian", "timesquare", "command", "projector"], "the whole fleet on this machine").await;
        commands(&["guardian", "timesquare"], "guardian and timesquare only: the projector runs elsewhere").await;
    }
    if want("sim") {
        sim();
    }
    if want("watchers") {
        watchers().await;
    }
    if want("memory") {
        memory().await;
    }
    if want("tracing") {
        tracing_cost().await;
    }
    if want("matchmaker") {
        matchmaker();
    }
    if want("matchmaking") {
        matchmaking().await;
    }
    if want("idle") {
        idle().await;
    }
    if want("queries") {
        queries().await;
    }
    if want("lists") {
        lists().await;
    }
    let steal = allies_testkit::steal_between(counters, allies_testkit::cpu_counters());
    println!(
        "\nCPU time stolen by the hypervisor during the run: {:.0}% (a shared VM; above a few percent, figures drop)",
        steal * 100.0
    );
}
