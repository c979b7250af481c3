//! A soak with chaos: the fleet with two replicas of each service on one
//! private Redis (AOF on), games played through both timesquare replicas,
//! watchers, registrations and logins — while, on a schedule, a random
//! replica is killed with -9 and restarted, Redis is paused (CLIENT PAUSE)
//! and Redis is restarted. At the end it proves and prints: acknowledged
//! commands missing from the store (must be 0), effects applied twice (0),
//! gaps and duplicates seen by watchers (0), every finished game replaying
//! to its recorded hashes, the projector's consistency check, throughput and
//! latency steady vs during faults, and the recovery time of each fault.
//!
//!     cargo run -p allies-e2e --example soak [seconds] [games] [watchers] [matchmaking players]
//!     SOAK_REDIS=cluster cargo run -p allies-e2e --example soak …   # on a Redis Cluster
//!
//! On the cluster (three masters, a replica each, REDIS_REPLICA_ACKS=1) the
//! Redis restart becomes a master failover: a master is killed with -9, its
//! replica is promoted, the old master comes back as the replica.
//!
//! Exits 1 when a promise is broken. Loopback only; bounded in count and time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allies_contracts::projector::v1::{CheckConsistencyRequest, ListProjectionsRequest};
use allies_contracts::timesquare::events::GameEvent;
use allies_contracts::timesquare::v1::game_service_client::GameServiceClient;
use allies_contracts::timesquare::v1::game_update::Update;
use allies_contracts::timesquare::v1::*;
use allies_e2e::game::{Gamer, cells_by_the_path, started_game};
use allies_e2e::{Fleet, bearer};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Games = GameServiceClient<Channel>;

/// One acknowledged command: the version it answered and the event it wrote.
#[derive(Debug, Clone)]
struct Acked {
    session: String,
    version: u64,
    kind: &'static str,
}

#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    refused: u64,
    /// Attempts answered UNAVAILABLE (or a dropped connection) and retried with the same id.
    retried: u64,
    /// Commands given up after 30 s of retries (a dup check is then not proof).
    abandoned: u64,
    /// (when it was answered, how long it took).
    latencies: Vec<(Instant, Duration)>,
}

fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned()).expect("endpoint").connect_lazy()
}

fn gone(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted)
}

/// Sends one command through the replicas in turn, one command id for every
/// attempt, until it is answered (or 30 s pass).
async fn send<T, F, Fut>(
    ledger: &Mutex<Ledger>,
    clients: &[Games],
    start: usize,
    mut call: F,
) -> Option<Result<T, Status>>
where
    F: FnMut(Games, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let id = uuid::Uuid::now_v7().to_string();
    let began = Instant::now();
    for attempt in 0.. {
        let client = clients[(start + attempt) % clients.len()].clone();
        match tokio::time::timeout(Duration::from_secs(3), call(client, id.clone())).await {
            Ok(Ok(r)) => {
                let mut l = ledger.lock().unwrap();
                l.latencies.push((Instant::now(), began.elapsed()));
                return Some(Ok(r));
            }
            Ok(Err(s)) if !gone(&s) => {
                ledger.lock().unwrap().refused += 1;
                return Some(Err(s));
            }
            _ => {
                ledger.lock().unwrap().retried += 1;
                if began.elapsed() > Duration::from_secs(30) {
                    ledger.lock().unwrap().abandoned += 1;
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50 * (attempt as u64 + 1).min(10))).await;
            }
        }
    }
    None
}

fn with_id<T>(message: T, token: &str, id: &str) -> tonic::Request<T> {
    let mut r = bearer(message, token);
    r.metadata_mut().insert("x-command-id", id.parse().expect("ascii id"));
    r
}

