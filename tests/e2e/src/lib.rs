//! End-to-end tests live in `tests/`. This library starts the whole fleet —
//! a private Redis and the four real service binaries, each on free ports —
//! and gives the tests one [`Fleet`] with clients and the steps every test
//! needs (register, log in, become admin, wait for a read model).

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_contracts::guardian::v1::{AuthenticateUserRequest, AuthenticateUserResponse, RegisterUserRequest};
use allies_contracts::projector::v1::projector_admin_service_client::ProjectorAdminServiceClient;
use allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient;
use allies_contracts::projector::v1::{GetUserRequest, User};
use allies_contracts::timesquare::v1::player_service_client::PlayerServiceClient;
use allies_testkit::{RedisServer, ServiceProcess};

pub mod game;
pub mod matchmaking;
pub mod otlp;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// In start order: guardian first (the others verify tokens against its
/// JWKS), the projector before the command service (which drives its admin API).
pub const SERVICES: [&str; 4] = ["guardian", "timesquare", "projector", "command"];
/// The password every test user gets.
pub const PASSWORD: &str = "correct-horse-9";
/// The admin the fleet bootstraps for its own checks (see [`Fleet::admin`]).
pub const FLEET_ADMIN: &str = "fleet-admin";

pub struct Fleet {
    /// The single Redis (None: the fleet runs on `cluster`).
    redis: Option<RedisServer>,
    /// A three-master Redis Cluster (`ALLIES_E2E_REDIS=cluster`).
    pub cluster: Option<allies_testkit::RedisCluster>,
    pub services: Vec<ServiceProcess>,
    admin_token: Mutex<Option<String>>,
}

/// Every scenario also proves the Redis users (deploy/k8s/base/redis-acl/acl-rules)
/// let the fleet do what it did: a denial Redis logged fails the test that
/// caused it, naming user, key or command.
impl Drop for Fleet {
    fn drop(&mut self) {
        let denied = self.acl_denials();
        if std::thread::panicking() {
            // Maybe the cause of the failure: said, not asserted twice.
            if !denied.is_empty() {
                eprintln!("Redis refused a service (deploy/k8s/base/redis-acl/acl-rules): {denied:#?}");
            }
            return;
        }
        assert!(denied.is_empty(), "Redis refused a service (deploy/k8s/base/redis-acl/acl-rules): {denied:#?}");
    }
}

impl Fleet {
    /// What Redis's ACL LOG holds: `user: reason object`, once each.
    pub fn acl_denials(&self) -> Vec<String> {
        let logs: Vec<String> = match (&self.redis, &self.cluster) {
            (Some(r), _) if r.alive() => vec![r.raw(&["ACL", "LOG"])],
            (_, Some(c)) => c.nodes.iter().filter(|n| n.alive()).map(|n| n.raw(&["ACL", "LOG"])).collect(),
            _ => Vec::new(),
        };
        let mut out = std::collections::BTreeSet::new();
        for log in logs {
            let lines: Vec<&str> = log.lines().collect();
            let after = |i: usize, key: &str| {
                lines[i..].iter().position(|l| *l == key).and_then(|p| lines.get(i + p + 1)).copied().unwrap_or("?")
            };
            for (i, _) in lines.iter().enumerate().filter(|(_, l)| **l == "count") {
                out.insert(format!("{}: {} {}", after(i, "username"), after(i, "reason"), after(i, "object")));
            }
        }
        out.into_iter().collect()
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII token"));
    r
}

impl Fleet {
    /// Starts Redis and every service with `extra_env`. `FLEET_ADMIN` is
    /// always among the bootstrap admins (added to any the test names).
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        Self::start_only(&SERVICES, extra_env)
    }

    /// Starts Redis and only the services `names` (guardian first).
    /// With `ALLIES_E2E_REDIS=cluster`, on a three-master Redis Cluster
    /// instead: the same scenarios, run against the cluster.
    pub fn start_only(names: &[&str], extra_env: &[(&str, &str)]) -> Self {
        if std::env::var("ALLIES_E2E_REDIS").is_ok_and(|v| v == "cluster") {
            let cluster = allies_testkit::RedisCluster::start();
            let services = Self::start_services_at(&cluster.url(), extra_env, names);
            return Self { redis: None, cluster: Some(cluster), services, admin_token: Mutex::new(None) };
        }
        let redis = RedisServer::start();
        let services = Self::start_services(&redis, extra_env, names);
        Self { redis: Some(redis), cluster: None, services, admin_token: Mutex::new(None) }
    }

