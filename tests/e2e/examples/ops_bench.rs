//! The operations context's measurements, printed (real binaries, a
//! private redis-server; build profile as you built it):
//!
//!     cargo build --release --bins --examples && target/release/examples/ops_bench
//!     target/release/examples/ops_bench metrics    # that part alone (ALLIES_E2E_REDIS=cluster: on a Cluster)
//!
//! config: 100 UpdateConfiguration calls on a fleet of five instances (two
//!   guardians); for each, the time until GetConfigurationStatus shows every
//!   instance applied it (p50 / p99 / max).
//! stats: timesquare's GameEnded integration events written to the games
//!   topic — one at a time (the time until GameStatistics counts it), then
//!   100,000 at once (the time until all are counted: the consumer's rate).
//! report: daily_game_statistics and player_activity over those 100,000
//!   games (GenerateReport to done), beside the raw Redis floor in the same
//!   run: XRANGE of every topic entry, nothing decoded.
//! metrics (only when named): GetSystemMetrics of every series over the
//!   last minute, sampled every 100 ms, 200 calls one at a time, beside its
//!   floor in the same run: the same ZRANGEBYSCOREs from a client in one
//!   pipeline, replies parsed.

use std::time::{Duration, Instant};

use allies_contracts::command::v1::configuration_service_client::ConfigurationServiceClient;
use allies_contracts::command::v1::game_statistics_service_client::GameStatisticsServiceClient;
use allies_contracts::command::v1::report_service_client::ReportServiceClient;
use allies_contracts::command::v1::*;
use allies_contracts::timesquare::integration::{GameIntegrationEvent, v1};
use allies_e2e::{Fleet, bearer};
use allies_store::{Priority, keys};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn game(i: u64, ended_at_ms: i64) -> GameIntegrationEvent {
    let maps = ["meadow", "canyon", "harbor", "ridge"];
    let difficulties = ["easy", "normal", "hard"];
    let outcome = if i.is_multiple_of(3) { "victory" } else { "defeat" };
    GameIntegrationEvent::Ended(v1::GameEnded {
        session_id: uuid::Uuid::now_v7().to_string(),
        map: maps[(i % 4) as usize].into(),
        difficulty: difficulties[(i % 3) as usize].into(),
        rules_version: 1,
        outcome: outcome.into(),
        waves_cleared: (i % 21) as u32,
        total_waves: 20,
        started_at_ms: ended_at_ms - 900_000,
        ended_at_ms,
        duration_ms: 900_000,
        players: (0..(1 + i % 4))
            .map(|k| v1::PlayerResult {
                user_id: format!("player-{}", (i * 7 + k * 13) % 5_000),
                display_name: format!("Player {}", (i * 7 + k * 13) % 5_000),
                kills: (i % 50) as u32,
                towers_built: 6,
                present: true,
                ..Default::default()
            })
            .collect(),
        towers: vec![
            v1::TowerUsage { tower_type: "arrow".into(), count: 5 },
            v1::TowerUsage { tower_type: "cannon".into(), count: (i % 4) as u32 },
        ],
        ..Default::default()
    })
}

