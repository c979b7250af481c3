//! Matchmaking end to end: integration events from guardian, players,
//! tickets, the matchmaker and the match saga with its compensations.

use std::time::{Duration, Instant};

use allies_contracts::timesquare::v1::*;
use allies_e2e::game::*;
use allies_e2e::{Fleet, bearer};
use tonic::Code;

/// Fast matchmaking: passes every 50 ms, confirmations within 3 s, and
/// stuck saga steps claimed after 1.5 s.
const FAST: [(&str, &str); 4] = [
    ("TIMESQUARE_MM_INTERVAL_MS", "50"),
    ("TIMESQUARE_MM_CONFIRM_SECS", "3"),
    ("SUBSCRIBER_CLAIM_IDLE_MS", "1500"),
    ("TIMESQUARE_MM_FILL_AFTER_MS", "1000"),
];

async fn confirm(mm: &mut Matchmaking, who: &Gamer, match_id: &str) -> Result<MatchView, tonic::Status> {
    mm.confirm_match(bearer(ConfirmMatchRequest { match_id: match_id.into() }, &who.token))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn two_players_are_matched_confirm_and_land_in_one_game() {
    let fleet = Fleet::start(&FAST);
    let mut mm = fleet.matchmaking().await;
    let (ann, bob) = (fleet.gamer("ann").await, fleet.gamer("bob").await);
    let a = find(&mut mm, &ann, 2, 2, &[]).await.expect("ann queues");
    assert_eq!(a.status, "searching");
    let b = find(&mut mm, &bob, 2, 2, &[]).await.expect("bob queues");
    let seen = follow_ticket(&mut mm, &ann, &a.ticket_id, |t| t.status != "searching").await;
    let matched = seen.last().unwrap().clone();
    assert_eq!(matched.status, "matched", "{seen:?}");
    let m = confirm(&mut mm, &ann, &matched.match_id).await.expect("ann confirms");
    assert_eq!(m.players.len(), 2);
    confirm(&mut mm, &bob, &matched.match_id).await.expect("bob confirms");
    let seen = follow_ticket(&mut mm, &bob, &b.ticket_id, |t| t.status == "ready").await;
    let ready = seen.last().unwrap();
    assert_eq!(ready.status, "ready", "{seen:?}");
    let game = state(&mut fleet.game().await, &ready.session_id, &ann).await;
    assert_eq!(game.players.len(), 2);
    assert_eq!(game.phase, "lobby");
    // Both are in that game now: a second ticket is refused.
    let again = find(&mut mm, &ann, 2, 2, &[]).await.unwrap_err();
    assert_eq!((again.code(), rule_of(&again).as_str()), (Code::FailedPrecondition, "IN_A_GAME"), "{again:?}");
    let _ = Instant::now();
    let _ = Duration::ZERO;
}
