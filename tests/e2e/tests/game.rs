//! The game end to end: real services, real gRPC clients, games run fast
//! through a short tick (`TIMESQUARE_TICK_MS`).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use allies_contracts::projector::v1::{
    GetGameSessionRequest, ListActiveGamesRequest, ListOpenLobbiesRequest, ListPlayerGamesRequest,
};
use allies_contracts::timesquare::events::GameEvent;
use allies_contracts::timesquare::v1::game_update::Update;
use allies_contracts::timesquare::v1::*;
use allies_e2e::game::*;
use allies_e2e::{Fleet, bearer};
use tonic::Code;
use tonic::Streaming;

const FAST: [(&str, &str); 3] =
    [("TIMESQUARE_TICK_MS", "1"), ("TIMESQUARE_SETTLE_MS", "20"), ("TIMESQUARE_FRAME_MS", "25")];

/// What a watcher saw: the snapshot's version, every event version in
/// order, the frames, and the last event type.
#[derive(Debug, Default)]
struct Seen {
    snapshot: Option<u64>,
    events: Vec<u64>,
    types: Vec<String>,
    frames: usize,
}

impl Seen {
    fn record(&mut self, update: GameUpdate) {
        match update.update {
            Some(Update::Snapshot(v)) => {
                self.snapshot = Some(v.version);
            }
            Some(Update::Event(e)) => {
                self.events.push(e.version);
                self.types.push(e.event_type);
            }
            Some(Update::Frame(_)) => self.frames += 1,
            Some(Update::CaughtUp(_)) | None => {}
        }
    }

    fn ended(&self) -> bool {
        self.types.last().is_some_and(|t| t == "GameEnded")
    }
}

async fn watch(games: &mut Games, session: &str, who: &Gamer, from: u64) -> Streaming<GameUpdate> {
    let request = WatchGameSessionRequest { session_id: session.into(), from_version: from };
    games.watch_game_session(bearer(request, &who.token)).await.expect("watch").into_inner()
}

/// Watches until the game ends (or 120 s).
async fn watch_to_the_end(mut stream: Streaming<GameUpdate>) -> Seen {
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.ended() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(u))) => seen.record(u),
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    seen
}

/// Plays waves (building greedily before each when `build`) until the game ends.
async fn play_to_the_end(games: &mut Games, session: &str, team: &[&Gamer], build: bool) -> GameView {
    for _ in 0..40 {
        if build {
            build_greedily(games, session, team).await;
        }
        start_wave(games, session, team[0]).await.expect("start a wave");
        let view = wave_over(games, session, team[0]).await;
        if view.phase == "ended" {
            return view;
        }
    }
    panic!("the game did not end in 40 waves");
}

async fn verify(fleet: &Fleet, games: &mut Games, session: &str) -> VerifyReplayResponse {
    let admin = fleet.admin().await;
    games
        .verify_replay(bearer(SessionRequest { session_id: session.into() }, &admin))
        .await
        .expect("verify")
        .into_inner()
}

#[tokio::test]
async fn two_players_win_on_easy_while_a_spectator_watches_the_whole_game() {
    let fleet = Fleet::start(&FAST);
    let mut games = fleet.game().await;
    let (ann, bo, cy) = (fleet.gamer("ann").await, fleet.gamer("bob").await, fleet.gamer("cyd").await);
    let id = started_game(&mut games, &[&ann, &bo], "meadow", "easy").await;

    // A spectator (not a player) watches the public session from the start.
    let stream = watch(&mut fleet.game().await, &id, &cy, 0).await;
    let spectator = tokio::spawn(watch_to_the_end(stream));

    let end = play_to_the_end(&mut games, &id, &[&ann, &bo], true).await;
    assert_eq!((end.outcome.as_str(), end.waves_cleared, end.total_waves), ("victory", 20, 20), "lives {}", end.lives);
    // Everyone built; the towers first on the path may take every kill.
    assert!(end.players.iter().all(|p| p.towers_built > 0), "{:?}", end.players);
    assert!(end.players.iter().map(|p| p.kills).sum::<u32>() > 300, "{:?}", end.players);

    // The outcome is reproducible: the replay reaches every recorded hash.
    let report = verify(&fleet, &mut games, &id).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.waves.len(), 20);
    assert_eq!(report.events, end.version);

    // The spectator saw a snapshot, then every later event exactly once, in
    // order, and frames during the waves.
    let seen = spectator.await.expect("spectator");
    let first = seen.snapshot.expect("a snapshot first");
    let expected: Vec<u64> = (first + 1..=end.version).collect();
    assert_eq!(seen.events, expected, "no gap, no duplicate");
    assert!(seen.frames >= 20, "frames during 20 waves: {}", seen.frames);
    let events = fleet.game_events(&id).await;
    assert_eq!(events.len() as u64, end.version);
    let waves = events.iter().filter(|(_, e)| matches!(e, GameEvent::WaveCompleted(_))).count();
    assert_eq!(waves, 20);

    // The read models: the session, the players' history, no longer active.
    let mut queries = fleet.games().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let details = loop {
        let request = GetGameSessionRequest { session_id: id.clone(), consistency_token: String::new() };
        let d = queries.get_game_session(bearer(request, &cy.token)).await.expect("get").into_inner().session.unwrap();
        if d.summary.as_ref().is_some_and(|s| s.version == end.version) || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let summary = details.summary.clone().unwrap();
    assert_eq!((summary.status.as_str(), summary.outcome.as_str(), summary.score), ("ended", "victory", end.score));
    assert_eq!((summary.waves_cleared, summary.lives), (20, end.lives));
    assert_eq!(details.towers.len(), end.towers.len());
    assert_eq!(details.players.len(), 2);
    for p in &details.players {
        let live = end.players.iter().find(|l| l.user_id == p.user_id).unwrap();
        assert_eq!((p.kills, p.towers_built, p.gold), (live.kills, live.towers_built, live.gold), "{}", p.display_name);
    }
    let history = queries
        .list_player_games(bearer(ListPlayerGamesRequest { user_id: bo.id.clone(), ..Default::default() }, &bo.token))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.games.len(), 1);
    let bos = end.players.iter().find(|p| p.user_id == bo.id).unwrap();
    let entry = history.games[0].player.clone().unwrap();
    assert_eq!(
        (entry.kills, entry.towers_built, history.games[0].outcome.as_str()),
        (bos.kills, bos.towers_built, "victory")
    );
    let someone_else = ListPlayerGamesRequest { user_id: ann.id.clone(), ..Default::default() };
    let refused = queries.list_player_games(bearer(someone_else, &cy.token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let active = queries.list_active_games(bearer(ListActiveGamesRequest::default(), &cy.token)).await.unwrap();
    assert!(active.into_inner().games.iter().all(|g| g.session_id != id));
}

#[tokio::test]
async fn a_team_that_does_not_build_loses_on_hard_and_the_defeat_replays() {
    let fleet = Fleet::start(&FAST);
    let mut games = fleet.game().await;
    let (ann, bo) = (fleet.gamer("ann").await, fleet.gamer("bob").await);
    let id = started_game(&mut games, &[&ann, &bo], "canyon", "hard").await;
    let end = play_to_the_end(&mut games, &id, &[&ann, &bo], false).await;
    assert_eq!((end.outcome.as_str(), end.lives), ("defeat", 0));
    assert!(end.waves_cleared < 3, "{}", end.waves_cleared);
    let report = verify(&fleet, &mut games, &id).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.waves.last().map(|w| w.recorded_outcome.as_str()), Some("overrun"));
    // Nothing more is accepted after the end.
    let refused = start_wave(&mut games, &id, &ann).await.unwrap_err();
    assert_eq!((refused.code(), rule_of(&refused).as_str()), (Code::FailedPrecondition, "GAME_ENDED"));
}

