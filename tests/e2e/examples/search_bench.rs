//! The search projection at size: 10,000 players and 100,000 games written
//! to a private redis-server as their events, then the projector's search
//! indexes (in this process, on a temporary directory) fold them from the
//! logs. Prints indexing throughput, the index size on disk, search latency
//! p50/p99 per kind of query, a restart on the same disk, and a rebuild.
//!
//!     cargo run --release -p allies-e2e --example search_bench [players] [games]

use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_contracts::projector::v1::{SearchGamesRequest, SearchPlayersRequest};
use allies_contracts::timesquare::events::v1 as ev;
use allies_core::ExpectedVersion;
use allies_platform::auth::Caller;
use allies_store::{AppendRequest, EventStore, RedisEventStore, RedisTarget};
use allies_testkit::RedisServer;
use allies_testkit::fixtures::meta;
use projector::search::Search;
use projector::search::docs::Kind;
use projector::search::query::{search_games, search_players};
use uuid::Uuid;

const WRITERS: usize = 50;
const SYLLABLES: [&str; 16] =
    ["ka", "ri", "mo", "zen", "ta", "lu", "vi", "sor", "el", "dra", "no", "bi", "qua", "fen", "ost", "ya"];
const MAPS: [&str; 2] = ["meadow", "canyon"];
const DIFFICULTIES: [&str; 3] = ["easy", "normal", "hard"];
const OUTCOMES: [&str; 4] = ["victory", "defeat", "forfeit", "abandoned"];

/// The game's own seeded generator (SplitMix64), for deterministic data.
struct Rng(timesquare_domain::prng::Rng);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
}

fn name(i: usize) -> String {
    let mut r = Rng(timesquare_domain::prng::Rng(i as u64 * 7919 + 1));
    let parts = 2 + r.below(2);
    let mut s: String = (0..parts).map(|_| SYLLABLES[r.below(SYLLABLES.len())]).collect();
    s.push_str(&(i % 1000).to_string());
    s
}

fn event<T: serde::Serialize>(event_type: &str, e: &T) -> allies_store::NewEvent {
    allies_store::NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        content_type: allies_store::CONTENT_TYPE_JSON.into(),
        data: serde_json::to_vec(e).expect("json"),
    }
}

fn player_events(i: usize) -> Vec<allies_store::NewEvent> {
    let mut r = Rng(timesquare_domain::prng::Rng(i as u64));
    let mut out = vec![event(
        "PlayerRegistered",
        &ev::PlayerRegistered {
            user_id: String::new(),
            username: name(i),
            display_name: name(i).to_uppercase(),
            registered_at_ms: 1,
            source: "guardian".into(),
            rating: 1500,
        },
    )];
    let games = r.below(6) as u32;
    for g in 1..=games {
        out.push(event(
            "PlayerGameRecorded",
            &ev::PlayerGameRecorded {
                map: MAPS[r.below(2)].into(),
                difficulty: DIFFICULTIES[r.below(3)].into(),
                outcome: OUTCOMES[r.below(4)].into(),
                rating_after: 1200 + r.below(700) as i32,
                games_played: g,
                wins: g / 2,
                ..Default::default()
            },
        ));
    }
    out
}

fn game_events(i: usize, players: usize) -> Vec<allies_store::NewEvent> {
    let mut r = Rng(timesquare_domain::prng::Rng(i as u64 ^ 0xabcdef));
    let (a, b) = (r.below(players), r.below(players));
    vec![
        event(
            "GameSessionCreated",
            &ev::GameSessionCreated {
                map: MAPS[r.below(2)].into(),
                difficulty: DIFFICULTIES[r.below(3)].into(),
                max_players: 2,
                created_at_ms: 1_700_000_000_000 + i as i64 * 60_000,
                ..Default::default()
            },
        ),
        event(
            "PlayerJoined",
            &ev::PlayerJoined { user_id: format!("u{a}"), display_name: name(a), ..Default::default() },
        ),
        event(
            "PlayerJoined",
            &ev::PlayerJoined { user_id: format!("u{b}"), display_name: name(b), ..Default::default() },
        ),
        event(
            "GameEnded",
            &ev::GameEnded {
                outcome: OUTCOMES[r.below(4)].into(),
                score: r.below(5000) as i64,
                waves_cleared: r.below(21) as u32,
                ended_at_ms: 1_700_000_000_000 + i as i64 * 60_000 + 600_000,
                ..Default::default()
            },
        ),
    ]
}

