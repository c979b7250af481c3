//! GameStatistics in the command service: built from timesquare's GameEnded
//! integration events (consumer group cmd.games), idempotent by event id.

use std::time::{Duration, Instant};

use allies_contracts::command::v1::game_statistics_service_client::GameStatisticsServiceClient;
use allies_contracts::command::v1::{GetGameStatisticsRequest, MapStatistics};
use allies_contracts::timesquare::integration::{GameIntegrationEvent, v1};
use allies_contracts::timesquare::v1::EndGameRequest;
use allies_e2e::game::started_game;
use allies_e2e::matchmaking::publish_games_event;
use allies_e2e::{Fleet, bearer};
use tonic::Code;

fn ended(
    map: &str,
    difficulty: &str,
    outcome: &str,
    waves: u32,
    duration_ms: i64,
    towers: &[(&str, u32)],
) -> GameIntegrationEvent {
    GameIntegrationEvent::Ended(v1::GameEnded {
        session_id: uuid::Uuid::now_v7().to_string(),
        map: map.into(),
        difficulty: difficulty.into(),
        rules_version: 1,
        outcome: outcome.into(),
        waves_cleared: waves,
        total_waves: 20,
        started_at_ms: if duration_ms > 0 { 1_795_000_000_000 } else { 0 },
        ended_at_ms: 1_795_000_000_000 + duration_ms,
        duration_ms,
        towers: towers.iter().map(|(t, n)| v1::TowerUsage { tower_type: (*t).into(), count: *n }).collect(),
        ..Default::default()
    })
}

