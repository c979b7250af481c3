//! Measures Redis memory after registering N users through the real fleet
//! (guardian + projector binaries, real gRPC, Argon2id hashing and all).
//!
//!     cargo build --workspace --bins
//!     cargo run -p allies-e2e --example user_memory -- 10000 [redis-server args...]
//!
//! e.g. `-- 10000 --stream-node-max-bytes 4096` to compare Redis settings.

use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::RegisterUserRequest;
use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_testkit::{RedisServer, ServiceProcess};
use tokio::task::JoinSet;

fn info_field(redis: &RedisServer, section: &str, field: &str) -> u64 {
    let info = redis.raw(&["INFO", section]);
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn memory_usage(redis: &RedisServer, key: &str) -> u64 {
    redis.raw(&["MEMORY", "USAGE", key, "SAMPLES", "0"]).trim_start_matches(':').trim().parse().unwrap_or(0)
}

fn scan(redis: &RedisServer, pattern: &str, limit: usize) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply = redis.raw(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]);
        let mut lines = reply.lines();
        cursor = lines.next().unwrap_or("0").to_owned();
        keys.extend(lines.map(str::to_owned));
        if cursor == "0" || keys.len() >= limit {
            keys.truncate(limit);
            return keys;
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let extra: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let redis = RedisServer::start_with(&extra);
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("RUST_LOG", "warn")];
    let guardian = ServiceProcess::start("guardian", "GUARDIAN_LISTEN_ADDR", &env);
    let projector = ServiceProcess::start("projector", "PROJECTOR_LISTEN_ADDR", &env);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = info_field(&redis, "memory", "used_memory");

    let client = GuardianServiceClient::connect(guardian.endpoint()).await.expect("connect guardian");
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let workers = 16;
    for w in 0..workers {
        let mut c = client.clone();
        tasks.spawn(async move {
            for i in (w..n).step_by(workers) {
                let r = RegisterUserRequest {
                    username: format!("player{i:06}"),
                    email: format!("player{i:06}@example.com"),
                    password: format!("correct-horse-{i}"),
                };
                c.register_user(r).await.expect("register");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("worker");
    }
    let took = started.elapsed();
    // Wait until the projector has built every read model.
    let deadline = Instant::now() + Duration::from_secs(120);
    while scan(&redis, "rm:user:*", n).len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let used = info_field(&redis, "memory", "used_memory");
    let streams = scan(&redis, "es:*:stream:*", 200);
    let models = scan(&redis, "rm:user:*", 200);
    let avg = |keys: &[String]| keys.iter().map(|k| memory_usage(&redis, k)).sum::<u64>() / keys.len().max(1) as u64;
    let logs: u64 = scan(&redis, "es:*:log", 10_000).iter().map(|k| memory_usage(&redis, k)).sum();
    println!(
        "redis args:                 {}",
        if extra.is_empty() { "(defaults)".to_owned() } else { extra.join(" ") }
    );
    println!(
        "users registered:           {n} in {:.1} s ({:.0}/s, Argon2id included)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    println!(
        "used_memory delta:          {:.1} MiB ({} B/user)",
        (used - baseline) as f64 / 1048576.0,
        (used - baseline) / n as u64
    );
    println!("avg aggregate stream:       {} B", avg(&streams));
    println!("avg user read model:        {} B", avg(&models));
    let rss = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
            })
            .unwrap_or_default()
    };
    println!("guardian RSS:               {}", rss(guardian.pid()));
    println!("projector RSS:              {}", rss(projector.pid()));
    println!("partition logs (all):       {:.1} MiB ({} B/event)", logs as f64 / 1048576.0, logs / n as u64);
}
