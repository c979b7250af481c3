//! The game's use cases in memory: given/when/then through `Game` (the
//! layer the gRPC API calls) and the wave sweeper, on the `EventStore`
//! trait's in-memory implementation and an in-memory wave schedule — no
//! Redis, no network, a few milliseconds each. The real-Redis, real-binary
//! games stay in `tests/e2e/tests/game.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use allies_contracts::timesquare::events::GameEvent;
use allies_contracts::timesquare::v1::CreateGameSessionRequest;
use allies_core::{ErrorCode, ServiceError};
use allies_platform::RequestContext;
use allies_platform::auth::Caller;
use allies_store::{CommandExecutor, EventStore, MemoryEventStore};
use timesquare::game::Game;
use timesquare::schedule::{MemorySchedule, Schedule};
use timesquare::sweeper::{member, sweep_once};
use timesquare_domain::Book;
use timesquare_domain::rules::{Rules, SHIPPED};
use timesquare_domain::{GameCommand, Phase, TowerAct};

const T0: i64 = 1_800_000_000_000;
const TICK_MS: u32 = 10;

/// One replica of the game on a shared store and schedule.
fn replica(store: &Arc<MemoryEventStore>, schedule: &Arc<MemorySchedule>) -> Game {
    let book = Book::default().with(Rules::parse(SHIPPED).expect("the shipped rules")).expect("a book");
    let store: Arc<dyn EventStore> = store.clone();
    let schedule: Arc<dyn Schedule> = schedule.clone();
    Game::new(CommandExecutor::new(store), 100, book, schedule, TICK_MS, 1, "/nonexistent".into())
}

fn player(name: &str, now_ms: i64) -> RequestContext {
    let caller = Caller {
        user_id: format!("u-{name}"),
        session_id: format!("s-{name}"),
        roles: vec!["player".into()],
        expires_at: T0 / 1000 + 3600,
        name: name.into(),
    };
    RequestContext { caller: Some(caller.into()), from_client: true, ..RequestContext::system(now_ms) }
}

/// A client's request with an idempotency key; `request` stands for what
/// the gRPC layer fingerprints (the method and the message, never the time).
fn with_id(mut ctx: RequestContext, command_id: &str, request: &str) -> RequestContext {
    ctx.command_id = Some(command_id.into());
    ctx.fingerprint = Some(request.into());
    ctx
}

/// Given: ann's public meadow session that bob joined, both ready, started.
async fn started(game: &Game) -> String {
    let request = CreateGameSessionRequest {
        map: "meadow".into(),
        difficulty: "normal".into(),
        max_players: 2,
        private: false,
        display_name: "ann".into(),
    };
    let (created, code) = game.create(&player("ann", T0), &request, BTreeSet::new()).await.expect("created");
    assert!(code.is_empty(), "a public session has no invite code");
    let id = created.session_id.clone();
    game.join(&player("bob", T0), &id, "", "bob").await.expect("bob joins");
    for p in ["ann", "bob"] {
        let ready = |user_id, now_ms| GameCommand::SetReady { user_id, ready: true, now_ms };
        game.act(&player(p, T0), &id, ready).await.expect("ready");
    }
    let done =
        game.act(&player("ann", T0), &id, |user_id, now_ms| GameCommand::Start { user_id, now_ms }).await.unwrap();
    assert_eq!(done.executed.state.phase, Phase::Building);
    id
}

fn place(x: i32, y: i32) -> impl FnOnce(String, i64) -> GameCommand {
    move |user_id, now_ms| GameCommand::Place {
        user_id,
        tower_type: "arrow".into(),
        x,
        y,
        flags: BTreeSet::new(),
        now_ms,
    }
}

#[tokio::test]
async fn a_lobby_fills_starts_builds_and_the_sweeper_completes_the_wave() {
    let (store, schedule) = (Arc::new(MemoryEventStore::new()), Arc::new(MemorySchedule::default()));
    let game = replica(&store, &schedule);
    let id = started(&game).await;

    // When ann places a tower, the answer names it; her gold went down.
    let placed = game.act(&player("ann", T0 + 100), &id, place(1, 1)).await.expect("placed");
    let act = TowerAct::of(&placed.executed.events).expect("a tower act");
    assert_eq!(act.tower_id, 0);
    assert!(placed.executed.state.towers.contains_key(&0));

    // When she starts the wave, the schedule holds it at once.
    let wave = game.start_wave(&player("ann", T0 + 1_000), &id).await.expect("wave");
    assert_eq!(wave.executed.state.phase, Phase::InWave);
    assert_eq!(schedule.entries().get(&member(&id, 1)), Some(&(T0 + 1_000)));

    // A sweep right away finds it running: it stays, pushed one interval on.
    let every = Duration::from_millis(250);
    assert_eq!(sweep_once(&game, T0 + 1_001, every).await, 1);
    assert_eq!(schedule.entries().get(&member(&id, 1)), Some(&(T0 + 1_251)));
    assert_eq!(game.state(&player("ann", 0).caller.unwrap(), &id).await.unwrap().0.phase, Phase::InWave);

    // Then, long after the wave's end, the sweeper completes it and drops it.
    let later = T0 + 10_000_000;
    assert_eq!(sweep_once(&game, later, every).await, 1);
    assert!(schedule.entries().is_empty(), "{:?}", schedule.entries());
    let (state, _) = game.state(&player("bob", later).caller.unwrap(), &id).await.unwrap();
    assert_eq!((state.phase, state.wave, state.waves_cleared), (Phase::Building, 1, 1));
    assert!(store.log().iter().any(|r| r.envelope.event_type == "WaveCompleted"));

    // And the whole log replays to the same waves.
    let report = game.verify(&id).await.expect("verified");
    assert!(report.ok(), "{report:?}");

    // The host forfeits: the session ends and leaves the replica's memory.
    let ended = game.end(&player("ann", later + 1), &id, "").await.expect("ended");
    assert_eq!(ended.executed.state.phase, Phase::Ended);
    assert!(matches!(ended.executed.events.last(), Some(GameEvent::Ended(_))));
}