/// Writes games `from..to` to the topic, pipelined, as timesquare's append would.
async fn publish(fleet: &Fleet, from: u64, to: u64, ended_at_ms: i64) {
    let mut conn = allies_e2e::matchmaking::conn(fleet).await;
    let meta =
        serde_json::json!({"correlation_id": uuid::Uuid::now_v7(), "causation_id": uuid::Uuid::now_v7()}).to_string();
    let mut pipe = redis::pipe();
    let mut n = 0;
    for i in from..to {
        let e = game(i, ended_at_ms - (i as i64 % 3) * 86_400_000);
        let GameIntegrationEvent::Ended(g) = &e else { unreachable!() };
        let encoded = allies_store::NewEvent::encode(&e).expect("encode");
        let stream =
            keys::integration_key("games", "game_session", keys::partition_of(&g.session_id, 16), Priority::Normal);
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("event_id")
            .arg(encoded.event_id.to_string())
            .arg("event_type")
            .arg(&encoded.event_type)
            .arg("schema_version")
            .arg(encoded.schema_version)
            .arg("content_type")
            .arg(&encoded.content_type)
            .arg("data")
            .arg(&encoded.data)
            .arg("metadata")
            .arg(&meta)
            .arg("created_at")
            .arg(now_ms())
            .arg("checksum")
            .arg(allies_store::checksum(&encoded.data))
            .arg("aggregate_type")
            .arg("game_session")
            .arg("aggregate_id")
            .arg(&g.session_id)
            .arg("version")
            .arg(1)
            .ignore();
        n += 1;
        if n == 500 {
            pipe.query_async::<()>(&mut conn).await.expect("publish");
            pipe = redis::pipe();
            n = 0;
        }
    }
    if n > 0 {
        pipe.query_async::<()>(&mut conn).await.expect("publish");
    }
}

async fn counted(stats: &mut GameStatisticsServiceClient<tonic::transport::Channel>, token: &str) -> u64 {
    let r = stats.get_game_statistics(bearer(GetGameStatisticsRequest::default(), token)).await.expect("statistics");
    r.into_inner().statistics.iter().map(|s| s.games).sum()
}

