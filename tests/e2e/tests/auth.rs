//! Authentication end to end: the real fleet, real tokens, real sessions.

use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_contracts::guardian::v1::*;
use allies_contracts::projector::v1::{GetUserByUsernameRequest, ListUserSessionsRequest, Session};
use allies_contracts::timesquare::v1::WhoAmIRequest;
use allies_contracts::timesquare::v1::player_service_client::PlayerServiceClient;
use allies_e2e::{Fleet, PASSWORD, bearer};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

async fn register(g: &mut GuardianServiceClient<Channel>, name: &str) -> String {
    let r =
        RegisterUserRequest { username: name.into(), email: format!("{name}@example.com"), password: PASSWORD.into() };
    g.register_user(r).await.unwrap().into_inner().user_id
}

async fn login(
    g: &mut GuardianServiceClient<Channel>,
    name: &str,
    password: &str,
) -> Result<AuthenticateUserResponse, Status> {
    g.authenticate_user(AuthenticateUserRequest { username: name.into(), password: password.into() })
        .await
        .map(|r| r.into_inner())
}

async fn whoami(p: &mut PlayerServiceClient<Channel>, token: &str) -> Result<String, Status> {
    p.who_am_i(bearer(WhoAmIRequest {}, token)).await.map(|r| r.into_inner().user_id)
}

