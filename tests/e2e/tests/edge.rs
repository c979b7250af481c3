//! The browser's way in: gRPC-Web through the edge (nginx, TLS, HTTP/2, one
//! origin, routed by the gRPC path prefix) to the real services — unary
//! calls, errors, and a server stream whose frames arrive as they happen.
//! The client is curl, speaking the gRPC-Web wire format a browser sends.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use allies_contracts::guardian::v1::{
    AuthenticateUserRequest, AuthenticateUserResponse, RegisterUserRequest, RegisterUserResponse,
};
use allies_contracts::timesquare::v1::game_update::Update;
use allies_contracts::timesquare::v1::{GameUpdate, WatchGameSessionRequest};
use allies_e2e::game::{start_wave, started_game};
use allies_e2e::{Fleet, SERVICES};
use allies_testkit::edge::{self, Edge};
use prost::Message;

/// One gRPC-Web message frame.
fn frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend(body);
    out
}

/// The data frames and the trailer block of a gRPC-Web response body.
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut data, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let Some(payload) = body.get(5..5 + len) else { break };
        if body[0] & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            data.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (data, trailers)
}

struct Reply {
    http_version: String,
    headers: String,
    data: Vec<Vec<u8>>,
    trailers: String,
}

impl Reply {
    /// grpc-message, percent-decoded (as a browser client shows it).
    fn message(&self) -> String {
        let all = format!("{}\n{}", self.headers, self.trailers);
        let raw = all
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case("grpc-message").then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        let (mut out, bytes) = (Vec::new(), raw.as_bytes());
        let mut i = 0;
        while i < bytes.len() {
            match (
                bytes[i],
                bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
            ) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// grpc-status, from the trailers or (trailers-only replies) the headers.
    fn status(&self) -> String {
        let all = format!("{}\n{}", self.headers, self.trailers).to_ascii_lowercase();
        all.lines().find_map(|l| l.trim().strip_prefix("grpc-status:").map(|v| v.trim().to_owned())).unwrap_or_default()
    }
}

fn curl(edge: &Edge, path: &str, body: &[u8], http2: bool, token: Option<&str>, max_secs: u32, dir: &Path) -> Command {
    let request = dir.join("request.bin");
    std::fs::write(&request, body).unwrap();
    let mut c = Command::new("curl");
    c.args(["-sS", "-X", "POST", "--max-time", &max_secs.to_string()])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .arg("--cacert")
        .arg(edge.certificate())
        .args(["-H", "content-type: application/grpc-web+proto", "-H", "x-grpc-web: 1"])
        .arg("--data-binary")
        .arg(format!("@{}", request.display()))
        .arg("-D")
        .arg(dir.join("headers.txt"))
        .arg("-o")
        .arg(dir.join("body.bin"))
        .args(["-w", "%{http_version}"]);
    if let Some(t) = token {
        c.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    // The certificate names localhost.
    c.arg(format!("{}{path}", edge.url().replace("127.0.0.1", "localhost")));
    c
}

fn reply(out: &Output, dir: &Path) -> Reply {
    let body = std::fs::read(dir.join("body.bin")).unwrap_or_default();
    let (data, trailers) = frames(&body);
    Reply {
        http_version: String::from_utf8_lossy(&out.stdout).into_owned(),
        headers: std::fs::read_to_string(dir.join("headers.txt")).unwrap_or_default(),
        data,
        trailers,
    }
}

fn call(edge: &Edge, path: &str, message: &impl Message, http2: bool, dir: &Path) -> Reply {
    let out = curl(edge, path, &frame(message), http2, None, 10, dir).output().expect("curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    reply(&out, dir)
}

fn edge_for(fleet: &Fleet, web: &Path) -> Edge {
    let upstreams: Vec<(&str, String)> = SERVICES.iter().map(|s| (*s, fleet.endpoint(s))).collect();
    Edge::start(&upstreams, web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_answer_grpc_web_through_the_edge_over_http2_and_http1() {
    if !edge::available() {
        panic!("nginx is not installed: dev/test installs it (apt-get install nginx)");
    }
    let fleet = Fleet::start(&[]);
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>Defense Allies</title>").unwrap();
    let edge = edge_for(&fleet, web.path());
    let dir = tempfile::tempdir().unwrap();

    // Unary over HTTP/2: a registration, answered in one data frame and OK trailers.
    let register = RegisterUserRequest {
        username: "webby".into(),
        email: "webby@example.com".into(),
        password: allies_e2e::PASSWORD.into(),
    };
    let path = "/defense_allies.guardian.v1.GuardianService/RegisterUser";
    let r = call(&edge, path, &register, true, dir.path());
    assert_eq!(r.http_version, "2", "the browser's connection is HTTP/2");
    assert_eq!(r.status(), "0", "{} {}", r.headers, r.trailers);
    let registered = RegisterUserResponse::decode(r.data[0].as_slice()).unwrap();
    assert!(!registered.user_id.is_empty());

    // A refusal keeps its code and message (a browser shows the server's words).
    let again = call(&edge, path, &register, true, dir.path());
    assert_eq!(again.status(), "6", "ALREADY_EXISTS: {} {}", again.headers, again.trailers);
    assert_eq!(again.message(), "username 'webby' is already taken", "{}", again.headers);

    // HTTP/1.1 works too (gRPC-Web does not need HTTP/2).
    let login = AuthenticateUserRequest { username: "webby".into(), password: allies_e2e::PASSWORD.into() };
    let r = call(&edge, "/defense_allies.guardian.v1.GuardianService/AuthenticateUser", &login, false, dir.path());
    assert_eq!((r.http_version.as_str(), r.status().as_str()), ("1.1", "0"), "{}", r.headers);
    assert!(!AuthenticateUserResponse::decode(r.data[0].as_slice()).unwrap().access_token.is_empty());

    // The page comes from the same origin.
    let page = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(edge.certificate())
        .arg(format!("{}/", edge.url().replace("127.0.0.1", "localhost")))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains("Defense Allies"), "{}", edge.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_watch_streams_through_the_edge_as_it_happens() {
    let fleet =
        Fleet::start(&[("TIMESQUARE_TICK_MS", "1"), ("TIMESQUARE_SETTLE_MS", "20"), ("TIMESQUARE_FRAME_MS", "25")]);
    let web = tempfile::tempdir().unwrap();
    let edge = edge_for(&fleet, web.path());
    let ann = fleet.gamer("ann").await;
    let mut games = fleet.game().await;
    let session = started_game(&mut games, &[&ann], "meadow", "easy").await;

    // The watch runs through the edge for 4 s; a wave is started meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let watch = WatchGameSessionRequest { session_id: session.clone(), from_version: 0 };
    let path = "/defense_allies.timesquare.v1.GameService/WatchGameSession";
    let running = curl(&edge, path, &frame(&watch), true, Some(&ann.token), 4, dir.path()).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    start_wave(&mut games, &session, &ann).await.unwrap();
    let out = running.wait_with_output().unwrap();
    // curl ends it at --max-time (exit 28): a watch does not end by itself.
    assert_eq!(out.status.code(), Some(28), "{}", String::from_utf8_lossy(&out.stderr));
    let r = reply(&out, dir.path());
    let updates: Vec<GameUpdate> = r.data.iter().map(|d| GameUpdate::decode(d.as_slice()).unwrap()).collect();
    let Some(Update::Snapshot(first)) = updates.first().and_then(|u| u.update.clone()) else {
        panic!("a watch starts with a snapshot: {updates:?}")
    };
    assert_eq!(first.session_id, session);
    assert!(
        updates.iter().any(|u| matches!(&u.update, Some(Update::Event(e)) if e.event_type == "WaveStarted")),
        "the wave's start arrived through the edge while the watch was open"
    );
    assert!(updates.iter().any(|u| matches!(u.update, Some(Update::Frame(_)))), "frames too");
}

/// Behind the edge every browser arrives from the edge's address: the
/// per-client login limit counts the address the edge forwards — from a
/// trusted proxy only (TRUSTED_PROXIES); anyone else's X-Forwarded-For is
/// ignored, so a client cannot pick its own bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_limit_counts_the_forwarded_address_from_a_trusted_proxy_only() {
    async fn attempts(fleet: &Fleet, from: &str, n: usize) -> Vec<tonic::Code> {
        let mut g = fleet.guardian().await;
        let mut codes = Vec::new();
        for i in 0..n {
            let login =
                AuthenticateUserRequest { username: format!("nobody{from}{i}"), password: "wrong-horse-0".into() };
            let mut request = tonic::Request::new(login);
            request.metadata_mut().insert("x-forwarded-for", from.parse().unwrap());
            codes.push(g.authenticate_user(request).await.unwrap_err().code());
        }
        codes
    }
    use tonic::Code::{ResourceExhausted, Unauthenticated};
    let env = [("AUTH_RATE_PER_CLIENT", "3"), ("TRUSTED_PROXIES", "127.0.0.1")];
    let trusted = Fleet::start_only(&["guardian"], &env);
    assert_eq!(
        attempts(&trusted, "10.0.0.1", 4).await,
        [Unauthenticated, Unauthenticated, Unauthenticated, ResourceExhausted]
    );
    assert_eq!(attempts(&trusted, "10.0.0.2", 1).await, [Unauthenticated], "another browser has its own bucket");

    let untrusted = Fleet::start_only(&["guardian"], &env[..1]);
    attempts(&untrusted, "10.0.0.1", 3).await;
    assert_eq!(attempts(&untrusted, "10.0.0.2", 1).await, [ResourceExhausted], "the header is ignored: one bucket");
}
