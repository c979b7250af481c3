//! The whole fleet, end to end: private Redis, the four real service
//! binaries, a real gRPC client and the real CLI.

use std::process::Command;
use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::RegisterUserRequest;
use allies_contracts::projector::v1::GetUserRequest;
use allies_e2e::{Fleet, SERVICES, bearer};
use tonic::Code;
use tonic_types::StatusExt;

fn req(username: &str, email: &str, password: &str) -> RegisterUserRequest {
    RegisterUserRequest { username: username.into(), email: email.into(), password: password.into() }
}

fn stream_keys(fleet: &Fleet) -> String {
    fleet.keys("es:*:stream:*")
}

fn log_total(fleet: &Fleet) -> usize {
    fleet.user_log_len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_read_back_duplicates_and_invalid_input() {
    let fleet = Fleet::start(&[]);
    let mut g = fleet.guardian().await;
    let mut p = fleet.projector().await;

    // Register, then read back through the projector.
    let r = g.register_user(req("Alice_1", "alice@example.com", "correct-horse-9")).await.unwrap().into_inner();
    assert_eq!(r.version, 1);
    assert!(r.consistency_token.starts_with("user."), "{}", r.consistency_token);
    let user = fleet.wait_for_user(&r.user_id).await;
    assert_eq!(user.user_id, r.user_id);
    assert_eq!(user.username, "Alice_1");
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(user.roles, vec!["player"]);
    assert_eq!(user.status, "active");
    assert_eq!(user.version, 1);
    assert!(user.registered_at_ms > 1_700_000_000_000);

    // The password is stored only as an Argon2id hash, and never in the read model.
    let events = fleet.keys(&format!("es:{{user.*}}:stream:{}", r.user_id));
    let stream = events.lines().find(|l| l.starts_with("es:")).expect("alice's stream").to_owned();
    let raw = fleet.raw(&["XRANGE", &stream, "-", "+"]);
    assert!(raw.contains("$argon2id$v=19$"), "{raw}");
    assert!(!raw.contains("correct-horse-9"), "plain password stored");
    let rm = fleet.raw(&["HGETALL", &format!("rm:user:{}", r.user_id)]);
    assert!(!rm.contains("argon2") && !rm.contains("password"), "{rm}");

    // The same username in another case: AlreadyExists, nothing written.
    let before = log_total(&fleet);
    let e = g.register_user(req("ALICE_1", "other@example.com", "correct-horse-9")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("ALICE_1"), "{}", e.message());
    assert_eq!(log_total(&fleet), before);

    // Invalid input: InvalidArgument naming the field (message and details), nothing written.
    let keys_before = stream_keys(&fleet);
    let long = "x".repeat(33);
    for (request, field) in [
        (req("", "bob@example.com", "correct-horse-9"), "username"),
        (req(&long, "bob@example.com", "correct-horse-9"), "username"),
        (req("bob", "not-an-email", "correct-horse-9"), "email"),
        (req("bob", "bob@example.com", "short"), "password"),
        (req("bob", "bob@example.com", "onlyletterslong"), "password"),
    ] {
        let e = g.register_user(request).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(&format!("{field}:")), "{}", e.message());
        let details = e.get_error_details();
        assert_eq!(details.bad_request().expect("BadRequest detail").field_violations[0].field, field);
    }
    assert_eq!(stream_keys(&fleet), keys_before, "an invalid request wrote an event");
    assert_eq!(log_total(&fleet), before);

    // Queries validate too.
    let admin = fleet.admin().await;
    let e =
        p.get_user(bearer(GetUserRequest { user_id: "nope".into(), ..Default::default() }, &admin)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = p
        .get_user(bearer(
            GetUserRequest { user_id: "00000000-0000-0000-0000-000000000001".into(), ..Default::default() },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_name_create_one_user() {
    let fleet = Fleet::start(&[]);
    let names = ["racer", "RACER", "Racer", "rAcEr"];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut g = fleet.guardian().await;
        let name = names[i % names.len()].to_owned();
        tasks.push(tokio::spawn(async move {
            g.register_user(req(&name, &format!("r{i}@example.com"), "correct-horse-9")).await
        }));
    }
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => ok.push(r.into_inner()),
            Err(s) => assert_eq!(s.code(), Code::AlreadyExists, "{s:?}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one registration wins");
    assert_eq!(log_total(&fleet), 1, "exactly one event in the logs");
    let user = fleet.wait_for_user(&ok[0].user_id).await;
    assert!(names.contains(&user.username.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_is_healthy_reflects_and_stops_cleanly_on_sigterm() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut fleet = Fleet::start(&[]);
    for name in SERVICES {
        let mut h = HealthClient::new(fleet.channel(name).await);
        let s = h.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert_eq!(s.status, ServingStatus::Serving as i32, "{name}");

        let mut r = ServerReflectionClient::new(fleet.channel(name).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = r.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let reply = stream.message().await.unwrap().expect("reflection reply");
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else { panic!("{reply:?}") };
        let listed: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(listed.contains(&"grpc.health.v1.Health".to_owned()), "{name}: {listed:?}");
        match name {
            "guardian" => assert!(listed.contains(&"defense_allies.guardian.v1.GuardianService".into()), "{listed:?}"),
            "projector" => {
                assert!(listed.contains(&"defense_allies.projector.v1.ProjectorQueryService".into()), "{listed:?}")
            }
            _ => {}
        }
        // Older clients speak v1alpha.
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest as AlphaRequest, server_reflection_request::MessageRequest as AlphaMessage,
        };
        let mut a = AlphaClient::new(fleet.channel(name).await);
        let request =
            AlphaRequest { host: String::new(), message_request: Some(AlphaMessage::ListServices(String::new())) };
        let mut stream = a.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        assert!(stream.message().await.unwrap().is_some(), "{name}: v1alpha reflection");
    }

    for name in SERVICES {
        let code = fleet.service_mut(name).terminate(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{name} did not exit 0 on SIGTERM:\n{}", fleet.service(name).logs());
        assert!(fleet.service(name).logs().contains("SIGTERM received"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_reads_back_and_reports_errors() {
    let fleet = Fleet::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| fleet.cli(home.path(), args);
    let out = run(&[
        "--json",
        "user",
        "register",
        "--username",
        "cli_user",
        "--email",
        "cli@example.com",
        "--password",
        "correct-horse-9",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let id = reply["userId"].as_str().expect("userId").to_owned();

    // Queries need a login now: without one the CLI says so.
    let out = run(&["user", "get", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"), "{}", String::from_utf8_lossy(&out.stderr));

    // The auth flow: login keeps the tokens, whoami uses them on timesquare.
    let out = run(&["login", "--username", "cli_user", "--password", "correct-horse-9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(home.path().join("session.json").exists());

    let out = run(&["user", "get", &id, "--wait", "10"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("cli_user") && text.contains("cli@example.com") && text.contains("player"), "{text}");

    let out = run(&[
        "user",
        "register",
        "--username",
        "CLI_USER",
        "--email",
        "c@example.com",
        "--password",
        "correct-horse-9",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AlreadyExists") && err.contains("already taken"), "{err}");

    let out =
        run(&["user", "register", "--username", "x", "--email", "c@example.com", "--password", "correct-horse-9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("InvalidArgument") && err.contains("field `username`"), "{err}");

    // Every bad field at once; with --json an object with each violation.
    let out = run(&["--json", "user", "register", "--username", "x", "--email", "bad", "--password", "weak"]);
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(err["error"]["code"], "InvalidArgument", "{err}");
    let fields: Vec<&str> =
        err["error"]["violations"].as_array().unwrap().iter().map(|v| v["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["username", "email", "password"], "{err}");

    let out = run(&["--json", "whoami"]);
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).expect("whoami JSON");
    assert_eq!(me["userId"], id.as_str());
    let out = run(&["refresh"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join("session.json")).unwrap()).unwrap();
    let token = saved["access_token"].as_str().unwrap().to_owned();
    let out = run(&["--json", "user", "sessions", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["logout"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!home.path().join("session.json").exists(), "logout forgets the tokens");
    std::thread::sleep(Duration::from_millis(600));
    let out = run(&["--token", &token, "whoami"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Unauthenticated"), "{err}");
    // After logout nothing private answers: not with the old token, not without one.
    let out = run(&["--token", &token, "user", "sessions", &id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["whoami"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"));

    let out = run(&["health"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("SERVING").count(), 4, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_registrations_finish() {
    let mut fleet = Fleet::start(&[]);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut g = fleet.guardian().await;
        tasks.push(tokio::spawn(async move {
            g.register_user(req(&format!("drain{i}"), &format!("d{i}@example.com"), "correct-horse-9")).await
        }));
    }
    // Let the requests reach the server (they queue for the Argon2 threads), then stop it.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let pid = fleet.service("guardian").pid();
    let code = tokio::task::spawn_blocking(move || {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    });
    code.await.unwrap();
    let mut finished = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => finished += 1,
            // A request that had not reached the server before it stopped accepting.
            Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        }
    }
    assert!(finished >= 1, "no in-flight registration finished");
    assert_eq!(fleet.service_mut("guardian").terminate(Duration::from_secs(10)), Some(0));
    // Every success is a stored event.
    assert_eq!(log_total(&fleet), finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_registration_with_a_command_id_returns_the_first_result() {
    let fleet = Fleet::start(&[]);
    let mut g = fleet.guardian().await;
    let with_id = |r: RegisterUserRequest, id: &str| {
        let mut request = tonic::Request::new(r);
        request.metadata_mut().insert("x-command-id", id.parse().unwrap());
        request
    };
    let first = g.register_user(with_id(req("retry_me", "r@example.com", "correct-horse-9"), "cmd-42")).await.unwrap();
    let again = g.register_user(with_id(req("retry_me", "r@example.com", "correct-horse-9"), "cmd-42")).await.unwrap();
    assert_eq!(first.get_ref(), again.get_ref(), "same user id, version and consistency token");
    assert_eq!(log_total(&fleet), 1, "the retry wrote nothing");
    // Without the id the same request is a second registration: AlreadyExists.
    let e = g.register_user(req("retry_me", "r@example.com", "correct-horse-9")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    // The same id for a different command is refused.
    let e =
        g.register_user(with_id(req("retry_me", "other@example.com", "correct-horse-9"), "cmd-42")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = g.register_user(with_id(req("bob_x", "b@example.com", "correct-horse-9"), "bad id")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(log_total(&fleet), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_runs_with_protobuf_event_payloads() {
    let fleet = Fleet::start(&[("EVENT_FORMAT", "protobuf")]);
    let mut g = fleet.guardian().await;
    let r = g.register_user(req("proto_user", "p@example.com", "correct-horse-9")).await.unwrap().into_inner();
    let user = fleet.wait_for_user(&r.user_id).await;
    assert_eq!((user.username.as_str(), user.display_name.as_str()), ("proto_user", "proto_user"));
    let stream = fleet.keys("es:{user.*}:stream:*");
    let entry = fleet.raw(&["XRANGE", stream.lines().next().unwrap(), "-", "+"]);
    assert!(entry.contains("application/x-protobuf"), "{entry}");
    let login = allies_contracts::guardian::v1::AuthenticateUserRequest {
        username: "proto_user".into(),
        password: "correct-horse-9".into(),
    };
    g.authenticate_user(login).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_page_history_time_travel_archive_and_restore() {
    let fleet = Fleet::start(&[("SNAPSHOT_EVERY", "3")]);
    let mut g = fleet.guardian().await;
    let r = g.register_user(req("veteran", "v@example.com", "correct-horse-9")).await.unwrap().into_inner();
    let login = || allies_contracts::guardian::v1::AuthenticateUserRequest {
        username: "veteran".into(),
        password: "correct-horse-9".into(),
    };
    for _ in 0..3 {
        g.authenticate_user(login()).await.unwrap();
    }
    // The snapshot (at version 3) is written after the reply; wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fleet.keys("es:{user.*}:snap:*").is_empty() {
        assert!(Instant::now() < deadline, "no snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let archive = tempfile::tempdir().unwrap();
    let tool = allies_testkit::binary("allies-store");
    let run = |args: &[&str]| {
        let out = Command::new(&tool)
            .env("REDIS_URL", fleet.redis_url())
            .env("ARCHIVE_DIR", archive.path())
            .args(args)
            .output()
            .expect("run allies-store");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let history = run(&["history", "user", &r.user_id, "--limit", "2"]);
    assert_eq!(history.lines().count(), 2);
    assert!(history.lines().next().unwrap().contains("UserRegistered"));
    let then = run(&["as-of", "user", &r.user_id, "--version", "1"]);
    let then: serde_json::Value = serde_json::from_str(&then).unwrap();
    assert_eq!((then["version"].as_u64(), then["state"]["last_login_ms"].as_i64()), (Some(1), Some(0)));
    // Secrets are masked in every operator view, as in `history`.
    assert_eq!(then["state"]["password_hash"], "[redacted]", "{then}");
    assert!(!then.to_string().contains("argon2"), "{then}");

    let archived = run(&["archive", "user", &r.user_id]);
    assert!(archived.contains("archived versions 1..="), "{archived}");
    // Guardian keeps working on the trimmed aggregate (snapshot + later events).
    g.authenticate_user(login()).await.unwrap();
    let all = run(&["history", "user", &r.user_id, "--archived"]);
    assert_eq!(all.lines().count(), 5, "{all}");
    assert!(run(&["restore", "user", &r.user_id]).contains("all 5 events"));
    assert_eq!(run(&["history", "user", &r.user_id]).lines().count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_the_consistency_token_reads_its_own_write() {
    let fleet = Fleet::start(&[]);
    let mut g = fleet.guardian().await;
    let mut p = fleet.projector().await;
    let admin = fleet.admin().await;
    for i in 0..10 {
        let r =
            g.register_user(req(&format!("ryw{i}"), "r@example.com", "correct-horse-9")).await.unwrap().into_inner();
        // No polling: the query itself waits until the projection has applied the write.
        let user = p
            .get_user(bearer(
                GetUserRequest { user_id: r.user_id.clone(), consistency_token: r.consistency_token.clone() },
                &admin,
            ))
            .await
            .unwrap_or_else(|s| panic!("read-your-writes failed: {s:?}"))
            .into_inner()
            .user
            .unwrap();
        assert_eq!(user.username, format!("ryw{i}"));
    }
    // A token from the future cannot be satisfied: a clear status, not a wrong answer.
    let e = p
        .get_user(bearer(
            GetUserRequest {
                user_id: "00000000-0000-0000-0000-000000000001".into(),
                consistency_token: "user.3@99999999999999-0".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    for bad in ["nonsense", "user.x@1-0", "session.1@1-0"] {
        let e = p
            .get_user(bearer(
                GetUserRequest {
                    user_id: "00000000-0000-0000-0000-000000000001".into(),
                    consistency_token: bad.into(),
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_reports_health_readiness_and_metrics() {
    use allies_testkit::http_get;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let fleet = Fleet::start(&[]);
    let ops = fleet.service("projector").http_addr;
    // The gRPC port is bound first; the operations endpoint comes up right after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(ops, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "no /healthz within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ready once its search indexes have caught up with the logs (at once
    // on empty logs; a moment on a cluster, where every log is read).
    while http_get(ops, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "not ready within 10 s: {}", http_get(ops, "/readyz").1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut g = fleet.guardian().await;
    let r = g.register_user(req("metered", "m@example.com", "correct-horse-9")).await.unwrap().into_inner();
    // Straight from Redis: a query would need a login, and its events would count too.
    let key = format!("rm:user:{}", r.user_id);
    allies_testkit::fixtures::wait_until("the read model", Duration::from_secs(10), || {
        fleet.raw(&["EXISTS", &key]) == ":1"
    })
    .await;
    // The handler counts an entry once it returns, just after the write.
    allies_testkit::fixtures::wait_until("the entry counted", Duration::from_secs(10), || {
        http_get(ops, "/metrics").1.contains("allies_subscriber_processed_total{group=\"rm.user\"}")
    })
    .await;
    let (status, metrics) = http_get(ops, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "allies_subscriber_processed_total{group=\"rm.user\"} 1",
        "allies_subscriber_handler_seconds_bucket",
        "allies_consumer_lag{group=\"rm.user\"} 0",
        "allies_consumer_pending{group=\"rm.user\"} 0",
        "allies_dead_letters{group=\"rm.user\"} 0",
        "allies_events_published{aggregate_type=\"user\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }

    // Redis goes away: readiness and gRPC health say so. (On a cluster one
    // node going away is a failover, not an outage: not this test's.)
    if fleet.cluster.is_some() {
        return;
    }
    fleet.raw(&["SHUTDOWN", "NOSAVE"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(ops, "/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "readyz still 200 without Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(ops, "/healthz").0, 200, "alive, just not ready");
    let channel = tonic::transport::Channel::from_shared(fleet.endpoint("projector")).unwrap().connect().await.unwrap();
    let mut h = HealthClient::new(channel);
    loop {
        let s = h.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        if s == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "gRPC health still SERVING without Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_tool_finds_the_fleet_and_says_what_is_not_there() {
    let fleet = Fleet::start(&[]);
    let id = fleet.register("keeper").await;
    // Run where dev/up left its fleet.env, with nothing exported.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cwd.path().join(".data")).unwrap();
    std::fs::write(cwd.path().join(".data/fleet.env"), format!("REDIS_URL={}\n", fleet.redis_url())).unwrap();
    let archive = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(allies_testkit::binary("allies-store"))
            .current_dir(cwd.path())
            .env_remove("REDIS_URL")
            .env("ARCHIVE_DIR", archive.path())
            .args(args)
            .output()
            .expect("run allies-store")
    };
    let out = run(&["history", "user", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("UserRegistered"), "read the fleet's Redis");
    assert!(String::from_utf8_lossy(&out.stderr).contains("fleet.env"), "says which Redis it reads");
    // From a directory below, it finds the same fleet; from one with no
    // fleet above it and nothing named, it refuses rather than guess a default Redis.
    std::fs::create_dir_all(cwd.path().join("deploy/k8s")).unwrap();
    let below = Command::new(allies_testkit::binary("allies-store"))
        .current_dir(cwd.path().join("deploy/k8s"))
        .env_remove("REDIS_URL")
        .args(["history", "user", &id])
        .output()
        .expect("run allies-store");
    assert!(below.status.success(), "{}", String::from_utf8_lossy(&below.stderr));
    let nowhere = tempfile::tempdir().unwrap();
    let refused = Command::new(allies_testkit::binary("allies-store"))
        .current_dir(nowhere.path())
        .env_remove("REDIS_URL")
        .args(["archive", "user", &id])
        .output()
        .expect("run allies-store");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("which Redis?"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("$argon2"), "history shows no password hash");

    // An unknown id is an error, not an empty history or a state at version 0.
    for args in [
        &["history", "user", "00000000-0000-0000-0000-00000000000f"][..],
        &["as-of", "user", "00000000-0000-0000-0000-00000000000f", "--version", "1"][..],
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("no user with id"), "{args:?}: {err}");
        assert!(!err.contains("backtrace") && !err.contains("panicked"), "{err}");
    }
    let out = run(&["as-of", "gizmo", &id, "--version", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no gizmo with id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Restore with nothing archived says so; archive without a snapshot takes one first.
    let out = run(&["restore", "user", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("an archive of user"), "{err}");
    let out = run(&["archive", "user", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("took a snapshot at version 1 first"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("archived versions 1..=1"));
    let out = run(&["restore", "user", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("all 1 events"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refreshes_an_expiring_login_and_says_when_it_cannot() {
    // Access tokens of one second: every later command finds its token expiring.
    let fleet = Fleet::start(&[("ACCESS_TOKEN_TTL_SECS", "1")]);
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| fleet.cli(home.path(), args);
    let id = fleet.register("refresher").await;
    let out = run(&["login", "--username", "refresher", "--password", allies_e2e::PASSWORD]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(home.path().join("session.json")).unwrap()).unwrap()
    };
    let first = saved()["access_token"].as_str().unwrap().to_owned();
    // Past the token's life and the services' 5 s leeway: the old token is refused…
    tokio::time::sleep(Duration::from_secs(7)).await;
    let out = run(&["--token", &first, "user", "get", &id]);
    assert!(!out.status.success(), "an expired token is refused");
    // …and a command with the saved login refreshes it first, then works.
    let out = run(&["user", "get", &id, "--wait", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refresher"));
    assert_ne!(saved()["access_token"].as_str().unwrap(), first, "new tokens are kept");
    // A login whose session ended cannot be refreshed: the CLI says to log in.
    let out = run(&["logout"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let login = run(&["login", "--username", "refresher", "--password", allies_e2e::PASSWORD]);
    assert!(login.status.success());
    let session = saved();
    let mut guardian = fleet.guardian().await;
    let token = session["access_token"].as_str().unwrap();
    guardian
        .logout_user(bearer(allies_contracts::guardian::v1::LogoutUserRequest {}, token))
        .await
        .expect("the session ends elsewhere");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = run(&["user", "get", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not be refreshed") && err.contains("allies login"), "{err}");
}