/// GetSystemMetrics' time per call beside its Redis reads alone.
async fn metrics() {
    use allies_contracts::command::v1::system_metrics_service_client::SystemMetricsServiceClient;
    const CALLS: usize = 200;
    let fleet = Fleet::start(&[("COMMAND_METRICS_INTERVAL_MS", "100")]);
    let admin = fleet.admin().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut m = SystemMetricsServiceClient::new(fleet.channel("command").await);
    let request = || GetSystemMetricsRequest { from_ms: now_ms() - 60_000, step_ms: 100, ..Default::default() };
    let points = |r: &GetSystemMetricsResponse| r.series.iter().map(|s| s.points.len()).sum::<usize>();
    let first = m.get_system_metrics(bearer(request(), &admin)).await.expect("metrics").into_inner();
    let (series, samples) = (first.series.len(), points(&first));
    let mut took = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let r = m.get_system_metrics(bearer(request(), &admin)).await.expect("metrics").into_inner();
        took.push(t.elapsed());
        assert_eq!(r.series.len(), series);
    }
    took.sort();
    let target = allies_store::RedisTarget::parse(&fleet.redis_url()).expect("url");
    let mut conn = target.connect().await.expect("connect");
    let mut floor = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let mut pipe = redis::pipe();
        for s in &first.series {
            pipe.cmd("ZRANGEBYSCORE").arg(format!("{{sm}}:{}", s.name)).arg(now_ms() - 60_000).arg(now_ms());
        }
        let _: Vec<Vec<String>> = pipe.query_async(&mut conn).await.expect("floor");
        floor.push(t.elapsed());
    }
    floor.sort();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!(
        "\n## GetSystemMetrics: {series} series over the last minute ({samples} points), {CALLS} calls one at a time\n"
    );
    println!("| | p50 | p99 |\n|---|---|---|");
    println!("| GetSystemMetrics | {} | {} |", ms(pct(&took, 0.5)), ms(pct(&took, 0.99)));
    println!(
        "| floor: its ZRANGEBYSCOREs in one pipeline from a client | {} | {} |",
        ms(pct(&floor, 0.5)),
        ms(pct(&floor, 0.99))
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("metrics") {
        return metrics().await;
    }
    let fleet = Fleet::start(&[]);
    let _second = fleet.replica("guardian", &[]);
    let admin = fleet.admin().await;

    // config
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    let instances = 5;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s =
            config.get_configuration_status(bearer(GetConfigurationStatusRequest {}, &admin)).await.expect("status");
        if s.into_inner().instances.len() >= instances {
            break;
        }
        assert!(Instant::now() < deadline, "instances never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut applied = Vec::new();
    for i in 0..100u64 {
        let change = UpdateConfigurationRequest {
            expected_version: i,
            changes: [("auth.rate_per_username".to_owned(), (11 + i % 2 * 5).to_string())].into(),
            reason: "bench".into(),
        };
        let t = Instant::now();
        let v = config.update_configuration(bearer(change, &admin)).await.expect("update").into_inner().version;
        loop {
            let s = config
                .get_configuration_status(bearer(GetConfigurationStatusRequest {}, &admin))
                .await
                .expect("status")
                .into_inner();
            if s.instances.iter().filter(|x| x.version >= v).count() >= instances {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        applied.push(t.elapsed());
    }
    applied.sort();
    println!(
        "config: UpdateConfiguration -> applied on all {instances} instances, 100 changes: p50 {}, p99 {}, max {}",
        ms(pct(&applied, 0.5)),
        ms(pct(&applied, 0.99)),
        ms(*applied.last().expect("some"))
    );

    // stats
    let mut stats = GameStatisticsServiceClient::new(fleet.channel("command").await);
    let mut lags = Vec::new();
    for i in 0..50u64 {
        let before = counted(&mut stats, &admin).await;
        let t = Instant::now();
        publish(&fleet, i, i + 1, now_ms()).await;
        while counted(&mut stats, &admin).await <= before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lags.push(t.elapsed());
    }
    lags.sort();
    println!(
        "stats: one GameEnded -> counted (50 games, poll every 2 ms): p50 {}, p99 {}",
        ms(pct(&lags, 0.5)),
        ms(pct(&lags, 0.99))
    );
    let total = 100_000u64;
    let t = Instant::now();
    publish(&fleet, 50, 50 + total, now_ms()).await;
    let written = t.elapsed();
    while counted(&mut stats, &admin).await < 50 + total {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = t.elapsed();
    println!(
        "stats: {total} GameEnded written in {} (pipelined); all counted after {} = {:.0} events/s through cmd.games",
        ms(written),
        ms(caught_up),
        total as f64 / caught_up.as_secs_f64()
    );

    // raw floor: read every topic entry
    let mut conn = allies_e2e::matchmaking::conn(&fleet).await;
    let t = Instant::now();
    let mut entries = 0usize;
    for p in 0..16 {
        for prio in Priority::ALL {
            let key = keys::integration_key("games", "game_session", p, prio);
            let mut start = "-".to_owned();
            loop {
                let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .expect("xrange");
                entries += page.ids.len();
                match page.ids.last() {
                    Some(l) if page.ids.len() == 1000 => start = format!("({}", l.id),
                    _ => break,
                }
            }
        }
    }
    let raw = t.elapsed();
    println!("report floor: raw XRANGE of all {entries} topic entries (nothing decoded): {}", ms(raw));

    // report
    let mut reports = ReportServiceClient::new(fleet.channel("command").await);
    let now = now_ms();
    for kind in ["daily_game_statistics", "player_activity"] {
        let r = GenerateReportRequest {
            kind: kind.into(),
            format: "csv".into(),
            from_ms: now - 7 * 86_400_000,
            to_ms: now + 60_000,
            reason: "bench".into(),
        };
        let t = Instant::now();
        let id = reports.generate_report(bearer(r, &admin)).await.expect("generate").into_inner().id;
        let answered = t.elapsed();
        let job = loop {
            let j =
                reports.get_report(bearer(GetJobRequest { id: id.clone() }, &admin)).await.expect("get").into_inner();
            if j.status == "done" || j.status == "failed" {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "report {kind} over {} games: answered in {}, done in {} ({} rows, {} bytes, status {})",
            50 + total,
            ms(answered),
            ms(t.elapsed()),
            job.rows,
            job.bytes,
            job.status
        );
    }
    let rss = |name: &str| {
        let pid = fleet.service(name).pid();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM"))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
            })
            .unwrap_or_default()
    };
    println!("command service peak RSS: {} kB", rss("command"));
}