    /// The services `names` on `redis`, reached at `url` (its TLS port,
    /// say); the harness keeps its own plain access to it.
    pub fn start_on(redis: RedisServer, url: &str, names: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let services = Self::start_services_at(url, extra_env, names);
        Self { redis: Some(redis), cluster: None, services, admin_token: Mutex::new(None) }
    }

    /// The services `names` on `cluster` (the caller chose its shape).
    pub fn start_on_cluster(cluster: allies_testkit::RedisCluster, names: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let services = Self::start_services_at(&cluster.url(), extra_env, names);
        Self { redis: None, cluster: Some(cluster), services, admin_token: Mutex::new(None) }
    }

    /// The fleet's single Redis (a fleet on a cluster has none).
    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("a fleet on one Redis (this one runs on a cluster)")
    }

    pub fn redis_mut(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("a fleet on one Redis (this one runs on a cluster)")
    }

    /// Runs a single-key command on the fleet's Redis (on a cluster, the
    /// node that owns the key); the reply as `redis-cli` prints it.
    pub fn raw(&self, args: &[&str]) -> String {
        match (&self.redis, &self.cluster) {
            (Some(r), _) => r.raw(args),
            (None, Some(c)) => c.raw(args),
            (None, None) => unreachable!("a fleet has a Redis"),
        }
    }

    /// The keys matching `pattern` (on a cluster, on every node), one per line.
    pub fn keys(&self, pattern: &str) -> String {
        match (&self.redis, &self.cluster) {
            (Some(r), _) => r.raw(&["KEYS", pattern]),
            (None, Some(c)) => c.keys(pattern).join("\n"),
            (None, None) => unreachable!("a fleet has a Redis"),
        }
    }

    /// Where the fleet's Redis is (a cluster's node list).
    pub fn redis_url(&self) -> String {
        match (&self.redis, &self.cluster) {
            (Some(r), _) => r.url(),
            (None, Some(c)) => c.url(),
            (None, None) => unreachable!("a fleet has a Redis"),
        }
    }

    /// Starts `names` (guardian first: the others verify tokens against its JWKS).
    pub fn start_services(redis: &RedisServer, extra_env: &[(&str, &str)], names: &[&str]) -> Vec<ServiceProcess> {
        Self::start_services_at(&redis.url(), extra_env, names)
    }

    /// As [`start_services`](Self::start_services) on the Redis at `url`.
    pub fn start_services_at(url: &str, extra_env: &[(&str, &str)], names: &[&str]) -> Vec<ServiceProcess> {
        let admins = match extra_env.iter().find(|(k, _)| *k == "GUARDIAN_BOOTSTRAP_ADMINS") {
            Some((_, v)) => format!("{v},{FLEET_ADMIN}"),
            None => FLEET_ADMIN.to_owned(),
        };
        let mut services: Vec<ServiceProcess> = Vec::new();
        for name in names {
            let guardian = services.first().map(|g| g.endpoint()).unwrap_or_default();
            let projector = services.iter().find(|s| s.name == "projector").map(|p| p.endpoint()).unwrap_or_default();
            let mut env = vec![("REDIS_URL", url), ("SHUTDOWN_GRACE_SECS", "5"), ("GUARDIAN_URL", &guardian)];
            if !projector.is_empty() {
                env.push(("PROJECTOR_URL", &projector));
            }
            env.extend(extra_env.iter().filter(|(k, _)| *k != "GUARDIAN_BOOTSTRAP_ADMINS"));
            env.push(("GUARDIAN_BOOTSTRAP_ADMINS", &admins));
            services.push(ServiceProcess::start(name, &format!("{}_LISTEN_ADDR", name.to_uppercase()), &env));
        }
        services
    }

    pub fn service(&self, name: &str) -> &ServiceProcess {
        self.services.iter().find(|s| s.name == name).expect("service in fleet")
    }

    pub fn service_mut(&mut self, name: &str) -> &mut ServiceProcess {
        self.services.iter_mut().find(|s| s.name == name).expect("service in fleet")
    }

    pub fn endpoint(&self, name: &str) -> String {
        self.service(name).endpoint()
    }

    pub async fn channel(&self, name: &str) -> Channel {
        Channel::from_shared(self.endpoint(name)).expect("endpoint").connect().await.expect("connect")
    }

    pub async fn guardian(&self) -> GuardianServiceClient<Channel> {
        GuardianServiceClient::new(self.channel("guardian").await)
    }

    pub async fn projector(&self) -> ProjectorQueryServiceClient<Channel> {
        ProjectorQueryServiceClient::new(self.channel("projector").await)
    }

    pub async fn projector_admin(&self) -> ProjectorAdminServiceClient<Channel> {
        ProjectorAdminServiceClient::new(self.channel("projector").await)
    }

    pub async fn players(&self) -> PlayerServiceClient<Channel> {
        PlayerServiceClient::new(self.channel("timesquare").await)
    }

    /// Registers `name` (email `<name>@example.com`, [`PASSWORD`]); returns
    /// the user id. As a real client does, it retries what the service
    /// answers UNAVAILABLE ("retry shortly": a Redis reply slower than the
    /// store's timeout on a loaded test machine), with the same
    /// `x-command-id`, so a retry of a registration that was written
    /// answers the first result instead of "taken".
    pub async fn register(&self, name: &str) -> String {
        let command_id = uuid::Uuid::now_v7().to_string();
        let mut attempts = 0;
        loop {
            let mut r = Request::new(RegisterUserRequest {
                username: name.into(),
                email: format!("{name}@example.com"),
                password: PASSWORD.into(),
            });
            r.metadata_mut().insert("x-command-id", command_id.parse().expect("a uuid is a header value"));
            attempts += 1;
            match self.guardian().await.register_user(r).await {
                Ok(reply) => return reply.into_inner().user_id,
                Err(s) if s.code() == Code::Unavailable && attempts < 5 => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(s) => panic!("register {name}: {s:?}"),
            }
        }
    }

    /// Logs `name` in with `password`.
    pub async fn login_with(&self, name: &str, password: &str) -> Result<AuthenticateUserResponse, Status> {
        let r = AuthenticateUserRequest { username: name.into(), password: password.into() };
        self.guardian().await.authenticate_user(r).await.map(|r| r.into_inner())
    }

    /// Logs `name` in with [`PASSWORD`].
    pub async fn login(&self, name: &str) -> AuthenticateUserResponse {
        self.login_with(name, PASSWORD).await.unwrap_or_else(|s| panic!("login {name}: {s:?}"))
    }

    /// Registers and logs in a player; returns (user id, access token).
    pub async fn player(&self, name: &str) -> (String, String) {
        let id = self.register(name).await;
        (id, self.login(name).await.access_token)
    }

    /// An admin's access token: [`FLEET_ADMIN`], registered and logged in on first use.
    pub async fn admin(&self) -> String {
        if let Some(t) = self.admin_token.lock().expect("lock").clone() {
            return t;
        }
        let guardian_id = self.register(FLEET_ADMIN).await;
        let _ = guardian_id;
        let token = self.login(FLEET_ADMIN).await.access_token;
        *self.admin_token.lock().expect("lock") = Some(token.clone());
        token
    }

    /// Polls GetUser (as the fleet admin) until the read model has the user (10 s).
    pub async fn wait_for_user(&self, id: &str) -> User {
        let token = self.admin().await;
        let mut client = self.projector().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match client.get_user(bearer(GetUserRequest { user_id: id.into(), ..Default::default() }, &token)).await {
                Ok(r) => return r.into_inner().user.expect("user in response"),
                Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(s) => panic!("GetUser({id}) failed: {s:?}"),
            }
        }
    }

    /// Total entries in the `user` partition logs.
    pub fn user_log_len(&self) -> usize {
        (0..16)
            .map(|p| {
                let r = self.raw(&["XLEN", &format!("es:{{user.{p}}}:log")]);
                r.trim().trim_start_matches(':').parse::<usize>().unwrap_or(0)
            })
            .sum()
    }

    /// Runs the real CLI against this fleet with `home` as `ALLIES_HOME`.
    pub fn cli(&self, home: &std::path::Path, args: &[&str]) -> Output {
        Command::new(allies_testkit::binary("allies"))
            .env("ALLIES_HOME", home)
            .env_remove("ALLIES_PROFILE")
            .args(["--guardian", &self.endpoint("guardian"), "--projector", &self.endpoint("projector")])
            .args(["--timesquare", &self.endpoint("timesquare"), "--command-url", &self.endpoint("command")])
            .args(args)
            .output()
            .expect("run allies")
    }
}