async fn write(
    store: &RedisEventStore,
    kind: &'static str,
    n: usize,
    make: Arc<dyn Fn(usize) -> Vec<allies_store::NewEvent> + Send + Sync>,
) -> usize {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, make) = (store.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut events = 0;
            for i in (w..n).step_by(WRITERS) {
                let batch = make(i);
                events += batch.len();
                let id = Uuid::now_v7().to_string();
                let req = AppendRequest::new(kind, &id, ExpectedVersion::NoStream, &meta(), 1, batch);
                store.append(req).await.expect("append");
            }
            events
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }
    total
}

fn folded(search: &Search) -> u64 {
    Kind::ALL.iter().filter_map(|k| search.live(*k)).map(|l| l.status.lock().map(|s| s.folded).unwrap_or(0)).sum()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let players = args.first().copied().unwrap_or(10_000);
    let games = args.get(1).copied().unwrap_or(100_000);
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 16).await.expect("store");
    let started = Instant::now();
    let pe = write(&store, "player", players, Arc::new(player_events)).await;
    let ge = write(&store, "game_session", games, Arc::new(move |i| game_events(i, players))).await;
    let total = (pe + ge) as u64;
    println!(
        "wrote {players} players ({pe} events) and {games} games ({ge} events) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The floor: reading every entry of the same logs straight from Redis
    // (XRANGE in pages of 1,000, all 32 logs), in this run.
    let t = Instant::now();
    let mut raw = 0u64;
    let mut conn = store.connection();
    for kind in ["player", "game_session"] {
        for p in 0..16 {
            let log = allies_store::keys::log_key(kind, p);
            let mut from = "-".to_owned();
            loop {
                let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&log)
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .expect("xrange");
                raw += page.ids.len() as u64;
                match page.ids.last() {
                    Some(last) if page.ids.len() == 1000 => from = format!("({}", last.id),
                    _ => break,
                }
            }
        }
    }
    let raw_read = t.elapsed();
    assert_eq!(raw, total);

    let dir = tempfile::tempdir().expect("tempdir");
    let target = RedisTarget::parse(&redis.url()).expect("url");
    let t = Instant::now();
    // The fleet's tail linger (SUBSCRIBER_LINGER_MS, its default unless set).
    let linger =
        allies_platform::env::Env::from_process().value_ms(&allies_core::settings::SUBSCRIBER_LINGER).expect("linger");
    let search = Search::start(dir.path(), target.clone(), store.connection(), 16, linger).expect("search");
    while folded(&search) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last batch is folded; wait for its commit.
    while Kind::ALL.iter().any(|k| search.live(*k).is_some_and(|l| l.status.lock().map(|s| s.docs).unwrap_or(0) == 0)) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let indexing = t.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let docs = |k: Kind| search.live(k).map(|l| l.status.lock().map(|s| s.docs).unwrap_or(0)).unwrap_or(0);
    let bytes: u64 =
        Kind::ALL.iter().filter_map(|k| search.live(*k)).map(|l| projector::search::index::dir_size(&l.dir)).sum();

    // Queries: what a player types, what the lobby screen asks.
    let caller = Caller {
        user_id: "u1".into(),
        session_id: String::new(),
        roles: vec!["player".into()],
        expires_at: 0,
        name: String::new(),
    };
    let mut rng = Rng(timesquare_domain::prng::Rng(42));
    let mut lat: Vec<(&str, Vec<Duration>)> = [
        "players: prefix",
        "players: one typo",
        "games: a player's name",
        "games: map + outcome by score",
        "players: all by rating",
    ]
    .into_iter()
    .map(|k| (k, Vec::new()))
    .collect();
    let mut hits = [0u64; 5];
    for round in 0..2_000 {
        let who = name(rng.below(players));
        let kind = round % 5;
        let t = Instant::now();
        let found = match kind {
            0 => search_players(&search, SearchPlayersRequest { query: who[..3].into(), ..Default::default() })
                .map(|r| r.total),
            1 => {
                let mut typo: Vec<char> = who.chars().collect();
                typo.swap(1, 2);
                let q: String = typo.into_iter().collect();
                search_players(&search, SearchPlayersRequest { query: q, ..Default::default() }).map(|r| r.total)
            }
            2 => {
                search_games(&search, &caller, SearchGamesRequest { query: who, ..Default::default() }).map(|r| r.total)
            }
            3 => search_games(
                &search,
                &caller,
                SearchGamesRequest {
                    map: MAPS[rng.below(2)].into(),
                    outcome: OUTCOMES[rng.below(4)].into(),
                    sort_by: "score".into(),
                    ..Default::default()
                },
            )
            .map(|r| r.total),
            _ => search_players(&search, SearchPlayersRequest { sort_by: "rating".into(), ..Default::default() })
                .map(|r| r.total),
        }
        .expect("search");
        if found > 0 {
            hits[kind] += 1;
        }
        lat[kind].1.push(t.elapsed());
    }

    // Staleness: a new player registered, then searched until found.
    let mut seen_after = Vec::new();
    for k in 0..50 {
        let who = format!("freshly{k}x");
        let e = event(
            "PlayerRegistered",
            &ev::PlayerRegistered {
                username: who.clone(),
                display_name: who.clone(),
                rating: 1500,
                ..Default::default()
            },
        );
        let req =
            AppendRequest::new("player", &Uuid::now_v7().to_string(), ExpectedVersion::NoStream, &meta(), 1, vec![e]);
        let t = Instant::now();
        store.append(req).await.expect("append");
        while search_players(&search, SearchPlayersRequest { query: who.clone(), ..Default::default() })
            .map(|r| r.total)
            .unwrap_or(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen_after.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A restart on the same disk: open, and nothing left to fold.
    search.stop();
    let t = Instant::now();
    let again = Search::start(dir.path(), target, store.connection(), 16, linger).expect("search again");
    let reopened = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refolded = folded(&again);

    // A rebuild of the games from the logs, beside the live generation.
    let t = Instant::now();
    let next = again.rebuild(Kind::Games).await.expect("rebuild");
    while again.live(Kind::Games).map(|l| l.generation) != Some(next) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rebuild = t.elapsed();

    println!();
    println!("| search projection ({players} players, {games} games; this machine) | |");
    println!("|---|---|");
    println!(
        "| events indexed | {total} in {:.1} s = **{:.0} events/s** |",
        indexing.as_secs_f64(),
        total as f64 / indexing.as_secs_f64()
    );
    println!(
        "| floor: the same entries read raw from Redis (XRANGE) | {:.1} s = {:.0} entries/s |",
        raw_read.as_secs_f64(),
        total as f64 / raw_read.as_secs_f64()
    );
    println!("| documents | {} players, {} games |", docs(Kind::Players), docs(Kind::Games));
    println!("| index size on disk | {:.1} MB |", bytes as f64 / 1e6);
    for (i, (what, mut v)) in lat.into_iter().enumerate() {
        println!(
            "| {what}: p50 / p99 ({} queries, {} with hits) | {} / {} |",
            v.len(),
            hits[i],
            ms(pct(&mut v, 0.5)),
            ms(pct(&mut v, 0.99))
        );
    }
    println!(
        "| a new player searchable after its event was appended, p50 / p99 (50 samples) | {} / {} |",
        ms(pct(&mut seen_after, 0.5)),
        ms(pct(&mut seen_after, 0.99))
    );
    println!("| restart on the same disk: open, then entries folded again | {} , {refolded} |", ms(reopened));
    println!("| rebuild of the games from the logs (new generation, swapped) | {:.1} s |", rebuild.as_secs_f64());
    again.stop();
}
