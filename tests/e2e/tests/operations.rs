//! The operations context's long work: asynchronous reports (progress,
//! download, a worker killed mid-report) and recorded maintenance
//! (maintenance mode, the projector's operations, archiving), against the
//! real fleet and its own Redis.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use allies_contracts::command::v1::configuration_service_client::ConfigurationServiceClient;
use allies_contracts::command::v1::maintenance_service_client::MaintenanceServiceClient;
use allies_contracts::command::v1::report_service_client::ReportServiceClient;
use allies_contracts::command::v1::*;
use allies_contracts::guardian::v1::RegisterUserRequest;
use allies_contracts::projector::v1::GetUserRequest;
use allies_contracts::timesquare::integration::{GameIntegrationEvent, v1};
use allies_e2e::matchmaking::publish_games_event;
use allies_e2e::{Fleet, bearer};
use allies_store::EventStore;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const DAY: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// A finished game that ended at `ended_at_ms`, with these players.
fn game(map: &str, outcome: &str, waves: u32, ended_at_ms: i64, players: &[(&str, &str, u32)]) -> GameIntegrationEvent {
    GameIntegrationEvent::Ended(v1::GameEnded {
        session_id: uuid::Uuid::now_v7().to_string(),
        map: map.into(),
        difficulty: "normal".into(),
        rules_version: 1,
        outcome: outcome.into(),
        waves_cleared: waves,
        total_waves: 20,
        started_at_ms: ended_at_ms - 600_000,
        ended_at_ms,
        duration_ms: 600_000,
        players: players
            .iter()
            .map(|(id, name, kills)| v1::PlayerResult {
                user_id: (*id).into(),
                display_name: (*name).into(),
                kills: *kills,
                towers_built: 2,
                present: true,
                ..Default::default()
            })
            .collect(),
        towers: vec![v1::TowerUsage { tower_type: "arrow".into(), count: 4 }],
        ..Default::default()
    })
}

async fn publish(fleet: &Fleet, e: &GameIntegrationEvent, times: usize) {
    let GameIntegrationEvent::Ended(g) = e else { unreachable!() };
    publish_games_event(fleet, &g.session_id, e, times).await;
}

async fn wait_job(reports: &mut ReportServiceClient<Channel>, admin: &str, id: &str, within: Duration) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let j = reports.get_report(bearer(GetJobRequest { id: id.into() }, admin)).await.expect("get").into_inner();
        if j.status == "done" || j.status == "failed" {
            return j;
        }
        assert!(Instant::now() < deadline, "report {id} never ended: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn download(reports: &mut ReportServiceClient<Channel>, admin: &str, id: &str) -> String {
    let mut s =
        reports.download_report(bearer(GetJobRequest { id: id.into() }, admin)).await.expect("download").into_inner();
    let mut bytes = Vec::new();
    while let Some(c) = s.message().await.expect("chunk") {
        bytes.extend(c.data);
    }
    String::from_utf8(bytes).expect("UTF-8")
}

fn report(kind: &str, format: &str, from_ms: i64, to_ms: i64) -> GenerateReportRequest {
    GenerateReportRequest { kind: kind.into(), format: format.into(), from_ms, to_ms, reason: "weekly review".into() }
}