#[tokio::test]
async fn a_refusal_writes_nothing_and_a_retry_answers_the_first_result() {
    let (store, schedule) = (Arc::new(MemoryEventStore::new()), Arc::new(MemorySchedule::default()));
    let game = replica(&store, &schedule);
    let id = started(&game).await;
    let before = store.log().len();

    // Outside the map: refused with its rule, nothing appended.
    let e = game.act(&player("ann", T0 + 10), &id, place(500, 500)).await.err().expect("refused");
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    // Bob may not act on ann's tower that does not exist either.
    let e = game
        .act(&player("bob", T0 + 10), &id, |user_id, now_ms| GameCommand::Sell { user_id, tower_id: 7, now_ms })
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert_eq!(store.log().len(), before, "a refusal writes nothing");

    // The same command id twice: one tower, the same answer.
    let first = game.act(&with_id(player("ann", T0 + 20), "place-1", "place 1,1"), &id, place(1, 1)).await.unwrap();
    let again = game.act(&with_id(player("ann", T0 + 25), "place-1", "place 1,1"), &id, place(1, 1)).await.unwrap();
    assert_eq!(
        (first.executed.version, TowerAct::of(&first.executed.events)),
        (again.executed.version, TowerAct::of(&again.executed.events))
    );
    assert_eq!(store.log().len(), before + 1);
    // The id on another command is refused.
    let e = game
        .act(&with_id(player("ann", T0 + 30), "place-1", "place 2,1"), &id, place(2, 1))
        .await
        .err()
        .expect("reused");
    assert_eq!(e.rule().map(|r| r.rule), Some("COMMAND_ID_REUSED".to_owned()), "{e}");
}

#[tokio::test]
async fn two_replicas_share_the_session_and_the_schedule() {
    let (store, schedule) = (Arc::new(MemoryEventStore::new()), Arc::new(MemorySchedule::default()));
    let (a, b) = (replica(&store, &schedule), replica(&store, &schedule));
    let id = started(&a).await;
    // Each replica keeps the session hot: b's copy goes stale when a writes,
    // and b's command is decided again on a's writes (the version check).
    b.state(&player("bob", 0).caller.unwrap(), &id).await.unwrap();
    a.act(&player("ann", T0 + 10), &id, place(1, 1)).await.unwrap();
    let on_b = b.act(&player("bob", T0 + 20), &id, place(13, 1)).await;
    let on_b = on_b.unwrap_or_else(|e| panic!("bob places on replica b: {e}"));
    assert_eq!(TowerAct::of(&on_b.executed.events).map(|t| t.tower_id), Some(1), "b caught up with a's tower 0");
    // a starts the wave, b's sweeper completes it; a sees the completion.
    a.start_wave(&player("ann", T0 + 1_000), &id).await.unwrap();
    assert_eq!(sweep_once(&b, T0 + 10_000_000, Duration::from_millis(250)).await, 1);
    let (state, _) = a.state(&player("ann", 0).caller.unwrap(), &id).await.unwrap();
    assert_eq!((state.phase, state.waves_cleared, state.towers.len()), (Phase::Building, 1, 2));
}

#[tokio::test]
async fn every_searchable_event_is_published_on_the_search_topic_and_no_tower_is() {
    use allies_contracts::timesquare::integration::{SEARCH_TOPIC, SEARCHABLE};
    let (store, schedule) = (Arc::new(MemoryEventStore::new()), Arc::new(MemorySchedule::default()));
    let game = replica(&store, &schedule);
    let id = started(&game).await;
    game.act(&player("ann", T0 + 100), &id, place(1, 1)).await.expect("placed");
    game.start_wave(&player("ann", T0 + 1_000), &id).await.expect("wave");

    // What the projector's search index of games folds: the same events,
    // in the same order, with the same payloads as the session's stream.
    let stored: Vec<(String, Vec<u8>)> = store
        .log()
        .into_iter()
        .filter(|e| e.envelope.aggregate_id == id)
        .map(|e| (e.envelope.event_type, e.data))
        .collect();
    let searchable: Vec<(String, Vec<u8>)> =
        stored.iter().filter(|(t, _)| SEARCHABLE.contains(&t.as_str())).cloned().collect();
    let published: Vec<(String, Vec<u8>)> = store
        .published()
        .into_iter()
        .filter(|p| p.topic == SEARCH_TOPIC)
        .map(|p| (p.event.event_type, p.event.data))
        .collect();
    assert_eq!(published, searchable);
    let types: Vec<&str> = published.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["GameSessionCreated", "PlayerJoined", "PlayerJoined", "GameStarted", "WaveStarted"]);
    assert!(stored.iter().any(|(t, _)| t == "TowerPlaced"), "the stream holds a tower the topic does not");
}
