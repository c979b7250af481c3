//! Private data stays private: every query needs a token, others see only
//! public profiles, no secret leaves through an event-exposing API; an admin
//! unlocks accounts; players set their display name; CLI profiles.

use std::time::Duration;

use allies_contracts::guardian::v1::*;
use allies_contracts::projector::v1::event_subscription_service_client::EventSubscriptionServiceClient;
use allies_contracts::projector::v1::*;
use allies_e2e::{Fleet, PASSWORD, bearer};
use tonic::{Code, Request};

fn get_user(id: &str) -> GetUserRequest {
    GetUserRequest { user_id: id.into(), ..Default::default() }
}

fn by_name(name: &str) -> GetUserByUsernameRequest {
    GetUserByUsernameRequest { username: name.into(), ..Default::default() }
}

/// Private fields of a user as a query returned them.
fn private_fields(u: &User) -> (String, Vec<String>, String, i64) {
    (u.email.clone(), u.roles.clone(), u.status.clone(), u.last_login_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_needs_a_token_and_others_see_only_the_public_profile() {
    let fleet = Fleet::start(&[]);
    let (alice, alice_token) = fleet.player("alice").await;
    let (_bob, bob_token) = fleet.player("bob").await;
    let admin = fleet.admin().await;
    fleet.wait_for_user(&alice).await;
    let mut q = fleet.projector().await;

    // GetUser and GetUserByUsername: {no token, other player, self, admin}.
    for by_username in [false, true] {
        let ask = |token: Option<&str>| {
            let mut q = q.clone();
            let alice = alice.clone();
            let token = token.map(str::to_owned);
            async move {
                let r = if by_username {
                    let mut r = Request::new(by_name("ALICE"));
                    if let Some(t) = &token {
                        r = bearer(by_name("ALICE"), t);
                    }
                    q.get_user_by_username(r).await
                } else {
                    let mut r = Request::new(get_user(&alice));
                    if let Some(t) = &token {
                        r = bearer(get_user(&alice), t);
                    }
                    q.get_user(r).await
                };
                r.map(|r| r.into_inner().user.unwrap())
            }
        };
        assert_eq!(ask(None).await.unwrap_err().code(), Code::Unauthenticated, "by_username={by_username}");
        let seen_by_bob = ask(Some(&bob_token)).await.unwrap();
        assert_eq!((seen_by_bob.username.as_str(), seen_by_bob.display_name.as_str()), ("alice", "alice"));
        assert!(seen_by_bob.registered_at_ms > 0);
        assert_eq!(private_fields(&seen_by_bob), (String::new(), vec![], String::new(), 0), "public profile only");
        for token in [&alice_token, &admin] {
            let full = ask(Some(token)).await.unwrap();
            assert_eq!(full.email, "alice@example.com");
            assert_eq!((full.roles.as_slice(), full.status.as_str()), (&["player".to_owned()][..], "active"));
            assert!(full.last_login_ms > 0);
        }
    }

    // ListUsers: players see public profiles (their own in full); the role filter is for admins.
    let list = ListUsersRequest { page_size: 50, ..Default::default() };
    assert_eq!(q.list_users(list.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let users = q.list_users(bearer(list.clone(), &bob_token)).await.unwrap().into_inner().users;
    let a = users.iter().find(|u| u.username == "alice").unwrap();
    let b = users.iter().find(|u| u.username == "bob").unwrap();
    assert!(a.email.is_empty() && a.roles.is_empty(), "{a:?}");
    assert_eq!(b.email, "bob@example.com", "a player sees their own email");
    let by_role = ListUsersRequest { role: "admin".into(), ..list.clone() };
    assert_eq!(q.list_users(bearer(by_role.clone(), &bob_token)).await.unwrap_err().code(), Code::PermissionDenied);
    let admins = q.list_users(bearer(by_role, &admin)).await.unwrap().into_inner().users;
    assert_eq!(admins.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), [allies_e2e::FLEET_ADMIN]);
    let all = q.list_users(bearer(list, &admin)).await.unwrap().into_inner().users;
    assert!(all.iter().all(|u| u.email.ends_with("@example.com")), "admins see every email");

    // Sessions: the user and admins only.
    let sessions = ListUserSessionsRequest { user_id: alice.clone(), limit: 10 };
    assert_eq!(q.list_user_sessions(sessions.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let e = q.list_user_sessions(bearer(sessions.clone(), &bob_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let own = q.list_user_sessions(bearer(sessions.clone(), &alice_token)).await.unwrap().into_inner().sessions;
    assert_eq!(own.len(), 1);
    assert_eq!(q.list_user_sessions(bearer(sessions, &admin)).await.unwrap().into_inner().sessions.len(), 1);
    let session = GetSessionRequest { session_id: own[0].session_id.clone() };
    assert_eq!(q.get_session(session.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(q.get_session(bearer(session.clone(), &bob_token)).await.unwrap_err().code(), Code::PermissionDenied);
    q.get_session(bearer(session.clone(), &alice_token)).await.unwrap();
    q.get_session(bearer(session, &admin)).await.unwrap();

    // After logout the token opens nothing.
    fleet.guardian().await.logout_user(bearer(LogoutUserRequest {}, &alice_token)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(q.get_user(bearer(get_user(&alice), &alice_token)).await.unwrap_err().code(), Code::Unauthenticated);
}

/// Every event an API shows: no password hash, no refresh-token hash.
fn assert_no_secret(json: &serde_json::Value) {
    let text = json.to_string();
    assert!(!text.contains("$argon2"), "a password hash leaked: {text}");
    for field in ["passwordHash", "refreshTokenHash"] {
        if let Some(v) = json.get(field) {
            assert_eq!(v, "[redacted]", "{field} leaked: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_events_and_dead_letters_carry_no_secret() {
    let fleet = Fleet::start(&[("SUBSCRIBER_MAX_ATTEMPTS", "1")]);
    let admin = fleet.admin().await;
    let (_carol, carol_token) = fleet.player("carol").await;
    let mut g = fleet.guardian().await;
    let t = fleet.login("carol").await;
    g.refresh_token(RefreshTokenRequest { refresh_token: t.refresh_token }).await.unwrap();
    let change = ChangePasswordRequest { current_password: PASSWORD.into(), new_password: "better-horse-10".into() };
    g.change_password(bearer(change, &carol_token)).await.unwrap();

    let mut follow = EventSubscriptionServiceClient::new(fleet.channel("projector").await);
    let mut seen = std::collections::HashSet::new();
    for category in ["user", "session"] {
        let request = FollowRequest { category: category.into(), from: "start".into() };
        let mut stream = follow.follow(bearer(request, &admin)).await.unwrap().into_inner();
        let want: &[&str] = if category == "user" {
            &["UserRegistered", "PasswordChanged"]
        } else {
            &["SessionStarted", "TokenRefreshed"]
        };
        while !want.iter().all(|t| seen.contains(*t)) {
            let e = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
            assert_eq!(e.content_type, "application/json");
            let json: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
            assert_no_secret(&json);
            if e.event_type == "UserRegistered" {
                assert_eq!(json["passwordHash"], "[redacted]");
                assert_eq!(e.schema_version, 2, "shown at the current schema");
            }
            if e.event_type == "TokenRefreshed" || e.event_type == "SessionStarted" {
                assert_eq!(json["refreshTokenHash"], "[redacted]");
            }
            seen.insert(e.event_type.clone());
        }
    }
    // A category without event contracts is refused, not streamed raw.
    let e = follow.follow(bearer(FollowRequest { category: "nope".into(), from: String::new() }, &admin)).await;
    assert_eq!(e.unwrap_err().code(), Code::InvalidArgument);

    // A dead letter whose payload holds a hash shows it masked.
    fleet.raw(&[
        "XADD", "es:{user.0}:log", "*", "event_id", "0190f1a2-0000-7000-8000-000000000001", "event_type",
        "UserRegistered", "aggregate_type", "user", "aggregate_id", "0190f1a2-0000-7000-8000-00000000beef",
        "version", "1", "schema_version", "2", "content_type", "application/json",
        "data", r#"{"passwordHash":"$argon2id$v=19$leak","roles":5}"#, "metadata",
        r#"{"correlation_id":"0190f1a2-0000-7000-8000-000000000002","causation_id":"0190f1a2-0000-7000-8000-000000000003"}"#,
        "created_at", "1",
    ]);
    let mut admin_api = fleet.projector_admin().await;
    let list = ListDeadLettersRequest { projection: "rm.user".into(), limit: 10 };
    let dead = loop {
        let d = admin_api.list_dead_letters(bearer(list.clone(), &admin)).await.unwrap().into_inner().dead_letters;
        if !d.is_empty() {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!dead[0].payload.contains("$argon2"), "{}", dead[0].payload);
    assert!(dead[0].payload.contains("[redacted]"), "{}", dead[0].payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_unlocks_an_account_and_a_player_names_themself() {
    let fleet = Fleet::start(&[("LOCKOUT_MAX_FAILURES", "2"), ("LOCKOUT_SECS", "600")]);
    let admin = fleet.admin().await;
    let (dora, dora_token) = fleet.player("dora").await;
    let (_eve, eve_token) = fleet.player("eve").await;
    for _ in 0..2 {
        assert_eq!(fleet.login_with("dora", "wrong-password-1").await.unwrap_err().code(), Code::Unauthenticated);
    }
    assert_eq!(fleet.login_with("dora", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated, "locked");
    let mut g = fleet.guardian().await;
    let unlock = UnlockUserRequest { user_id: dora.clone() };
    assert_eq!(g.unlock_user(bearer(unlock.clone(), &eve_token)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(g.unlock_user(unlock.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let bad = UnlockUserRequest { user_id: "nope".into() };
    assert_eq!(g.unlock_user(bearer(bad, &admin)).await.unwrap_err().code(), Code::InvalidArgument);
    g.unlock_user(bearer(unlock.clone(), &admin)).await.unwrap();
    let again = g.unlock_user(bearer(unlock, &admin)).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    fleet.login("dora").await;
    let stream = fleet.keys(&format!("es:{{user.*}}:stream:{dora}"));
    let events = fleet.raw(&["XRANGE", stream.trim(), "-", "+"]);
    assert!(events.contains("UserUnlocked"), "the unlock is an event");

    // Display names: validated, recorded, read back (read-your-writes).
    let empty = SetDisplayNameRequest { display_name: "  ".into() };
    let e = g.set_display_name(bearer(empty, &dora_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let named = SetDisplayNameRequest { display_name: "Dora the Defender".into() };
    let r = g.set_display_name(bearer(named, &dora_token)).await.unwrap().into_inner();
    let mut q = fleet.projector().await;
    let u = q
        .get_user(bearer(GetUserRequest { user_id: dora.clone(), consistency_token: r.consistency_token }, &eve_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(u.display_name, "Dora the Defender", "public, so eve sees it");
    let me = q.get_user(bearer(get_user(&dora), &admin)).await.unwrap().into_inner().user.unwrap();
    assert_eq!(me.status, "active", "unlocked in the read model too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_keeps_an_admin_and_a_player_side_by_side_and_retries_by_command_id() {
    let fleet = Fleet::start(&[("GUARDIAN_BOOTSTRAP_ADMINS", "boss")]);
    let home = tempfile::tempdir().unwrap();
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let register = |name: &str, id: &str| {
        fleet.cli(
            home.path(),
            &[
                "--json",
                "--command-id",
                id,
                "user",
                "register",
                "--username",
                name,
                "--email",
                &format!("{name}@example.com"),
                "--password",
                PASSWORD,
            ],
        )
    };
    let first = ok(register("boss", "reg-boss-1"));
    let again = ok(register("boss", "reg-boss-1"));
    assert_eq!(first, again, "the same command id answers the first result");
    ok(register("pawn", "reg-pawn-1"));
    ok(fleet.cli(home.path(), &["--profile", "admin", "login", "--username", "boss", "--password", PASSWORD]));
    ok(fleet.cli(home.path(), &["login", "--username", "pawn", "--password", PASSWORD]));
    assert!(home.path().join("session.admin.json").exists() && home.path().join("session.json").exists());
    let who = |profile: &str| {
        let out = ok(fleet.cli(home.path(), &["--json", "--profile", profile, "whoami"]));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["roles"].clone()
    };
    assert_eq!(who("admin"), serde_json::json!(["player", "admin"]));
    assert_eq!(who("default"), serde_json::json!(["player"]));
    // The player may not list by role; the admin may.
    let out = fleet.cli(home.path(), &["--json", "user", "list", "--role", "admin"]);
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["code"], "PermissionDenied", "{err}");
    let listed = ok(fleet.cli(home.path(), &["--profile", "admin", "user", "list", "--role", "admin"]));
    assert!(listed.contains("boss"), "{listed}");
    let out = fleet.cli(home.path(), &["--profile", "ghost", "whoami"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--profile ghost login"));
}

/// Polling another player's public profile reveals nothing of their
/// private activity: its version moves only when the profile does.
#[tokio::test]
async fn a_public_profile_does_not_move_on_private_events() {
    use allies_contracts::guardian::v1::SetDisplayNameRequest;
    let fleet = Fleet::start(&[]);
    let (alice, alice_token) = fleet.player("alice").await;
    let (_, bob_token) = fleet.player("bob").await;
    let mut q = fleet.projector().await;
    let seen =
        |q: &mut allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient<_>| {
            let mut q = q.clone();
            let (alice, bob_token) = (alice.clone(), bob_token.clone());
            async move { q.get_user(bearer(get_user(&alice), &bob_token)).await.unwrap().into_inner().user.unwrap() }
        };
    fleet.wait_for_user(&alice).await;
    let before = seen(&mut q).await;
    // Private events: logins and a failed login.
    fleet.login("alice").await;
    let _ = fleet.login_with("alice", "wrong-password-1").await;
    fleet.login("alice").await;
    let own_version =
        |q: &mut allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient<_>| {
            let mut q = q.clone();
            let (alice, token) = (alice.clone(), alice_token.clone());
            async move { q.get_user(bearer(get_user(&alice), &token)).await.unwrap().into_inner().user.unwrap().version }
        };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while own_version(&mut q).await < before.version + 3 {
        assert!(std::time::Instant::now() < deadline, "the private events were not projected");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen(&mut q).await.version, before.version, "the public version moved on private events");
    // A public change moves it.
    let mut g = fleet.guardian().await;
    g.set_display_name(bearer(SetDisplayNameRequest { display_name: "Alice A".into() }, &alice_token)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = seen(&mut q).await;
        if now.display_name == "Alice A" {
            assert!(now.version > before.version);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the display name was not projected");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
