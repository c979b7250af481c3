//! The matchmaking saga's use cases in memory: FindMatch, the matchmaker's
//! pass, the saga (claim, confirm, session, joins) and its compensations,
//! and the confirmation deadline — through `Matchmaking`, `TicketReactions`
//! and `Saga` on the in-memory event store, matchmaking index and deadline
//! schedule. The consumer groups are replaced by a pump that hands every
//! new event, in commit order, to the reaction that subscribes to its type,
//! until nothing new is written. No Redis; a few milliseconds each. The
//! real-Redis runs (replicas, kill -9 mid-saga) stay in
//! `tests/e2e/tests/matchmaking.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use allies_core::Aggregate;
use allies_platform::RequestContext;
use allies_platform::auth::Caller;
use allies_store::subscriber::Handler;
use allies_store::{CommandExecutor, EventStore, Handles, MemoryEventStore, Tunable};
use timesquare::game::Game;
use timesquare::matchmaking::{Matchmaking, TicketReactions, Wanted};
use timesquare::mm_index::MemoryMatchmakingIndex;
use timesquare::players::Players;
use timesquare::saga::{Saga, session_of, sweep_deadlines_once};
use timesquare::schedule::MemorySchedule;
use timesquare::settings;
use timesquare_domain::Book;
use timesquare_domain::matching::{Match, Status as MatchStatus};
use timesquare_domain::rules::{Rules, SHIPPED};
use timesquare_domain::ticket::{Status as TicketStatus, Ticket};
use timesquare_domain::{Phase, matchmaker};
use uuid::Uuid;

const T0: i64 = 1_800_000_000_000;
const CONFIRM_MS: i64 = 20_000;

struct World {
    store: Arc<MemoryEventStore>,
    index: Arc<MemoryMatchmakingIndex>,
    deadlines: Arc<MemorySchedule>,
    mm: Arc<Matchmaking>,
    reactions: TicketReactions,
    saga: Saga,
    /// How much of the store's log the pump has handed on.
    pumped: std::sync::Mutex<usize>,
}

impl World {
    fn new() -> Self {
        let store = Arc::new(MemoryEventStore::new());
        let executor = CommandExecutor::new(store.clone() as Arc<dyn EventStore>);
        let book = Book::default().with(Rules::parse(SHIPPED).expect("the shipped rules")).expect("a book");
        let game = Arc::new(Game::new(
            executor.clone(),
            100,
            book,
            Arc::new(MemorySchedule::default()),
            10,
            1,
            "/nonexistent".into(),
        ));
        let players = Arc::new(Players::new(Handles::new(executor, 100)));
        let (index, deadlines) = (Arc::new(MemoryMatchmakingIndex::default()), Arc::new(MemorySchedule::default()));
        let settings = settings::Matchmaking {
            interval: Duration::from_millis(250),
            ticket_ttl: Duration::from_secs(120),
            confirm_within: Duration::from_millis(CONFIRM_MS as u64),
            pass: matchmaker::Settings { base_window: 100, widen_per_second: 20, max_window: 1000, fill_after_ms: 0 },
        };
        let mm = Arc::new(Matchmaking::new(
            100,
            players,
            game,
            index.clone(),
            deadlines.clone(),
            Tunable::new(settings),
            "scenario".into(),
        ));
        let (reactions, saga) = (TicketReactions { mm: mm.clone() }, Saga { mm: mm.clone() });
        Self { store, index, deadlines, mm, reactions, saga, pumped: Default::default() }
    }

    /// Hands every new event to its reaction, until nothing new is written
    /// (the consumer groups `ts.tickets` and `ts.matches`).
    async fn pump(&self) {
        loop {
            let log = self.store.log();
            let from = std::mem::replace(&mut *self.pumped.lock().unwrap(), log.len());
            if from == log.len() {
                return;
            }
            for record in &log[from..] {
                let handled = match record.envelope.aggregate_type.as_str() {
                    t if t == Ticket::TYPE => self.reactions.handle(record).await,
                    t if t == Match::TYPE => self.saga.handle(record).await,
                    _ => Ok(()),
                };
                if let Err(e) = handled {
                    panic!("{} {} not handled: {e:?}", record.envelope.event_type, record.envelope.aggregate_id);
                }
            }
        }
    }

    /// The match formed last.
    fn match_id(&self) -> String {
        let log = self.store.log();
        let formed = log.iter().rev().find(|r| r.envelope.event_type == "MatchFormed").expect("a match formed");
        formed.envelope.aggregate_id.clone()
    }

    async fn ticket(&self, id: &str) -> Arc<Ticket> {
        self.mm.tickets.get(id).current().await.expect("ticket").0
    }
}

fn player(name: &str, now_ms: i64) -> RequestContext {
    let id = Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()).to_string();
    let caller = Caller {
        user_id: id,
        session_id: format!("s-{name}"),
        roles: vec!["player".into()],
        expires_at: T0 / 1000 + 3600,
        name: name.into(),
    };
    RequestContext { caller: Some(caller.into()), from_client: true, ..RequestContext::system(now_ms) }
}

fn user(name: &str) -> String {
    player(name, 0).caller.expect("caller").user_id.clone()
}

fn duel() -> Wanted {
    Wanted { maps: vec!["meadow".into()], difficulty: "normal".into(), min_players: 2, max_players: 2, party: vec![] }
}

