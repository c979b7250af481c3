//! Bounded input, bounded errors, and per-player rates — what a real client
//! on a real network meets first: odd sizes and floods.

use std::time::{Duration, Instant};

use allies_contracts::command::v1::configuration_service_client::ConfigurationServiceClient;
use allies_contracts::command::v1::{GetConfigurationRequest, UpdateConfigurationRequest};
use allies_contracts::timesquare::v1::*;
use allies_e2e::game::*;
use allies_e2e::{Fleet, bearer};
use tonic::Code;
use tonic_types::StatusExt;

/// What travels in the trailers: the message and the encoded details.
fn status_bytes(s: &tonic::Status) -> usize {
    s.message().len() + s.details().len()
}

#[tokio::test]
async fn oversized_fields_are_refused_naming_the_field_and_its_limit_and_errors_stay_small() {
    let fleet = Fleet::start(&[]);
    let mut games = fleet.game().await;
    let ann = fleet.gamer("ann").await;

    // A 6 KB map name: the error names the field and the limit (it used to
    // echo the name into trailers over 16 KiB: RESOURCE_EXHAUSTED instead).
    let r = CreateGameSessionRequest {
        map: "m".repeat(6_000),
        difficulty: "easy".into(),
        max_players: 2,
        private: false,
        display_name: String::new(),
    };
    let e = games.create_game_session(bearer(r, &ann.token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let violations = e.get_error_details().bad_request().map(|b| b.field_violations.clone()).unwrap_or_default();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(
        (violations[0].field.as_str(), violations[0].description.as_str()),
        ("map", "at most 64 bytes, got 6000")
    );
    assert!(status_bytes(&e) < 1_024, "{} bytes", status_bytes(&e));

    // Many bad values at once, each echoing what was sent: the whole error
    // stays within its caps (message 512 B, 16 violations of 320 B at most).
    let r = FindMatchRequest {
        maps: (0..16).map(|i| format!("{i}-{}", "q".repeat(60))).collect(),
        difficulty: "d".repeat(32),
        min_players: 9,
        max_players: 1,
        party: (0..3).map(|i| format!("{i}{}", "p".repeat(200))).collect(),
    };
    let mut mm = fleet.matchmaking().await;
    let e = mm.find_match(bearer(r, &ann.token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().len() <= 512, "message of {} bytes", e.message().len());
    assert!(status_bytes(&e) < 8 * 1024, "{} bytes", status_bytes(&e));

    // Too many party members: the repeated field's limit.
    let r = FindMatchRequest { party: vec![ann.id.clone(); 5], ..Default::default() };
    let e = mm.find_match(bearer(r, &ann.token)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "party: at most 3 items"));

    // EndGame's reason is refused when too long, never cut, and the game goes on.
    let session = started_game(&mut games, &[&ann], "meadow", "easy").await;
    let r = EndGameRequest { session_id: session.clone(), reason: "r".repeat(300) };
    let e = games.end_game(bearer(r, &ann.token)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "reason: at most 256 bytes, got 300"));
    assert_ne!(state(&mut games, &session, &ann).await.phase, "ended");
    let r = EndGameRequest { session_id: session.clone(), reason: "r".repeat(256) };
    let ended = games.end_game(bearer(r, &ann.token)).await.expect("a reason at the limit").into_inner();
    assert_eq!(ended.phase, "ended");
    let events = fleet.game_events(&session).await;
    let recorded = events.iter().find_map(|(_, e)| match e {
        allies_contracts::timesquare::events::GameEvent::Ended(g) => Some(g.reason.clone()),
        _ => None,
    });
    assert_eq!(recorded.map(|r| r.len()), Some(256), "kept whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_flooding_commands_is_told_to_wait_others_play_on_and_the_limit_changes_live() {
    let fleet = Fleet::start(&[
        ("TIMESQUARE_COMMANDS_PER_SEC", "5"),
        ("TIMESQUARE_COMMANDS_BURST", "5"),
        ("TIMESQUARE_MM_REQUESTS_PER_MIN", "60"),
        ("TIMESQUARE_MM_REQUESTS_BURST", "3"),
    ]);
    let mut games = fleet.game().await;
    let (flooder, other) = (fleet.gamer("flo").await, fleet.gamer("oli").await);
    let mine = started_game(&mut games, &[&flooder], "meadow", "easy").await;
    let theirs = started_game(&mut games, &[&other], "meadow", "easy").await;
    let view = state(&mut games, &theirs, &other).await;
    let cell = cells_by_the_path(&view, &other.id)[0];

    // Thirty placements on a cell that is not the flooder's: refusals, each counted.
    let mut limited = None;
    for _ in 0..30 {
        match place(&mut games, &mine, &flooder, "arrow", -1, -1).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                limited = Some(s);
                break;
            }
            Err(_) => {} // refused on its merits: still a command
            Ok(t) => panic!("placed at -1,-1: {t:?}"),
        }
    }
    let limited = limited.expect("the flood is limited");
    let wait = retry_after(&limited).expect("RetryInfo");
    assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
    assert!(limited.message().starts_with("too many game commands"), "{}", limited.message());
    // Another player feels nothing.
    place(&mut games, &theirs, &other, "arrow", cell.0, cell.1).await.expect("the other player plays on");
    // The flooder, having waited as told, is served again.
    tokio::time::sleep(wait).await;
    assert_ne!(place(&mut games, &mine, &flooder, "arrow", -1, -1).await.unwrap_err().code(), Code::ResourceExhausted);

    // Matchmaking has its own rate.
    let mut mm = fleet.matchmaking().await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = CancelMatchmakingRequest { ticket_id: String::new() };
        codes.push(mm.cancel_matchmaking(bearer(r, &flooder.token)).await.unwrap_err().code());
    }
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");

    // An operator turns the game limit off: applied live.
    let admin = fleet.admin().await;
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    let v = config.get_configuration(bearer(GetConfigurationRequest {}, &admin)).await.unwrap().into_inner().version;
    let change = UpdateConfigurationRequest {
        expected_version: v,
        changes: [("game.commands_per_second".to_owned(), "0".to_owned())].into(),
        reason: "tournament".into(),
    };
    config.update_configuration(bearer(change, &admin)).await.expect("update");
    let started = Instant::now();
    loop {
        let mut any_limited = false;
        for _ in 0..20 {
            let code = place(&mut games, &mine, &flooder, "arrow", -1, -1).await.unwrap_err().code();
            any_limited |= code == Code::ResourceExhausted;
        }
        if !any_limited {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "the new limit was not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
