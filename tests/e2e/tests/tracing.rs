//! Distributed traces through gRPC and the event bus, received by an
//! in-process OTLP/gRPC collector (the OpenTelemetry collector's trace
//! service, on the real OTLP protos): every service exports to it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::RegisterUserRequest;
use allies_contracts::timesquare::v1::CreateGameSessionRequest;
use allies_e2e::otlp::Collector;
use allies_e2e::{Fleet, bearer};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

fn with_traceparent<T>(mut request: tonic::Request<T>, trace: &str, parent: &str) -> tonic::Request<T> {
    request.metadata_mut().insert("traceparent", format!("00-{trace}-{parent}-01").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_registration_and_one_game_command_are_traced_through_grpc_the_append_and_every_consumer() {
    let (collector, endpoint) = Collector::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
    ];
    let fleet = Fleet::start(&env);

    // The client's span (this test): trace T, span C.
    let (trace, client) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut g = fleet.guardian().await;
    let r = RegisterUserRequest {
        username: "traced".into(),
        email: "t@example.com".into(),
        password: "correct-horse-9".into(),
    };
    let user = g.register_user(with_traceparent(tonic::Request::new(r), trace, client)).await.unwrap().into_inner();

    // guardian's server span is the client's child, the append its child.
    let rpc = collector
        .wait("guardian RegisterUser", |s| s.service == "guardian" && s.attr("rpc.method") == "RegisterUser")
        .await;
    assert_eq!(
        (rpc.trace(), rpc.parent(), rpc.span.kind),
        (trace.to_owned(), client.to_owned(), SpanKind::Server as i32)
    );
    assert_eq!(rpc.attr("rpc.system"), "grpc");
    assert_eq!(rpc.attr("rpc.grpc.status_code"), "0");
    // Its log line carries the trace and the span.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fleet.service("guardian").logs().lines().any(|l| {
        l.contains("user registered")
            && l.contains(&format!("trace_id={trace}"))
            && l.contains(&format!("span_id={}", rpc.id()))
    }) {
        assert!(Instant::now() < deadline, "no log line with the trace id:\n{}", fleet.service("guardian").logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let append = collector
        .wait("guardian's append", |s| s.service == "guardian" && s.span.name.starts_with("send es:{user."))
        .await;
    assert_eq!(
        (append.trace(), append.parent(), append.span.kind),
        (trace.to_owned(), rpc.id(), SpanKind::Producer as i32)
    );
    assert_eq!(append.attr("messaging.system"), "redis");
    assert_eq!(append.attr("messaging.operation.name"), "send");
    // The destination is the real stream, and the span is named after it.
    assert_eq!(append.span.name, format!("send {}", append.attr("messaging.destination.name")));
    assert!(
        append.attr("messaging.destination.name").ends_with(":log"),
        "{}",
        append.attr("messaging.destination.name")
    );

    // The projector's processing links to the append (its creation context).
    let apply = collector
        .wait("the projector's apply", |s| {
            s.service == "projector"
                && s.attr("messaging.consumer.group.name") == "rm.user"
                && s.span.name.starts_with("process es:{user.")
                && !s.message_ids().is_empty()
                && s.links().contains(&(trace.to_owned(), append.id()))
        })
        .await;
    assert_eq!(apply.span.kind, SpanKind::Consumer as i32);
    assert_eq!(apply.attr("messaging.consumer.group.name"), "rm.user");
    assert!(apply.attr("messaging.destination.name").contains("user"));
    assert_eq!(apply.attr("messaging.operation.name"), "process");

    // Across services: timesquare's ts.users group reacts (creates the
    // player); its append is a child of the processing, which links to
    // guardian's append.
    let react = collector
        .wait("timesquare's reaction", |s| {
            s.service == "timesquare"
                && s.attr("messaging.consumer.group.name") == "ts.users"
                && s.links().iter().any(|(t, _)| t == trace)
        })
        .await;
    let player = collector
        .wait("the player's append", |s| {
            s.service == "timesquare" && s.span.name.starts_with("send es:{player.") && s.parent() == react.id()
        })
        .await;
    assert_eq!((player.trace(), player.attr("aggregate.id")), (react.trace(), user.user_id.clone()));

    // A game command: timesquare's server span, its append, the rm.game apply.
    let token = fleet.login("traced").await.access_token;
    let (trace2, client2) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let mut games = fleet.game().await;
    let create = CreateGameSessionRequest {
        map: "meadow".into(),
        difficulty: "easy".into(),
        max_players: 2,
        ..Default::default()
    };
    games.create_game_session(with_traceparent(bearer(create, &token), trace2, client2)).await.unwrap();
    let rpc2 = collector
        .wait("timesquare CreateGameSession", |s| {
            s.service == "timesquare" && s.attr("rpc.method") == "CreateGameSession"
        })
        .await;
    assert_eq!((rpc2.trace(), rpc2.parent()), (trace2.to_owned(), client2.to_owned()));
    let append2 = collector
        .wait("the session's append", |s| s.span.name.starts_with("send es:{game_session.") && s.parent() == rpc2.id())
        .await;
    collector
        .wait("the rm.game apply", |s| {
            s.service == "projector"
                && s.attr("messaging.consumer.group.name") == "rm.game"
                && s.links().contains(&(trace2.to_owned(), append2.id()))
        })
        .await;

    // Span status, as the OTel gRPC conventions say: a caller's mistake
    // (INVALID_ARGUMENT) leaves it unset, a server's failure to answer
    // (UNIMPLEMENTED here) is an error.
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let (trace3, client3) = ("5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7");
    let bad = CreateGameSessionRequest::default();
    let e = games.create_game_session(with_traceparent(bearer(bad, &token), trace3, client3)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let refused =
        collector.wait("the refused call", |s| s.trace() == trace3 && s.attr("rpc.grpc.status_code") == "3").await;
    assert_ne!(
        refused.span.status.as_ref().map(|st| st.code),
        Some(StatusCode::Error as i32),
        "{:?}",
        refused.span.status
    );
    let mut grpc = tonic::client::Grpc::new(fleet.channel("timesquare").await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<CreateGameSessionRequest, CreateGameSessionRequest>::default();
    let probe = with_traceparent(tonic::Request::new(CreateGameSessionRequest::default()), trace3, client3);
    let e =
        grpc.unary(probe, "/defense_allies.timesquare.v1.GameService/Nope".parse().unwrap(), codec).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    let failed = collector
        .wait("the unimplemented call", |s| s.trace() == trace3 && s.attr("rpc.grpc.status_code") == "12")
        .await;
    assert_eq!(failed.span.status.as_ref().map(|st| st.code), Some(StatusCode::Error as i32));

    // A service's call to another is a client span, the callee's server span
    // its child: a maintenance job (command) asks the projector.
    use allies_contracts::command::v1::PerformMaintenanceRequest;
    use allies_contracts::command::v1::maintenance_service_client::MaintenanceServiceClient;
    let admin = fleet.admin().await;
    let mut m = MaintenanceServiceClient::new(fleet.channel("command").await);
    let check = PerformMaintenanceRequest {
        operation: "check_consistency".into(),
        projection: "rm.user".into(),
        reason: "traced".into(),
        ..Default::default()
    };
    m.perform_maintenance(bearer(check, &admin)).await.expect("maintenance");
    let client_span = collector
        .wait("command's client span", |s| {
            s.service == "command"
                && s.span.kind == SpanKind::Client as i32
                && s.attr("rpc.method") == "CheckConsistency"
        })
        .await;
    assert!(!client_span.parent().is_empty(), "a child of the job's processing");
    collector
        .wait("the projector's server span under it", |s| {
            s.service == "projector" && s.attr("rpc.method") == "CheckConsistency" && s.parent() == client_span.id()
        })
        .await;

    // The matchmaker forms a match in a span linked to each player's FindMatch trace.
    use allies_contracts::timesquare::v1::FindMatchRequest;
    let mut mm = fleet.matchmaking().await;
    let (t4, t5) = ("6bf92f3577b34da6a3ce929d0e0e4736", "7bf92f3577b34da6a3ce929d0e0e4736");
    for (name, trace) in [("mmone", t4), ("mmtwo", t5)] {
        let token = fleet.player(name).await.1;
        let find = FindMatchRequest { min_players: 2, max_players: 2, ..Default::default() };
        mm.find_match(with_traceparent(bearer(find, &token), trace, "20f067aa0ba902b7")).await.expect("find");
    }
    let formed = collector
        .wait("the match's formation", |s| {
            s.service == "timesquare"
                && s.span.name == "form match"
                && [t4, t5].iter().all(|t| s.links().iter().any(|(l, _)| l == t))
        })
        .await;
    collector
        .wait("MatchFormed's append under it", |s| {
            s.span.name.starts_with("send es:{match.") && s.parent() == formed.id()
        })
        .await;

    // The CLI starts a trace per run and every call carries it.
    let home = tempfile::tempdir().unwrap();
    let out = fleet.cli(
        home.path(),
        &[
            "--trace",
            "user",
            "register",
            "--username",
            "clitraced",
            "--email",
            "c@example.com",
            "--password",
            "correct-horse-9",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let cli_trace = stderr.lines().find_map(|l| l.strip_prefix("trace ")).expect("the trace id").trim().to_owned();
    assert_eq!(cli_trace.len(), 32);
    collector
        .wait("the CLI's RegisterUser", |s| {
            s.service == "guardian" && s.trace() == cli_trace && s.span.name.ends_with("RegisterUser")
        })
        .await;
    collector
        .wait("its projection", |s| s.service == "projector" && s.links().iter().any(|(t, _)| *t == cli_trace))
        .await;

    // Health checks are not traced; every span of trace T comes from the fleet.
    let spans = collector.spans.lock().unwrap().clone();
    assert!(spans.iter().all(|s| !s.span.name.starts_with("grpc.health")));
    let by_service: BTreeMap<String, usize> = spans.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.service.clone()).or_default() += 1;
        m
    });
    assert!(
        by_service.contains_key("guardian")
            && by_service.contains_key("timesquare")
            && by_service.contains_key("projector")
    );
}

/// As deployed, traces are sampled by ratio where they start and followed
/// everywhere else; with the ratio at 0 only a trace a client records
/// (flags 01) is exported — its calls, its appends, every consumer of its
/// events — and nothing at all of the work nobody asked to record, which
/// still carries its trace id on (flags 00) for the next service to follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_trace_builds_no_span_anywhere_and_a_sampled_one_is_whole() {
    let (collector, endpoint) = Collector::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ];
    let fleet = Fleet::start(&env);
    let token = fleet.player("ratioed").await.1;
    let mut games = fleet.game().await;
    let create = || CreateGameSessionRequest {
        map: "meadow".into(),
        difficulty: "easy".into(),
        max_players: 2,
        ..Default::default()
    };
    // Three games: one the client records, one it does not (flags 00), one
    // with no trace context at all.
    let (sampled, unsampled) = ("1bf92f3577b34da6a3ce929d0e0e4736", "2bf92f3577b34da6a3ce929d0e0e4736");
    let mut recorded = bearer(create(), &token);
    recorded.metadata_mut().insert("traceparent", format!("00-{sampled}-00f067aa0ba902b7-01").parse().unwrap());
    let recorded = games.create_game_session(recorded).await.unwrap().into_inner();
    let mut skipped = bearer(create(), &token);
    skipped.metadata_mut().insert("traceparent", format!("00-{unsampled}-00f067aa0ba902b7-00").parse().unwrap());
    let skipped = games.create_game_session(skipped).await.unwrap().into_inner();
    let plain = games.create_game_session(bearer(create(), &token)).await.unwrap().into_inner();

    // The recorded one is whole: server span, append, the rm.game apply.
    let rpc = collector
        .wait("the recorded CreateGameSession", |s| {
            s.service == "timesquare" && s.trace() == sampled && s.attr("rpc.method") == "CreateGameSession"
        })
        .await;
    let append = collector
        .wait("its append", |s| s.span.name.starts_with("send es:{game_session.") && s.parent() == rpc.id())
        .await;
    collector
        .wait("its rm.game apply", |s| {
            s.service == "projector"
                && s.attr("messaging.consumer.group.name") == "rm.game"
                && s.links().contains(&(sampled.to_owned(), append.id()))
        })
        .await;

    // All three games are projected (so every consumer has seen them)...
    let mut q = fleet.games().await;
    for game in [&recorded.session_id, &skipped.session_id, &plain.session_id] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let request = || allies_contracts::projector::v1::GetGameSessionRequest {
            session_id: game.clone(),
            ..Default::default()
        };
        while q.get_game_session(bearer(request(), &token)).await.is_err() {
            assert!(Instant::now() < deadline, "game {game} was not projected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // ... and once the exporters have flushed, every span there is belongs
    // to the recorded trace or to work linked to it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = collector.spans.lock().unwrap().clone();
    let mut traces = std::collections::BTreeSet::from([sampled.to_owned()]);
    for s in &spans {
        if s.links().iter().any(|(t, _)| t == sampled) {
            traces.insert(s.trace());
        }
    }
    let strays: Vec<String> = spans
        .iter()
        .filter(|s| !traces.contains(&s.trace()))
        .map(|s| format!("{} {} {:?}", s.service, s.span.name, s.links()))
        .collect();
    assert!(strays.is_empty(), "spans of unsampled work were exported: {strays:#?}");
    assert!(spans.iter().all(|s| s.trace() != unsampled));

    // The unsampled trace's id went on with its events, flags 00.
    let logs = fleet.keys("es:{game_session.*:log");
    let stored: String = logs.lines().map(|log| fleet.raw(&["XRANGE", log, "-", "+"])).collect();
    assert!(stored.contains(&format!("00-{unsampled}-")), "the events carry the client's unsampled trace id");
    assert!(!stored.contains(&format!("00-{unsampled}-00f067aa0ba902b7-01")));
}
