//! Health tells the truth: when Redis goes away every service turns
//! NOT_SERVING (gRPC health and /readyz) and requests fail fast with one
//! clean UNAVAILABLE; when it is back they serve again, without a restart,
//! and the first request succeeds. A value that cannot be used stops a
//! service at start, naming the variable. A service also starts in-process
//! from its `build(config)`.

use std::time::{Duration, Instant};

use allies_contracts::projector::v1::GetUserRequest;
use allies_contracts::timesquare::v1::WhoAmIRequest;
use allies_e2e::{Fleet, PASSWORD, SERVICES, bearer};
use allies_testkit::http_get;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn health(fleet: &Fleet, name: &str) -> i32 {
    let mut h = HealthClient::new(fleet.channel(name).await);
    h.check(HealthCheckRequest { service: String::new() }).await.map(|r| r.into_inner().status).unwrap_or(-1)
}

async fn all_report(fleet: &Fleet, want: ServingStatus, ready: u16, within: Duration) {
    let deadline = Instant::now() + within;
    for name in SERVICES {
        loop {
            let ops = fleet.service(name).http_addr;
            if health(fleet, name).await == want as i32 && http_get(ops, "/readyz").0 == ready {
                break;
            }
            assert!(Instant::now() < deadline, "{name} did not report {want:?} / {ready} within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_reports_a_redis_outage_fails_fast_and_recovers_without_restart() {
    let mut fleet = Fleet::start(&[]);
    let (id, token) = fleet.player("olive").await;
    fleet.wait_for_user(&id).await;
    all_report(&fleet, ServingStatus::Serving, 200, Duration::from_secs(5)).await;

    fleet.redis_mut().stop();
    all_report(&fleet, ServingStatus::NotServing, 503, Duration::from_secs(5)).await;
    for name in SERVICES {
        assert_eq!(http_get(fleet.service(name).http_addr, "/healthz").0, 200, "{name} alive, just not ready");
    }
    let (_, why) = http_get(fleet.service("guardian").http_addr, "/readyz");
    assert!(why.contains("redis is not reachable"), "{why}");

    // Requests fail fast, with one clean message.
    let started = Instant::now();
    let e = fleet.login_with("olive", PASSWORD).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(e.message().matches("unavailable").count(), 1, "no doubled prefix: {}", e.message());
    let mut q = fleet.projector().await;
    let e = q.get_user(bearer(GetUserRequest { user_id: id.clone(), ..Default::default() }, &token)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let mut p = fleet.players().await;
    tokio::time::sleep(Duration::from_millis(600)).await; // past the session cache
    let e = p.who_am_i(bearer(WhoAmIRequest {}, &token)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "three failing requests took {took:?}");
    println!("three requests during the outage answered Unavailable in {took:?} (incl. a 600 ms pause)");
    // The operator sees it: guardian counted the Redis errors.
    let (_, metrics) = http_get(fleet.service("guardian").http_addr, "/metrics");
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("allies_redis_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("allies_redis_errors_total");
    assert!(errors > 0, "{metrics}");

    // Back: the first request succeeds, health follows within seconds.
    fleet.redis_mut().restart();
    let t = fleet.login("olive").await;
    assert_eq!(p.who_am_i(bearer(WhoAmIRequest {}, &t.access_token)).await.unwrap().into_inner().user_id, id);
    all_report(&fleet, ServingStatus::Serving, 200, Duration::from_secs(5)).await;
    // The projector kept its place in the logs.
    let r = fleet.register("after_outage").await;
    fleet.wait_for_user(&r).await;
}

#[test]
fn a_value_that_cannot_be_used_stops_a_service_naming_the_variable() {
    let redis = allies_testkit::RedisServer::start();
    for (service, key, value) in [
        ("guardian", "ARGON2_THREADS", "lots"),
        ("guardian", "LOCKOUT_MAX_FAILURES", "0"),
        ("guardian", "AUTH_RATE_PER_CLIENT", "-3"),
        ("projector", "BREAKER_FAILURES", "often"),
        ("projector", "BREAKER_OPEN_MS", "0"),
        ("timesquare", "SHUTDOWN_GRACE_SECS", "soon"),
        ("timesquare", "WORKER_THREADS", "0"),
        ("command", "REDIS_URL", "http://nope"),
    ] {
        let out = std::process::Command::new(allies_testkit::binary(service))
            .env("REDIS_URL", redis.url())
            .env(format!("{}_LISTEN_ADDR", service.to_uppercase()), "127.0.0.1:0")
            .env(format!("{}_HTTP_ADDR", service.to_uppercase()), "127.0.0.1:0")
            .env(key, value)
            .output()
            .expect("run the service");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{service} started with {key}={value}");
        assert!(err.contains(key) && err.contains(value), "{service}: the error names {key}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_starts_in_process_from_build_config() {
    let redis = allies_testkit::RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let env = allies_platform::config::Env::from_pairs([
        ("REDIS_URL", redis.url().as_str()),
        ("GUARDIAN_LISTEN_ADDR", "127.0.0.1:0"),
        ("GUARDIAN_HTTP_ADDR", "127.0.0.1:0"),
        ("ALLIES_DATA_DIR", keys.path().to_str().unwrap()),
        ("ARGON2_THREADS", "1"),
    ]);
    let config = allies_platform::ServiceConfig::from("guardian", env).unwrap();
    let service = guardian::build(config).await.unwrap();
    let (grpc, http) = (service.grpc_addr(), service.http_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run_until(async {
        let _ = stopped.await;
    }));
    let mut g = allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient::connect(format!(
        "http://{grpc}"
    ))
    .await
    .unwrap();
    let r = allies_contracts::guardian::v1::RegisterUserRequest {
        username: "inproc".into(),
        email: "i@example.com".into(),
        password: PASSWORD.into(),
    };
    assert_eq!(g.register_user(r).await.unwrap().into_inner().version, 1);
    let (status, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("allies_commands_total{aggregate_type=\"user\",outcome=\"ok\"} 1"), "{metrics}");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

/// Sends `signal` (STOP, CONT) to a process.
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(ok.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_answered_unavailable_within_a_second_and_health_follows_within_a_second() {
    let fleet = Fleet::start(&[]);
    let (id, token) = fleet.player("stan").await;
    fleet.wait_for_user(&id).await;
    all_report(&fleet, ServingStatus::Serving, 200, Duration::from_secs(5)).await;
    let mut q = fleet.projector().await;
    let get = || bearer(GetUserRequest { user_id: id.clone(), ..Default::default() }, &token);
    q.get_user(get()).await.expect("served before the stall");

    // Redis stops answering (SIGSTOP: the connections stay open, nothing comes back).
    signal(fleet.redis().pid(), "STOP");
    let stalled = Instant::now();
    let e = q.get_user(get()).await.unwrap_err();
    let answered = stalled.elapsed();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let mut all_down = Duration::ZERO;
    for name in SERVICES {
        while health(&fleet, name).await != ServingStatus::NotServing as i32 {
            assert!(stalled.elapsed() < Duration::from_secs(5), "{name} still serving");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        all_down = stalled.elapsed();
    }
    signal(fleet.redis().pid(), "CONT");
    println!("stalled Redis: UNAVAILABLE after {answered:?}; every service NOT_SERVING {all_down:?} after the stall");
    assert!(answered < Duration::from_secs(1), "UNAVAILABLE only after {answered:?}");
    assert!(all_down < Duration::from_secs(1), "NOT_SERVING only after {all_down:?}");

    // Back, without a restart: the first request succeeds, health follows.
    q.get_user(get()).await.expect("the first request after the stall");
    all_report(&fleet, ServingStatus::Serving, 200, Duration::from_secs(2)).await;
}
