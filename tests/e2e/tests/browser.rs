//! The web client in a real browser: Debian's Chromium, driven by
//! playwright-core (`web/e2e/browser.mjs`), plays through the edge (nginx,
//! TLS, HTTP/2, gRPC-Web) against the real fleet with two timesquare
//! replicas — two players, a spectator, a replica killed mid-wave,
//! matchmaking, refusals — and prints what it measured. Screenshots go to
//! `target/browser-artifacts/`.
//!
//! Needs `web/dist` and `web/node_modules` (dev/test builds them: `npm ci`,
//! `npm run build` in web/) and `chromium` (dev/test installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use allies_e2e::Fleet;
use allies_testkit::edge::{self, Edge};

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

#[test]
fn players_spectators_and_matchmaking_in_chromium_through_the_edge() {
    let web = web();
    assert!(
        web.join("dist/app.js").exists() && web.join("node_modules/playwright-core").exists(),
        "the web client is not built: run dev/test (or `npm ci && npm run build` in web/)"
    );
    let chromium = chromium().expect("chromium is not installed: run dev/test (it installs Debian's chromium)");
    assert!(edge::available(), "nginx is not installed: run dev/test");

    // 12 ms ticks (four times the real pace): a wave lasts seconds, long
    // enough to kill a replica in; frames every 50 ms; matchmaking passes
    // every 50 ms with 20 s to confirm.
    let env = [
        ("TIMESQUARE_TICK_MS", "12"),
        ("TIMESQUARE_SETTLE_MS", "20"),
        ("TIMESQUARE_FRAME_MS", "50"),
        ("TIMESQUARE_MM_INTERVAL_MS", "50"),
        ("TIMESQUARE_MM_CONFIRM_SECS", "20"),
        ("TIMESQUARE_MM_FILL_AFTER_MS", "1000"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
        // 20 s access tokens: every page must refresh its own during the run.
        ("ACCESS_TOKEN_TTL_SECS", "20"),
    ];
    let fleet = Fleet::start(&env);
    let second = fleet.replica("timesquare", &env);
    let replicas = [fleet.service("timesquare"), &second];
    let timesquare = replicas.iter().map(|r| r.endpoint()).collect::<Vec<_>>().join(",");
    let edge = Edge::start(
        &[
            ("guardian", fleet.endpoint("guardian")),
            ("timesquare", timesquare),
            ("projector", fleet.endpoint("projector")),
            ("command", fleet.endpoint("command")),
        ],
        &web.join("dist"),
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    // Each replica as the script may kill it: pid and the ops port's /metrics.
    let replica_list =
        replicas.iter().map(|r| format!("{}@http://{}", r.pid(), r.http_addr)).collect::<Vec<_>>().join(",");

    let out = Command::new("node")
        .arg("e2e/browser.mjs")
        .current_dir(&web)
        .env("ALLIES_EDGE_URL", edge.url())
        .env("ALLIES_CHROMIUM", &chromium)
        .env("ALLIES_TIMESQUARE_REPLICAS", replica_list)
        .env("ALLIES_ARTIFACTS", &artifacts)
        .output()
        .expect("node runs the browser scenarios");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser scenarios failed ({}):\n{stdout}\n{stderr}\nedge: {}\ntimesquare replicas:\n{}",
        out.status,
        edge.logs(),
        replicas.iter().map(|r| r.logs()).collect::<Vec<_>>().join("\n----\n")
    );
    // The floor for the page's calls through the edge, in the same run:
    // the same call as native gRPC (tonic, HTTP/2, straight to guardian).
    let (p50, p99) = native_get_jwks(&fleet);
    println!("  the same call as native gRPC (tonic, no edge):      p50 {p50:.2} ms, p99 {p99:.2} ms");
    drop(second);
}

fn native_get_jwks(fleet: &Fleet) -> (f64, f64) {
    use allies_contracts::guardian::v1::GetJwksRequest;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut guardian = fleet.guardian().await;
        for _ in 0..30 {
            guardian.get_jwks(GetJwksRequest {}).await.expect("GetJwks");
        }
        let mut times = Vec::with_capacity(300);
        for _ in 0..300 {
            let t = std::time::Instant::now();
            guardian.get_jwks(GetJwksRequest {}).await.expect("GetJwks");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        (times[150], times[296])
    })
}