#[tokio::test]
async fn reports_answer_at_once_track_progress_and_download_as_csv_and_json_and_bad_requests_change_nothing() {
    let fleet = Fleet::start(&[]);
    let admin = fleet.admin().await;
    let (_, player) = fleet.player("pia").await;
    let mut reports = ReportServiceClient::new(fleet.channel("command").await);
    let today = now_ms() - now_ms() % DAY + 3_600_000;
    // Two days of games; one victory delivered twice counts once; one game
    // outside the range; one lobby abandoned before its start.
    publish(&fleet, &game("meadow", "victory", 20, today, &[("u1", "Ann, the \"first\"", 30), ("u2", "Bob", 10)]), 2)
        .await;
    publish(&fleet, &game("meadow", "defeat", 7, today + 60_000, &[("u1", "Ann, the \"first\"", 5)]), 1).await;
    publish(&fleet, &game("canyon", "victory", 20, today - DAY, &[("u2", "Bob", 12)]), 1).await;
    publish(&fleet, &game("meadow", "victory", 20, today - 30 * DAY, &[("u3", "Old", 1)]), 1).await;
    let mut lobby = game("meadow", "abandoned", 0, today, &[("u4", "Lee", 0)]);
    if let GameIntegrationEvent::Ended(g) = &mut lobby {
        g.started_at_ms = 0;
    }
    publish(&fleet, &lobby, 1).await;
    let (from, to) = (today - 2 * DAY, today + DAY);

    let asked = Instant::now();
    let daily = reports.generate_report(bearer(report("daily_game_statistics", "csv", from, to), &admin)).await;
    let daily = daily.expect("generate").into_inner();
    assert!(asked.elapsed() < Duration::from_secs(2), "answers at once");
    assert_eq!((daily.kind.as_str(), daily.status.as_str()), ("report", "pending"));
    let done = wait_job(&mut reports, &admin, &daily.id, Duration::from_secs(20)).await;
    assert_eq!(done.status, "done", "{done:?}");
    assert_eq!((done.attempt, done.rows, done.done, done.content_type.as_str()), (1, 2, done.total, "text/csv"));
    assert!(done.worker.starts_with("command/"), "{done:?}");
    let csv = download(&mut reports, &admin, &daily.id).await;
    let day = |ms: i64| allies_core::calendar::utc_date(ms);
    assert_eq!(
        csv,
        format!(
            "day,map,difficulty,games,victories,defeats,win_rate,average_wave,best_wave,average_duration_ms,top_tower\r\n\
             {},canyon,normal,1,1,0,1.0,20.0,20,600000,arrow\r\n\
             {},meadow,normal,2,1,1,0.5,13.5,20,600000,arrow\r\n",
            day(today - DAY),
            day(today)
        )
    );
    assert_eq!(allies_store::checksum(csv.as_bytes()), done.checksum);

    let players = reports.generate_report(bearer(report("player_activity", "json", from, to), &admin)).await;
    let players = players.expect("generate").into_inner();
    let done = wait_job(&mut reports, &admin, &players.id, Duration::from_secs(20)).await;
    assert_eq!((done.status.as_str(), done.rows), ("done", 2), "{done:?}");
    let json: serde_json::Value =
        serde_json::from_str(&download(&mut reports, &admin, &players.id).await).expect("JSON");
    assert_eq!(json[0]["user_id"], "u1");
    assert_eq!(json[0]["display_name"], "Ann, the \"first\"");
    assert_eq!((json[0]["games"].as_u64(), json[0]["kills"].as_u64()), (Some(2), Some(35)));
    assert_eq!((json[1]["user_id"].as_str(), json[1]["games"].as_u64()), (Some("u2"), Some(2)));

    let ops = reports.generate_report(bearer(report("operations_summary", "csv", from, to + DAY), &admin)).await;
    let ops = wait_job(&mut reports, &admin, &ops.expect("generate").into_inner().id, Duration::from_secs(20)).await;
    assert_eq!(ops.status, "done", "{ops:?}");
    let text = download(&mut reports, &admin, &ops.id).await;
    assert!(text.starts_with("section,name,value,detail\r\n"), "{text}");
    assert!(text.contains("reports,requested,3,"), "the summary counts the reports asked for: {text}");

    // Bad requests: each field named, nothing recorded.
    let before = reports.list_reports(bearer(ListJobsRequest { limit: 0 }, &admin)).await.expect("list").into_inner();
    assert_eq!(before.jobs.len(), 3);
    assert_eq!(before.jobs[0].id, ops.id, "newest first");
    let bad = reports.generate_report(bearer(report("sales", "xml", to, from), &admin)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let fields: Vec<String> = bad
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, vec!["kind", "format", "to_ms"]);
    let denied = reports.generate_report(bearer(report("player_activity", "csv", from, to), &player)).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let missing = reports.get_report(bearer(GetJobRequest { id: uuid::Uuid::now_v7().to_string() }, &admin)).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let malformed = reports.get_report(bearer(GetJobRequest { id: "../x".into() }, &admin)).await;
    assert_eq!(malformed.unwrap_err().code(), Code::InvalidArgument);
    let after = reports.list_reports(bearer(ListJobsRequest { limit: 0 }, &admin)).await.expect("list").into_inner();
    assert_eq!(after.jobs.len(), 3, "refused requests recorded nothing");

    // The CLI: generate and wait, download to a file.
    let home = tempfile::tempdir().expect("home");
    let login =
        fleet.cli(home.path(), &["login", "--username", allies_e2e::FLEET_ADMIN, "--password", allies_e2e::PASSWORD]);
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let (f, t) = (from.to_string(), to.to_string());
    let out = fleet.cli(
        home.path(),
        &["--json", "ops", "report", "generate", "daily_game_statistics", "--from", &f, "--to", &t, "--wait"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["status"], "done");
    let file = home.path().join("daily.csv");
    let id = job["id"].as_str().expect("id");
    let out = fleet.cli(home.path(), &["ops", "report", "download", id, "-o", file.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).expect("file"), csv);
}

#[tokio::test]
async fn a_report_whose_worker_is_killed_mid_way_is_finished_exactly_once_by_the_other_replica() {
    // Slow pages so the kill lands mid-report; a dead worker's entry is
    // claimed after 1.5 s of silence (a live one keeps it fresh).
    let env = [("COMMAND_REPORT_PAGE_PAUSE_MS", "40"), ("SUBSCRIBER_CLAIM_IDLE_MS", "1500")];
    let mut fleet = Fleet::start(&env);
    let mut second = fleet.replica("command", &env);
    let admin = fleet.admin().await;
    let today = now_ms() - 3_600_000;
    // 6,000 games over 16 partitions: about 100 pages with the pause, a few seconds of work.
    let mut c = allies_e2e::matchmaking::conn(&fleet).await;
    for i in 0..6_000u32 {
        let e = game(if i % 2 == 0 { "meadow" } else { "canyon" }, "victory", i % 21, today, &[("u1", "Ann", 1)]);
        let GameIntegrationEvent::Ended(g) = &e else { unreachable!() };
        let encoded = allies_store::NewEvent::encode(&e).expect("encode");
        let meta = allies_core::Metadata {
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: uuid::Uuid::now_v7(),
            user_id: None,
            traceparent: None,
        };
        let p = allies_store::keys::partition_of(&g.session_id, 16);
        allies_store::priority::publish(
            &mut c,
            "games",
            "game_session",
            p,
            allies_store::Priority::Normal,
            (&g.session_id, 1),
            &meta,
            &encoded,
        )
        .await
        .expect("publish");
    }
    let mut reports = ReportServiceClient::new(fleet.channel("command").await);
    let r = report("daily_game_statistics", "csv", today - DAY, today + DAY);
    let id = reports.generate_report(bearer(r, &admin)).await.expect("generate").into_inner().id;
    // Kill whichever replica took it, once it has made progress.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let j = reports.get_report(bearer(GetJobRequest { id: id.clone() }, &admin)).await.expect("get").into_inner();
        if j.status == "running" && j.done > 0 {
            break j;
        }
        assert!(j.status != "done", "the report ended before the kill: make it slower ({j:?})");
        assert!(Instant::now() < deadline, "never started: {j:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_first =
        first.worker.ends_with(&fleet.service("command").endpoint().rsplit(':').next().unwrap_or_default().to_string());
    let survivor = if killed_first {
        fleet.service_mut("command").kill();
        second.endpoint()
    } else {
        second.kill();
        fleet.endpoint("command")
    };
    println!("killed {} at {}/{} (first replica: {killed_first})", first.worker, first.done, first.total);
    let mut reports =
        ReportServiceClient::new(Channel::from_shared(survivor).expect("url").connect().await.expect("connect"));
    let done = wait_job(&mut reports, &admin, &id, Duration::from_secs(60)).await;
    assert_eq!(done.status, "done", "{done:?}");
    assert_eq!(done.attempt, 2, "the survivor took over as attempt 2: {done:?}");
    assert_ne!(done.worker, first.worker);
    // Exactly one outcome event, and the report is whole.
    let store = allies_store::RedisEventStore::connect(&fleet.redis_url(), 16).await.expect("store");
    let events = store.read("job", &id, 1, usize::MAX).await.expect("job events");
    let types: Vec<&str> = events.iter().map(|e| e.envelope.event_type.as_str()).collect();
    assert_eq!(types.iter().filter(|t| **t == "ReportGenerated").count(), 1, "{types:?}");
    assert_eq!(types.iter().filter(|t| **t == "JobStarted").count(), 2, "{types:?}");
    assert!(!types.contains(&"ReportFailed"), "{types:?}");
    let csv = download(&mut reports, &admin, &id).await;
    let games: u64 = csv.lines().skip(1).map(|l| l.split(',').nth(3).expect("games").parse::<u64>().expect("n")).sum();
    assert_eq!(games, 6_000, "{csv}");
    let left: Vec<String> = fleet.keys(&format!("cmd:report:{id}:*")).lines().map(str::to_owned).collect();
    assert_eq!(left.len(), 1, "only the winning attempt's bytes stay: {left:?}");
}

async fn wait_maintenance(m: &mut MaintenanceServiceClient<Channel>, admin: &str, job: Job) -> Job {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = m.get_maintenance(bearer(GetJobRequest { id: job.id.clone() }, admin)).await.expect("get").into_inner();
        if j.status == "done" || j.status == "failed" {
            return j;
        }
        assert!(Instant::now() < deadline, "maintenance never ended: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (5 s at most) until every instance of the fleet (four) reports the
/// configuration version in force; returns how long that took.
async fn applied_everywhere(config: &mut ConfigurationServiceClient<Channel>, admin: &str) -> Duration {
    let started = Instant::now();
    loop {
        let s = config.get_configuration_status(bearer(GetConfigurationStatusRequest {}, admin)).await;
        let s = s.expect("status").into_inner();
        if s.instances.len() >= 4 && s.instances.iter().all(|i| i.version == s.version) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "version {} not applied everywhere: {s:?}", s.version);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests one operation and waits for its outcome.
async fn perform(m: &mut MaintenanceServiceClient<Channel>, admin: &str, request: PerformMaintenanceRequest) -> Job {
    let job = m.perform_maintenance(bearer(request, admin)).await.expect("accepted").into_inner();
    assert_eq!(job.status, "pending");
    wait_maintenance(m, admin, job).await
}

fn op(operation: &str) -> PerformMaintenanceRequest {
    PerformMaintenanceRequest { operation: operation.into(), reason: "release 1.4".into(), ..Default::default() }
}

#[tokio::test]
async fn maintenance_mode_pauses_client_writes_with_retry_info_while_reads_go_on() {
    let fleet = Fleet::start(&[]);
    let admin = fleet.admin().await;
    let id = fleet.register("mia").await;
    fleet.wait_for_user(&id).await;
    let mut m = MaintenanceServiceClient::new(fleet.channel("command").await);
    let on = PerformMaintenanceRequest { enable: true, retry_after_secs: 42, ..op("maintenance_mode") };
    let job = m.perform_maintenance(bearer(on, &admin)).await.expect("mode on").into_inner();
    let done = wait_maintenance(&mut m, &admin, job).await;
    assert_eq!(done.status, "done", "{done:?}");
    assert!(done.result.contains("on"), "{done:?}");
    // Every instance applies it (the fleet's five report their version) ...
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    let took = applied_everywhere(&mut config, &admin).await;
    println!("maintenance mode on: applied by every instance {} ms after the job ended", took.as_millis());
    // ... and then refuses a client's writes.
    let mut guardian = fleet.guardian().await;
    let write = |n: &str| RegisterUserRequest {
        username: n.into(),
        email: format!("{n}@example.com"),
        password: allies_e2e::PASSWORD.into(),
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut n = 0;
    let refused = loop {
        n += 1;
        match guardian.register_user(write(&format!("newcomer{n}"))).await {
            Err(s) if s.code() == Code::Unavailable => break s,
            other => assert!(Instant::now() < deadline, "still writing a second after it applied: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let retry = refused.get_details_retry_info().and_then(|r| r.retry_delay).expect("retry info");
    assert_eq!(retry, Duration::from_secs(42));
    assert!(refused.message().contains("maintenance"), "{}", refused.message());
    let mut games = fleet.game().await;
    let (_, token) = (id.clone(), fleet.login_with("mia", allies_e2e::PASSWORD).await);
    assert_eq!(token.unwrap_err().code(), Code::Unavailable, "a login writes a session: refused too");
    let create = allies_contracts::timesquare::v1::CreateGameSessionRequest {
        map: "meadow".into(),
        difficulty: "easy".into(),
        max_players: 1,
        ..Default::default()
    };
    assert_eq!(games.create_game_session(bearer(create.clone(), &admin)).await.unwrap_err().code(), Code::Unavailable);
    // ... while reads go on.
    let mut projector = fleet.projector().await;
    let user = projector.get_user(bearer(GetUserRequest { user_id: id.clone(), ..Default::default() }, &admin)).await;
    assert_eq!(user.expect("reads go on").into_inner().user.expect("user").username, "mia");
    assert!(fleet.user_log_len() >= 2);

    let off = m.perform_maintenance(bearer(op("maintenance_mode"), &admin)).await.expect("mode off").into_inner();
    assert_eq!(wait_maintenance(&mut m, &admin, off).await.status, "done");
    applied_everywhere(&mut config, &admin).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match guardian.register_user(write("newcomer")).await {
            Ok(_) => break,
            Err(s) => assert!(Instant::now() < deadline && s.code() == Code::Unavailable, "{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        match games.create_game_session(bearer(create.clone(), &admin)).await {
            Ok(_) => break,
            Err(s) => assert!(Instant::now() < deadline && s.code() == Code::Unavailable, "{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let history = m.list_maintenance(bearer(ListJobsRequest { limit: 0 }, &admin)).await.expect("history").into_inner();
    let ops: Vec<(&str, bool)> =
        history.jobs.iter().map(|j| (j.status.as_str(), j.maintenance.as_ref().is_some_and(|r| r.enable))).collect();
    assert_eq!(ops, vec![("done", false), ("done", true)], "newest first: off, then on");
    assert!(history.jobs.iter().all(|j| j.reason == "release 1.4" && !j.by.is_empty()));
}

#[tokio::test]
async fn every_maintenance_operation_is_performed_through_the_projector_and_the_store_and_recorded() {
    let fleet = Fleet::start(&[]);
    let admin = fleet.admin().await;
    let (_, player) = fleet.player("rex").await;
    let id = fleet.register("ivy").await;
    fleet.wait_for_user(&id).await;
    let mut m = MaintenanceServiceClient::new(fleet.channel("command").await);
    let check = perform(
        &mut m,
        &admin,
        PerformMaintenanceRequest { projection: "rm.user".into(), repair: true, ..op("check_consistency") },
    )
    .await;
    assert_eq!(check.status, "done", "{check:?}");
    assert!(check.result.starts_with("checked 3, drifted 0, repaired 0"), "three users: {check:?}");
    let replay = perform(
        &mut m,
        &admin,
        PerformMaintenanceRequest { projection: "rm.user".into(), ..op("replay_dead_letters") },
    )
    .await;
    assert_eq!(replay.result, "replayed 0, still failing 0", "{replay:?}");
    let purge =
        perform(&mut m, &admin, PerformMaintenanceRequest { projection: "rm.user".into(), ..op("purge_dead_letters") })
            .await;
    assert_eq!(purge.result, "purged 0", "{purge:?}");
    // A rebuild, then the retired generation's keys go (and the live one's stay).
    let rebuild =
        perform(&mut m, &admin, PerformMaintenanceRequest { projection: "rm.user".into(), ..op("rebuild_projection") })
            .await;
    assert_eq!(rebuild.status, "done", "{rebuild:?}");
    assert!(rebuild.result.starts_with("rebuilt into generation 1"), "{rebuild:?}");
    let live = fleet.raw(&["EXISTS", &format!("rm.g1:user:{id}")]);
    assert!(live.contains('1'), "the new generation holds the user: {live}");
    assert!(fleet.raw(&["EXISTS", &format!("rm:user:{id}")]).contains('1'));
    let live_one = perform(
        &mut m,
        &admin,
        PerformMaintenanceRequest { projection: "rm.user".into(), generation: 1, ..op("delete_generation") },
    )
    .await;
    assert_eq!(live_one.status, "failed", "the live generation is never deleted: {live_one:?}");
    assert!(live_one.error.contains("live"), "{live_one:?}");
    let deleted = perform(
        &mut m,
        &admin,
        PerformMaintenanceRequest { projection: "rm.user".into(), generation: 0, ..op("delete_generation") },
    )
    .await;
    assert_eq!(deleted.status, "done", "{deleted:?}");
    assert!(fleet.raw(&["EXISTS", &format!("rm:user:{id}")]).contains('0'), "retired keys deleted");
    assert!(fleet.raw(&["EXISTS", &format!("rm.g1:user:{id}")]).contains('1'), "live keys kept");
    let mut projector = fleet.projector().await;
    let user = projector.get_user(bearer(GetUserRequest { user_id: id.clone(), ..Default::default() }, &admin)).await;
    assert_eq!(user.expect("queries read the live generation").into_inner().user.expect("user").username, "ivy");

    // Archive every user idle since now: events trimmed, logins still work.
    let archive = perform(
        &mut m,
        &admin,
        PerformMaintenanceRequest {
            aggregate_type: "user".into(),
            older_than_ms: now_ms() + 1,
            ..op("archive_aggregates")
        },
    )
    .await;
    assert_eq!(archive.status, "done", "{archive:?}");
    assert!(archive.result.starts_with("3 of 3 user aggregates"), "{archive:?}");
    fleet.login("ivy").await;

    // Bad requests name the field and record nothing; players may not.
    let before =
        m.list_maintenance(bearer(ListJobsRequest { limit: 0 }, &admin)).await.expect("list").into_inner().jobs.len();
    for (request, field) in [
        (op("drop_database"), "operation"),
        (op("rebuild_projection"), "projection"),
        (op("archive_aggregates"), "aggregate_type"),
        (PerformMaintenanceRequest { reason: String::new(), ..op("maintenance_mode") }, "reason"),
    ] {
        let e = m.perform_maintenance(bearer(request, &admin)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        let fields: HashSet<String> =
            e.get_details_bad_request().expect("violations").field_violations.into_iter().map(|v| v.field).collect();
        assert!(fields.contains(field), "{field}: {fields:?}");
    }
    let e = m.perform_maintenance(bearer(op("maintenance_mode"), &player)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let unknown =
        perform(&mut m, &admin, PerformMaintenanceRequest { projection: "rm.nope".into(), ..op("check_consistency") })
            .await;
    assert_eq!(unknown.status, "failed", "{unknown:?}");
    assert!(unknown.error.contains("NotFound"), "{unknown:?}");
    let history =
        m.list_maintenance(bearer(ListJobsRequest { limit: 0 }, &admin)).await.expect("list").into_inner().jobs;
    assert_eq!(history.len(), before + 1, "only the accepted one was recorded");
    // The record: who, why, what, result — as an event of its own.
    let store = allies_store::RedisEventStore::connect(&fleet.redis_url(), 16).await.expect("store");
    let events = store.read("job", &archive.id, 1, usize::MAX).await.expect("events");
    let last =
        events.last().expect("an outcome").typed::<allies_contracts::command::events::JobEvent>().expect("typed");
    let allies_contracts::command::events::JobEvent::MaintenancePerformed(p) = last.payload else { panic!("{last:?}") };
    assert_eq!(
        (p.ok, p.reason.as_str(), p.what.expect("what").operation.as_str()),
        (true, "release 1.4", "archive_aggregates")
    );
    assert!(!p.by.is_empty() && p.result == archive.result);
}

/// A worker may take a maintenance job the moment it is requested: it must
/// find the admin's credential then (it was stored after the job, and a
/// quick worker failed the job as "the token has expired" — the flaky
/// failure of the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_job_taken_at_once_acts_with_the_requesting_admins_credential() {
    let fleet = Fleet::start(&[]);
    let admin = fleet.admin().await;
    let mut m = MaintenanceServiceClient::new(fleet.channel("command").await);
    let mut jobs = Vec::new();
    for _ in 0..20 {
        let r = PerformMaintenanceRequest { projection: "rm.user".into(), ..op("replay_dead_letters") };
        jobs.push(m.perform_maintenance(bearer(r, &admin)).await.expect("accepted").into_inner());
    }
    for job in jobs {
        let done = wait_maintenance(&mut m, &admin, job).await;
        assert_eq!((done.status.as_str(), done.error.as_str()), ("done", ""), "{done:?}");
    }
}
