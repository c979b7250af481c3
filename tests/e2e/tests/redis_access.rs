//! Redis lets in only the fleet: every service signs in as its own ACL user
//! (deploy/k8s/base/redis-acl/acl-rules, loaded by every Redis the test kit starts),
//! may write only its own keys and run no admin command, and a service whose
//! credentials Redis refuses stops at start, naming the problem (never
//! printing the password).

use std::time::{Duration, Instant};

use allies_e2e::{Fleet, SERVICES};
use allies_testkit::{RedisServer, redis_password};

/// `args` as `user` with its test password: the reply, as redis-cli prints it.
fn as_user(redis: &RedisServer, user: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "--user", user, "--no-auth-warning", "--pass"])
        .arg(redis_password(user))
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_signs_in_as_its_own_user_and_nothing_is_denied_in_play() {
    let fleet = Fleet::start(&[]);
    let (_, _token) = fleet.player("acl_ann").await;
    let clients = fleet.raw(&["CLIENT", "LIST"]);
    for name in SERVICES {
        assert!(clients.contains(&format!("user={name} ")), "{name} signs in as itself: {clients}");
    }
    // The harness's own connection is the only one of the default user (on
    // a cluster, replicas and other nodes' tools sign in as it too).
    if fleet.cluster.is_none() {
        let default_users = clients.lines().filter(|l| l.contains("user=default ")).count();
        assert_eq!(default_users, 1, "{clients}");
    }
    // Registration, login, the projection and queries ran: nothing was refused.
    assert_eq!(fleet.raw(&["ACL", "LOG"]), "", "no access was denied");
}

#[test]
fn each_service_writes_only_its_own_keys_and_runs_no_admin_command() {
    let redis = RedisServer::start();
    // Its own keys: yes; another's: NOPERM; reading anything: yes.
    assert_eq!(as_user(&redis, "guardian", &["SET", "rl:auth:client:x", "1"]), "OK");
    assert!(as_user(&redis, "guardian", &["SET", "mm:waiting", "1"]).starts_with("NOPERM"));
    assert!(as_user(&redis, "timesquare", &["HSET", "rm:user:x", "name", "eve"]).starts_with("NOPERM"));
    assert!(as_user(&redis, "projector", &["SET", "cmd:jobs:report", "x"]).starts_with("NOPERM"));
    assert_eq!(as_user(&redis, "projector", &["HSET", "rm:user:x", "name", "eve"]), "1");
    assert_eq!(as_user(&redis, "timesquare", &["HGET", "rm:user:x", "name"]), "eve");
    // The event store is every service's.
    assert!(as_user(&redis, "command", &["XADD", "es:{job.1}:log", "*", "a", "1"]).contains('-'));
    for user in SERVICES {
        for admin in [&["FLUSHALL"][..], &["CONFIG", "GET", "*"], &["KEYS", "*"], &["ACL", "LIST"], &["SHUTDOWN"]] {
            let reply = as_user(&redis, user, admin);
            assert!(reply.starts_with("NOPERM"), "{user} may not {admin:?}: {reply}");
        }
    }
    assert!(redis.alive());
}

#[test]
fn a_service_refused_by_redis_stops_at_start_naming_the_problem() {
    let redis = RedisServer::start();
    for (service, user, password) in
        [("timesquare", "timesquare", "not-the-password"), ("guardian", "nobody", "whatever-it-is")]
    {
        let started = Instant::now();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::process::Command::new(allies_testkit::binary(service))
            .current_dir(root)
            .env("REDIS_URL", redis.url())
            .env("REDIS_USERNAME", user)
            .env("REDIS_PASSWORD", password)
            .env(format!("{}_LISTEN_ADDR", service.to_uppercase()), "127.0.0.1:0")
            .env(format!("{}_HTTP_ADDR", service.to_uppercase()), "127.0.0.1:0")
            .output()
            .expect("run the service");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{service} started with a wrong password");
        assert!(started.elapsed() < Duration::from_secs(10), "it stops at once, no 30 s of retries");
        assert!(err.contains("refused this service's credentials") && err.contains(&format!("`{user}`")), "{err}");
        assert!(err.contains("REDIS_PASSWORD"), "it says what to fix: {err}");
        assert!(!err.contains(password), "the password is never printed: {err}");
    }
}

/// TLS when the URL says `rediss://`: the whole fleet on Redis's TLS port
/// (Redis requiring a client certificate), each service verifying Redis's
/// certificate against the CA; a service given another CA stops at start,
/// naming what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_speaks_tls_to_redis_and_a_service_that_cannot_verify_it_stops_at_start() {
    let files = allies_testkit::tls::TlsFiles::make();
    let port = allies_testkit::free_port();
    let args = files.redis_args(port, "yes");
    let redis = RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let url = format!("rediss://127.0.0.1:{port}");
    let (ca, (cert, key)) = (files.ca(), files.client());
    let tls = [("REDIS_TLS_CA_FILE", ca.as_str()), ("REDIS_TLS_CERT_FILE", &cert), ("REDIS_TLS_KEY_FILE", &key)];
    let fleet = Fleet::start_on(redis, &url, &SERVICES, &tls);
    let (id, _token) = fleet.player("tls_ann").await;
    fleet.wait_for_user(&id).await;
    // Every service's connections came in through the TLS port.
    let clients = fleet.raw(&["CLIENT", "LIST"]);
    for name in SERVICES {
        let theirs: Vec<&str> = clients.lines().filter(|l| l.contains(&format!("user={name} "))).collect();
        assert!(!theirs.is_empty(), "{name} is connected: {clients}");
        assert!(theirs.iter().all(|l| l.contains(&format!("laddr=127.0.0.1:{port} "))), "{name} on TLS: {theirs:?}");
    }
    assert_eq!(fleet.raw(&["ACL", "LOG"]), "", "no access was denied");

    // Another CA: the service cannot verify Redis and says so at once.
    let other = allies_testkit::tls::TlsFiles::make();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let started = Instant::now();
    let out = std::process::Command::new(allies_testkit::binary("guardian"))
        .current_dir(root)
        .env("REDIS_URL", &url)
        .env("REDIS_TLS_CA_FILE", other.ca())
        .env("REDIS_TLS_CERT_FILE", &cert)
        .env("REDIS_TLS_KEY_FILE", &key)
        .env("REDIS_USERNAME", "guardian")
        .env("REDIS_PASSWORD", redis_password("guardian"))
        .env("GUARDIAN_LISTEN_ADDR", "127.0.0.1:0")
        .env("GUARDIAN_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .expect("run guardian");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "guardian started trusting the wrong CA");
    assert!(started.elapsed() < Duration::from_secs(10), "it stops at once, no 30 s of retries");
    assert!(err.contains("TLS to Redis") && err.contains("REDIS_TLS_CA_FILE"), "{err}");
    assert!(!err.contains(&redis_password("guardian")), "the password is never printed: {err}");
}
