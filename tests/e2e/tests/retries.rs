//! Safe retries, for every command-side RPC of every service: called twice
//! with one `x-command-id`, a command answers the very same reply (the same
//! ids, version and consistency token) and appends its events once; the
//! same id on a different request is refused FAILED_PRECONDITION naming the
//! rule `COMMAND_ID_REUSED`. One table, driven through the real fleet with
//! a real gRPC client, as a client on a flaky network would.

use allies_contracts::command::v1::configuration_service_client::ConfigurationServiceClient;
use allies_contracts::command::v1::maintenance_service_client::MaintenanceServiceClient;
use allies_contracts::command::v1::report_service_client::ReportServiceClient;
use allies_contracts::command::v1::*;
use allies_contracts::guardian::v1::*;
use allies_contracts::timesquare::v1::*;
use allies_e2e::game::*;
use allies_e2e::matchmaking::conn;
use allies_e2e::{Fleet, PASSWORD, bearer};
use redis::streams::StreamRangeReply;
use tonic::{Code, Request, Status};

/// `request` with `x-command-id: id`.
fn with_id<T>(mut request: Request<T>, id: &str) -> Request<T> {
    request.metadata_mut().insert("x-command-id", id.parse().expect("ASCII id"));
    request
}

fn anon<T>(message: T, id: &str) -> Request<T> {
    with_id(Request::new(message), id)
}

fn signed<T>(message: T, token: &str, id: &str) -> Request<T> {
    with_id(bearer(message, token), id)
}

/// Events of type `event_type` in every partition log of `aggregate_type`.
async fn events(fleet: &Fleet, aggregate_type: &str, event_type: &str) -> usize {
    let mut c = conn(fleet).await;
    let mut n = 0;
    for p in 0..16 {
        let key = format!("es:{{{aggregate_type}.{p}}}:log");
        let r: StreamRangeReply =
            redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut c).await.expect("xrange");
        n += r.ids.iter().filter(|e| allies_store::entry_text(e, "event_type") == Some(event_type)).count();
    }
    n
}