/// Asserts a refusal: its code and the rule it names.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, rule: &str) -> tonic::Status {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), rule_of(&status).as_str()), (code, rule), "{status:?}");
    status
}

#[tokio::test]
async fn illegal_moves_are_refused_naming_the_rule_and_change_nothing() {
    let fleet = Fleet::start(&FAST);
    let mut g = fleet.game().await;
    let (ann, bo, cy) = (fleet.gamer("ann").await, fleet.gamer("bob").await, fleet.gamer("cyd").await);
    let id = create(&mut g, &ann, "meadow", "normal", 2).await;
    join(&mut g, &id, &bo).await.expect("bo joins");
    let session = |token: &str| bearer(SessionRequest { session_id: id.clone() }, token);

    // The lobby.
    refused(place(&mut g, &id, &ann, "arrow", 0, 0).await, Code::FailedPrecondition, "WRONG_PHASE");
    refused(g.start_game(session(&bo.token)).await, Code::PermissionDenied, "HOST_ONLY");
    refused(g.start_game(session(&ann.token)).await, Code::FailedPrecondition, "ALL_READY");
    let ready = |t: &str| bearer(SetReadyRequest { session_id: id.clone(), ready: true }, t);
    refused(g.set_ready(ready(&cy.token)).await, Code::PermissionDenied, "MEMBERS_ONLY");
    refused(join(&mut g, &id, &bo).await, Code::FailedPrecondition, "ALREADY_A_MEMBER");
    let bad = CreateGameSessionRequest {
        map: "moon".into(),
        difficulty: "normal".into(),
        max_players: 9,
        ..Default::default()
    };
    let status = g.create_game_session(bearer(bad, &ann.token)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    g.set_ready(ready(&ann.token)).await.expect("ready");
    g.set_ready(ready(&bo.token)).await.expect("ready");
    refused(join(&mut g, &id, &cy).await, Code::FailedPrecondition, "SESSION_FULL");
    g.start_game(session(&ann.token)).await.expect("start");

    // The game: zones, cells, gold, ownership, membership.
    let view = state(&mut g, &id, &ann).await;
    let before = view.version;
    let path = view.board.as_ref().unwrap().path[3];
    let status = refused(
        place(&mut g, &id, &ann, "arrow", path.x, path.y).await,
        Code::FailedPrecondition,
        "CELL_NOT_BUILDABLE",
    );
    use tonic_types::StatusExt;
    let fields: BTreeSet<String> =
        status.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, BTreeSet::from(["x".to_owned(), "y".to_owned()]));
    let bos_cell = cells_by_the_path(&view, &bo.id)[0];
    refused(
        place(&mut g, &id, &ann, "arrow", bos_cell.0, bos_cell.1).await,
        Code::FailedPrecondition,
        "OUTSIDE_YOUR_ZONE",
    );
    refused(place(&mut g, &id, &ann, "arrow", 99, 0).await, Code::InvalidArgument, "CELL_OUTSIDE_MAP");
    refused(place(&mut g, &id, &ann, "catapult", 0, 0).await, Code::InvalidArgument, "UNKNOWN_TOWER_TYPE");
    refused(place(&mut g, &id, &ann, "tesla", 0, 0).await, Code::FailedPrecondition, "FEATURE_DISABLED");
    refused(place(&mut g, &id, &cy, "arrow", 0, 0).await, Code::PermissionDenied, "MEMBERS_ONLY");
    assert_eq!(state(&mut g, &id, &ann).await.version, before, "refusals wrote nothing");

    let mine = cells_by_the_path(&view, &ann.id);
    let t = place(&mut g, &id, &ann, "arrow", mine[0].0, mine[0].1).await.expect("a legal tower");
    let after_one = state(&mut g, &id, &ann).await.version;
    assert_eq!(after_one, before + 1);
    refused(place(&mut g, &id, &ann, "arrow", mine[0].0, mine[0].1).await, Code::FailedPrecondition, "CELL_OCCUPIED");
    let theirs = TowerRequest { session_id: id.clone(), tower_id: t.tower_id };
    refused(g.upgrade_tower(bearer(theirs.clone(), &bo.token)).await, Code::PermissionDenied, "NOT_YOUR_TOWER");
    refused(g.sell_tower(bearer(theirs, &bo.token)).await, Code::PermissionDenied, "NOT_YOUR_TOWER");
    let missing = TowerRequest { session_id: id.clone(), tower_id: 999 };
    refused(g.sell_tower(bearer(missing, &ann.token)).await, Code::NotFound, "NO_SUCH_TOWER");
    // Spend until the gold runs out: the last one is refused.
    let mut spent = 0;
    for (x, y) in mine.iter().skip(1) {
        match place(&mut g, &id, &ann, "cannon", *x, *y).await {
            Ok(_) => spent += 1,
            Err(s) => {
                assert_eq!(rule_of(&s), "NOT_ENOUGH_GOLD", "{s:?}");
                break;
            }
        }
    }
    assert!(spent >= 1);
    let v = state(&mut g, &id, &ann).await.version;
    assert_eq!(v, after_one + spent, "only the accepted commands were written");
    refused(g.start_game(session(&ann.token)).await, Code::FailedPrecondition, "WRONG_PHASE");

    // Malformed requests and strangers.
    let status = g.start_wave(bearer(SessionRequest { session_id: "nope".into() }, &ann.token)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = g.get_game_state(bearer(SessionRequest { session_id: unknown }, &ann.token)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = g.start_wave(SessionRequest { session_id: id.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    refused(g.verify_replay(session(&ann.token)).await.map(|_| ()), Code::PermissionDenied, "");
    assert_eq!(fleet.game_events(&id).await.len() as u64, v, "the log holds exactly the accepted commands");
}

#[tokio::test]
async fn racing_for_the_last_seat_or_one_cell_across_two_replicas_exactly_one_wins() {
    let fleet = Fleet::start(&FAST);
    let other = fleet.replica("timesquare", &FAST);
    let (mut a, mut b) = (fleet.game().await, Fleet::game_at(&other.endpoint()).await);
    let ann = fleet.gamer("ann").await;
    let racers = [fleet.gamer("bob").await, fleet.gamer("cyd").await];

    // Five lobbies with one free seat, two players joining each through different replicas.
    for _ in 0..5 {
        let id = create(&mut a, &ann, "meadow", "normal", 2).await;
        let (mut a2, mut b2) = (a.clone(), b.clone());
        let (r1, r2) = tokio::join!(join(&mut a2, &id, &racers[0]), join(&mut b2, &id, &racers[1]));
        let wins = [r1.is_ok(), r2.is_ok()];
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
        for r in [r1, r2].into_iter().filter_map(Result::err) {
            assert_eq!(rule_of(&r), "SESSION_FULL", "{r:?}");
        }
        assert_eq!(state(&mut a, &id, &ann).await.players.len(), 2);
    }

    // One player on two devices (two replicas), sixteen taps on one cell.
    let id = started_game(&mut a, &[&ann], "meadow", "normal").await;
    let view = state(&mut b, &id, &ann).await;
    let (x, y) = cells_by_the_path(&view, &ann.id)[0];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut client = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (id, ann) = (id.clone(), ann.clone());
        tasks.push(tokio::spawn(async move { place(&mut client, &id, &ann, "arrow", x, y).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(s) => assert_eq!(rule_of(&s), "CELL_OCCUPIED", "{s:?}"),
        }
    }
    assert_eq!(ok, 1);
    let placed = fleet.game_events(&id).await.iter().filter(|(_, e)| matches!(e, GameEvent::TowerPlaced(_))).count();
    assert_eq!(placed, 1);
}

#[tokio::test]
async fn kill_nine_of_a_replica_mid_wave_loses_no_accepted_command_and_the_wave_completes() {
    // 4 ms ticks: a wave lasts several seconds, long enough to crash in.
    let env = [("TIMESQUARE_TICK_MS", "4"), ("TIMESQUARE_SETTLE_MS", "20"), ("TIMESQUARE_FRAME_MS", "25")];
    let mut fleet = Fleet::start(&env);
    let other = fleet.replica("timesquare", &env);
    let (mut a, mut b) = (fleet.game().await, Fleet::game_at(&other.endpoint()).await);
    let (ann, bo) = (fleet.gamer("ann").await, fleet.gamer("bob").await);
    let id = started_game(&mut a, &[&ann, &bo], "meadow", "normal").await;
    // Three arrows, and gold left for building mid-wave.
    let cells = cells_by_the_path(&state(&mut a, &id, &ann).await, &ann.id);
    let mut anns = Vec::new();
    for (x, y) in &cells[..3] {
        anns.push(place(&mut a, &id, &ann, "arrow", *x, *y).await.expect("an arrow").tower_id);
    }
    start_wave(&mut a, &id, &ann).await.expect("wave 1 through replica A");

    // Mid-wave commands through both replicas; remember what was accepted.
    let mut accepted: Vec<(u64, &str)> = Vec::new();
    let sell = |t: u32| TowerRequest { session_id: id.clone(), tower_id: t };
    let r = a.sell_tower(bearer(sell(anns[0]), &ann.token)).await.expect("sell mid-wave on A").into_inner();
    assert!(r.tick > 0, "applied at a tick of the running wave");
    accepted.push((r.version, "TowerSold"));
    let cell = cells_by_the_path(&state(&mut b, &id, &ann).await, &ann.id);
    let free = cell.first().copied().unwrap_or((0, 0));
    let r = place(&mut b, &id, &ann, "arrow", free.0, free.1).await.expect("place mid-wave on B");
    accepted.push((r.version, "TowerPlaced"));
    let r = a.sell_tower(bearer(sell(anns[1]), &ann.token)).await.expect("sell on A").into_inner();
    accepted.push((r.version, "TowerSold"));

    // Replica A dies at once.
    fleet.service_mut("timesquare").kill();
    let r = b.sell_tower(bearer(sell(anns[2]), &ann.token)).await.expect("B carries on").into_inner();
    accepted.push((r.version, "TowerSold"));
    let in_wave = state(&mut b, &id, &ann).await;
    assert_eq!(in_wave.phase, "in_wave", "the crash happened mid-wave");

    // Nobody sends anything: the wave completes anyway (B's sweeper).
    let after = wave_over(&mut b, &id, &bo).await;
    assert_eq!((after.phase.as_str(), after.waves_cleared + u32::from(after.phase == "ended")), ("building", 1));
    let events = fleet.game_events(&id).await;
    for (version, kind) in &accepted {
        let (_, e) = &events[*version as usize - 1];
        assert_eq!(allies_core_type(e), *kind, "version {version} holds the accepted command");
    }
    assert!(events.iter().any(|(_, e)| matches!(e, GameEvent::WaveCompleted(w) if w.wave == 1)));
    // The wave reached the sweeper's schedule through the same append: its
    // start is on the internal topic, whoever crashed after writing it.
    let p = allies_store::keys::partition_of(&id, 16);
    let topic = allies_store::keys::integration_key("ts.waves", "game_session", p, allies_store::Priority::High);
    assert_eq!(fleet.raw(&["XLEN", &topic]).trim_start_matches(':'), "1");
    // The recorded outcome is what the simulation gives for these inputs.
    let report = verify(&fleet, &mut b, &id).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.waves.len(), 1);
}

fn allies_core_type(e: &GameEvent) -> &'static str {
    match e {
        GameEvent::TowerSold(_) => "TowerSold",
        GameEvent::TowerPlaced(_) => "TowerPlaced",
        GameEvent::TowerUpgraded(_) => "TowerUpgraded",
        _ => "other",
    }
}

#[tokio::test]
async fn a_watcher_resumes_on_another_replica_without_gap_or_duplicate_and_a_slow_one_delays_nobody() {
    let env = [
        ("TIMESQUARE_TICK_MS", "3"),
        ("TIMESQUARE_SETTLE_MS", "20"),
        ("TIMESQUARE_FRAME_MS", "10"),
        ("TIMESQUARE_WATCH_BUFFER", "8"),
    ];
    let fleet = Fleet::start(&env);
    let other = fleet.replica("timesquare", &env);
    let (mut a, mut b) = (fleet.game().await, Fleet::game_at(&other.endpoint()).await);
    let (ann, cy) = (fleet.gamer("ann").await, fleet.gamer("cyd").await);
    let id = started_game(&mut a, &[&ann], "meadow", "normal").await;

    // The slow watcher reads the snapshot and then nothing for a whole wave.
    let mut slow = watch(&mut b, &id, &cy, 0).await;
    assert!(matches!(slow.message().await.unwrap().unwrap().update, Some(Update::Snapshot(_))));
    // The resuming watcher: a first stream on A, dropped after a few events.
    let mut first = watch(&mut a, &id, &cy, 0).await;
    let mut seen = Seen::default();
    seen.record(first.message().await.unwrap().unwrap());
    build_greedily(&mut a, &id, &[&ann]).await;
    while seen.events.len() < 2 {
        seen.record(first.message().await.unwrap().unwrap());
    }
    drop(first);
    let resume_from = *seen.events.last().unwrap();

    // The game goes on meanwhile, and a prompt watcher counts frames.
    let prompt = tokio::spawn(watch_to_the_end(watch(&mut a, &id, &cy, 0).await));
    start_wave(&mut a, &id, &ann).await.expect("wave");
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut moves = 0;
    while state(&mut a, &id, &ann).await.phase == "in_wave" && moves < 20 {
        let t = Instant::now();
        let view = state(&mut a, &id, &ann).await;
        if let Some(tower) = view.towers.iter().find(|t| t.level < 2) {
            let _ = a
                .upgrade_tower(bearer(TowerRequest { session_id: id.clone(), tower_id: tower.tower_id }, &ann.token))
                .await;
        }
        worst = worst.max(t.elapsed());
        moves += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(worst < Duration::from_millis(500), "commands stayed fast beside a stalled watcher: {worst:?}");
    wave_over(&mut a, &id, &ann).await;
    let wave_time = started.elapsed();

    // Resume on the other replica with the last version seen.
    let mut resumed = watch(&mut b, &id, &cy, resume_from).await;
    let end_version = state(&mut a, &id, &ann).await.version;
    while seen.events.last() != Some(&end_version) {
        let u = tokio::time::timeout(Duration::from_secs(10), resumed.message())
            .await
            .expect("resumed stream")
            .unwrap()
            .unwrap();
        assert!(!matches!(u.update, Some(Update::Snapshot(_))), "a resume sends the missed events, not a snapshot");
        seen.record(u);
    }
    let first_version = seen.snapshot.unwrap();
    assert_eq!(
        seen.events,
        (first_version + 1..=end_version).collect::<Vec<_>>(),
        "no gap, no duplicate across the reconnect"
    );

    // The stalled watcher was never waited for: when it reads again it is
    // resynchronised (a fresh snapshot) or simply continues without a gap.
    let mut stalled = Seen::default();
    let mut last = None;
    while last != Some(end_version) {
        let u =
            tokio::time::timeout(Duration::from_secs(10), slow.message()).await.expect("slow stream").unwrap().unwrap();
        match &u.update {
            Some(Update::Snapshot(v)) => last = Some(v.version),
            Some(Update::Event(e)) => {
                if let Some(l) = last {
                    assert!(e.version == l + 1, "after {l} came {}", e.version);
                }
                last = Some(e.version);
            }
            _ => {}
        }
        stalled.record(u);
    }

    // End the game so the prompt watcher returns; it had frames all along.
    a.end_game(bearer(EndGameRequest { session_id: id.clone(), reason: "done".into() }, &ann.token))
        .await
        .expect("end");
    let prompt = prompt.await.unwrap();
    let expected_frames = wave_time.as_millis() as usize / 10 / 4;
    assert!(prompt.frames >= expected_frames, "{} frames in {wave_time:?}", prompt.frames);
}

#[tokio::test]
async fn lobbies_are_listed_filtered_sorted_and_paged_and_private_ones_stay_private() {
    let fleet = Fleet::start(&FAST);
    let mut g = fleet.game().await;
    let players: Vec<Gamer> = futures_join(&fleet, &["ann", "bob", "cyd", "dee", "eve"]).await;
    let [ann, bo, cy, dee, eve] = [&players[0], &players[1], &players[2], &players[3], &players[4]];
    let m1 = create(&mut g, ann, "meadow", "easy", 4).await;
    let m2 = create(&mut g, bo, "meadow", "hard", 2).await;
    let c1 = create(&mut g, cy, "canyon", "easy", 3).await;
    join(&mut g, &m2, dee).await.expect("join");
    let private = CreateGameSessionRequest {
        map: "meadow".into(),
        difficulty: "easy".into(),
        max_players: 2,
        private: true,
        display_name: String::new(),
    };
    let p = g.create_game_session(bearer(private, &eve.token)).await.expect("private").into_inner();
    assert_eq!(p.invite_code.len(), 8);
    // Joining a private one needs its code.
    let mut wrong = JoinGameSessionRequest {
        session_id: p.session_id.clone(),
        invite_code: "WRONG123".into(),
        ..Default::default()
    };
    let none = JoinGameSessionRequest { invite_code: String::new(), ..wrong.clone() };
    let e = refused(g.join_game_session(bearer(none, &cy.token)).await, Code::InvalidArgument, "INVITE_CODE_REQUIRED");
    assert!(e.message().contains("needs an invite code"), "{}", e.message());
    refused(g.join_game_session(bearer(wrong.clone(), &cy.token)).await, Code::PermissionDenied, "INVITE_CODE");
    wrong.invite_code = p.invite_code.to_lowercase();
    let joined = g.join_game_session(bearer(wrong, &dee.token)).await.expect("the code works").into_inner();

    let mut q = fleet.games().await;
    // Read-your-writes: the token of the last command.
    let request =
        GetGameSessionRequest { session_id: p.session_id.clone(), consistency_token: joined.consistency_token };
    let d = q.get_game_session(bearer(request, &dee.token)).await.expect("a member sees it").into_inner();
    assert_eq!(d.session.unwrap().players.len(), 2);
    let request = GetGameSessionRequest { session_id: p.session_id.clone(), consistency_token: String::new() };
    let status = q.get_game_session(bearer(request, &ann.token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let lobbies = q.clone();
    let token = ann.token.clone();
    let list = move |request: ListOpenLobbiesRequest| {
        let (mut client, token) = (lobbies.clone(), token.clone());
        async move { client.list_open_lobbies(bearer(request, &token)).await.map(|r| r.into_inner()) }
    };
    // Wait until the projector has all four lobbies (m2 is full: 2 of 2).
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let r = list(ListOpenLobbiesRequest { min_free_slots: 1, ..Default::default() }).await.unwrap();
        if r.games.len() == 2 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<&str> = all.games.iter().map(|g| g.session_id.as_str()).collect();
    assert_eq!(ids, vec![c1.as_str(), m1.as_str()], "newest first; full and private lobbies left out");
    let by_free = list(ListOpenLobbiesRequest { sort_by: "free_slots".into(), ..Default::default() }).await.unwrap();
    assert_eq!(by_free.games.iter().map(|g| g.session_id.as_str()).collect::<Vec<_>>(), vec![m1.as_str(), c1.as_str()]);
    let meadow = list(ListOpenLobbiesRequest { map: "meadow".into(), ..Default::default() }).await.unwrap();
    assert_eq!(meadow.games.len(), 1);
    assert_eq!(meadow.games[0].host_name, "ann");
    let page1 = list(ListOpenLobbiesRequest { page_size: 1, ..Default::default() }).await.unwrap();
    assert_eq!((page1.games.len(), page1.next_page_token.is_empty()), (1, false));
    let page2 = list(ListOpenLobbiesRequest { page_size: 1, page_token: page1.next_page_token, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page2.games[0].session_id, m1);
    assert!(page2.next_page_token.is_empty());
    let three = list(ListOpenLobbiesRequest { min_free_slots: 3, ..Default::default() }).await.unwrap();
    assert_eq!(three.games.len(), 1);
    let status =
        list(ListOpenLobbiesRequest { sort_by: "fun".into(), page_size: 500, ..Default::default() }).await.unwrap_err();
    use tonic_types::StatusExt;
    let fields: BTreeSet<String> =
        status.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, BTreeSet::from(["sort_by".to_owned(), "page_size".to_owned()]));

    // Started: out of the lobbies, into the active games.
    for who in [bo, dee] {
        g.set_ready(bearer(SetReadyRequest { session_id: m2.clone(), ready: true }, &who.token)).await.unwrap();
    }
    let started =
        g.start_game(bearer(SessionRequest { session_id: m2.clone() }, &bo.token)).await.unwrap().into_inner();
    let request = GetGameSessionRequest { session_id: m2.clone(), consistency_token: started.consistency_token };
    let d = q.get_game_session(bearer(request, &ann.token)).await.unwrap().into_inner().session.unwrap();
    assert_eq!(d.summary.unwrap().status, "building");
    assert!(d.players.iter().all(|p| p.seat >= 0 && p.gold > 0));
    let active = q.list_active_games(bearer(ListActiveGamesRequest::default(), &ann.token)).await.unwrap().into_inner();
    assert_eq!(active.games.iter().map(|g| g.session_id.as_str()).collect::<Vec<_>>(), vec![m2.as_str()]);
}

async fn futures_join(fleet: &Fleet, names: &[&str]) -> Vec<Gamer> {
    let mut out = Vec::new();
    for n in names {
        out.push(fleet.gamer(n).await);
    }
    out
}

#[tokio::test]
async fn the_cli_plays_a_game_from_create_to_verify() {
    let env = [FAST[0], FAST[1], FAST[2], ("GUARDIAN_BOOTSTRAP_ADMINS", "boss")];
    let fleet = Fleet::start(&env);
    for name in ["ann", "bob", "boss"] {
        fleet.register(name).await;
    }
    let home = tempfile::tempdir().unwrap();
    let run = |profile: &str, args: &[&str]| {
        let mut all = vec!["--profile", profile];
        all.extend_from_slice(args);
        fleet.cli(home.path(), &all)
    };
    let ok = |profile: &str, args: &[&str]| {
        let out = run(profile, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for name in ["ann", "bob", "boss"] {
        ok(name, &["login", "--username", name, "--password", allies_e2e::PASSWORD]);
    }
    let created: serde_json::Value = serde_json::from_str(&ok(
        "ann",
        &["--json", "game", "create", "--map", "meadow", "--difficulty", "easy", "--players", "2"],
    ))
    .unwrap();
    let id = created["sessionId"].as_str().unwrap().to_owned();

    // bob finds the lobby, joins; both ready; ann starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok("bob", &["game", "lobbies", "--map", "meadow"]).contains(&id) {
        assert!(Instant::now() < deadline, "the lobby never showed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok("bob", &["game", "join", &id]);
    ok("ann", &["game", "ready"]);
    ok("bob", &["game", "ready"]);
    assert!(ok("ann", &["game", "start"]).contains("building"));

    // Towers, an upgrade, a sale, and a refusal that names its rule.
    assert!(ok("ann", &["game", "place", "arrow", "0", "1"]).contains("placed arrow"));
    let placed: serde_json::Value =
        serde_json::from_str(&ok("bob", &["--json", "game", "place", "cannon", "10", "1"])).unwrap();
    let bobs = placed["towerId"].to_string();
    ok("ann", &["game", "place", "frost", "1", "3"]);
    ok("ann", &["game", "upgrade", "0"]);
    ok("bob", &["game", "sell", &bobs]);
    let out = run("ann", &["game", "place", "arrow", "0", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FailedPrecondition") && err.contains("CELL_NOT_BUILDABLE") && err.contains("field `x`"),
        "{err}"
    );

    // The board, a wave to its end, the read model.
    let board = ok("bob", &["game", "watch", "--once"]);
    assert!(board.contains(">>") && board.contains("[]") && board.contains("A2") && board.contains("F1"), "{board}");
    let wave = ok("ann", &["game", "wave", "--wait"]);
    // Cleared with no leak, held with leaks and lives left, or overrun.
    let (cleared, held) = (wave.contains("wave 1 cleared: "), wave.contains("wave 1 held: "));
    assert!(
        cleared && wave.contains(", 0 leaks") || held && !wave.contains(", 0 leaks") || wave.contains("wave 1 overrun"),
        "{wave}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = ok("bob", &["game", "show"]);
        if shown.contains("1 cleared") || shown.contains("(last: overrun)") {
            assert!(shown.contains("wave 1 of 20") && shown.contains("frost"), "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The host forfeits; an admin verifies the replay; the history has it.
    assert!(ok("ann", &["game", "end", "--reason", "dinner"]).contains("ended"));
    let verified = ok("boss", &["game", "verify", "--game", &id]);
    assert!(verified.contains("replay verified") && verified.contains("wave  1"), "{verified}");
    let refused = run("ann", &["game", "verify"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok("ann", &["game", "history"]).contains("forfeit") {
        assert!(Instant::now() < deadline, "the history never showed the game");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The operator tool replays it offline from the store.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(allies_testkit::binary("allies-store"))
        .env("REDIS_URL", fleet.redis_url())
        .args(["verify-game", &id, "--rules"])
        .arg(root.join("configs/game-rules.yaml"))
        .arg("--rules-dir")
        .arg(root.join("configs/game-rules.d"))
        .output()
        .expect("run allies-store");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("replay verified"), "{text}{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_bad_rules_file_stops_timesquare_naming_the_key() {
    let redis = allies_testkit::RedisServer::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shipped = std::fs::read_to_string(root.join("configs/game-rules.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("arrow cost 0", shipped.replacen("cost: 50", "cost: 0", 1), "towers.arrow.cost"),
        ("a path off the grid", shipped.replacen("[19, 10]]", "[25, 10]]", 1), "maps.meadow.path"),
        ("an unknown key", shipped.replacen("economy:", "economy:\n  interest_pct: 5", 1), "interest_pct"),
    ];
    for (what, text, key) in cases {
        assert_ne!(text, shipped, "{what}: the edit applies");
        let file = dir.path().join("rules.yaml");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(allies_testkit::binary("timesquare"))
            .env("REDIS_URL", redis.url())
            .env("TIMESQUARE_LISTEN_ADDR", "127.0.0.1:0")
            .env("TIMESQUARE_HTTP_ADDR", "127.0.0.1:0")
            .env("TIMESQUARE_RULES", &file)
            .output()
            .expect("run timesquare");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: timesquare started");
        assert!(err.contains("rules.yaml") && err.contains(key), "{what}: the error names the file and {key}: {err}");
    }
}

/// One terminal plays a game: `game watch` on a terminal (a pseudo-terminal
/// from util-linux `script`) takes keys — move, place, upgrade, a refused
/// placement shown with its rule, start the wave, quit.
#[tokio::test]
async fn the_terminal_board_is_played_with_keys() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let fleet = Fleet::start(&[FAST[0], FAST[1], FAST[2]]);
    fleet.register("ann").await;
    let home = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let out = fleet.cli(home.path(), args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["login", "--username", "ann", "--password", allies_e2e::PASSWORD]);
    ok(&["game", "create", "--map", "meadow", "--difficulty", "easy", "--players", "1"]);
    ok(&["game", "ready"]);
    ok(&["game", "start"]);

    let allies = allies_testkit::binary("allies");
    let line = format!(
        "{} --guardian {} --timesquare {} --projector {} --command-url {} game watch",
        allies.display(),
        fleet.endpoint("guardian"),
        fleet.endpoint("timesquare"),
        fleet.endpoint("projector"),
        fleet.endpoint("command"),
    );
    let mut play = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("ALLIES_HOME", home.path())
        .env_remove("ALLIES_PROFILE")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs the board on a pseudo-terminal");
    // Down to (0, 1); place the first tower (arrow); upgrade it; down onto
    // the path at (0, 2); place: refused; start the wave; quit.
    let mut keys = play.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for key in ["j", "1", "u", "j", "1", "w", "q"] {
        keys.write_all(key.as_bytes()).unwrap();
        keys.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = play.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "q did not end the board");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(keys);
    let mut screen = String::new();
    std::io::Read::read_to_string(&mut play.stdout.take().unwrap(), &mut screen).unwrap();
    assert!(status.success(), "exit {status}: {screen}");
    for shown in ["keys: arrows/hjkl move · 1 arrow", "placed arrow at (0, 1): tower 0", "upgraded tower 0"] {
        assert!(screen.contains(shown), "the board showed no {shown:?}: {screen}");
    }
    assert!(
        screen.contains("refused: ") && screen.contains("is not buildable (path or rock) · rule CELL_NOT_BUILDABLE"),
        "{screen}"
    );
    assert!(screen.contains("wave started"), "{screen}");

    // What the keys did is what the game holds.
    let live = ok(&["--json", "game", "show", "--live"]);
    let view: serde_json::Value = serde_json::from_str(&live).unwrap();
    let towers = view["towers"].as_array().unwrap();
    assert_eq!(towers.len(), 1, "{live}");
    assert_eq!(
        (towers[0]["x"].as_i64(), towers[0]["y"].as_i64(), towers[0]["level"].as_i64()),
        (Some(0), Some(1), Some(1))
    );
    assert!(view["wave"].as_i64().unwrap_or(0) >= 1, "the wave started: {live}");
}

/// A replica told to stop (SIGTERM) ends its open game watches with
/// UNAVAILABLE at once — not after its grace period — and exits; the
/// watcher resumes on another replica from its last version, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_replica_ends_its_watches_with_unavailable_and_the_watcher_resumes_elsewhere() {
    let mut fleet = Fleet::start(&[FAST[0], FAST[1], FAST[2], ("SHUTDOWN_GRACE_SECS", "8")]);
    let ann = fleet.gamer("ann").await;
    let other = fleet.replica("timesquare", &[("SHUTDOWN_GRACE_SECS", "8")]);
    let mut games = fleet.game().await;
    let session = started_game(&mut games, &[&ann], "meadow", "easy").await;
    let watch =
        |from_version| bearer(WatchGameSessionRequest { session_id: session.clone(), from_version }, &ann.token);
    let mut stream = games.watch_game_session(watch(0)).await.unwrap().into_inner();
    let Some(Update::Snapshot(first)) = stream.message().await.unwrap().and_then(|u| u.update) else {
        panic!("a watch starts with a snapshot")
    };

    let pid = fleet.service("timesquare").pid().to_string();
    let asked = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the watch was not ended within 5 s of SIGTERM"),
        }
    };
    let ended_after = asked.elapsed();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("shutting down"), "{}", end.message());
    assert!(ended_after < Duration::from_secs(2), "ended after {ended_after:?} (grace is 8 s)");
    let exit = fleet.service_mut("timesquare").terminate(Duration::from_secs(8));
    assert_eq!(exit, Some(0), "it stopped cleanly, well within its grace");
    assert!(asked.elapsed() < Duration::from_secs(6), "stopped after {:?}", asked.elapsed());

    // The watcher goes on from the other replica, after what it saw.
    let mut elsewhere = Games::connect(other.endpoint()).await.unwrap();
    let mut resumed = elsewhere.watch_game_session(watch(first.version)).await.unwrap().into_inner();
    // At once, before anything new happens: the stream is live and current.
    let open = tokio::time::timeout(Duration::from_secs(5), resumed.message()).await.unwrap().unwrap().unwrap();
    match open.update {
        Some(Update::CaughtUp(c)) => assert_eq!(c.version, first.version),
        other => panic!("a resumed watch with nothing to replay says it is current, got {other:?}"),
    }
    start_wave(&mut elsewhere, &session, &ann).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), resumed.message()).await.unwrap().unwrap().unwrap();
    match next.update {
        Some(Update::Event(e)) => assert_eq!(e.version, first.version + 1, "no gap, nothing twice"),
        other => panic!("expected the next event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_replay_pages_through_every_event_with_the_rules_it_was_played_with() {
    let fleet = Fleet::start(&FAST);
    let mut g = fleet.game().await;
    let (ann, bob, eve) = (fleet.gamer("ann").await, fleet.gamer("bob").await, fleet.gamer("eve").await);
    let id = started_game(&mut g, &[&ann, &bob], "meadow", "normal").await;
    let cells = cells_by_the_path(&state(&mut g, &id, &ann).await, &ann.id);
    place(&mut g, &id, &ann, "arrow", cells[0].0, cells[0].1).await.expect("an arrow");
    start_wave(&mut g, &id, &ann).await.expect("wave 1");
    wave_over(&mut g, &id, &ann).await;
    let recorded = fleet.game_events(&id).await;

    // Pages of 3, as a player and as a spectator of this public game: the
    // same events, in order, each once; the rules on the first page only.
    for who in [&ann, &eve] {
        let (mut after, mut versions, mut rules_json) = (0, Vec::new(), String::new());
        loop {
            let request = GetReplayRequest { session_id: id.clone(), after_version: after, page_size: 3 };
            let page = g.get_replay(bearer(request, &who.token)).await.expect("a replay page").into_inner();
            assert!(page.events.len() <= 3);
            if after == 0 {
                rules_json = page.rules_json.clone();
            } else {
                assert!(page.rules_json.is_empty(), "the rules come with the first page only");
            }
            versions.extend(page.events.iter().map(|e| e.version));
            match page.events.last() {
                Some(last) if last.version < page.version => after = last.version,
                _ => break,
            }
        }
        assert_eq!(versions, (1..=recorded.len() as u64).collect::<Vec<_>>(), "{} sees every event once", who.name);
        // The rules are the ones the session recorded: their FNV-1a is the rules hash.
        let Some((_, GameEvent::Created(created))) = recorded.first() else { panic!("created first") };
        let hash = format!("{:016x}", timesquare_domain::prng::fnv(rules_json.as_bytes()));
        assert_eq!(hash, created.rules_hash);
    }
    // The wave's event as JSON, with the seed the client needs to re-run it.
    let request = GetReplayRequest { session_id: id.clone(), after_version: 0, page_size: 0 };
    let page = g.get_replay(bearer(request, &bob.token)).await.unwrap().into_inner();
    let started = page.events.iter().find(|e| e.event_type == "WaveStarted").expect("the wave's start");
    assert!(started.json.contains("\"seed\""), "{}", started.json);

    // Bad input changes nothing and says what is wrong.
    let request = GetReplayRequest { session_id: id.clone(), after_version: 0, page_size: 5000 };
    let bad = g.get_replay(bearer(request, &ann.token)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_size"), "{bad:?}");
    let request = GetReplayRequest { session_id: "nope".into(), after_version: 0, page_size: 0 };
    assert_eq!(g.get_replay(bearer(request, &ann.token)).await.unwrap_err().code(), Code::InvalidArgument);

    // A private game's replay is for its players (and admins) only.
    let request = CreateGameSessionRequest {
        map: "meadow".into(),
        difficulty: "easy".into(),
        max_players: 2,
        private: true,
        display_name: "bob".into(),
    };
    let private = g.create_game_session(bearer(request, &bob.token)).await.unwrap().into_inner().session_id;
    let request = GetReplayRequest { session_id: private.clone(), after_version: 0, page_size: 0 };
    let refused = g.get_replay(bearer(request.clone(), &eve.token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let own = g.get_replay(bearer(request, &bob.token)).await.expect("the host's own").into_inner();
    assert_eq!(own.events.len(), 2, "created and joined");
}
