//! The whole fleet against a real Redis Cluster: three masters with a replica each.

use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_contracts::guardian::v1::{AuthenticateUserRequest, LogoutUserRequest, RegisterUserRequest};
use allies_contracts::projector::v1::GetUserRequest;
use allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient;
use allies_contracts::timesquare::v1::WhoAmIRequest;
use allies_contracts::timesquare::v1::player_service_client::PlayerServiceClient;
use allies_testkit::{RedisCluster, ServiceProcess};
use tonic::{Code, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_query_on_redis_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let env = [("REDIS_URL", url.as_str()), ("SHUTDOWN_GRACE_SECS", "5")];
    let guardian = ServiceProcess::start("guardian", "GUARDIAN_LISTEN_ADDR", &env);
    let g_url = guardian.endpoint();
    let env = [("REDIS_URL", url.as_str()), ("GUARDIAN_URL", g_url.as_str())];
    let projector = ServiceProcess::start("projector", "PROJECTOR_LISTEN_ADDR", &env);
    let timesquare = ServiceProcess::start("timesquare", "TIMESQUARE_LISTEN_ADDR", &env);

    let mut g = GuardianServiceClient::connect(guardian.endpoint()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..12 {
        let r = RegisterUserRequest {
            username: format!("node_user{i}"),
            email: format!("u{i}@example.com"),
            password: "correct-horse-9".into(),
        };
        ids.push(g.register_user(r).await.unwrap().into_inner().user_id);
    }
    let dup = RegisterUserRequest {
        username: "NODE_USER3".into(),
        email: "x@example.com".into(),
        password: "correct-horse-9".into(),
    };
    assert_eq!(g.register_user(dup).await.unwrap_err().code(), Code::AlreadyExists);

    // Every user reaches the read model through the consumer groups on the cluster.
    let login = AuthenticateUserRequest { username: "node_user0".into(), password: "correct-horse-9".into() };
    let t = g.authenticate_user(login).await.unwrap().into_inner();
    let mut q = ProjectorQueryServiceClient::connect(projector.endpoint()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in &ids {
        loop {
            let request = GetUserRequest { user_id: id.clone(), ..Default::default() };
            match q.get_user(allies_e2e::bearer(request, &t.access_token)).await {
                Ok(_) => break,
                Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(s) => panic!("{s:?}\n{}", projector.logs()),
            }
        }
    }
    // Their streams are spread over the masters.
    let per_node: Vec<usize> = cluster
        .masters()
        .into_iter()
        .map(|i| &cluster.nodes[i])
        .map(|n| n.raw(&["KEYS", "es:{user.*}:stream:*"]).lines().filter(|l| !l.is_empty()).count())
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 12, "{per_node:?}");
    assert!(per_node.iter().filter(|c| **c > 0).count() >= 2, "{per_node:?}");

    // Sessions, tokens and revocation work the same.
    let mut p = PlayerServiceClient::connect(timesquare.endpoint()).await.unwrap();
    let bearer = |token: &str| {
        let mut r = Request::new(WhoAmIRequest {});
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    assert_eq!(p.who_am_i(bearer(&t.access_token)).await.unwrap().into_inner().user_id, ids[0]);
    let mut logout = Request::new(LogoutUserRequest {});
    logout.metadata_mut().insert("authorization", format!("Bearer {}", t.access_token).parse().unwrap());
    g.logout_user(logout).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(p.who_am_i(bearer(&t.access_token)).await.unwrap_err().code(), Code::Unauthenticated);
}

/// A master holding a game fails during play (kill -9): its replica takes
/// over, game commands fail with UNAVAILABLE for a short window and then
/// succeed on the same session, and every command acknowledged before the
/// failure is still in the session's history. The window is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_during_play_is_a_short_unavailable_window_and_loses_no_acknowledged_command() {
    use allies_contracts::timesquare::v1::TowerRequest;
    use allies_e2e::Fleet;
    use allies_e2e::game::{Games, place, started_game};
    // Nodes fail over after 1.5 s unreachable.
    let cluster = RedisCluster::start_with(1, 1500);
    let env = [("TIMESQUARE_TICK_MS", "1"), ("TIMESQUARE_SETTLE_MS", "20")];
    let mut fleet = Fleet::start_on_cluster(cluster, &["guardian", "timesquare", "projector"], &env);
    let ann = fleet.gamer("ann").await;
    let mut games: Games = fleet.game().await;
    let session = started_game(&mut games, &[&ann], "meadow", "easy").await;
    let sell = |tower_id| allies_e2e::bearer(TowerRequest { session_id: session.clone(), tower_id }, &ann.token);
    // Acknowledged before the failure: three towers placed, one sold.
    let mut acked = Vec::new();
    for x in 0..3 {
        let r = place(&mut games, &session, &ann, "arrow", x, 1).await.unwrap();
        acked.push(r.version);
    }
    acked.push(games.sell_tower(sell(0)).await.unwrap().into_inner().version);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The master that holds the session's stream dies.
    let cluster = fleet.cluster.as_mut().unwrap();
    let owner = cluster
        .masters()
        .into_iter()
        .find(|i| !cluster.nodes[*i].raw(&["KEYS", &format!("es:*:stream:{session}")]).trim().is_empty())
        .expect("a master holds the session");
    cluster.nodes[owner].kill();
    let killed = Instant::now();

    // Commands until three in a row succeed: place and sell in turn.
    let (mut failures, mut codes, mut streak, mut first_ok_after) = (0, Vec::new(), 0, None);
    let mut next_tower = None;
    while streak < 3 {
        assert!(killed.elapsed() < Duration::from_secs(30), "no failover within 30 s: {codes:?}");
        let result = match next_tower {
            None => place(&mut games, &session, &ann, "arrow", 4, 1).await.map(|r| (r.version, Some(r.tower_id))),
            Some(id) => games.sell_tower(sell(id)).await.map(|r| (r.into_inner().version, None)),
        };
        match result {
            Ok((version, placed)) => {
                first_ok_after.get_or_insert(killed.elapsed());
                acked.push(version);
                next_tower = placed;
                streak += 1;
            }
            Err(status) => {
                failures += 1;
                codes.push(status.code());
                streak = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let window = first_ok_after.unwrap();
    eprintln!("master failover: {failures} commands refused ({codes:?}), the first success {window:?} after the kill");
    assert!(failures > 0, "the failover was noticed");
    assert!(codes.iter().all(|c| *c == Code::Unavailable), "every refusal is UNAVAILABLE (retry): {codes:?}");

    // Nothing acknowledged is missing: each version acked is in the history, once.
    let history: Vec<u64> = fleet.game_events(&session).await.into_iter().map(|(v, _)| v).collect();
    for v in &acked {
        assert!(history.contains(v), "acknowledged version {v} is missing after the failover: {history:?}");
    }
    assert!(history.windows(2).all(|w| w[1] == w[0] + 1), "no gap, nothing twice: {history:?}");
}

/// What an acknowledged command can lose on a failover, and what
/// `REDIS_REPLICA_ACKS` does about it. The replica of the master holding a
/// game stalls (SIGSTOP), a command is sent, the master dies, the replica
/// resumes and is promoted:
/// - without replica acks the command was acknowledged by the master alone
///   and is gone from the promoted replica (Redis replicates asynchronously);
/// - with `REDIS_REPLICA_ACKS=1` it is answered UNAVAILABLE instead (written,
///   not confirmed), and its retry with the same `x-command-id` after the
///   failover succeeds — in the history exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acks_a_failover_loses_no_acknowledged_command_even_when_the_replica_lagged() {
    use allies_contracts::timesquare::events::GameEvent;
    use allies_contracts::timesquare::v1::PlaceTowerRequest;
    use allies_e2e::Fleet;
    use allies_e2e::game::{Games, place, started_game};

    let placed_at = |history: &[(u64, GameEvent)], x, y| {
        history.iter().filter(|(_, e)| matches!(e, GameEvent::TowerPlaced(t) if t.x == x && t.y == y)).count()
    };
    for acks in ["0", "1"] {
        let cluster = RedisCluster::start_with(1, 1500);
        let env = [
            ("TIMESQUARE_TICK_MS", "1"),
            ("TIMESQUARE_SETTLE_MS", "20"),
            ("REDIS_REPLICA_ACKS", acks),
            ("REDIS_REPLICA_ACK_TIMEOUT_MS", "200"),
        ];
        let mut fleet = Fleet::start_on_cluster(cluster, &["guardian", "timesquare", "projector"], &env);
        let ann = fleet.gamer("ann").await;
        let mut games: Games = fleet.game().await;
        let session = started_game(&mut games, &[&ann], "meadow", "easy").await;
        place(&mut games, &session, &ann, "arrow", 0, 1).await.unwrap();

        let cluster = fleet.cluster.as_mut().unwrap();
        let owner = cluster
            .masters()
            .into_iter()
            .find(|i| !cluster.nodes[*i].raw(&["KEYS", &format!("es:*:stream:{session}")]).trim().is_empty())
            .expect("a master holds the session");
        let owner_port = cluster.nodes[owner].port().to_string();
        let replica = (0..cluster.nodes.len())
            .find(|i| {
                let role = cluster.nodes[*i].raw(&["ROLE"]);
                let lines: Vec<&str> = role.lines().collect();
                lines.first() == Some(&"slave") && lines.get(2).is_some_and(|p| p.trim_start_matches(':') == owner_port)
            })
            .expect("the master has a replica");

        let command = || {
            let mut r = allies_e2e::bearer(
                PlaceTowerRequest { session_id: session.clone(), tower_type: "arrow".into(), x: 1, y: 1 },
                &ann.token,
            );
            r.metadata_mut().insert("x-command-id", "placed-while-the-replica-lagged".parse().unwrap());
            r
        };
        // A stalled replica's kernel still takes what the master sends (a
        // socket buffer's worth): 32 MB of ballast in the session's slot
        // (a script's effect is replicated as the value itself) fills
        // that, so what follows stays in the master's output buffer.
        let stream = cluster.nodes[owner].raw(&["KEYS", &format!("es:*:stream:{session}")]);
        let tag = &stream[stream.find('{').unwrap()..=stream.find('}').unwrap()];
        cluster.nodes[replica].freeze();
        let ballast = format!("es:{tag}:ballast");
        let script = "redis.call('SET', KEYS[1], string.rep('x', tonumber(ARGV[1]))) return 1";
        assert!(cluster.nodes[owner].raw(&["EVAL", script, "1", &ballast, "33554432"]).contains('1'));
        let during = games.place_tower(command()).await.map(|r| r.into_inner().version);
        cluster.nodes[owner].kill();
        cluster.nodes[replica].resume();
        let killed = Instant::now();

        match acks {
            "0" => {
                let acked = during.expect("acknowledged by the master alone");
                // The failover is over when another command succeeds.
                loop {
                    assert!(killed.elapsed() < Duration::from_secs(30), "no failover within 30 s");
                    if place(&mut games, &session, &ann, "arrow", 2, 1).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let history = fleet.game_events(&session).await;
                eprintln!(
                    "without replica acks: the tower at (1,1) was acknowledged as version {acked}; after the failover it is {}",
                    if placed_at(&history, 1, 1) == 0 { "gone" } else { "there" }
                );
                assert_eq!(placed_at(&history, 1, 1), 0, "asynchronous replication: the stalled replica never had it");
            }
            _ => {
                let status = during.expect_err("not acknowledged while no replica holds it");
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                // The promoted replica has no replica of its own until the
                // dead master comes back (as its replica): with one replica
                // per master, writes on that shard wait for it.
                let cluster = fleet.cluster.as_mut().unwrap();
                tokio::time::sleep(Duration::from_secs(3)).await;
                cluster.nodes[owner].restart();
                let mut attempts = 0;
                let version = loop {
                    assert!(killed.elapsed() < Duration::from_secs(30), "no failover within 30 s");
                    attempts += 1;
                    match games.place_tower(command()).await {
                        Ok(r) => break r.into_inner().version,
                        Err(s) => {
                            // ABORTED: an earlier attempt still holds the id (retry later).
                            assert!(matches!(s.code(), Code::Unavailable | Code::Aborted), "{s:?}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                eprintln!(
                    "with REDIS_REPLICA_ACKS=1: refused while unconfirmed, acknowledged as version {version} after {:?} ({attempts} retries)",
                    killed.elapsed()
                );
                let history = fleet.game_events(&session).await;
                assert!(history.iter().any(|(v, _)| *v == version), "the acknowledged retry is in the history");
                assert_eq!(placed_at(&history, 1, 1), 1, "placed exactly once: {history:?}");
            }
        }
    }
}
