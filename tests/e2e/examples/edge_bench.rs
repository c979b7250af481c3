//! The edge's added latency per call, beside its floor in the same run:
//! the same unary call (guardian's GetJwks: no Redis, no token) made
//! sequentially on one kept-alive connection —
//! 1. native gRPC with tonic (the floor),
//! 2. gRPC-Web straight to the service (HTTP/1.1, curl),
//! 3. gRPC-Web through the edge (nginx: TLS, HTTP/2, curl),
//!
//! and prints p50 / p99 / mean of each. Run:
//! `cargo run -p allies-e2e --example edge_bench [calls]` (nginx installed).

use std::process::Command;
use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::GetJwksRequest;
use allies_e2e::{Fleet, SERVICES};
use allies_testkit::edge::Edge;

fn stats(mut d: Vec<Duration>) -> String {
    d.sort();
    let at = |q: f64| d[((d.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    let mean = d.iter().sum::<Duration>().as_secs_f64() * 1e3 / d.len() as f64;
    format!("p50 {:.3} ms   p99 {:.3} ms   mean {:.3} ms", at(0.5), at(0.99), mean)
}

/// `calls` POSTs of `body` to `url` in one curl (one connection, reused),
/// each transfer's own time.
fn curl_times(url: &str, body: &std::path::Path, calls: usize, extra: &[&str]) -> Vec<Duration> {
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "/dev/null", "-X", "POST", "-H", "content-type: application/grpc-web+proto"]);
    c.args(extra);
    c.arg("--data-binary").arg(format!("@{}", body.display()));
    c.args(["-w", "%{time_total}\\n"]);
    for _ in 0..calls {
        c.arg(url);
    }
    let out = c.output().expect("curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect()
}

#[tokio::main]
async fn main() {
    let calls: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let fleet = Fleet::start_only(&SERVICES[..1], &[]);
    let web = tempfile::tempdir().unwrap();
    let upstreams: Vec<(&str, String)> = SERVICES.iter().map(|s| (*s, fleet.endpoint("guardian"))).collect();
    let edge = Edge::start(&upstreams, web.path());
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("empty.bin");
    std::fs::write(&body, [0u8, 0, 0, 0, 0]).unwrap();
    let path = "/defense_allies.guardian.v1.GuardianService/GetJwks";

    // 1. Native gRPC, one HTTP/2 connection: the floor.
    let mut g = fleet.guardian().await;
    for _ in 0..50 {
        g.get_jwks(GetJwksRequest {}).await.unwrap();
    }
    let mut native = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        g.get_jwks(GetJwksRequest {}).await.unwrap();
        native.push(t.elapsed());
    }
    // 2. gRPC-Web straight to guardian; 3. through the edge.
    let direct = curl_times(&format!("{}{path}", fleet.endpoint("guardian")), &body, calls, &["--http1.1"]);
    let cert = edge.certificate().display().to_string();
    let edge_url = format!("{}{path}", edge.url().replace("127.0.0.1", "localhost"));
    let through = curl_times(&edge_url, &body, calls, &["--http2", "--cacert", &cert]);
    // The first transfer pays the connection (and the TLS handshake): leave it out.
    let (direct, through) = (direct[1..].to_vec(), through[1..].to_vec());

    println!("GetJwks, {calls} sequential calls on one connection (2 cores, debug build unless --release)");
    println!("  native gRPC (tonic, HTTP/2)             {}", stats(native.clone()));
    println!("  gRPC-Web direct (HTTP/1.1, curl)        {}", stats(direct.clone()));
    println!("  gRPC-Web through the edge (TLS, HTTP/2) {}", stats(through.clone()));
    let mean = |d: &[Duration]| d.iter().sum::<Duration>().as_secs_f64() * 1e3 / d.len() as f64;
    println!(
        "  the edge adds {:.3} ms per call over gRPC-Web direct, {:.3} ms over native gRPC",
        mean(&through) - mean(&direct),
        mean(&through) - mean(&native)
    );
}