/// Given: ann and bob each asked for a duel, the tickets wait, a pass formed their match.
async fn matched(w: &World) -> (String, String, String) {
    let a = w.mm.find(&player("ann", T0), &duel()).await.expect("ann's ticket").state.id.clone();
    let b = w.mm.find(&player("bob", T0 + 1), &duel()).await.expect("bob's ticket").state.id.clone();
    w.pump().await;
    let waiting: BTreeSet<String> = w.index.waiting_ids().into_iter().collect();
    assert_eq!(waiting, BTreeSet::from([a.clone(), b.clone()]), "both tickets wait");
    let report = w.mm.pass_at(T0 + 100).await.expect("pass").expect("the lease is held");
    assert_eq!((report.waiting, report.groups), (2, 1));
    w.pump().await;
    (a, b, w.match_id())
}

#[tokio::test]
async fn two_players_are_matched_confirm_and_land_in_one_game() {
    let w = World::new();
    let (a, b, match_id) = matched(&w).await;
    // The saga claimed both tickets and set the confirmation deadline.
    assert!(w.index.waiting_ids().is_empty(), "claimed tickets no longer wait");
    assert_eq!(w.deadlines.entries().len(), 1, "{:?}", w.deadlines.entries());
    for t in [&a, &b] {
        assert_eq!(w.ticket(t).await.status, TicketStatus::Claimed);
    }
    // When both confirm, the saga creates the session and joins them.
    w.mm.confirm(&player("ann", T0 + 1_000), &match_id).await.expect("ann confirms");
    w.pump().await;
    w.mm.confirm(&player("bob", T0 + 2_000), &match_id).await.expect("bob confirms");
    w.pump().await;
    let (m, _) = w.mm.matches.get(&match_id).current().await.unwrap();
    assert_eq!(m.status, MatchStatus::Ready, "{m:?}");
    let session = session_of(&match_id);
    let (game, _) = w.mm.game.handles.get(&session).current().await.unwrap();
    assert_eq!(game.phase, Phase::Lobby);
    let members: BTreeSet<String> = game.members.iter().map(|m| m.user_id.clone()).collect();
    assert_eq!(members, BTreeSet::from([user("ann"), user("bob")]));
    for t in [&a, &b] {
        assert_eq!(w.ticket(t).await.status, TicketStatus::Completed);
    }
    assert!(w.deadlines.entries().is_empty(), "a ready match has no deadline");
    // They are in a game now: another ticket is refused until it is over.
    let e = w.mm.find(&player("ann", T0 + 3_000), &duel()).await.expect_err("ann is in a game");
    assert_eq!(e.rule_name().as_deref(), Some("IN_A_GAME"), "{e}");
}

#[tokio::test]
async fn a_match_not_confirmed_in_time_is_compensated_and_the_confirmer_waits_again() {
    let w = World::new();
    let (a, b, match_id) = matched(&w).await;
    w.mm.confirm(&player("ann", T0 + 1_000), &match_id).await.expect("ann confirms");
    w.pump().await;
    // Before the deadline, the sweeper leaves the match alone.
    assert_eq!(sweep_deadlines_once(&w.mm, T0 + 100 + CONFIRM_MS - 1).await, 0);
    // After it, the match times out: bob (who did not confirm) is dropped,
    // ann's ticket goes back to the waiting set; the match's session is closed.
    assert_eq!(sweep_deadlines_once(&w.mm, T0 + 100 + CONFIRM_MS + 1).await, 1);
    w.pump().await;
    let (m, _) = w.mm.matches.get(&match_id).current().await.unwrap();
    assert!(matches!(m.status, MatchStatus::Cancelled | MatchStatus::Compensated), "{m:?}");
    assert_eq!(w.ticket(&a).await.status, TicketStatus::Searching);
    assert!(w.ticket(&b).await.status.is_final(), "{:?}", w.ticket(&b).await.status);
    assert_eq!(w.index.waiting_ids(), vec![a.clone()]);
    assert!(w.deadlines.entries().is_empty());
    let (game, _) = w.mm.game.handles.get(&session_of(&match_id)).current().await.unwrap();
    assert_eq!(game.phase, Phase::Ended, "the session of a cancelled match is closed");
    // Bob may look again; ann is still queued, so a second ticket is refused.
    w.mm.find(&player("bob", T0 + 30_000), &duel()).await.expect("bob may queue again");
    let e = w.mm.find(&player("ann", T0 + 30_000), &duel()).await.expect_err("ann is still queued");
    assert_eq!(e.rule_name().as_deref(), Some("ALREADY_QUEUED"), "{e}");
}

#[tokio::test]
async fn a_ticket_cancelled_while_matched_cancels_the_match_and_releases_the_other() {
    let w = World::new();
    let (a, b, match_id) = matched(&w).await;
    w.mm.cancel(&player("bob", T0 + 500), &b).await.expect("bob leaves");
    w.pump().await;
    let (m, _) = w.mm.matches.get(&match_id).current().await.unwrap();
    assert!(matches!(m.status, MatchStatus::Cancelled | MatchStatus::Compensated), "{m:?}");
    assert_eq!(w.ticket(&a).await.status, TicketStatus::Searching, "ann waits again");
    assert_eq!(w.index.waiting_ids(), vec![a]);
    assert!(w.deadlines.entries().is_empty());
}
