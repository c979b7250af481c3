//! Search end to end: the projector's search indexes (tantivy, one per
//! replica, fed from the partition logs) behind `SearchService` — names by
//! prefix and with a typo, facets, filters, privacy, two replicas answering
//! alike, and kill -9 mid-indexing with nothing missing or doubled.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use allies_contracts::projector::v1::search_service_client::SearchServiceClient;
use allies_contracts::projector::v1::*;
use allies_contracts::timesquare::v1::{CreateGameSessionRequest, EndGameRequest};
use allies_core::ExpectedVersion;
use allies_e2e::game::*;
use allies_e2e::{Fleet, bearer};
use allies_store::{AppendRequest, EventStore, RedisEventStore};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

const FAST: [(&str, &str); 3] =
    [("TIMESQUARE_TICK_MS", "1"), ("TIMESQUARE_SETTLE_MS", "20"), ("TIMESQUARE_FRAME_MS", "25")];

async fn client(endpoint: &str) -> SearchServiceClient<Channel> {
    SearchServiceClient::connect(endpoint.to_owned()).await.expect("connect to the projector")
}

async fn players(c: &SearchServiceClient<Channel>, token: &str, r: SearchPlayersRequest) -> SearchPlayersResponse {
    c.clone().search_players(bearer(r, token)).await.expect("SearchPlayers").into_inner()
}

async fn games(c: &SearchServiceClient<Channel>, token: &str, r: SearchGamesRequest) -> SearchGamesResponse {
    c.clone().search_games(bearer(r, token)).await.expect("SearchGames").into_inner()
}