/// Asks WhoAmI until it refuses the token; returns how long that took.
async fn refused_within(p: &mut PlayerServiceClient<Channel>, token: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match whoami(p, token).await {
            Err(s) => {
                assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
                return start.elapsed();
            }
            Ok(_) => {
                assert!(start.elapsed() < limit, "token still accepted after {:?}", start.elapsed());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
}

async fn sessions_of(f: &Fleet, user_id: &str, want: usize) -> Vec<Session> {
    let mut q = f.projector().await;
    let admin = f.admin().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = ListUserSessionsRequest { user_id: user_id.into(), limit: 50 };
        let r = q.list_user_sessions(bearer(request, &admin)).await.unwrap();
        let sessions = r.into_inner().sessions;
        if sessions.len() >= want || Instant::now() > deadline {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_call_refresh_reuse_logout() {
    let fleet = Fleet::start(&[("GUARDIAN_BOOTSTRAP_ADMINS", "boss")]);
    let mut g = fleet.guardian().await;
    let mut p = fleet.players().await;
    let pat = register(&mut g, "pat").await;

    // Login, then a protected call on another service.
    let t1 = login(&mut g, "pat", PASSWORD).await.unwrap();
    assert_eq!(t1.user_id, pat);
    assert_eq!(t1.roles, vec!["player"]);
    assert_eq!(t1.token_type, "Bearer");
    assert_eq!(whoami(&mut p, &t1.access_token).await.unwrap(), pat);
    let e = p.who_am_i(WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "no token: {e:?}");

    // Refresh rotates both tokens.
    let t2 =
        g.refresh_token(RefreshTokenRequest { refresh_token: t1.refresh_token.clone() }).await.unwrap().into_inner();
    assert_ne!(t2.refresh_token, t1.refresh_token);
    assert_eq!(t2.session_id, t1.session_id);
    assert_eq!(whoami(&mut p, &t2.access_token).await.unwrap(), pat);

    // Reusing the rotated refresh token revokes the whole session.
    let e = g.refresh_token(RefreshTokenRequest { refresh_token: t1.refresh_token.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("reuse"), "{}", e.message());
    let took = refused_within(&mut p, &t2.access_token, Duration::from_secs(1)).await;
    println!("revoked session refused after {took:?}");
    let e = g.refresh_token(RefreshTokenRequest { refresh_token: t2.refresh_token.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "the current token of a revoked session is dead too");

    // A new login, then logout: the access token is refused within a second.
    let t3 = login(&mut g, "pat", PASSWORD).await.unwrap();
    assert_eq!(whoami(&mut p, &t3.access_token).await.unwrap(), pat);
    let out = g.logout_user(bearer(LogoutUserRequest {}, &t3.access_token)).await.unwrap().into_inner();
    assert_eq!(out.session_id, t3.session_id);
    let took = refused_within(&mut p, &t3.access_token, Duration::from_secs(1)).await;
    println!("logged-out session refused after {took:?}");
    let e = g.refresh_token(RefreshTokenRequest { refresh_token: t3.refresh_token.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // The read models show both sessions' ends and the last login.
    fn status(sessions: &[Session], sid: &str) -> String {
        sessions.iter().find(|s| s.session_id == sid).map(|s| s.status.clone()).unwrap_or_default()
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sessions = sessions_of(&fleet, &pat, 2).await;
    while (status(&sessions, &t1.session_id) != "revoked" || status(&sessions, &t3.session_id) != "logged_out")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        sessions = sessions_of(&fleet, &pat, 2).await;
    }
    assert_eq!(status(&sessions, &t1.session_id), "revoked", "{sessions:?}");
    assert_eq!(status(&sessions, &t3.session_id), "logged_out", "{sessions:?}");
    assert_eq!(sessions[0].session_id, t3.session_id, "newest first");
    let user = fleet
        .projector()
        .await
        .get_user_by_username(bearer(
            GetUserByUsernameRequest { username: "PAT".into(), ..Default::default() },
            &fleet.admin().await,
        ))
        .await;
    assert!(user.unwrap().into_inner().user.unwrap().last_login_ms > 0);

    // Roles: players may not change them, admins may.
    let t4 = login(&mut g, "pat", PASSWORD).await.unwrap();
    let change = ChangeUserRolesRequest { user_id: pat.clone(), roles: vec!["player".into(), "admin".into()] };
    let e = g.change_user_roles(bearer(change.clone(), &t4.access_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    register(&mut g, "boss").await;
    let boss = login(&mut g, "boss", PASSWORD).await.unwrap();
    assert!(boss.roles.contains(&"admin".to_owned()), "bootstrap admin: {:?}", boss.roles);
    let r = g.change_user_roles(bearer(change, &boss.access_token)).await.unwrap().into_inner();
    assert_eq!(r.roles, vec!["admin", "player"]);
    let bad = ChangeUserRolesRequest { user_id: pat.clone(), roles: vec!["root".into()] };
    assert_eq!(g.change_user_roles(bearer(bad, &boss.access_token)).await.unwrap_err().code(), Code::InvalidArgument);
    let t5 = g.refresh_token(RefreshTokenRequest { refresh_token: t4.refresh_token }).await.unwrap().into_inner();
    assert_eq!(t5.roles, vec!["admin", "player"], "a refresh carries the new roles");

    // Password change needs the current password; the old one stops working.
    let wrong =
        ChangePasswordRequest { current_password: "nope-nope-1".into(), new_password: "better-horse-10".into() };
    assert_eq!(g.change_password(bearer(wrong, &t5.access_token)).await.unwrap_err().code(), Code::Unauthenticated);
    let weak = ChangePasswordRequest { current_password: PASSWORD.into(), new_password: "short".into() };
    let e = g.change_password(bearer(weak, &t5.access_token)).await.unwrap_err();
    assert_eq!((e.code(), e.message().starts_with("new_password:")), (Code::InvalidArgument, true), "{e:?}");
    let ok = ChangePasswordRequest { current_password: PASSWORD.into(), new_password: "better-horse-10".into() };
    g.change_password(bearer(ok, &t5.access_token)).await.unwrap();
    assert_eq!(login(&mut g, "pat", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    login(&mut g, "pat", "better-horse-10").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_wrong_passwords_fail_alike() {
    let fleet = Fleet::start(&[("LOCKOUT_MAX_FAILURES", "100")]);
    let mut g = fleet.guardian().await;
    register(&mut g, "known").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    // Nine of each, interleaved, compared by their medians: a loaded
    // machine (CI runs two tests at a time, here on a Redis Cluster) slows
    // a few calls of either kind by tens of milliseconds.
    for i in 0..9 {
        let t = Instant::now();
        let a = login(&mut g, "known", "wrong-password-1").await.unwrap_err();
        known.push(t.elapsed());
        let t = Instant::now();
        let b = login(&mut g, &format!("ghost{i}"), "wrong-password-1").await.unwrap_err();
        unknown.push(t.elapsed());
        assert_eq!((a.code(), a.message()), (b.code(), b.message()), "same status and words");
        assert_eq!(a.message(), "invalid username or password");
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[4], unknown[4]);
    println!("median failed login: known user {k:?}, unknown user {u:?}");
    // Both paths run one Argon2id verification; the known one also appends an event.
    assert!(u * 2 >= k && k * 2 >= u, "known {k:?} vs unknown {u:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_and_rate_limits_are_enforced() {
    let fleet = Fleet::start(&[
        ("LOCKOUT_MAX_FAILURES", "3"),
        ("LOCKOUT_SECS", "600"),
        ("AUTH_RATE_PER_USERNAME", "5"),
        ("AUTH_RATE_PER_CLIENT", "13"),
    ]);
    let mut g = fleet.guardian().await;
    // The admin who reads lucy's private status logs in first (one attempt from this client).
    let admin = fleet.admin().await;
    register(&mut g, "lucy").await;

    // Three failures lock the account: the right password is refused (same words).
    for _ in 0..3 {
        assert_eq!(login(&mut g, "lucy", "wrong-password-1").await.unwrap_err().code(), Code::Unauthenticated);
    }
    let e = login(&mut g, "lucy", PASSWORD).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "invalid username or password"));
    let mut q = fleet.projector().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = q
            .get_user_by_username(bearer(
                GetUserByUsernameRequest { username: "lucy".into(), ..Default::default() },
                &admin,
            ))
            .await;
        if let Ok(u) = u
            && u.get_ref().user.as_ref().is_some_and(|u| u.status == "locked")
        {
            assert!(u.into_inner().user.unwrap().locked_until_ms > 0);
            break;
        }
        assert!(Instant::now() < deadline, "lockout never reached the read model");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Lockout events are in the user's stream.
    let stream = fleet.keys("es:{user.*}:stream:*");
    let all: String = stream.lines().map(|k| fleet.raw(&["XRANGE", k, "-", "+"])).collect();
    assert!(all.contains("UserLockedOut") && all.contains("AuthenticationFailed"), "lockout not recorded as events");

    // Per username: 5 attempts a window, then ResourceExhausted with a retry delay.
    for _ in 0..5 {
        assert_eq!(login(&mut g, "max", "wrong-password-1").await.unwrap_err().code(), Code::Unauthenticated);
    }
    let e = login(&mut g, "max", "wrong-password-1").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let delay = e.get_error_details().retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(60), "{delay:?}");

    // Per client: 1 + 4 + 5 attempts counted so far; three more pass, the next is limited.
    for i in 0..3 {
        assert_eq!(
            login(&mut g, &format!("other{i}"), "x-password-1").await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    let e = login(&mut g, "other9", "x-password-1").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("client"), "{}", e.message());
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    sid: &'a str,
    roles: Vec<&'a str>,
    iat: i64,
    exp: i64,
    jti: &'a str,
}

fn pem(der: &[u8]) -> String {
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", STANDARD.encode(der))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misaddressed_tokens_are_refused() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let rng = ring::rand::SystemRandom::new();
    let real = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let forger = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("test-1.pem"), pem(real.as_ref())).unwrap();
    let dir = keys.path().to_str().unwrap().to_owned();
    let fleet = Fleet::start(&[("JWT_KEYS_DIR", &dir), ("ALLIES_ENV", "production")]);
    let mut g = fleet.guardian().await;
    let mut p = fleet.players().await;
    let user = register(&mut g, "vic").await;
    let t = login(&mut g, "vic", PASSWORD).await.unwrap();

    let jwks = g.get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys;
    assert_eq!(jwks.len(), 1);
    assert_eq!((jwks[0].kid.as_str(), jwks[0].alg.as_str(), jwks[0].crv.as_str()), ("test-1", "EdDSA", "Ed25519"));

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let good = Claims {
        iss: "defense-allies-guardian",
        aud: "defense-allies",
        sub: &user,
        sid: &t.session_id,
        roles: vec!["player"],
        iat: now,
        exp: now + 300,
        jti: "j",
    };
    let sign = |claims: &Claims, key: &[u8], kid: &str| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        encode(&h, claims, &EncodingKey::from_ed_der(key)).unwrap()
    };
    // The control: a token we sign with the real key is accepted.
    assert_eq!(whoami(&mut p, &sign(&good, real.as_ref(), "test-1")).await.unwrap(), user);

    let expired = Claims { iat: now - 600, exp: now - 300, ..good_clone(&good) };
    let wrong_aud = Claims { aud: "someone-else", ..good_clone(&good) };
    let wrong_iss = Claims { iss: "evil", ..good_clone(&good) };
    let no_session = Claims { sid: "0190f1a2-0000-7000-8000-000000000000", ..good_clone(&good) };
    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"test-1"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    let hs256 = {
        // Algorithm confusion: HMAC keyed with the public key.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("test-1".into());
        let public = URL_SAFE_NO_PAD.decode(&jwks[0].x).unwrap();
        encode(&h, &good, &EncodingKey::from_secret(&public)).unwrap()
    };
    let cases = [
        ("forged signature", sign(&good, forger.as_ref(), "test-1")),
        ("expired", sign(&expired, real.as_ref(), "test-1")),
        ("alg none", format!("{header_none}.{body}.")),
        ("HS256 with the public key", hs256),
        ("unknown kid", sign(&good, real.as_ref(), "test-2")),
        ("wrong audience", sign(&wrong_aud, real.as_ref(), "test-1")),
        ("wrong issuer", sign(&wrong_iss, real.as_ref(), "test-1")),
        ("unknown session", sign(&no_session, real.as_ref(), "test-1")),
        ("garbage", "not.a.jwt".into()),
    ];
    for (what, token) in cases {
        let e = whoami(&mut p, &token).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
        // Guardian's own protected calls refuse them too.
        let e = g.logout_user(bearer(LogoutUserRequest {}, &token)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "guardian, {what}: {e:?}");
    }
    // None of that ended the real session.
    assert_eq!(whoami(&mut p, &t.access_token).await.unwrap(), user);

    // A token verified once is remembered, but never past its expiry: one
    // inside the clock-skew leeway is accepted, then refused a moment later.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let fading = sign(&Claims { iat: now - 600, exp: now - 4, ..good_clone(&good) }, real.as_ref(), "test-1");
    assert_eq!(whoami(&mut p, &fading).await.unwrap(), user);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(whoami(&mut p, &fading).await.unwrap_err().code(), Code::Unauthenticated);
}

fn good_clone<'a>(c: &Claims<'a>) -> Claims<'a> {
    Claims { roles: c.roles.clone(), ..*c }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_tokens_valid_and_new_keys_are_fetched() {
    let keys = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = |_: u8| pem(ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref());
    std::fs::write(keys.path().join("2026-10.pem"), key(1)).unwrap();
    let dir = keys.path().to_str().unwrap().to_owned();
    let mut fleet = Fleet::start(&[("JWT_KEYS_DIR", &dir), ("ALLIES_ENV", "production")]);
    let mut g = fleet.guardian().await;
    let mut p = fleet.players().await;
    let user = register(&mut g, "rota").await;
    let old = login(&mut g, "rota", PASSWORD).await.unwrap();
    assert_eq!(whoami(&mut p, &old.access_token).await.unwrap(), user, "timesquare fetched the JWKS");

    // Rotate: add a newer key; Guardian restarts and signs with it.
    std::fs::write(keys.path().join("2026-11.pem"), key(2)).unwrap();
    fleet.service_mut("guardian").restart(&[]);
    let mut g = fleet.guardian().await;
    let kids: Vec<String> =
        g.get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, ["2026-10", "2026-11"]);
    let new = login(&mut g, "rota", PASSWORD).await.unwrap();
    let header = jsonwebtoken::decode_header(&new.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("2026-11"), "the new key signs");
    // Timesquare meets an unknown kid, fetches the JWKS again, accepts it.
    assert_eq!(whoami(&mut p, &new.access_token).await.unwrap(), user);
    // Tokens signed by the old key still verify everywhere.
    assert_eq!(whoami(&mut p, &old.access_token).await.unwrap(), user);
    g.logout_user(bearer(LogoutUserRequest {}, &old.access_token)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_are_snapshotted_off_the_command_path_and_load_from_them() {
    let fleet = Fleet::start(&[("SNAPSHOT_EVERY", "4")]);
    let mut g = fleet.guardian().await;
    let id = register(&mut g, "snappy").await;
    for _ in 0..5 {
        login(&mut g, "snappy", PASSWORD).await.unwrap();
    }
    // Version 4 (register + 3 logins) crossed the policy: a snapshot exists.
    let deadline = Instant::now() + Duration::from_secs(5);
    let key = loop {
        let keys = fleet.keys(&format!("es:{{user.*}}:snap:{id}"));
        if let Some(k) = keys.lines().next().filter(|k| !k.is_empty()) {
            break k.to_owned();
        }
        assert!(Instant::now() < deadline, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let version = fleet.raw(&["HGET", &key, "version"]);
    assert_eq!(version, "4", "snapshot at the version that crossed the policy");
    assert_eq!(fleet.raw(&["HGET", &key, "encoding"]), "json+lz4", "compressed by default");
    // Later commands load snapshot + newer events: wrong passwords still count, logins work.
    assert_eq!(login(&mut g, "snappy", "wrong-password-1").await.unwrap_err().code(), Code::Unauthenticated);
    login(&mut g, "snappy", PASSWORD).await.unwrap();
    // A corrupted snapshot is never trusted: the user is rebuilt from events.
    fleet.raw(&["HSET", &key, "data", "{\"profile\":null}"]);
    login(&mut g, "snappy", PASSWORD).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_reaches_the_dead_letters_and_admins_manage_them() {
    use allies_contracts::projector::v1::projector_admin_service_client::ProjectorAdminServiceClient;
    use allies_contracts::projector::v1::{DeadLetterSelection, ListDeadLettersRequest};
    let fleet = Fleet::start(&[
        ("GUARDIAN_BOOTSTRAP_ADMINS", "root"),
        ("SUBSCRIBER_MAX_ATTEMPTS", "2"),
        ("SUBSCRIBER_RETRY_BASE_MS", "50"),
    ]);
    // A UserRegistered whose payload the projection cannot read.
    let bad_id = "0190f1a2-0000-7000-8000-00000000dead";
    fleet.raw(&[
        "XADD", "es:{user.0}:log", "*", "event_id", "0190f1a2-0000-7000-8000-000000000001", "event_type",
        "UserRegistered", "aggregate_type", "user", "aggregate_id", bad_id, "version", "1", "schema_version", "2",
        "content_type", "application/json", "data", "{broken", "metadata",
        r#"{"correlation_id":"0190f1a2-0000-7000-8000-000000000002","causation_id":"0190f1a2-0000-7000-8000-000000000003"}"#,
        "created_at", "1",
    ]);
    let mut g = fleet.guardian().await;
    register(&mut g, "root").await;
    let pat = register(&mut g, "pat").await;
    let root = login(&mut g, "root", PASSWORD).await.unwrap();
    let player = login(&mut g, "pat", PASSWORD).await.unwrap();
    // Other events keep flowing past the poison.
    let mut q = fleet.projector().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while q
        .get_user(bearer(
            allies_contracts::projector::v1::GetUserRequest { user_id: pat.clone(), ..Default::default() },
            &root.access_token,
        ))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "pat never projected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut admin = ProjectorAdminServiceClient::connect(fleet.endpoint("projector")).await.unwrap();
    let list = || ListDeadLettersRequest { projection: "rm.user".into(), limit: 10 };
    let dead = loop {
        let d = admin.list_dead_letters(bearer(list(), &root.access_token)).await.unwrap().into_inner().dead_letters;
        if !d.is_empty() {
            break d;
        }
        assert!(Instant::now() < deadline, "poison never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].aggregate_id.as_str(), dead[0].attempts), (bad_id, 2));
    assert!(dead[0].error.contains("malformed UserRegistered"), "{}", dead[0].error);
    assert_eq!(dead[0].payload, "{broken");

    // The projection manager's view: faulted while a dead letter waits, with the last error.
    let status = admin
        .list_projections(bearer(allies_contracts::projector::v1::ListProjectionsRequest {}, &root.access_token))
        .await
        .unwrap()
        .into_inner();
    let user = status.projections.iter().find(|p| p.name == "rm.user").expect("rm.user listed");
    assert_eq!((user.state.as_str(), user.dead_letters, user.breaker.as_str()), ("faulted", 1, "closed"), "{user:?}");
    assert!(user.processed >= 2 && user.failed >= 2, "{user:?}");
    assert!(user.last_error.contains("malformed UserRegistered"), "{user:?}");
    assert_eq!(user.positions.len(), 16);
    let e = admin
        .list_projections(bearer(allies_contracts::projector::v1::ListProjectionsRequest {}, &player.access_token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Players and anonymous callers may not touch it.
    let e = admin.list_dead_letters(bearer(list(), &player.access_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(admin.list_dead_letters(list()).await.unwrap_err().code(), Code::Unauthenticated);
    let bad =
        DeadLetterSelection { projection: "rm.user".into(), all: true, event_type: "X".into(), ..Default::default() };
    assert_eq!(
        admin.purge_dead_letters(bearer(bad, &root.access_token)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let unknown = ListDeadLettersRequest { projection: "rm.nope".into(), limit: 1 };
    assert_eq!(admin.list_dead_letters(bearer(unknown, &root.access_token)).await.unwrap_err().code(), Code::NotFound);

    // Replaying still fails (the payload is broken); purging by id removes it.
    let all = DeadLetterSelection { projection: "rm.user".into(), all: true, ..Default::default() };
    let r = admin.replay_dead_letters(bearer(all, &root.access_token)).await.unwrap().into_inner();
    assert_eq!((r.replayed, r.failed), (0, 1));
    let one = DeadLetterSelection { projection: "rm.user".into(), ids: vec![dead[0].id.clone()], ..Default::default() };
    assert_eq!(admin.purge_dead_letters(bearer(one, &root.access_token)).await.unwrap().into_inner().purged, 1);
    assert!(
        admin.list_dead_letters(bearer(list(), &root.access_token)).await.unwrap().into_inner().dead_letters.is_empty()
    );
    let status = admin
        .list_projections(bearer(allies_contracts::projector::v1::ListProjectionsRequest {}, &root.access_token))
        .await
        .unwrap()
        .into_inner();
    let user = status.projections.iter().find(|p| p.name == "rm.user").unwrap();
    assert_eq!(user.state, "running", "{user:?}");

    // A damaged entry (its checksum does not match its data) is dead-lettered
    // too, and then never hides the others nor resists a purge.
    fleet.raw(&[
        "XADD", "es:{user.0}:log", "*", "event_id", "0190f1a2-0000-7000-8000-000000000011", "event_type",
        "UserLockedOut", "aggregate_type", "user", "aggregate_id", "0190f1a2-0000-7000-8000-00000000da3a",
        "version", "1", "schema_version", "1", "content_type", "application/json", "data", "{}",
        "checksum", "00000000", "metadata",
        r#"{"correlation_id":"0190f1a2-0000-7000-8000-000000000002","causation_id":"0190f1a2-0000-7000-8000-000000000003"}"#,
        "created_at", "1",
    ]);
    fleet.raw(&[
        "XADD", "es:{user.0}:log", "*", "event_id", "0190f1a2-0000-7000-8000-000000000012", "event_type",
        "UserRegistered", "aggregate_type", "user", "aggregate_id", "0190f1a2-0000-7000-8000-00000000b0b0",
        "version", "1", "schema_version", "2", "content_type", "application/json", "data", "{also broken",
        "metadata",
        r#"{"correlation_id":"0190f1a2-0000-7000-8000-000000000002","causation_id":"0190f1a2-0000-7000-8000-000000000003"}"#,
        "created_at", "1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let d = admin.list_dead_letters(bearer(list(), &root.access_token)).await.unwrap().into_inner().dead_letters;
        if d.len() == 2 {
            break d;
        }
        assert!(Instant::now() < deadline, "both never dead-lettered: {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let damaged = dead.iter().find(|d| d.event_type == "UserLockedOut").expect("the damaged one is listed");
    assert!(damaged.error.contains("checksum"), "{}", damaged.error);
    assert!(dead.iter().any(|d| d.event_type == "UserRegistered"), "the other one is listed too");
    let logs_before = fleet.service("projector").logs().matches("corrupt entry").count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs_after = fleet.service("projector").logs().matches("corrupt entry").count();
    assert_eq!(logs_before, logs_after, "no error logged over and over once it is dead-lettered");
    let one = DeadLetterSelection { projection: "rm.user".into(), ids: vec![damaged.id.clone()], ..Default::default() };
    assert_eq!(admin.purge_dead_letters(bearer(one, &root.access_token)).await.unwrap().into_inner().purged, 1);
    let all = DeadLetterSelection { projection: "rm.user".into(), all: true, ..Default::default() };
    assert_eq!(admin.purge_dead_letters(bearer(all, &root.access_token)).await.unwrap().into_inner().purged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_follow_a_category_and_resume_from_a_cursor() {
    use allies_contracts::projector::v1::FollowRequest;
    use allies_contracts::projector::v1::event_subscription_service_client::EventSubscriptionServiceClient;
    let fleet = Fleet::start(&[("GUARDIAN_BOOTSTRAP_ADMINS", "root")]);
    let mut g = fleet.guardian().await;
    register(&mut g, "root").await;
    let root = login(&mut g, "root", PASSWORD).await.unwrap();
    for name in ["f_one", "f_two", "f_three"] {
        register(&mut g, name).await;
    }
    let mut follow = EventSubscriptionServiceClient::connect(fleet.endpoint("projector")).await.unwrap();
    let request = |from: &str| FollowRequest { category: "user".into(), from: from.into() };
    // From the start: root's registration, its login, then the three users.
    let mut stream = follow.follow(bearer(request("start"), &root.access_token)).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(next_event(&mut stream).await);
    }
    let registered: Vec<&str> =
        seen.iter().filter(|e| e.event_type == "UserRegistered").map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(registered.len(), 4, "{seen:?}");
    let cursor = seen[4].cursor.clone();
    drop(stream);

    // Resume after a disconnect: only what came later, nothing twice.
    register(&mut g, "f_four").await;
    let mut stream = follow.follow(bearer(request(&cursor), &root.access_token)).await.unwrap().into_inner();
    let resumed = next_event(&mut stream).await;
    assert_eq!(resumed.event_type, "UserRegistered");
    assert!(!seen.iter().any(|e| e.event_id == resumed.event_id), "no event twice");
    drop(stream);

    // From now: only new events.
    let mut stream = follow.follow(bearer(request(""), &root.access_token)).await.unwrap().into_inner();
    let five = register(&mut g, "f_five").await;
    assert_eq!(next_event(&mut stream).await.aggregate_id, five);

    // Players may not; bad input is refused.
    let player_id = register(&mut g, "f_player").await;
    let _ = player_id;
    let player = login(&mut g, "f_player", PASSWORD).await.unwrap();
    let e = follow.follow(bearer(request("start"), &player.access_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = follow
        .follow(bearer(FollowRequest { category: "../x".into(), from: String::new() }, &root.access_token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = follow.follow(bearer(request("garbage"), &root.access_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

async fn next_event(
    stream: &mut tonic::Streaming<allies_contracts::projector::v1::FollowedEvent>,
) -> allies_contracts::projector::v1::FollowedEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("an event within 5 s").unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_checker_reports_and_repairs_drift() {
    use allies_contracts::projector::v1::CheckConsistencyRequest;
    use allies_contracts::projector::v1::projector_admin_service_client::ProjectorAdminServiceClient;
    let fleet = Fleet::start(&[("GUARDIAN_BOOTSTRAP_ADMINS", "root")]);
    let mut g = fleet.guardian().await;
    register(&mut g, "root").await;
    let root = login(&mut g, "root", PASSWORD).await.unwrap();
    let a = register(&mut g, "drift_a").await;
    let b = register(&mut g, "drift_b").await;
    register(&mut g, "drift_c").await;
    let mut q = fleet.projector().await;
    for id in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while q
            .get_user(bearer(
                allies_contracts::projector::v1::GetUserRequest { user_id: id.clone(), ..Default::default() },
                &root.access_token,
            ))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut admin = ProjectorAdminServiceClient::connect(fleet.endpoint("projector")).await.unwrap();
    let check = |repair| CheckConsistencyRequest { projection: "rm.user".into(), repair };
    let clean = admin.check_consistency(bearer(check(false), &root.access_token)).await.unwrap().into_inner();
    assert_eq!((clean.checked, clean.drifted.len()), (4, 0), "{clean:?}");

    // Someone edits one read model and deletes another.
    fleet.raw(&["HSET", &format!("rm:user:{a}"), "email", "evil@example.com"]);
    fleet.raw(&["DEL", &format!("rm:user:{b}")]);
    let r = admin.check_consistency(bearer(check(false), &root.access_token)).await.unwrap().into_inner();
    assert_eq!((r.drifted.len(), r.repaired), (2, 0), "{r:?}");
    let problem =
        |id: &str| r.drifted.iter().find(|d| d.aggregate_id == id).map(|d| d.problem.clone()).unwrap_or_default();
    assert!(problem(&a).contains("email") && problem(&a).contains("evil@example.com"), "{}", problem(&a));
    assert!(problem(&b).contains("missing"), "{}", problem(&b));

    let r = admin.check_consistency(bearer(check(true), &root.access_token)).await.unwrap().into_inner();
    assert_eq!(r.repaired, 2);
    let again = admin.check_consistency(bearer(check(false), &root.access_token)).await.unwrap().into_inner();
    assert!(again.drifted.is_empty(), "{again:?}");
    let user = q
        .get_user(bearer(
            allies_contracts::projector::v1::GetUserRequest { user_id: a.clone(), ..Default::default() },
            &root.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.email, "drift_a@example.com");
    let player = {
        register(&mut g, "drift_p").await;
        login(&mut g, "drift_p", PASSWORD).await.unwrap()
    };
    let e = admin.check_consistency(bearer(check(true), &player.access_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_listed_by_filters_sorted_and_paged_from_indexes() {
    use allies_contracts::projector::v1::{GetUserRequest, ListUsersRequest};
    let fleet = Fleet::start(&[("GUARDIAN_BOOTSTRAP_ADMINS", "alpha,delta")]);
    let mut g = fleet.guardian().await;
    let mut q = fleet.projector().await;
    // delta is a bootstrap admin; its logins add no user to the lists.
    let mut admin_token: Option<String> = None;
    let names =
        ["delta", "Alpha", "charlie", "bravo", "alfred", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"];
    for name in names {
        let r = g
            .register_user(RegisterUserRequest {
                username: name.into(),
                email: format!("{name}@example.com"),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let token = match &admin_token {
            Some(t) => t.clone(),
            None => {
                let t = login(&mut g, "delta", PASSWORD).await.unwrap().access_token;
                admin_token = Some(t.clone());
                t
            }
        };
        // Read-your-writes: the index is complete once each write is applied.
        q.get_user(bearer(GetUserRequest { user_id: r.user_id, consistency_token: r.consistency_token }, &token))
            .await
            .unwrap();
    }
    let list = |role: &str, prefix: &str, sort: &str, desc: bool, size: u32, token: &str| ListUsersRequest {
        role: role.into(),
        username_prefix: prefix.into(),
        sort_by: sort.into(),
        descending: desc,
        page_size: size,
        page_token: token.into(),
    };
    let admin = admin_token.clone().unwrap();
    // Registration order, pages of 5 following the tokens.
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let r = q.list_users(bearer(list("", "", "", false, 5, &token), &admin)).await.unwrap().into_inner();
        all.extend(r.users.into_iter().map(|u| u.username));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(all, names, "every user once, in registration order");
    // Newest first.
    let r = q.list_users(bearer(list("", "", "registered_at", true, 3, ""), &admin)).await.unwrap().into_inner();
    assert_eq!(r.users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["kilo", "juliet", "india"]);
    // By username, case-insensitive prefix.
    let r = q.list_users(bearer(list("", "AL", "username", false, 10, ""), &admin)).await.unwrap().into_inner();
    assert_eq!(r.users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["alfred", "Alpha"]);
    let r = q.list_users(bearer(list("", "", "username", true, 2, ""), &admin)).await.unwrap().into_inner();
    assert_eq!(r.users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["kilo", "juliet"]);
    // By role, and a prefix filter on the registration order.
    let r = q.list_users(bearer(list("admin", "", "username", false, 10, ""), &admin)).await.unwrap().into_inner();
    assert_eq!(r.users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["Alpha", "delta"]);
    let r = q.list_users(bearer(list("admin", "d", "", false, 10, ""), &admin)).await.unwrap().into_inner();
    assert_eq!(r.users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["delta"]);
    // A role change moves the user between role indexes.
    let boss = login(&mut g, "delta", PASSWORD).await.unwrap();
    let bravo = q
        .get_user_by_username(bearer(
            GetUserByUsernameRequest { username: "bravo".into(), ..Default::default() },
            &admin,
        ))
        .await
        .unwrap();
    let bravo_id = bravo.into_inner().user.unwrap().user_id;
    g.change_user_roles(bearer(
        ChangeUserRolesRequest { user_id: bravo_id, roles: vec!["admin".into()] },
        &boss.access_token,
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r =
            q.list_users(bearer(list("player", "b", "username", false, 10, ""), &admin)).await.unwrap().into_inner();
        if r.users.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "bravo still listed as a player");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = q.list_users(bearer(list("admin", "b", "username", false, 10, ""), &admin)).await.unwrap().into_inner();
    assert_eq!(r.users.len(), 1);
    // Bad input is refused.
    for bad in [
        list("", "", "email", false, 5, ""),
        list("", "", "", false, 500, ""),
        list("", "", "", false, 5, "xyz"),
        list("a b", "", "", false, 5, ""),
    ] {
        assert_eq!(q.list_users(bearer(bad, &admin)).await.unwrap_err().code(), Code::InvalidArgument);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_rebuild_switches_queries_to_the_new_generation() {
    use allies_contracts::projector::v1::projector_admin_service_client::ProjectorAdminServiceClient;
    use allies_contracts::projector::v1::{GetUserRequest, ListProjectionsRequest, RebuildProjectionRequest};
    let mut fleet = Fleet::start(&[("GUARDIAN_BOOTSTRAP_ADMINS", "root")]);
    let mut g = fleet.guardian().await;
    register(&mut g, "root").await;
    let root = login(&mut g, "root", PASSWORD).await.unwrap();
    let mut ids = Vec::new();
    let mut q = fleet.projector().await;
    for i in 0..20 {
        let r = g
            .register_user(RegisterUserRequest {
                username: format!("bg{i}"),
                email: format!("bg{i}@example.com"),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner();
        q.get_user(bearer(
            GetUserRequest { user_id: r.user_id.clone(), consistency_token: r.consistency_token },
            &root.access_token,
        ))
        .await
        .unwrap();
        ids.push(r.user_id);
    }
    let mut admin = ProjectorAdminServiceClient::connect(fleet.endpoint("projector")).await.unwrap();
    let status = |admin: &mut ProjectorAdminServiceClient<Channel>| {
        let mut admin = admin.clone();
        let token = root.access_token.clone();
        async move {
            let r = admin.list_projections(bearer(ListProjectionsRequest {}, &token)).await.unwrap().into_inner();
            r.projections.into_iter().find(|p| p.name == "rm.user").unwrap()
        }
    };
    assert_eq!((status(&mut admin).await.generation, status(&mut admin).await.namespace.as_str()), (0, "rm"));

    let started = admin
        .rebuild_projection(bearer(RebuildProjectionRequest { projection: "rm.user".into() }, &root.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((started.generation, started.namespace.as_str(), started.group.as_str()), (1, "rm.g1", "rm.user.g1"));
    // While it builds, queries answer from the live generation.
    q.get_user(bearer(GetUserRequest { user_id: ids[0].clone(), ..Default::default() }, &root.access_token))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(&mut admin).await;
        if s.generation == 1 && s.state == "running" {
            assert_eq!((s.namespace.as_str(), s.group.as_str(), s.rebuilding_generation), ("rm.g1", "rm.user.g1", 0));
            break;
        }
        assert!(Instant::now() < deadline, "rebuild never switched: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Queries now read the new namespace: the old one no longer matters.
    for id in &ids {
        assert!(fleet.raw(&["EXISTS", &format!("rm.g1:user:{id}")]).starts_with(":1"), "{id} not rebuilt");
        fleet.raw(&["DEL", &format!("rm:user:{id}")]);
    }
    let u = q
        .get_user(bearer(GetUserRequest { user_id: ids[3].clone(), ..Default::default() }, &root.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(u.username, "bg3");
    // New writes reach the new generation, read-your-writes included.
    let r = g
        .register_user(RegisterUserRequest {
            username: "after".into(),
            email: "after@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let u = q
        .get_user(bearer(
            GetUserRequest { user_id: r.user_id, consistency_token: r.consistency_token },
            &root.access_token,
        ))
        .await
        .unwrap();
    assert_eq!(u.into_inner().user.unwrap().username, "after");
    // A restarted projector picks the live generation up from Redis.
    fleet.service_mut("projector").restart(&[]);
    let mut q = fleet.projector().await;
    let u = q
        .get_user(bearer(GetUserRequest { user_id: ids[5].clone(), ..Default::default() }, &root.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(u.username, "bg5", "reads the rebuilt generation after a restart");
    let mut admin = ProjectorAdminServiceClient::connect(fleet.endpoint("projector")).await.unwrap();
    // A second rebuild goes to generation 2.
    let again = admin
        .rebuild_projection(bearer(RebuildProjectionRequest { projection: "rm.user".into() }, &root.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.generation, 2);
}

/// A removed role stops working on every service as fast as a logout does
/// (the token still names it until it expires; the services read the roles
/// in force with the session's status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_role_stops_working_on_every_service_within_a_second() {
    use allies_contracts::command::v1::GetConfigurationRequest;
    use allies_contracts::command::v1::configuration_service_client::ConfigurationServiceClient;
    use allies_contracts::projector::v1::ListProjectionsRequest;
    use allies_contracts::timesquare::v1::SessionRequest;
    let fleet = Fleet::start(&[]);
    let admin = fleet.admin().await;
    let mut g = fleet.guardian().await;
    let dee = register(&mut g, "demoted").await;
    let roles = |roles: &[&str]| ChangeUserRolesRequest {
        user_id: dee.clone(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    g.change_user_roles(bearer(roles(&["player", "admin"]), &admin)).await.expect("promote");
    let token = fleet.login("demoted").await.access_token;
    // An admin on every service.
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    let mut projector = fleet.projector_admin().await;
    let mut games = allies_contracts::timesquare::v1::game_service_client::GameServiceClient::new(
        fleet.channel("timesquare").await,
    );
    config.get_configuration(bearer(GetConfigurationRequest {}, &token)).await.expect("command: admin");
    projector.list_projections(bearer(ListProjectionsRequest {}, &token)).await.expect("projector: admin");
    let other = ChangeUserRolesRequest { user_id: dee.clone(), roles: vec!["player".into(), "admin".into()] };
    g.change_user_roles(bearer(other, &token)).await.expect("guardian: admin");

    g.change_user_roles(bearer(roles(&["player"]), &admin)).await.expect("demote");
    let demoted = Instant::now();
    let gone = |code: Code| code == Code::Unauthenticated || code == Code::PermissionDenied;
    loop {
        let c = config
            .get_configuration(bearer(GetConfigurationRequest {}, &token))
            .await
            .map(|_| ())
            .map_err(|s| s.code());
        let p = projector
            .list_projections(bearer(ListProjectionsRequest {}, &token))
            .await
            .map(|_| ())
            .map_err(|s| s.code());
        // An admin call with no lasting effect: unlocking an account that is not locked.
        let unlock = UnlockUserRequest { user_id: dee.clone() };
        let gd = g.unlock_user(bearer(unlock, &token)).await.map(|_| ()).map_err(|s| s.code());
        let t = games
            .verify_replay(bearer(SessionRequest { session_id: uuid::Uuid::now_v7().to_string() }, &token))
            .await
            .map(|_| ())
            .map_err(|s| s.code());
        if [c, p, gd, t].iter().all(|r| matches!(r, Err(code) if gone(*code))) {
            break;
        }
        assert!(
            demoted.elapsed() < Duration::from_secs(1),
            "still an admin somewhere after {:?}: {:?}",
            demoted.elapsed(),
            [c, p, gd, t]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("a removed role stopped working on every service {:?} after the change", demoted.elapsed());
    // A fresh login carries the roles in force, and works.
    let fresh = fleet.login("demoted").await;
    assert_eq!(fresh.roles, vec!["player".to_owned()]);
    let e = config.get_configuration(bearer(GetConfigurationRequest {}, &fresh.access_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}
