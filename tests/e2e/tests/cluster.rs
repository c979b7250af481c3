//! The whole fleet against a real three-master Redis Cluster.

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
        .nodes
        .iter()
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