/// Runs one row of the table: `$call` with `$other = false` twice under one
/// id, then with `$other = true` (a different request) under the same id.
macro_rules! retried {
    ($fleet:expr, $rows:ident, $name:expr, ($aggregate:expr, $event:expr), |$id:ident, $other:ident| $call:expr) => {{
        let $id = format!("{}-{}", $name, uuid::Uuid::now_v7());
        let before = events($fleet, $aggregate, $event).await;
        let first = async {
            let $other = false;
            $call.await
        }
        .await
        .unwrap_or_else(|s: Status| panic!("{}: {s:?}", $name))
        .into_inner();
        let written = events($fleet, $aggregate, $event).await;
        assert_eq!(written, before + 1, "{}: the first call appends one {}", $name, $event);
        let again = async {
            let $other = false;
            $call.await
        }
        .await
        .unwrap_or_else(|s: Status| panic!("{} retried: {s:?}", $name))
        .into_inner();
        assert_eq!(again, first, "{}: a retry answers the first reply", $name);
        assert_eq!(events($fleet, $aggregate, $event).await, written, "{}: a retry appends nothing", $name);
        let refused = async {
            let $other = true;
            $call.await
        }
        .await
        .expect_err(&format!("{}: the id on a different request", $name));
        assert_eq!(refused.code(), Code::FailedPrecondition, "{}: {refused:?}", $name);
        assert_eq!(rule_of(&refused), "COMMAND_ID_REUSED", "{}: {refused:?}", $name);
        assert_eq!(events($fleet, $aggregate, $event).await, written, "{}: a refusal appends nothing", $name);
        $rows.push($name);
        first
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_rpc_answers_a_retry_with_its_first_reply_and_refuses_its_id_on_another_request() {
    let fleet = Fleet::start(&[("LOCKOUT_MAX_FAILURES", "3")]);
    let admin = fleet.admin().await;
    let mut rows: Vec<&str> = Vec::new();
    let mut guardian = fleet.guardian().await;

    // ── guardian ────────────────────────────────────────────────────────
    let registered = retried!(&fleet, rows, "RegisterUser", ("user", "UserRegistered"), |id, other| {
        let r = RegisterUserRequest {
            username: "rita".into(),
            email: if other { "other@example.com" } else { "rita@example.com" }.into(),
            password: PASSWORD.into(),
        };
        guardian.register_user(anon(r, &id))
    });
    let rita = registered.user_id.clone();
    let login = retried!(&fleet, rows, "AuthenticateUser", ("session", "SessionStarted"), |id, other| {
        // The same id with another password: refused, and the first
        // login's tokens are not handed out.
        let password = if other { "not-her-password" } else { PASSWORD };
        guardian.authenticate_user(anon(
            AuthenticateUserRequest { username: "rita".into(), password: password.into() },
            &id,
        ))
    });
    assert!(!login.access_token.is_empty());
    // A refresh is about its token's session (its id's scope, as a login's
    // is its username): another token under the same id is another
    // client's request, decided on its own — never "id already used".
    let refresh_id = format!("RefreshToken-{}", uuid::Uuid::now_v7());
    let before = events(&fleet, "session", "TokenRefreshed").await;
    let refresh = |token: &str| RefreshTokenRequest { refresh_token: token.to_owned() };
    let refreshed =
        guardian.refresh_token(anon(refresh(&login.refresh_token), &refresh_id)).await.expect("refresh").into_inner();
    let again =
        guardian.refresh_token(anon(refresh(&login.refresh_token), &refresh_id)).await.expect("retried").into_inner();
    assert_eq!(again, refreshed, "a retried refresh answers the first reply");
    assert_eq!(events(&fleet, "session", "TokenRefreshed").await, before + 1);
    let other = guardian.refresh_token(anon(refresh("another-refresh-token"), &refresh_id)).await.expect_err("bogus");
    assert_eq!(other.code(), Code::Unauthenticated, "decided on its own: {other:?}");
    rows.push("RefreshToken");
    let token = refreshed.access_token.clone();
    retried!(&fleet, rows, "SetDisplayName", ("user", "DisplayNameChanged"), |id, other| {
        let name = if other { "Rita B" } else { "Rita A" };
        guardian.set_display_name(signed(SetDisplayNameRequest { display_name: name.into() }, &token, &id))
    });
    retried!(&fleet, rows, "ChangeUserRoles", ("user", "UserRolesChanged"), |id, other| {
        let roles = if other { vec!["admin".to_owned()] } else { vec!["player".to_owned(), "admin".to_owned()] };
        guardian.change_user_roles(signed(ChangeUserRolesRequest { user_id: rita.clone(), roles }, &admin, &id))
    });
    let locked = fleet.register("lou").await;
    for _ in 0..3 {
        let _ = fleet.login_with("lou", "wrong-password-1").await;
    }
    let other_user = fleet.register("ole").await;
    retried!(&fleet, rows, "UnlockUser", ("user", "UserUnlocked"), |id, other| {
        let user = if other { other_user.clone() } else { locked.clone() };
        guardian.unlock_user(signed(UnlockUserRequest { user_id: user }, &admin, &id))
    });
    retried!(&fleet, rows, "ChangePassword", ("user", "PasswordChanged"), |id, other| {
        let new = if other { "yet-another-pass-3" } else { "a-new-password-2" };
        let r = ChangePasswordRequest { current_password: PASSWORD.into(), new_password: new.into() };
        guardian.change_password(signed(r, &token, &id))
    });
    // A retried logout names the session its first call ended: it still
    // gets the first reply. Its id on another call of the same user is refused.
    let fresh = fleet.login_with("rita", "a-new-password-2").await.expect("login with the new password");
    let logout_id = format!("LogoutUser-{}", uuid::Uuid::now_v7());
    let before = events(&fleet, "session", "UserLoggedOut").await;
    let first = guardian
        .logout_user(signed(LogoutUserRequest {}, &fresh.access_token, &logout_id))
        .await
        .expect("logout")
        .into_inner();
    let again = guardian
        .logout_user(signed(LogoutUserRequest {}, &fresh.access_token, &logout_id))
        .await
        .expect("retried logout")
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(events(&fleet, "session", "UserLoggedOut").await, before + 1);
    let other_session = fleet.login_with("rita", "a-new-password-2").await.expect("login").access_token;
    let refused = guardian
        .clone()
        .set_display_name(signed(SetDisplayNameRequest { display_name: "Rita C".into() }, &other_session, &logout_id))
        .await
        .expect_err("the logout's id on another request");
    assert_eq!((refused.code(), rule_of(&refused)), (Code::FailedPrecondition, "COMMAND_ID_REUSED".to_owned()));
    rows.push("LogoutUser");

    // ── timesquare: the game ────────────────────────────────────────────
    let mut games = fleet.game().await;
    let (host, guest) = (fleet.gamer("hana").await, fleet.gamer("gus").await);
    let created = retried!(&fleet, rows, "CreateGameSession", ("game_session", "GameSessionCreated"), |id, other| {
        let r = CreateGameSessionRequest {
            map: "meadow".into(),
            difficulty: if other { "hard" } else { "easy" }.into(),
            max_players: 2,
            private: true,
            display_name: "Hana".into(),
        };
        games.create_game_session(signed(r, &host.token, &id))
    });
    // The invite code (shown once, stored only as a hash) came back the same.
    assert!(!created.invite_code.is_empty());
    let session = created.session_id.clone();
    retried!(&fleet, rows, "JoinGameSession", ("game_session", "PlayerJoined"), |id, other| {
        let r = JoinGameSessionRequest {
            session_id: session.clone(),
            invite_code: created.invite_code.clone(),
            display_name: if other { "Gus B" } else { "Gus" }.into(),
        };
        games.join_game_session(signed(r, &guest.token, &id))
    });
    for (who, name) in [(&host, "SetReady"), (&guest, "SetReady-guest")] {
        retried!(&fleet, rows, name, ("game_session", "PlayerReady"), |id, other| {
            games.set_ready(signed(SetReadyRequest { session_id: session.clone(), ready: !other }, &who.token, &id))
        });
    }
    retried!(&fleet, rows, "StartGame", ("game_session", "GameStarted"), |id, other| {
        let sid = if other { uuid::Uuid::now_v7().to_string() } else { session.clone() };
        games.start_game(signed(SessionRequest { session_id: sid }, &host.token, &id))
    });
    let view = state(&mut games.clone(), &session, &host).await;
    let cells = cells_by_the_path(&view, &host.id);
    let placed = retried!(&fleet, rows, "PlaceTower", ("game_session", "TowerPlaced"), |id, other| {
        let (x, y) = if other { cells[1] } else { cells[0] };
        let r = PlaceTowerRequest { session_id: session.clone(), tower_type: "arrow".into(), x, y };
        games.place_tower(signed(r, &host.token, &id))
    });
    // A second tower, so that a retry of the first must not answer "tower 1".
    place(&mut games.clone(), &session, &host, "arrow", cells[2].0, cells[2].1).await.expect("another tower");
    let tower = placed.tower_id;
    retried!(&fleet, rows, "UpgradeTower", ("game_session", "TowerUpgraded"), |id, other| {
        let r = TowerRequest { session_id: session.clone(), tower_id: if other { tower + 1 } else { tower } };
        games.upgrade_tower(signed(r, &host.token, &id))
    });
    retried!(&fleet, rows, "SellTower", ("game_session", "TowerSold"), |id, other| {
        let r = TowerRequest { session_id: session.clone(), tower_id: if other { tower + 1 } else { tower } };
        games.sell_tower(signed(r, &host.token, &id))
    });
    retried!(&fleet, rows, "StartWave", ("game_session", "WaveStarted"), |id, other| {
        let sid = if other { uuid::Uuid::now_v7().to_string() } else { session.clone() };
        games.start_wave(signed(SessionRequest { session_id: sid }, &host.token, &id))
    });
    retried!(&fleet, rows, "EndGame", ("game_session", "GameEnded"), |id, other| {
        let reason = if other { "we give up" } else { "enough for today" };
        games.end_game(signed(EndGameRequest { session_id: session.clone(), reason: reason.into() }, &host.token, &id))
    });
    let lobby = create(&mut games.clone(), &host, "meadow", "easy", 2).await;
    join(&mut games.clone(), &lobby, &guest).await.expect("join the lobby");
    retried!(&fleet, rows, "LeaveGameSession", ("game_session", "PlayerLeft"), |id, other| {
        let sid = if other { session.clone() } else { lobby.clone() };
        games.leave_game_session(signed(SessionRequest { session_id: sid }, &guest.token, &id))
    });

    // ── timesquare: matchmaking ─────────────────────────────────────────
    let mut mm = fleet.matchmaking().await;
    let (ava, ben, cid) = (fleet.gamer("ava").await, fleet.gamer("ben").await, fleet.gamer("cid").await);
    let wanted = |difficulty: &str, min: u32| FindMatchRequest {
        maps: vec![],
        difficulty: difficulty.into(),
        min_players: min,
        max_players: min,
        party: vec![],
    };
    let ticket = retried!(&fleet, rows, "FindMatch", ("ticket", "TicketCreated"), |id, other| {
        mm.find_match(signed(wanted(if other { "easy" } else { "normal" }, 2), &ava.token, &id))
    });
    mm.find_match(bearer(wanted("normal", 2), &ben.token)).await.expect("ben queues");
    let seen = follow_ticket(&mut mm.clone(), &ava, &ticket.ticket_id, |t| t.status != "searching").await;
    let match_id = seen.last().map(|t| t.match_id.clone()).unwrap_or_default();
    assert!(!match_id.is_empty(), "ava was matched: {seen:?}");
    retried!(&fleet, rows, "ConfirmMatch", ("match", "MatchPlayerConfirmed"), |id, other| {
        let m = if other { uuid::Uuid::now_v7().to_string() } else { match_id.clone() };
        mm.confirm_match(signed(ConfirmMatchRequest { match_id: m }, &ava.token, &id))
    });
    let waiting = mm.find_match(bearer(wanted("hard", 4), &cid.token)).await.expect("cid queues").into_inner();
    retried!(&fleet, rows, "CancelMatchmaking", ("ticket", "TicketCancelled"), |id, other| {
        let t = if other { uuid::Uuid::now_v7().to_string() } else { waiting.ticket_id.clone() };
        mm.cancel_matchmaking(signed(CancelMatchmakingRequest { ticket_id: t }, &cid.token, &id))
    });

    retried!(&fleet, rows, "InviteToParty", ("party", "PartyInviteSent"), |id, other| {
        let user = if other { ben.id.clone() } else { cid.id.clone() };
        mm.invite_to_party(signed(InviteToPartyRequest { user_id: user }, &ava.token, &id))
    });
    retried!(&fleet, rows, "RespondToPartyInvite", ("party", "PartyInviteAccepted"), |id, other| {
        let r = RespondToPartyInviteRequest { host_id: ava.id.clone(), accept: !other };
        mm.respond_to_party_invite(signed(r, &cid.token, &id))
    });
    retried!(&fleet, rows, "LeaveParty", ("party", "PartyMemberLeft"), |id, other| {
        let host = if other { ben.id.clone() } else { ava.id.clone() };
        mm.leave_party(signed(LeavePartyRequest { host_id: host, user_id: String::new() }, &cid.token, &id))
    });

    // ── command ─────────────────────────────────────────────────────────
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    let current = |c: &mut ConfigurationServiceClient<_>| {
        let mut c = c.clone();
        let admin = admin.clone();
        async move {
            c.get_configuration(bearer(GetConfigurationRequest {}, &admin))
                .await
                .expect("configuration")
                .into_inner()
                .version
        }
    };
    // A version to roll back to.
    let first = UpdateConfigurationRequest {
        expected_version: current(&mut config.clone()).await,
        changes: [("matchmaking.ticket_ttl_secs".to_owned(), "90".to_owned())].into(),
        reason: "a first version".into(),
    };
    let first = config.update_configuration(bearer(first, &admin)).await.expect("a first version").into_inner();
    let v = first.version;
    retried!(&fleet, rows, "UpdateConfiguration", ("configuration", "ConfigurationUpdated"), |id, other| {
        let value = if other { "150" } else { "100" };
        let r = UpdateConfigurationRequest {
            expected_version: v,
            changes: [("matchmaking.ticket_ttl_secs".to_owned(), value.to_owned())].into(),
            reason: "retry test".into(),
        };
        config.update_configuration(signed(r, &admin, &id))
    });
    let v = current(&mut config.clone()).await;
    retried!(&fleet, rows, "RollbackConfiguration", ("configuration", "ConfigurationRolledBack"), |id, other| {
        let r = RollbackConfigurationRequest {
            expected_version: v,
            to_version: if other { v } else { first.version },
            reason: "back".into(),
        };
        config.rollback_configuration(signed(r, &admin, &id))
    });
    let v = current(&mut config.clone()).await;
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/game-rules.yaml"))
        .expect("the rules file")
        .replacen("rules_version: 1", "rules_version: 2", 1);
    retried!(&fleet, rows, "UploadRules", ("configuration", "ConfigurationUpdated"), |id, other| {
        let r = UploadRulesRequest {
            yaml: yaml.clone(),
            activate: true,
            reason: if other { "other" } else { "new rules" }.into(),
            expected_version: v,
        };
        config.upload_rules(signed(r, &admin, &id))
    });
    let v = current(&mut config.clone()).await;
    let tesla = r#"{"enabled":true,"variants":["off","on"],"default":"off","roles":{"admin":"on"}}"#;
    let define = UpdateConfigurationRequest {
        expected_version: v,
        changes: [("flag.towers.tesla".to_owned(), tesla.to_owned())].into(),
        reason: "a flag to kill".into(),
    };
    config.update_configuration(bearer(define, &admin)).await.expect("define a flag");
    retried!(&fleet, rows, "KillFlag", ("configuration", "ConfigurationUpdated"), |id, other| {
        let r = KillFlagRequest {
            flag: "towers.tesla".into(),
            reason: if other { "something else" } else { "tesla crashes clients" }.into(),
        };
        config.kill_flag(signed(r, &admin, &id))
    });
    let mut reports = ReportServiceClient::new(fleet.channel("command").await);
    retried!(&fleet, rows, "GenerateReport", ("job", "JobRequested"), |id, other| {
        let r = GenerateReportRequest {
            kind: "daily_game_statistics".into(),
            format: if other { "json" } else { "csv" }.into(),
            reason: "retry test".into(),
            ..Default::default()
        };
        reports.generate_report(signed(r, &admin, &id))
    });
    let mut maintenance = MaintenanceServiceClient::new(fleet.channel("command").await);
    retried!(&fleet, rows, "PerformMaintenance", ("job", "JobRequested"), |id, other| {
        let r = PerformMaintenanceRequest {
            operation: "check_consistency".into(),
            projection: "users".into(),
            repair: other,
            reason: "retry test".into(),
            ..Default::default()
        };
        maintenance.perform_maintenance(signed(r, &admin, &id))
    });

    // Every command RPC of the public APIs is in the table.
    assert_eq!(rows.len(), 31, "{rows:?}");
}

/// A command id names one request of one caller: two players of one game
/// who happen to send the same id (a client counting its calls from 1)
/// each get their own command run — the same request from both (both
/// ready) is two commands, and another request under the other's id is
/// not "already used".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_id_of_two_players_is_two_commands_and_a_tower_commands_retry_is_answered_by_the_store() {
    let fleet = Fleet::start_only(&["guardian", "timesquare"], &[]);
    let mut games = fleet.game().await;
    let (host, guest) = (fleet.gamer("hedda").await, fleet.gamer("gert").await);
    let session = create(&mut games, &host, "meadow", "easy", 2).await;
    join(&mut games, &session, &guest).await.expect("join");
    let before = events(&fleet, "game_session", "PlayerReady").await;
    let ready = SetReadyRequest { session_id: session.clone(), ready: true };
    let hosts = games.set_ready(signed(ready.clone(), &host.token, "1")).await.expect("host ready").into_inner();
    let guests = games.set_ready(signed(ready.clone(), &guest.token, "1")).await.expect("guest ready").into_inner();
    assert_eq!(events(&fleet, "game_session", "PlayerReady").await, before + 2, "both players are ready");
    assert!(guests.version > hosts.version, "the guest's own command, not the host's reply: {hosts:?} {guests:?}");
    // Each one's retry still answers its own first reply.
    let again = games.set_ready(signed(ready, &guest.token, "1")).await.expect("guest retries").into_inner();
    assert_eq!(again, guests);
    assert_eq!(events(&fleet, "game_session", "PlayerReady").await, before + 2);

    games.start_game(bearer(SessionRequest { session_id: session.clone() }, &host.token)).await.expect("start");
    let view = state(&mut games, &session, &host).await;
    let (mine, theirs) = (cells_by_the_path(&view, &host.id), cells_by_the_path(&view, &guest.id));
    let place =
        |(x, y): (i32, i32)| PlaceTowerRequest { session_id: session.clone(), tower_type: "arrow".into(), x, y };
    let a = games.place_tower(signed(place(mine[0]), &host.token, "2")).await.expect("host places").into_inner();
    let b = games.place_tower(signed(place(theirs[1]), &guest.token, "2")).await.expect("guest places").into_inner();
    assert_ne!(a.tower_id, b.tower_id, "two towers");
    assert_eq!(events(&fleet, "game_session", "TowerPlaced").await, 2);

    // A tower command's retry is answered from the store's command record
    // (no reply is recorded for the game's hot path): a late one, after
    // other commands, gets the first reply as it was (the gold then).
    let tower = TowerRequest { session_id: session.clone(), tower_id: a.tower_id };
    games.upgrade_tower(bearer(tower, &host.token)).await.expect("upgrade");
    let late = games.place_tower(signed(place(mine[0]), &host.token, "2")).await.expect("late retry").into_inner();
    assert_eq!(late, a);
    // Two copies of one request at once: one tower, one reply.
    let (mut one, mut two) = (games.clone(), fleet.game().await);
    let (x, y) = tokio::join!(
        one.place_tower(signed(place(mine[2]), &host.token, "3")),
        two.place_tower(signed(place(mine[2]), &host.token, "3")),
    );
    assert_eq!(x.expect("a copy").into_inner(), y.expect("the other copy").into_inner());
    assert_eq!(events(&fleet, "game_session", "TowerPlaced").await, 3);
}

/// Before login a call's id is scoped by whom it is about: two people
/// registering and logging in under the same id (clients counting their
/// calls from 1) each get their own account and their own tokens; a retry
/// still answers its first reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_anonymous_clients_sending_one_command_id_each_get_their_own_registration_and_login() {
    let fleet = Fleet::start_only(&["guardian"], &[]);
    let mut guardian = fleet.guardian().await;
    let register = |name: &str| RegisterUserRequest {
        username: name.into(),
        email: format!("{name}@example.com"),
        password: PASSWORD.into(),
    };
    let ida = guardian.register_user(anon(register("ida"), "1")).await.expect("ida registers").into_inner();
    let jon = guardian.register_user(anon(register("jon"), "1")).await.expect("jon registers").into_inner();
    assert_ne!(ida.user_id, jon.user_id);
    let login = |name: &str| AuthenticateUserRequest { username: name.into(), password: PASSWORD.into() };
    let a = guardian.authenticate_user(anon(login("ida"), "2")).await.expect("ida logs in").into_inner();
    let b = guardian.authenticate_user(anon(login("JON"), "2")).await.expect("jon logs in").into_inner();
    assert_ne!((a.user_id.as_str(), a.session_id.as_str()), (b.user_id.as_str(), b.session_id.as_str()));
    assert_eq!((a.user_id.as_str(), b.user_id.as_str()), (ida.user_id.as_str(), jon.user_id.as_str()));
    let again = guardian.authenticate_user(anon(login("JON"), "2")).await.expect("jon retries").into_inner();
    assert_eq!(again, b, "the retry answers the first reply");
    // The same user in another case is the same scope, and another request.
    let refused = guardian.authenticate_user(anon(login("jon"), "2")).await.expect_err("another request");
    assert_eq!(rule_of(&refused), "COMMAND_ID_REUSED");
    assert_eq!(events(&fleet, "session", "SessionStarted").await, 2);
    // One person's id on another request of theirs is still refused.
    let refused = guardian.register_user(anon(register("ida"), "2")).await.expect_err("ida's login id");
    assert_eq!((refused.code(), rule_of(&refused)), (Code::FailedPrecondition, "COMMAND_ID_REUSED".to_owned()));
}