/// Plays one game until `until`: places, upgrades, sells, starts waves.
async fn play(
    mut session: String,
    players: Vec<Gamer>,
    clients: Vec<Games>,
    ledger: Arc<Mutex<Ledger>>,
    games: Arc<Mutex<Vec<String>>>,
    until: Instant,
    seed: u64,
) {
    let mut rng = timesquare_domain::prng::Rng(seed);
    let mut turn = 0usize;
    while Instant::now() < until {
        turn += 1;
        let who = &players[turn % players.len()];
        let start = rng.up_to(1) as usize;
        // The state, from any replica (read: no command id needed).
        let view = match send(&ledger, &clients, start, |mut c, _| {
            let r = SessionRequest { session_id: session.clone() };
            let t = who.token.clone();
            async move { c.get_game_state(bearer(r, &t)).await.map(|r| r.into_inner()) }
        })
        .await
        {
            Some(Ok(v)) => v,
            _ => continue,
        };
        if view.phase == "ended" {
            // The next game for the same players (the host creates it).
            // (The helper panics on a refusal — a fault mid-way: its own
            // task, so this game tries again.)
            let mut g = clients[start].clone();
            let players_now = players.clone();
            let next = tokio::time::timeout(
                Duration::from_secs(20),
                tokio::spawn(async move {
                    let refs: Vec<&Gamer> = players_now.iter().collect();
                    started_game(&mut g, &refs, "meadow", "easy").await
                }),
            )
            .await;
            match next {
                Ok(Ok(id)) => {
                    games.lock().unwrap().push(id.clone());
                    session = id;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
            continue;
        }
        let gold = view.players.iter().find(|p| p.user_id == who.id).map(|p| p.gold).unwrap_or(0);
        let mine: Vec<&TowerView> = view.towers.iter().filter(|t| t.owner == who.id).collect();
        let roll = rng.up_to(99);
        let token = who.token.clone();
        let s = session.clone();
        if view.phase == "building" && (roll < 12 || gold < 50) {
            let r =
                send(&ledger, &clients, start, |mut c, id| {
                    let (s, t) = (s.clone(), token.clone());
                    async move {
                        c.start_wave(with_id(SessionRequest { session_id: s }, &t, &id)).await.map(|r| r.into_inner())
                    }
                })
                .await;
            if let Some(Ok(r)) = r {
                let kind = if r.events.iter().any(|e| e == "WaveStarted") { "WaveStarted" } else { "other" };
                if kind == "WaveStarted" {
                    ledger.lock().unwrap().acked.push(Acked { session: session.clone(), version: r.version, kind });
                }
            }
        } else if (roll < 30 || gold < 50) && !mine.is_empty() {
            let tower = mine[rng.up_to(mine.len() as u32 - 1) as usize].tower_id;
            let sell = roll < 20;
            let r = send(&ledger, &clients, start, |mut c, id| {
                let (s, t) = (s.clone(), token.clone());
                async move {
                    let req = with_id(TowerRequest { session_id: s, tower_id: tower }, &t, &id);
                    if sell { c.sell_tower(req).await } else { c.upgrade_tower(req).await }.map(|r| r.into_inner())
                }
            })
            .await;
            if let Some(Ok(r)) = r {
                let kind = if sell { "TowerSold" } else { "TowerUpgraded" };
                ledger.lock().unwrap().acked.push(Acked { session: session.clone(), version: r.version, kind });
            }
        } else {
            let cells = cells_by_the_path(&view, &who.id);
            let Some(&(x, y)) = cells.get(rng.up_to(cells.len().saturating_sub(1).min(5) as u32) as usize) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let r = send(&ledger, &clients, start, |mut c, id| {
                let (s, t) = (s.clone(), token.clone());
                async move {
                    let req = PlaceTowerRequest { session_id: s, tower_type: "arrow".into(), x, y };
                    c.place_tower(with_id(req, &t, &id)).await.map(|r| r.into_inner())
                }
            })
            .await;
            if let Some(Ok(r)) = r {
                ledger.lock().unwrap().acked.push(Acked {
                    session: session.clone(),
                    version: r.version,
                    kind: "TowerPlaced",
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Matched {
    queued: u64,
    ready: u64,
    /// Matches cancelled (a confirmation missed, a player who could not be
    /// joined): the saga compensated and the tickets went back or ended.
    cancelled: u64,
}

/// Two players queue together until `until`: find a match, confirm it, the
/// host ends the game it lands in, again. Through both replicas, with retries.
async fn matchmake(
    pair: [Gamer; 2],
    endpoints: Vec<String>,
    games: Vec<Games>,
    until: Instant,
    out: Arc<Mutex<Matched>>,
) {
    use allies_contracts::timesquare::v1::matchmaking_service_client::MatchmakingServiceClient;
    let mms: Vec<MatchmakingServiceClient<Channel>> =
        endpoints.iter().map(|e| MatchmakingServiceClient::new(channel(e))).collect();
    let mut turn = 0usize;
    let next = |turn: &mut usize| {
        *turn += 1;
        mms[*turn % mms.len()].clone()
    };
    while Instant::now() < until {
        // Both queue (a refusal such as IN_A_GAME means the last round is not over yet).
        let mut tickets = Vec::new();
        for p in &pair {
            let request = FindMatchRequest {
                maps: vec![],
                difficulty: "easy".into(),
                min_players: 2,
                max_players: 2,
                party: vec![],
            };
            // One command id for every attempt: an answer lost to a fault is
            // asked again and names the same ticket (never a second one).
            let id = uuid::Uuid::now_v7().to_string();
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(30) {
                let mut mm = next(&mut turn);
                let call = mm.find_match(with_id(request.clone(), &p.token, &id));
                match tokio::time::timeout(Duration::from_secs(3), call).await {
                    Ok(Ok(t)) => {
                        tickets.push(t.into_inner().ticket_id);
                        out.lock().unwrap().queued += 1;
                        break;
                    }
                    Ok(Err(s)) if !gone(&s) => break,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        if tickets.len() < 2 {
            leave_queue(&pair, &mms).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        // Follow the first ticket: confirm a match, until ready or cancelled.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut confirmed = String::new();
        while Instant::now() < deadline && Instant::now() < until + Duration::from_secs(20) {
            let got = next(&mut turn)
                .get_ticket(bearer(GetTicketRequest { ticket_id: tickets[0].clone() }, &pair[0].token))
                .await;
            let Ok(t) = got.map(|t| t.into_inner()) else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match t.status.as_str() {
                "matched" if confirmed != t.match_id => {
                    let mut all = true;
                    for p in &pair {
                        let r = ConfirmMatchRequest { match_id: t.match_id.clone() };
                        all &= next(&mut turn).confirm_match(bearer(r, &p.token)).await.is_ok();
                    }
                    if all {
                        confirmed = t.match_id.clone();
                    }
                }
                "ready" => {
                    out.lock().unwrap().ready += 1;
                    // The host (who queued first) ends it, so both can queue again.
                    let mut g = games[turn % games.len()].clone();
                    for p in &pair {
                        let r = EndGameRequest { session_id: t.session_id.clone(), reason: "soak".into() };
                        if g.end_game(bearer(r, &p.token)).await.is_ok() {
                            break;
                        }
                    }
                    break;
                }
                "cancelled" | "expired" => {
                    out.lock().unwrap().cancelled += 1;
                    break;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        leave_queue(&pair, &mms).await;
    }
}

/// Each player leaves the queue, and makes sure of it: until the player's
/// state names no ticket (or 30 s), the ticket it names is cancelled by its
/// id — the state may name a ticket late (an answer lost to a fault leaves
/// a ticket the client never saw, and a cancel of "my current ticket" sent
/// before the state names it finds nothing to cancel).
async fn leave_queue(
    pair: &[Gamer; 2],
    mms: &[allies_contracts::timesquare::v1::matchmaking_service_client::MatchmakingServiceClient<Channel>],
) {
    for (i, p) in pair.iter().enumerate() {
        let began = Instant::now();
        for attempt in 0.. {
            if began.elapsed() > Duration::from_secs(30) {
                break;
            }
            let mut mm = mms[(i + attempt) % mms.len()].clone();
            let state = bearer(GetPlayerStateRequest { user_id: String::new() }, &p.token);
            let ticket = match tokio::time::timeout(Duration::from_secs(3), mm.get_player_state(state)).await {
                Ok(Ok(s)) => s.into_inner().ticket_id,
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if ticket.is_empty() {
                break;
            }
            let request = bearer(CancelMatchmakingRequest { ticket_id: ticket }, &p.token);
            match tokio::time::timeout(Duration::from_secs(3), mm.cancel_matchmaking(request)).await {
                // Cancelled, or done already (its match went on): look again.
                Ok(Ok(_)) | Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

#[derive(Default, Debug)]
struct Watched {
    events: u64,
    gaps: u64,
    duplicates: u64,
    reconnects: u64,
}

/// Watches a session until `until`, resuming from the last version on any
/// error, through the replicas in turn starting at `first` (so watchers are
/// spread over the replicas, and a killed replica's watchers resume on the
/// other); counts gaps and duplicates.
async fn watch(
    session: String,
    token: String,
    clients: Vec<Games>,
    first: usize,
    until: Instant,
    out: Arc<Mutex<Watched>>,
) {
    let mut last = 0u64;
    let mut turn = first;
    while Instant::now() < until {
        let mut c = clients[turn % clients.len()].clone();
        turn += 1;
        let request = WatchGameSessionRequest { session_id: session.clone(), from_version: last };
        let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(3), c.watch_game_session(bearer(request, &token))).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            let next = tokio::time::timeout(until.saturating_duration_since(Instant::now()), stream.message()).await;
            match next {
                Ok(Ok(Some(u))) => match u.update {
                    Some(Update::Snapshot(v)) => last = v.version,
                    Some(Update::Event(e)) => {
                        let mut o = out.lock().unwrap();
                        o.events += 1;
                        if e.version <= last {
                            o.duplicates += 1;
                        } else if e.version > last + 1 {
                            o.gaps += 1;
                        }
                        last = last.max(e.version);
                    }
                    _ => {}
                },
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) => return,
            }
        }
        out.lock().unwrap().reconnects += 1;
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    // A client task that gives up (a helper refused mid-fault) says so in one line.
    std::panic::set_hook(Box::new(|info| eprintln!("(a client task gave up: {info})")));
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let seconds = args.first().copied().unwrap_or(60).clamp(20, 3600);
    let n_games = args.get(1).copied().unwrap_or(8).clamp(1, 200) as usize;
    let n_watchers = args.get(2).copied().unwrap_or(8).clamp(0, 500) as usize;
    // Players through matchmaking, in pairs.
    let n_matchmaking = (args.get(3).copied().unwrap_or(4).clamp(0, 200) as usize) / 2 * 2;
    // Waves at four times the real pace; frames 5 per second.
    // SOAK_REDIS=cluster: on a three-master Redis Cluster (a replica each,
    // failed over after 1.5 s), appends acknowledged once the replica holds
    // them (REDIS_REPLICA_ACKS=1), and a master failover among the faults.
    let on_cluster = std::env::var("SOAK_REDIS").is_ok_and(|v| v == "cluster");
    let mut env = vec![
        ("TIMESQUARE_TICK_MS", "12"),
        ("TIMESQUARE_SETTLE_MS", "50"),
        ("SUBSCRIBER_CLAIM_IDLE_MS", "3000"),
        ("TIMESQUARE_MM_INTERVAL_MS", "100"),
        ("TIMESQUARE_MM_CONFIRM_SECS", "10"),
    ];
    let mut fleet = if on_cluster {
        env.push(("REDIS_REPLICA_ACKS", "1"));
        let cluster = allies_testkit::RedisCluster::start_with(1, 1500);
        Fleet::start_on_cluster(cluster, &allies_e2e::SERVICES, &env)
    } else {
        Fleet::start(&env)
    };
    let mut extra: Vec<allies_testkit::ServiceProcess> =
        ["guardian", "timesquare", "projector", "command"].iter().map(|n| fleet.replica(n, &env)).collect();
    let ts_endpoints = [fleet.endpoint("timesquare"), extra[1].endpoint()];
    let clients: Vec<Games> = ts_endpoints.iter().map(|e| GameServiceClient::new(channel(e))).collect();
    let admin = fleet.admin().await;
    println!(
        "fleet: 2 replicas of each service on {}; {n_games} games, {n_watchers} watchers, {n_matchmaking} players matchmaking, {seconds} s",
        if on_cluster {
            "a Redis Cluster (3 masters, a replica each; REDIS_REPLICA_ACKS=1)"
        } else {
            "one Redis (AOF)"
        }
    );

    // The games, started before the clock runs.
    let mut g = fleet.game().await;
    let mut sessions = Vec::new();
    for i in 0..n_games {
        let (a, b) = (fleet.gamer(&format!("ann{i}")).await, fleet.gamer(&format!("bob{i}")).await);
        let id = started_game(&mut g, &[&a, &b], "meadow", "hard").await;
        sessions.push((id, vec![a, b]));
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let all_games = Arc::new(Mutex::new(sessions.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()));
    let watched = Arc::new(Mutex::new(Watched::default()));
    let began = Instant::now();
    let until = began + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, (id, players)) in sessions.iter().enumerate() {
        tasks.push(tokio::spawn(play(
            id.clone(),
            players.clone(),
            clients.clone(),
            ledger.clone(),
            all_games.clone(),
            until,
            i as u64 + 1,
        )));
    }
    for w in 0..n_watchers {
        let (id, players) = &sessions[w % sessions.len()];
        let token = players[0].token.clone();
        tasks.push(tokio::spawn(watch(id.clone(), token, clients.clone(), w, until, watched.clone())));
    }
    let matched = Arc::new(Mutex::new(Matched::default()));
    let mut queuers = Vec::new();
    for i in 0..n_matchmaking / 2 {
        let pair = [fleet.gamer(&format!("mma{i}")).await, fleet.gamer(&format!("mmb{i}")).await];
        queuers.push(pair[0].clone());
        queuers.push(pair[1].clone());
        tasks.push(tokio::spawn(matchmake(pair, ts_endpoints.to_vec(), clients.clone(), until, matched.clone())));
    }
    // Registrations and logins, through both guardians.
    let guardians = [fleet.endpoint("guardian"), extra[0].endpoint()];
    // (registered, logged in, logins refused by the per-client limit: every
    // client here is 127.0.0.1)
    let signups = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    {
        let signups = signups.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < until {
                i += 1;
                let mut c = allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient::new(
                    channel(&guardians[i as usize % 2]),
                );
                let name = format!("soak{i}");
                let reg = allies_contracts::guardian::v1::RegisterUserRequest {
                    username: name.clone(),
                    email: format!("{name}@example.com"),
                    password: allies_e2e::PASSWORD.into(),
                };
                if c.register_user(reg).await.is_ok() {
                    let login = allies_contracts::guardian::v1::AuthenticateUserRequest {
                        username: name,
                        password: allies_e2e::PASSWORD.into(),
                    };
                    let answer = c.authenticate_user(login).await;
                    let mut s = signups.lock().unwrap();
                    s.0 += 1;
                    match answer {
                        Ok(_) => s.1 += 1,
                        Err(e) if e.code() == Code::ResourceExhausted => s.2 += 1,
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    // The chaos schedule: a fault every `every` seconds, in turn.
    let every = (seconds / 7).max(5);
    let mut faults: Vec<(String, Instant, Option<Duration>)> = Vec::new();
    let mut k = 0u64;
    // SOAK_NO_CHAOS=1: the same load without faults (a baseline).
    let chaos = std::env::var("SOAK_NO_CHAOS").map_or(true, |v| v != "1");
    while chaos && Instant::now() + Duration::from_secs(every) < until {
        tokio::time::sleep(Duration::from_secs(every)).await;
        k += 1;
        let injected = Instant::now();
        let what = match k % 3 {
            1 => {
                // kill -9 a random replica of a random service, restart it 1 s later.
                // Every service in turn, first and second replicas alternately.
                let names = ["timesquare", "projector", "guardian", "command"];
                let kills = (k / 3) as usize;
                let i = kills % names.len();
                let first = (kills / names.len()).is_multiple_of(2);
                let extra_index =
                    ["guardian", "timesquare", "projector", "command"].iter().position(|n| *n == names[i]).unwrap_or(0);
                let p = if first { fleet.service_mut(names[i]) } else { &mut extra[extra_index] };
                p.kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
                p.restart(&[]);
                format!("kill -9 {} ({} replica), restarted", names[i], if first { "first" } else { "second" })
            }
            2 => {
                match &fleet.cluster {
                    Some(c) => {
                        c.masters().into_iter().for_each(|m| drop(c.nodes[m].raw(&["CLIENT", "PAUSE", "1500", "ALL"])))
                    }
                    None => drop(fleet.raw(&["CLIENT", "PAUSE", "1500", "ALL"])),
                }
                "CLIENT PAUSE 1.5 s".to_owned()
            }
            _ if on_cluster => {
                // kill -9 a master; once its replica took over (or 20 s),
                // the old master comes back, as the new master's replica.
                let cluster = fleet.cluster.as_mut().expect("a cluster");
                let masters = cluster.masters();
                let m = masters[(k / 3) as usize % masters.len()];
                cluster.nodes[m].kill();
                let deadline = Instant::now() + Duration::from_secs(20);
                while cluster.masters().len() < 3 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let promoted = injected.elapsed();
                tokio::task::block_in_place(|| cluster.nodes[m].restart());
                format!(
                    "master failover (kill -9 a master, replica promoted after {promoted:.1?}, old master back as replica)"
                )
            }
            _ => {
                tokio::task::block_in_place(|| fleet.redis_mut().restart());
                "Redis restarted (AOF)".to_owned()
            }
        };
        faults.push((what, injected, None));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = began.elapsed();

    // Recovery: from each fault to the answer of the first command sent after it.
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    for f in faults.iter_mut() {
        // The first command sent after the fault was injected, answered.
        f.2 = l.latencies.iter().filter(|(at, d)| *at - *d > f.1).map(|(at, _)| *at).min().map(|at| at - f.1);
    }
    let in_fault = |at: Instant| {
        faults.iter().any(|(_, t, r)| at >= *t && at <= *t + r.unwrap_or_default() + Duration::from_secs(2))
    };
    let (mut steady, mut chaotic): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for (at, d) in &l.latencies {
        if in_fault(*at) { chaotic.push(*d) } else { steady.push(*d) }
    }
    let fault_secs: f64 = faults.iter().map(|(_, _, r)| r.unwrap_or_default().as_secs_f64() + 2.0).sum();
    let steady_secs = (elapsed.as_secs_f64() - fault_secs).max(1.0);

    // The proofs, on the store as it is now.
    let mut missing = 0u64;
    let mut duplicates = 0u64;
    let mut by_session: HashMap<&str, Vec<&Acked>> = HashMap::new();
    for a in &l.acked {
        by_session.entry(a.session.as_str()).or_default().push(a);
    }
    let mut ended = Vec::new();
    let played = all_games.lock().unwrap().clone();
    for id in &played {
        let events = fleet.game_events(id).await;
        let acked = by_session.get(id.as_str()).cloned().unwrap_or_default();
        for a in &acked {
            let kind = events.get(a.version as usize - 1).map(|(_, e)| name_of(e)).unwrap_or("absent");
            if kind != a.kind {
                missing += 1;
            }
        }
        // Every command effect in the store is one acknowledged command.
        let mut written: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, e) in &events {
            let k = name_of(e);
            if k.starts_with("Tower") {
                *written.entry(k).or_default() += 1;
            }
        }
        for (k, n) in written {
            let acks = acked.iter().filter(|a| a.kind == k).count() as u64;
            duplicates += n.saturating_sub(acks);
        }
        if events.iter().any(|(_, e)| matches!(e, GameEvent::Ended(_))) {
            ended.push(id.clone());
        }
    }
    // Nobody stranded: once the matchmaking settled, no player of it is
    // still in a ticket or a match.
    let stranded;
    {
        let mut mm = allies_contracts::timesquare::v1::matchmaking_service_client::MatchmakingServiceClient::new(
            channel(&ts_endpoints[0]),
        );
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let mut now_stranded = 0;
            for p in &queuers {
                let r = mm.get_player_state(bearer(GetPlayerStateRequest { user_id: String::new() }, &p.token)).await;
                if let Ok(s) = r.map(|r| r.into_inner())
                    && (!s.ticket_id.is_empty() || !s.match_id.is_empty())
                {
                    now_stranded += 1;
                    if Instant::now() > deadline {
                        let t =
                            mm.get_ticket(bearer(GetTicketRequest { ticket_id: s.ticket_id.clone() }, &p.token)).await;
                        let m = mm
                            .get_match_state(bearer(GetMatchStateRequest { match_id: s.match_id.clone() }, &p.token))
                            .await;
                        println!(
                            "stranded: {} ticket {} ({:?}) match {} ({:?}) game {}",
                            s.username,
                            s.ticket_id,
                            t.map(|t| t.into_inner().status),
                            s.match_id,
                            m.map(|m| {
                                let m = m.into_inner();
                                (m.status, m.reason)
                            }),
                            s.session_id
                        );
                    }
                }
            }
            if now_stranded == 0 || Instant::now() > deadline {
                stranded = now_stranded;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut replays_ok = 0;
    for id in &ended {
        let mut c = fleet.game().await;
        let r = c.verify_replay(bearer(SessionRequest { session_id: id.clone() }, &admin)).await;
        if r.is_ok_and(|r| r.into_inner().ok) {
            replays_ok += 1;
        }
    }
    // The projections caught up, then checked against the logs.
    let mut pa = fleet.projector_admin().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    // (caught up, dead letters, what was behind when it was not)
    let (mut caught_up, mut dead_letters, mut behind) = (false, 0u64, String::new());
    let mut last_status = Vec::new();
    loop {
        if let Ok(l) = pa.list_projections(bearer(ListProjectionsRequest {}, &admin)).await {
            let ps = l.into_inner().projections;
            last_status = ps.clone();
            caught_up = ps.iter().all(|p| p.lag == 0 && p.pending == 0);
            dead_letters = ps.iter().map(|p| p.dead_letters).sum();
            behind = ps
                .iter()
                .filter(|p| p.lag > 0 || p.pending > 0)
                .map(|p| format!("{} lag {} pending {}", p.name, p.lag, p.pending))
                .collect::<Vec<_>>()
                .join(", ");
        }
        if caught_up || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !caught_up {
        println!("projections not caught up within 60 s: {behind}");
        // Where each lagging group stands on each of its logs: the group,
        // its consumers (idle, inactive) and who holds the partition's lease.
        for ps in last_status.iter().filter(|p| p.lag > 0 || p.pending > 0) {
            let sources: Vec<&str> = ps.aggregate_type.split(',').collect();
            let partitions = (ps.positions.len() / sources.len().max(1)) as u32;
            for source in &sources {
                for part in 0..partitions {
                    let log = allies_store::keys::log_key(source, part);
                    let groups = fleet.raw(&["XINFO", "GROUPS", &log]);
                    let mine = groups.split("name\n").find(|g| g.starts_with(&ps.group)).unwrap_or("");
                    if !mine.contains("lag\n0\n") || !mine.contains("pending\n0\n") {
                        let lease = log.replace(":log", &format!(":lease:{}", ps.group));
                        println!("  {log} [{}]: {}", ps.group, mine.replace('\n', " "));
                        println!(
                            "    last id: {}",
                            fleet
                                .raw(&["XINFO", "STREAM", &log])
                                .replace('\n', " ")
                                .chars()
                                .take(300)
                                .collect::<String>()
                        );
                        println!(
                            "    consumers: {}",
                            fleet.raw(&["XINFO", "CONSUMERS", &log, &ps.group]).replace('\n', " ")
                        );
                        println!(
                            "    lease {lease}: {} (pttl {})",
                            fleet.raw(&["GET", &lease]),
                            fleet.raw(&["PTTL", &lease])
                        );
                    }
                }
            }
        }
        // What the projector replicas said about it (warnings and errors).
        for p in std::iter::once(fleet.service("projector")).chain(extra.iter().filter(|p| p.name == "projector")) {
            // (Not the cluster client's own reconnection chatter.)
            let noise = ["slot refresh", "Failed to connect to node", "repairing in background"];
            let said = p.logs();
            let lines = said
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .filter(|l| !noise.iter().any(|n| l.contains(n)));
            for line in lines.take(40) {
                println!("  {}: {line}", p.addr);
            }
        }
    }
    let mut drift = 0;
    for p in ["rm.game", "rm.user", "rm.player"] {
        let r =
            pa.check_consistency(bearer(CheckConsistencyRequest { projection: p.into(), repair: false }, &admin)).await;
        match r {
            Ok(r) => {
                for d in r.into_inner().drifted {
                    println!("drift in {p}: {} {}", d.aggregate_id, d.problem);
                    drift += 1;
                }
            }
            Err(e) => {
                println!("consistency check of {p} failed: {e:?}");
                drift += 1;
            }
        }
    }
    let w = std::mem::take(&mut *watched.lock().unwrap());
    let s = *signups.lock().unwrap();

    println!();
    println!(
        "| soak: {seconds} s, {n_games} games, {n_watchers} watchers, two replicas of each service, {} | |",
        if on_cluster { "Redis Cluster" } else { "one Redis" }
    );
    println!("|---|---|");
    println!(
        "| commands acknowledged / refused by a rule / attempts retried | {} / {} / {} |",
        l.acked.len(),
        l.refused,
        l.retried
    );
    println!("| commands abandoned (no answer in 30 s) | {} |", l.abandoned);
    println!("| **acknowledged commands missing from the store** | **{missing}** |");
    println!("| **effects applied twice** | **{duplicates}** |");
    println!(
        "| watchers: events seen, gaps, duplicates, reconnections | {}, {}, {}, {} |",
        w.events, w.gaps, w.duplicates, w.reconnects
    );
    let m = *matched.lock().unwrap();
    println!(
        "| matchmaking: tickets / matches ready / matches cancelled / players stranded in a ticket or match | {} / {} / {} / {stranded} |",
        m.queued, m.ready, m.cancelled
    );
    println!("| registrations / logins / logins held back by the per-client limit | {} / {} / {} |", s.0, s.1, s.2);
    println!(
        "| games played / finished games replayed to their recorded hashes | {} / {replays_ok} of {} |",
        played.len(),
        ended.len()
    );
    println!("| projector consistency check (rm.game, rm.user, rm.player): drifted | {drift} |");
    println!(
        "| projections caught up after the run / dead letters | {} / {dead_letters} |",
        if caught_up { "yes" } else { "**no**" }
    );
    println!(
        "| game requests answered per second, steady / during faults | {:.0} / {:.0} |",
        steady.len() as f64 / steady_secs,
        chaotic.len() as f64 / fault_secs.max(1.0)
    );
    let (s50, s99, c50, c99) =
        (pct(&mut steady, 0.5), pct(&mut steady, 0.99), pct(&mut chaotic, 0.5), pct(&mut chaotic, 0.99));
    println!("| latency p50 / p99, steady | {} / {} |", ms(s50), ms(s99));
    println!("| latency p50 / p99, during faults (retries included) | {} / {} |", ms(c50), ms(c99));
    for (what, _, recovered) in &faults {
        println!(
            "| fault: {what} → first command sent after it, answered after | {} |",
            recovered.map(ms).unwrap_or_else(|| "never".into())
        );
    }
    let broken = stranded > 0
        || missing > 0
        || duplicates > 0
        || w.gaps > 0
        || w.duplicates > 0
        || replays_ok != ended.len()
        || drift > 0
        || !caught_up
        || dead_letters > 0
        || l.abandoned > 0;
    // The replicas and the fleet stop here (exit would skip their drops and
    // leave the processes running).
    drop(extra.drain(..));
    let denied = fleet.acl_denials();
    // (Its drop fails on a denial, after stopping every process.)
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(fleet)));
    if !denied.is_empty() {
        println!("\nRedis refused a service (deploy/k8s/base/redis-acl/acl-rules): {denied:?}");
    }
    if broken || !denied.is_empty() {
        println!("\nA promise is broken (see above).");
        std::process::exit(1);
    }
    println!("\nlost 0, duplicated 0, no gap; every finished game replays; projections consistent.");
}

fn name_of(e: &GameEvent) -> &'static str {
    match e {
        GameEvent::TowerPlaced(_) => "TowerPlaced",
        GameEvent::TowerUpgraded(_) => "TowerUpgraded",
        GameEvent::TowerSold(_) => "TowerSold",
        GameEvent::WaveStarted(_) => "WaveStarted",
        _ => "other",
    }
}
