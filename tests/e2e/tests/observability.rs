//! Metrics across the fleet: every service's `/metrics` (through the
//! service builder) and the Grafana dashboard in `deploy/grafana`, which
//! may name only metrics the running services really export.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::{RegisterUserRequest, SetDisplayNameRequest};
use allies_e2e::{Fleet, bearer};
use allies_testkit::http_get;

/// Metric names in an exposition (without `# HELP` / `# TYPE` lines).
fn names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn scrape(fleet: &Fleet) -> (BTreeSet<String>, String) {
    let mut all = BTreeSet::new();
    let mut text = String::new();
    for s in ["guardian", "timesquare", "command", "projector"] {
        let (status, body) = http_get(fleet.service(s).http_addr, "/metrics");
        assert_eq!(status, 200, "{s} /metrics");
        all.extend(names(&body));
        text.push_str(&body);
    }
    (all, text)
}

/// Every `allies_*` metric a dashboard query names.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/dashboards/defense-allies.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).unwrap();
    let mut out = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let found: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|t| t.starts_with("allies_"))
                .collect();
            assert!(!found.is_empty(), "a query of panel {} names no allies_ metric: {expr}", panel["title"]);
            out.extend(found.into_iter().map(str::to_owned));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_counts_grpc_calls_by_code_and_the_dashboard_queries_only_exported_metrics() {
    let fleet = Fleet::start(&[]);
    let mut g = fleet.guardian().await;
    let (_, token) = fleet.player("metered").await;
    let bad = RegisterUserRequest { username: "x".into(), email: "nope".into(), password: "short".into() };
    assert!(g.register_user(bad).await.is_err());
    // Concurrent changes of one user: version conflicts, retried.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut calls = Vec::new();
        for i in 0..16 {
            let (mut g, token) = (g.clone(), token.clone());
            calls.push(tokio::spawn(async move {
                let r = SetDisplayNameRequest { display_name: format!("Metered {i}") };
                g.set_display_name(bearer(r, &token)).await.is_ok()
            }));
        }
        for c in calls {
            assert!(c.await.unwrap(), "every change lands (retried on conflict)");
        }
        let (_, text) = scrape(&fleet);
        if text.contains("allies_command_retries_total{aggregate_type=\"user\"}") {
            break;
        }
        assert!(Instant::now() < deadline, "no version conflict in 20 s of concurrent changes");
    }
    // The projector applies what guardian wrote; timesquare plays its part too.
    let mut mm = fleet.matchmaking().await;
    let gamer =
        allies_e2e::game::Gamer { id: fleet.register("queued").await, token: String::new(), name: "queued".into() };
    let gamer = allies_e2e::game::Gamer { token: fleet.login("queued").await.access_token, ..gamer };
    allies_e2e::game::find(&mut mm, &gamer, 4, 4, &[]).await.expect("a ticket");

    let wanted = dashboard_metrics();
    // gRPC calls by service, method and code, on every service; the game's gauges.
    let needles = [
        "allies_grpc_server_requests_total{service=\"defense_allies.guardian.v1.GuardianService\",method=\"RegisterUser\",code=\"OK\"}",
        "allies_grpc_server_requests_total{service=\"defense_allies.guardian.v1.GuardianService\",method=\"RegisterUser\",code=\"INVALID_ARGUMENT\"}",
        "allies_grpc_server_requests_total{service=\"defense_allies.timesquare.v1.MatchmakingService\",method=\"FindMatch\",code=\"OK\"}",
        "allies_grpc_server_request_duration_seconds_bucket{le=",
        "allies_command_conflicts_total{aggregate_type=\"user\"}",
        "allies_matchmaking_tickets_waiting 1",
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (exported, text) = scrape(&fleet);
        let missing: Vec<&String> = wanted.iter().filter(|m| !exported.contains(*m)).collect();
        let absent: Vec<&&str> = needles.iter().filter(|n| !text.contains(**n)).collect();
        if missing.is_empty() && absent.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard queries metrics nobody exports: {missing:?}; series missing: {absent:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(wanted.len() >= 15, "the dashboard covers the fleet: {wanted:?}");
}

/// The count of `allies_grpc_server_requests_total` for a method and code on one service.
fn calls(fleet: &Fleet, service: &str, method: &str, code: &str) -> u64 {
    let (_, body) = http_get(fleet.service(service).http_addr, "/metrics");
    body.lines()
        .filter(|l| l.starts_with("allies_grpc_server_requests_total{"))
        .filter(|l| l.contains(&format!("method=\"{method}\"")) && l.contains(&format!("code=\"{code}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn calls_ended_by_the_clients_deadline_or_reset_are_counted_and_unknown_methods_are_one_series() {
    use allies_contracts::projector::v1::GetUserRequest;
    let fleet = Fleet::start(&[]);
    let admin = fleet.admin().await;
    let mut projector = fleet.projector().await;
    // A consistency token of a write the read model will not see for a
    // while: the query waits (up to 5 s) — longer than the client does.
    let waiting = || GetUserRequest {
        user_id: uuid::Uuid::now_v7().to_string(),
        consistency_token: "user.3@99999999999999-0".into(),
    };
    let mut request = bearer(waiting(), &admin);
    request.set_timeout(Duration::from_secs(1));
    let e = projector.get_user(request).await.unwrap_err();
    // (tonic's client may give up first: it says CANCELLED, "Timeout expired".)
    assert!(matches!(e.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{e:?}");
    // A client that gives up without a deadline resets the stream.
    let gave_up = tokio::time::timeout(Duration::from_millis(200), projector.get_user(bearer(waiting(), &admin))).await;
    assert!(gave_up.is_err());
    let deadline = Instant::now() + Duration::from_secs(3);
    while calls(&fleet, "projector", "GetUser", "DEADLINE_EXCEEDED") < 1
        || calls(&fleet, "projector", "GetUser", "CANCELLED") < 1
    {
        assert!(
            Instant::now() < deadline,
            "not counted:\n{}",
            http_get(fleet.service("projector").http_addr, "/metrics").1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Made-up methods of a real service and of no service: one series, whatever the name.
    let channel = fleet.channel("timesquare").await;
    for path in ["/defense_allies.timesquare.v1.GameService/Bogus1", "/nope.Scanner/Probe2", "/defense_allies.x/Y3"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<GetUserRequest, GetUserRequest>::default();
        let e =
            grpc.unary(tonic::Request::new(GetUserRequest::default()), path.parse().unwrap(), codec).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{path}: {e:?}");
    }
    let (_, body) = http_get(fleet.service("timesquare").http_addr, "/metrics");
    for junk in ["Bogus1", "Probe2", "Y3", "nope.Scanner"] {
        assert!(!body.contains(junk), "{junk} has a series of its own");
    }
    assert!(calls(&fleet, "timesquare", "unknown", "UNIMPLEMENTED") >= 3, "{body}");
}