fn session_of(e: &GameIntegrationEvent) -> String {
    match e {
        GameIntegrationEvent::Ended(g) => g.session_id.clone(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn game_statistics_count_each_finished_game_once_per_map_and_difficulty() {
    let fleet = Fleet::start(&[("TIMESQUARE_TICK_MS", "2")]);
    let (_, token) = fleet.player("stats").await;
    let mut stats = GameStatisticsServiceClient::new(fleet.channel("command").await);

    // Two games on meadow/normal, the victory delivered twice; a lobby
    // abandoned before the start, which is no game.
    let victory = ended("meadow", "normal", "victory", 20, 600_000, &[("arrow", 5), ("cannon", 2)]);
    publish_games_event(&fleet, &session_of(&victory), &victory, 2).await;
    let defeat = ended("meadow", "normal", "defeat", 7, 300_000, &[("arrow", 3), ("frost", 1)]);
    publish_games_event(&fleet, &session_of(&defeat), &defeat, 1).await;
    let abandoned = ended("canyon", "hard", "abandoned", 0, 0, &[]);
    publish_games_event(&fleet, &session_of(&abandoned), &abandoned, 1).await;
    // And a real game: timesquare publishes its GameEnded (a forfeit).
    let ann = fleet.gamer("ann").await;
    let mut games = fleet.game().await;
    let id = started_game(&mut games, &[&ann], "meadow", "easy").await;
    let end = EndGameRequest { session_id: id, reason: "stats test".into() };
    games.end_game(bearer(end, &ann.token)).await.expect("forfeit");

    let read = |s: &mut GameStatisticsServiceClient<_>, map: &str, difficulty: &str| {
        let mut s = s.clone();
        let r = GetGameStatisticsRequest { map: map.into(), difficulty: difficulty.into() };
        let token = token.clone();
        async move { s.get_game_statistics(bearer(r, &token)).await.map(|r| r.into_inner().statistics) }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all: Vec<MapStatistics> = read(&mut stats, "", "").await.expect("statistics");
        let games: u64 = all.iter().map(|s| s.games).sum();
        if games >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the statistics never caught up: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // a duplicate would land by now
    let all = read(&mut stats, "", "").await.unwrap();
    assert_eq!(all.len(), 2, "meadow/easy and meadow/normal only: {all:?}");
    let normal = all.iter().find(|s| s.difficulty == "normal").unwrap();
    assert_eq!((normal.games, normal.victories, normal.defeats, normal.other), (2, 1, 1, 0), "{normal:?}");
    assert_eq!((normal.win_rate, normal.average_wave, normal.best_wave), (0.5, 13.5, 20));
    assert_eq!((normal.average_duration_ms, normal.longest_duration_ms), (450_000, 600_000));
    let towers: Vec<(String, u64)> = normal.towers.iter().map(|t| (t.tower_type.clone(), t.count)).collect();
    assert_eq!(towers, vec![("arrow".into(), 8), ("cannon".into(), 2), ("frost".into(), 1)]);
    let easy = all.iter().find(|s| s.difficulty == "easy").unwrap();
    assert_eq!((easy.map.as_str(), easy.games, easy.other, easy.win_rate), ("meadow", 1, 1, 0.0), "{easy:?}");

    // The CLI shows them.
    let home = tempfile::tempdir().unwrap();
    let out = fleet.cli(home.path(), &["--token", &token, "stats", "--map", "meadow"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("meadow") && text.contains("arrow 8, cannon 2, frost 1") && text.contains("50%"), "{text}");

    // Filters, bad input, no token.
    assert_eq!(read(&mut stats, "meadow", "normal").await.unwrap().len(), 1);
    assert!(read(&mut stats, "canyon", "").await.unwrap().is_empty());
    let e = read(&mut stats, "mea dow", "h@rd").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("map") && e.message().contains("difficulty"), "{}", e.message());
    let e = stats.get_game_statistics(GetGameStatisticsRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_metrics_sample_every_instance_and_redis_into_a_series_read_by_range_and_step() {
    use allies_contracts::command::v1::GetSystemMetricsRequest;
    use allies_contracts::command::v1::system_metrics_service_client::SystemMetricsServiceClient;
    let fleet = Fleet::start(&[("COMMAND_METRICS_INTERVAL_MS", "200")]);
    let admin = fleet.admin().await;
    let (_, player) = fleet.player("sam").await;
    let mut metrics = SystemMetricsServiceClient::new(fleet.channel("command").await);
    let read = |m: &mut SystemMetricsServiceClient<_>, r: GetSystemMetricsRequest, token: String| {
        let mut m = m.clone();
        async move { m.get_system_metrics(bearer(r, &token)).await.map(|r| r.into_inner()) }
    };
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let last = |r: &allies_contracts::command::v1::GetSystemMetricsResponse, name: &str| {
        r.series.iter().find(|s| s.name == name).and_then(|s| s.points.last()).map(|p| p.value).unwrap_or(-1.0)
    };
    let r = loop {
        let recent = GetSystemMetricsRequest { from_ms: started - 1_000, step_ms: 100, ..Default::default() };
        let r = read(&mut metrics, recent, admin.clone()).await.expect("metrics");
        // Every instance up, the registrations and their calls counted (each
        // instance is scraped at its own moment: wait for one sample that has all).
        if last(&r, "fleet.instances_up") == 4.0
            && last(&r, "fleet.commands_total") >= 2.0
            && last(&r, "fleet.grpc_requests_total") >= 3.0
            && last(&r, "events.stored") >= 2.0
        {
            break r;
        }
        assert!(Instant::now() < deadline, "the sampler never saw the fleet: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.interval_ms, 200);
    assert!(last(&r, "redis.used_memory_bytes") > 100_000.0);
    assert_eq!(last(&r, "projection.dead_letters"), 0.0);
    let memory = r.series.iter().find(|s| s.name == "redis.used_memory_bytes").unwrap();
    assert!(memory.points.len() >= 2 && memory.points.windows(2).all(|w| w[0].at_ms < w[1].at_ms));

    // A range and a step: one point per step at most.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let r = read(
        &mut metrics,
        GetSystemMetricsRequest {
            from_ms: now - 30_000,
            to_ms: now,
            step_ms: 60_000,
            series: vec!["redis.used_memory_bytes".into()],
        },
        admin.clone(),
    )
    .await
    .unwrap();
    assert_eq!((r.series.len(), r.series[0].points.len()), (1, 1), "{r:?}");

    // Bad requests name every field; players may not read it.
    let bad = GetSystemMetricsRequest { from_ms: now, to_ms: started, step_ms: 5, series: vec!["nope".into()] };
    let e = read(&mut metrics, bad, admin.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for field in ["from_ms", "step_ms", "series"] {
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let e = read(&mut metrics, GetSystemMetricsRequest::default(), player).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}