/// Polls until `check` holds (the search index is eventually consistent; 15 s).
async fn eventually<T, F, Fut>(what: &str, mut probe: F, check: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = probe().await;
        if check(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: still {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(r: &SearchPlayersResponse) -> BTreeSet<String> {
    r.players.iter().map(|p| p.username.clone()).collect()
}

fn facet(facets: &[Facet], name: &str, value: &str) -> u64 {
    facets
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| f.counts.iter().find(|c| c.value == value))
        .map(|c| c.count)
        .unwrap_or(0)
}

#[tokio::test]
async fn players_and_games_are_found_by_prefix_and_typo_with_facets_filters_and_privacy() {
    let fleet = Fleet::start(&FAST);
    let (alice, _alicia, bob, eve) =
        (fleet.gamer("alice").await, fleet.gamer("alicia").await, fleet.gamer("bob").await, fleet.gamer("eve").await);
    let admin = fleet.admin().await;
    let s = client(&fleet.endpoint("projector")).await;

    // A prefix finds both; the exact name comes first; a typo still finds alice.
    let q = |query: &str| SearchPlayersRequest { query: query.into(), ..Default::default() };
    let r = eventually("ali finds two", || players(&s, &bob.token, q("ali")), |r| r.total == 2).await;
    assert_eq!(names(&r), BTreeSet::from(["alice".to_owned(), "alicia".to_owned()]));
    let r = players(&s, &bob.token, q("Alice")).await;
    assert_eq!(r.players[0].username, "alice", "the exact name first: {r:?}");
    let r = players(&s, &bob.token, q("alcie")).await;
    assert!(names(&r).contains("alice"), "one typo: {r:?}");
    assert!(players(&s, &bob.token, q("zzz")).await.players.is_empty());
    // Facets over every player; new players have played nothing.
    // alice, alicia, bob, eve and the fleet's admin.
    let all =
        eventually("every player", || players(&s, &bob.token, SearchPlayersRequest::default()), |r| r.total == 5).await;
    assert_eq!(facet(&all.facets, "games", "0"), 5);
    assert_eq!(facet(&all.facets, "rating", "1400-1599"), 5);

    // A public game alice hosts and bob joins, ended by its host; a private one of eve's.
    let mut g = fleet.game().await;
    let public = started_game(&mut g, &[&alice, &bob], "meadow", "normal").await;
    g.end_game(bearer(EndGameRequest { session_id: public.clone(), reason: "done".into() }, &alice.token))
        .await
        .expect("the host ends it");
    let request = CreateGameSessionRequest {
        map: "canyon".into(),
        difficulty: "hard".into(),
        max_players: 2,
        private: true,
        display_name: "eve".into(),
    };
    let private = g.create_game_session(bearer(request, &eve.token)).await.expect("private").into_inner().session_id;

    let by = |query: &str| SearchGamesRequest { query: query.into(), ..Default::default() };
    let r = eventually(
        "alice's ended game",
        || games(&s, &bob.token, by("alice")),
        |r| r.games.first().is_some_and(|g| g.status == "ended"),
    )
    .await;
    assert_eq!(r.total, 1);
    let hit = &r.games[0];
    assert_eq!(
        (hit.session_id.as_str(), hit.map.as_str(), hit.outcome.as_str()),
        (public.as_str(), "meadow", "forfeit")
    );
    assert_eq!(hit.players, vec!["alice".to_owned(), "bob".to_owned()]);
    let ended = games(&s, &bob.token, SearchGamesRequest { status: "ended".into(), ..Default::default() }).await;
    assert_eq!((ended.total, facet(&ended.facets, "outcome", "forfeit")), (1, 1));
    // The private game: for eve and admins, not for bob.
    let canyon = || SearchGamesRequest { map: "canyon".into(), ..Default::default() };
    let seen = eventually("eve's private game", || games(&s, &eve.token, canyon()), |r| r.total == 1).await;
    assert_eq!(seen.games[0].session_id, private);
    assert_eq!(games(&s, &admin, canyon()).await.total, 1);
    assert_eq!(games(&s, &bob.token, canyon()).await.total, 0, "a private game stays private");
    let everything = games(&s, &bob.token, SearchGamesRequest::default()).await;
    assert_eq!((everything.total, facet(&everything.facets, "map", "canyon")), (1, 0), "{everything:?}");
    // Ranges: created within the last minute, waves reached (none cleared).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let recent = SearchGamesRequest { created_from_ms: now - 60_000, created_to_ms: now + 1_000, ..Default::default() };
    assert_eq!(games(&s, &eve.token, recent).await.total, 2);
    let waved = SearchGamesRequest { min_waves: 1, ..Default::default() };
    assert_eq!(games(&s, &admin, waved).await.total, 0);

    // The game is recorded on both players: one game played, meadow their favourite.
    let fav = SearchPlayersRequest { favourite_map: "meadow".into(), ..Default::default() };
    let r = eventually("favourite maps", || players(&s, &eve.token, fav.clone()), |r| r.total == 2).await;
    assert_eq!(names(&r), BTreeSet::from(["alice".to_owned(), "bob".to_owned()]));
    assert!(r.players.iter().all(|p| p.games_played == 1 && p.favourite_map == "meadow"), "{r:?}");

    // Bad input says which field and changes nothing; no token, no answer.
    let long = SearchPlayersRequest { query: "a".repeat(101), ..Default::default() };
    let bad = s.clone().search_players(bearer(long, &bob.token)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("query"), "{bad:?}");
    let bad = s
        .clone()
        .search_games(bearer(
            SearchGamesRequest { status: "x".into(), sort_by: "y".into(), ..Default::default() },
            &bob.token,
        ))
        .await
        .unwrap_err();
    assert!(bad.message().contains("status") && bad.message().contains("sort_by"), "{bad:?}");
    assert_eq!(
        s.clone().search_players(SearchPlayersRequest::default()).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Operated like the other projections: status, and a rebuild that swaps
    // a new generation in while the old one answers.
    let admin_api = fleet.projector_admin().await;
    let status = |name: &'static str| {
        let (mut api, admin) = (admin_api.clone(), admin.clone());
        async move {
            let all = api.list_projections(bearer(ListProjectionsRequest {}, &admin)).await.expect("list").into_inner();
            all.projections.into_iter().find(|p| p.name == name).expect("search in the list")
        }
    };
    let games_status = eventually("search.games running", || status("search.games"), |p| p.state == "running").await;
    assert_eq!((games_status.aggregate_type.as_str(), games_status.generation), ("game_session", 1));
    let rebuild = RebuildProjectionRequest { projection: "search.games".into() };
    let started = admin_api.clone().rebuild_projection(bearer(rebuild, &admin)).await.expect("rebuild").into_inner();
    assert_eq!(started.generation, 2);
    eventually(
        "the rebuilt generation swapped in",
        || status("search.games"),
        |p| p.generation == 2 && p.rebuilding_generation == 0,
    )
    .await;
    assert_eq!(games(&s, &eve.token, SearchGamesRequest::default()).await.total, 2, "the same answers after the swap");
    let refused = RebuildProjectionRequest { projection: "search.games".into() };
    assert_eq!(
        admin_api.clone().rebuild_projection(bearer(refused, &bob.token)).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Its gauges: documents and entries behind, per index.
    let ops = fleet.service("projector").http_addr;
    let metrics = eventually(
        "search gauges",
        || async move { allies_testkit::http_get(ops, "/metrics").1 },
        |m| {
            m.contains("allies_search_documents{index=\"players\"} 5")
                && m.contains("allies_search_lag{index=\"games\"} 0")
        },
    )
    .await;
    assert!(metrics.contains("allies_search_documents{index=\"games\"} 2"), "{metrics}");

    // A second replica builds its own index from the logs and answers the same.
    let second = fleet.replica("projector", &FAST);
    let s2 = client(&second.endpoint()).await;
    let r2 = eventually("the second replica's players", || players(&s2, &bob.token, q("ali")), |r| r.total == 2).await;
    assert_eq!(names(&r2), BTreeSet::from(["alice".to_owned(), "alicia".to_owned()]));
    let g2 = eventually(
        "the second replica's games",
        || games(&s2, &eve.token, SearchGamesRequest::default()),
        |r| r.total == 2,
    )
    .await;
    let g1 = games(&s, &eve.token, SearchGamesRequest::default()).await;
    let ids = |r: &SearchGamesResponse| r.games.iter().map(|g| g.session_id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&g1), ids(&g2));
}

/// A game session created and joined, written straight to the store (as
/// timesquare would), so thousands exist at once.
fn session_events(i: usize) -> Vec<allies_store::NewEvent> {
    use allies_contracts::timesquare::events::v1::{GameSessionCreated, PlayerJoined};
    let event = |event_type: &str, data: Vec<u8>| allies_store::NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        content_type: allies_store::CONTENT_TYPE_JSON.into(),
        data,
    };
    let host = Uuid::now_v7().to_string();
    let created = GameSessionCreated {
        session_id: String::new(),
        host_id: host.clone(),
        map: if i.is_multiple_of(3) { "canyon" } else { "meadow" }.into(),
        difficulty: "normal".into(),
        max_players: 2,
        created_at_ms: 1_700_000_000_000 + i as i64,
        ..Default::default()
    };
    let joined = PlayerJoined { user_id: host, display_name: format!("host{i}"), ..Default::default() };
    vec![
        event("GameSessionCreated", serde_json::to_vec(&created).expect("json")),
        event("PlayerJoined", serde_json::to_vec(&joined).expect("json")),
    ]
}

#[tokio::test]
async fn a_projector_killed_mid_indexing_resumes_with_no_document_missing_or_doubled() {
    // Guardian only at first: the projector starts after the backlog exists.
    let fleet = Fleet::start_only(&["guardian"], &[]);
    let admin = fleet.admin().await;
    let store = RedisEventStore::connect(&fleet.redis_url(), 16).await.expect("store");
    let n = 12_000;
    let mut writers = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                let id = Uuid::now_v7().to_string();
                let meta = allies_testkit::fixtures::meta();
                let append =
                    AppendRequest::new("game_session", &id, ExpectedVersion::NoStream, &meta, 1, session_events(i));
                store.append(append).await.expect("append");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }

    let mut projector = fleet.replica("projector", &[]);
    let mut s = client(&projector.endpoint()).await;
    let all = |page_token: String| SearchGamesRequest { page_size: 100, page_token, ..Default::default() };
    // Kill -9 once a tenth of the documents are committed, the rest not yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_kill = loop {
        let total = match s.search_games(bearer(all(String::new()), &admin)).await {
            Ok(r) => r.into_inner().total,
            Err(_) => 0,
        };
        if total >= n as u64 / 10 {
            break total;
        }
        assert!(Instant::now() < deadline, "the index never committed anything");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    projector.kill();
    println!("killed the projector with {at_kill} of {n} sessions committed");
    assert!(at_kill < n as u64, "killed mid-indexing ({at_kill} of {n} committed): raise n if this fails");

    // Restarted on the same disk: it resumes from its commit's positions.
    projector.restart(&[]);
    let s = client(&projector.endpoint()).await;
    eventually(
        "every session indexed after the restart",
        || {
            let (mut s, admin) = (s.clone(), admin.clone());
            async move { s.search_games(bearer(all(String::new()), &admin)).await.map(|r| r.into_inner().total).ok() }
        },
        |t| *t == Some(n as u64),
    )
    .await;
    // Every document once: page through them all, a map at a time (pages
    // reach 10,000 hits deep).
    let (mut seen, mut hits) = (BTreeSet::new(), 0);
    for map in ["canyon", "meadow"] {
        let mut token = String::new();
        loop {
            let page = SearchGamesRequest { map: map.into(), ..all(token) };
            let r = games(&s, &admin, page).await;
            hits += r.games.len();
            seen.extend(r.games.into_iter().map(|g| g.session_id));
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
    }
    assert_eq!((hits, seen.len()), (n, n), "every session exactly once");
    let r = games(&s, &admin, SearchGamesRequest { query: "host1234".into(), ..Default::default() }).await;
    assert_eq!(r.games[0].players, vec!["host1234".to_owned()]);
    assert_eq!(facet(&r.facets, "map", "meadow") + facet(&r.facets, "map", "canyon"), r.total);
    let maps = games(&s, &admin, SearchGamesRequest::default()).await;
    assert_eq!(facet(&maps.facets, "map", "canyon"), (0..n).filter(|i| i.is_multiple_of(3)).count() as u64);
}
