//! Measures login (AuthenticateUser) latency and throughput through the real
//! Guardian binary: Argon2id verification, two event appends, JWT signing.
//!
//!     cargo build --workspace --bins --examples
//!     target/debug/examples/login_latency [logins]

use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_contracts::guardian::v1::{AuthenticateUserRequest, RegisterUserRequest};
use allies_testkit::{RedisServer, ServiceProcess};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("RUST_LOG", "warn"),
        ("AUTH_RATE_PER_USERNAME", "1000000"),
        ("AUTH_RATE_PER_CLIENT", "1000000"),
    ];
    let guardian = ServiceProcess::start("guardian", "GUARDIAN_LISTEN_ADDR", &env);
    let mut g = GuardianServiceClient::connect(guardian.endpoint()).await.expect("connect");
    let register = RegisterUserRequest {
        username: "bench".into(),
        email: "bench@example.com".into(),
        password: "correct-horse-9".into(),
    };
    g.register_user(register).await.expect("register");
    let login = AuthenticateUserRequest { username: "bench".into(), password: "correct-horse-9".into() };

    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        g.authenticate_user(login.clone()).await.expect("login");
        lat.push(t.elapsed());
    }
    lat.sort();
    println!("sequential logins: {n}");
    println!("  p50 {:?}  p90 {:?}  p99 {:?}  max {:?}", pct(&lat, 0.5), pct(&lat, 0.9), pct(&lat, 0.99), lat[n - 1]);

    let workers = 8;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let mut c = g.clone();
        let l = login.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..n / workers {
                if let Err(s) = c.authenticate_user(l.clone()).await {
                    failed.push(s.code());
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.expect("worker"));
    }
    println!("  failed: {} {:?}", failed.len(), failed.iter().take(5).collect::<Vec<_>>());
    let done = (n / workers) * workers;
    println!(
        "concurrent logins: {done} from {workers} clients in {:?} = {:.0}/s",
        t.elapsed(),
        done as f64 / t.elapsed().as_secs_f64()
    );
}
