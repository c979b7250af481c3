//! The live configuration: an admin changes a key through the command
//! service; every instance of every service applies the new version within
//! a second and reports it; guardian enforces the new login rate limit on
//! both its instances; history, rollback, validation, and a start while the
//! command service is down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use allies_contracts::command::v1::configuration_service_client::ConfigurationServiceClient;
use allies_contracts::command::v1::*;
use allies_contracts::guardian::v1::AuthenticateUserRequest;
use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_e2e::{Fleet, bearer};
use tonic::Code;
use tonic::transport::Channel;

type Config = ConfigurationServiceClient<Channel>;

async fn status(config: &mut Config, admin: &str) -> GetConfigurationStatusResponse {
    config.get_configuration_status(bearer(GetConfigurationStatusRequest {}, admin)).await.unwrap().into_inner()
}

/// Waits until every instance reports `version`; returns how long it took.
async fn applied_everywhere(config: &mut Config, admin: &str, version: u64, instances: usize) -> Duration {
    let started = Instant::now();
    loop {
        let s = status(config, admin).await;
        if s.instances.len() >= instances && s.instances.iter().all(|i| i.version == version) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "version {version} not applied everywhere: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (10 s at most) until the read model shows user `id` locked.
async fn wait_locked(fleet: &Fleet, admin: &str, id: &str) {
    let mut projector = fleet.projector().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = allies_contracts::projector::v1::GetUserRequest { user_id: id.to_owned(), ..Default::default() };
        let user = projector.get_user(bearer(r, admin)).await.expect("user").into_inner().user.expect("user");
        if user.status == "locked" {
            return;
        }
        assert!(Instant::now() < deadline, "the failures did not lock the account: {user:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wrong-password logins of `user` until one is rate limited; how many got through.
async fn attempts_before_the_limit(guardian: &str, user: &str) -> usize {
    let mut g = GuardianServiceClient::connect(guardian.to_owned()).await.unwrap();
    for n in 0..50 {
        let r = AuthenticateUserRequest { username: user.into(), password: "wrong-password-1".into() };
        let e = g.authenticate_user(r).await.unwrap_err();
        if e.code() == Code::ResourceExhausted {
            return n;
        }
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    }
    50
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_login_rate_limit_is_enforced_by_both_guardians_within_a_second() {
    let env = [("LOCKOUT_MAX_FAILURES", "1000")];
    let mut fleet = Fleet::start(&env);
    let second = fleet.replica("guardian", &env);
    let admin = fleet.admin().await;
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    // Every instance reports the version it runs: version 0 (the defaults).
    applied_everywhere(&mut config, &admin, 0, 5).await;
    let first = fleet.endpoint("guardian");
    assert_eq!(attempts_before_the_limit(&first, "alpha").await, 10, "the default: 10 per window");

    // Refused whole, naming every bad key; nothing changes.
    let bad = UpdateConfigurationRequest {
        expected_version: 0,
        changes: std::collections::BTreeMap::from([
            ("auth.rate_per_username".into(), "0".into()),
            ("auth.nope".into(), "1".into()),
        ]),
        reason: "".into(),
    };
    let e = config.update_configuration(bearer(bad, &admin)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for field in ["changes.auth.rate_per_username", "changes.auth.nope", "reason"] {
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let player = fleet.player("pat").await.1;
    let change = |expected: u64, value: &str| UpdateConfigurationRequest {
        expected_version: expected,
        changes: std::collections::BTreeMap::from([("auth.rate_per_username".into(), value.into())]),
        reason: "credential stuffing from one botnet".into(),
    };
    let e = config.update_configuration(bearer(change(0, "3"), &player)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = config.update_configuration(bearer(change(7, "3"), &admin)).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");

    // The change: every instance applies it within a second, both guardians enforce it.
    let v = config.update_configuration(bearer(change(0, "3"), &admin)).await.unwrap().into_inner();
    assert_eq!(v.version, 1);
    let took = applied_everywhere(&mut config, &admin, 1, 5).await;
    println!("version 1 applied by every instance in {took:?}");
    assert!(took < Duration::from_secs(1), "applied in {took:?}");
    assert_eq!(attempts_before_the_limit(&first, "bravo").await, 3);
    assert_eq!(attempts_before_the_limit(&second.endpoint(), "charlie").await, 3);

    // The audit trail; a rollback is a new version.
    let back = RollbackConfigurationRequest { expected_version: 1, to_version: 0, reason: "over".into() };
    assert_eq!(config.rollback_configuration(bearer(back, &admin)).await.unwrap().into_inner().version, 2);
    applied_everywhere(&mut config, &admin, 2, 5).await;
    assert_eq!(attempts_before_the_limit(&second.endpoint(), "delta").await, 10);
    let history = config
        .list_configuration_history(bearer(ListConfigurationHistoryRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .records;
    let summary: Vec<(u64, &str, &str, &str)> = history
        .iter()
        .map(|r| (r.version, r.kind.as_str(), r.changes[0].old_value.as_str(), r.changes[0].new_value.as_str()))
        .collect();
    assert_eq!(summary, vec![(2, "rollback", "3", "10"), (1, "update", "10", "3")]);
    assert_eq!(history[1].reason, "credential stuffing from one botnet");
    assert!(!history[1].by.is_empty() && history[1].at_ms > 0);

    // The command service down: a guardian starting now still runs version 2.
    fleet.service_mut("command").kill();
    let third = fleet.replica("guardian", &env);
    let mut conn = allies_store::RedisTarget::parse(&fleet.redis_url()).unwrap().connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let applied: HashMap<String, String> =
            redis::cmd("HGETALL").arg(allies_platform::live::APPLIED).query_async(&mut conn).await.unwrap();
        let guardians_on_2 =
            applied.iter().filter(|(who, v)| who.starts_with("guardian/") && v.starts_with("2:")).count();
        if guardians_on_2 == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the third guardian never reported version 2: {applied:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((second, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tesla_tower_is_behind_a_flag_with_targeting_a_rollout_and_a_kill_switch() {
    use allies_contracts::command::v1::feature_flag_service_client::FeatureFlagServiceClient;
    use allies_contracts::timesquare::v1::WhoAmIRequest;
    use allies_e2e::game::{Gamer, cells_by_the_path, place, started_game, state};
    let fleet = Fleet::start(&[]);
    let admin_token = fleet.admin().await;
    let admin_id =
        fleet.players().await.who_am_i(bearer(WhoAmIRequest {}, &admin_token)).await.unwrap().into_inner().user_id;
    let admin = Gamer { id: admin_id, token: admin_token.clone(), name: "boss".into() };
    let pat = fleet.gamer("pat").await;
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    let flags = FeatureFlagServiceClient::new(fleet.channel("command").await);
    let mut games = fleet.game().await;
    let reader = games.clone();
    let cell = |g: &Gamer, session: String| {
        let mut games = reader.clone();
        let g = g.clone();
        async move {
            let view = state(&mut games, &session, &g).await;
            cells_by_the_path(&view, &g.id)[0]
        }
    };
    let pat_game = started_game(&mut games, &[&pat], "meadow", "easy").await;
    let admin_game = started_game(&mut games, &[&admin], "meadow", "easy").await;
    let (px, py) = cell(&pat, pat_game.clone()).await;
    let (ax, ay) = cell(&admin, admin_game.clone()).await;
    let eval = |token: String| {
        let mut flags = flags.clone();
        async move {
            let r = EvaluateFlagRequest { flag: "towers.tesla".into(), default_value: String::new() };
            let e = flags.evaluate_flag(bearer(r, &token)).await.unwrap().into_inner();
            (e.value, e.reason, e.error_code)
        }
    };
    // No flag yet: nobody builds a tesla, and the evaluation says why.
    let e = place(&mut games, &pat_game, &pat, "tesla", px, py).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("towers.tesla"), "{}", e.message());
    assert_eq!(eval(pat.token.clone()).await, ("off".into(), "ERROR".into(), "FLAG_NOT_FOUND".into()));

    let set = |config: &mut Config, expected: u64, json: &str| {
        let mut config = config.clone();
        let r = UpdateConfigurationRequest {
            expected_version: expected,
            changes: std::collections::BTreeMap::from([("flag.towers.tesla".into(), json.into())]),
            reason: "tesla rollout".into(),
        };
        let admin = admin_token.clone();
        async move { config.update_configuration(bearer(r, &admin)).await }
    };
    let bad = set(&mut config, 0, r#"{"enabled":true,"variants":["off","on"],"default":"maybe"}"#).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("changes.flag.towers.tesla"), "{}", bad.message());

    // Admins first (targeting by role).
    set(&mut config, 0, r#"{"enabled":true,"variants":["off","on"],"default":"off","roles":{"admin":"on"}}"#)
        .await
        .unwrap();
    applied_everywhere(&mut config, &admin_token, 1, 4).await;
    assert_eq!(eval(admin_token.clone()).await, ("on".into(), "TARGETING_MATCH".into(), String::new()));
    assert_eq!(eval(pat.token.clone()).await, ("off".into(), "DEFAULT".into(), String::new()));
    place(&mut games, &admin_game, &admin, "tesla", ax, ay).await.expect("the admin builds a tesla");
    assert!(place(&mut games, &pat_game, &pat, "tesla", px, py).await.is_err());

    // Everyone (a 100% rollout by the stable hash of the user id).
    let all =
        r#"{"enabled":true,"variants":["off","on"],"default":"off","roles":{"admin":"on"},"rollout":[["on",100]]}"#;
    set(&mut config, 1, all).await.unwrap();
    applied_everywhere(&mut config, &admin_token, 2, 4).await;
    assert_eq!(eval(pat.token.clone()).await, ("on".into(), "SPLIT".into(), String::new()));
    place(&mut games, &pat_game, &pat, "tesla", px, py).await.expect("now pat builds one");

    // The kill switch, in one call and without naming a version: off for
    // everyone, admins included.
    let kill = KillFlagRequest { flag: "towers.tesla".into(), reason: "tesla crashes clients".into() };
    let v = config.kill_flag(bearer(kill.clone(), &admin_token)).await.expect("kill").into_inner();
    assert_eq!(v.version, 3);
    let unknown = KillFlagRequest { flag: "nope".into(), reason: "x".into() };
    assert_eq!(config.kill_flag(bearer(unknown, &admin_token)).await.unwrap_err().code(), Code::NotFound);
    let again = config.kill_flag(bearer(kill, &admin_token)).await.expect("kill again").into_inner();
    assert_eq!(again.version, 3, "an already killed flag changes nothing");
    let _ = &all;
    applied_everywhere(&mut config, &admin_token, 3, 4).await;
    assert_eq!(eval(admin_token.clone()).await, ("off".into(), "DISABLED".into(), String::new()));
    let (ax2, ay2) = cell(&admin, admin_game.clone()).await;
    assert!(place(&mut games, &admin_game, &admin, "tesla", ax2, ay2).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_rules_are_validated_and_new_sessions_use_them_while_running_ones_keep_theirs() {
    use allies_e2e::game::{started_game, state};
    let fleet = Fleet::start(&[]);
    let admin = fleet.admin().await;
    let ann = fleet.gamer("ann").await;
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    let mut games = fleet.game().await;
    let before = started_game(&mut games, &[&ann], "meadow", "easy").await;
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/game-rules.yaml")).unwrap();
    let upload = |yaml: String, activate: bool, expected: u64| UploadRulesRequest {
        yaml,
        activate,
        reason: "richer start".into(),
        expected_version: expected,
    };
    // The game's own validator names the key and the reason; nothing is stored.
    let bad = shipped.replace("rules_version: 1", "rules_version: 2").replace("start_gold: 200", "start_gold: lots");
    let e = config.upload_rules(bearer(upload(bad, true, 0), &admin)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("start_gold"), "{}", e.message());
    // The version in force cannot be replaced.
    let e = config.upload_rules(bearer(upload(shipped.clone(), true, 0), &admin)).await.unwrap_err();
    assert!(e.message().contains("must be above"), "{}", e.message());

    let v2 = shipped.replace("rules_version: 1", "rules_version: 2").replace("start_gold: 200", "start_gold: 500");
    let r = config.upload_rules(bearer(upload(v2.clone(), true, 0), &admin)).await.unwrap().into_inner();
    assert_eq!((r.rules_version, r.configuration_version), (2, 1));
    applied_everywhere(&mut config, &admin, 1, 4).await;
    let e = config
        .upload_rules(bearer(upload(v2.replace("start_gold: 500", "start_gold: 600"), false, 1), &admin))
        .await
        .unwrap_err();
    assert!(e.message().contains("different content"), "{}", e.message());

    // New sessions get version 2 (500 gold × 130% on easy); the running one keeps version 1.
    let after = started_game(&mut games, &[&ann], "canyon", "easy").await;
    let (old, new) = (state(&mut games, &before, &ann).await, state(&mut games, &after, &ann).await);
    assert_eq!((old.rules_version, old.players[0].gold), (1, 260));
    assert_eq!((new.rules_version, new.players[0].gold), (2, 650));

    // A timesquare started now installs the uploaded version: the session loads on it.
    let replica = fleet.replica("timesquare", &[]);
    let mut other = allies_e2e::game::Games::connect(replica.endpoint()).await.unwrap();
    assert_eq!(state(&mut other, &after, &ann).await.rules_version, 2);
}

#[tokio::test]
async fn lockout_matchmaking_and_projector_retry_keys_change_what_their_services_do_while_running() {
    // The environment says 5 failures, 120 s tickets, 5 deliveries: the
    // configuration changes each while every service runs.
    let fleet = Fleet::start(&[("SUBSCRIBER_RETRY_BASE_MS", "50")]);
    let admin = fleet.admin().await;
    let mut config = ConfigurationServiceClient::new(fleet.channel("command").await);
    let change = UpdateConfigurationRequest {
        expected_version: 0,
        changes: std::collections::BTreeMap::from([
            ("auth.lockout_max_failures".into(), "2".into()),
            ("matchmaking.ticket_ttl_secs".into(), "7".into()),
            ("projector.retry_max_attempts".into(), "2".into()),
        ]),
        reason: "tighter for the tournament".into(),
    };
    let v = config.update_configuration(bearer(change, &admin)).await.expect("update").into_inner().version;
    let took = applied_everywhere(&mut config, &admin, v, 4).await;
    println!("applied by every instance in {} ms", took.as_millis());
    let keys = config.get_configuration(bearer(GetConfigurationRequest {}, &admin)).await.unwrap().into_inner().keys;
    for (key, service) in [
        ("auth.lockout_max_failures", "guardian"),
        ("matchmaking.ticket_ttl_secs", "timesquare"),
        ("projector.retry_max_attempts", "projector"),
    ] {
        let k = keys.iter().find(|k| k.key == key).expect("key");
        assert_eq!(k.applied_by, vec![service.to_owned()], "{key}");
    }

    // Guardian: two failures lock the account (the environment said five).
    let id = fleet.register("lena").await;
    let mut g = GuardianServiceClient::new(fleet.channel("guardian").await);
    for _ in 0..2 {
        let wrong = AuthenticateUserRequest { username: "lena".into(), password: "wrong-password-1".into() };
        assert_eq!(g.authenticate_user(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    }
    wait_locked(&fleet, &admin, &id).await;

    // Timesquare: a new ticket expires after 7 s (the environment said 120).
    let deadline = Instant::now() + Duration::from_secs(10);
    let tim = fleet.gamer("tim").await;
    let mut mm = fleet.matchmaking().await;
    let ticket = loop {
        match allies_e2e::game::find(&mut mm, &tim, 2, 4, &[]).await {
            Ok(t) => break t,
            Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("FindMatch: {s:?}"),
        }
    };
    assert_eq!(ticket.expires_at_ms - ticket.created_at_ms, 7_000, "{ticket:?}");

    // The projector: a poison event is dead-lettered after 2 deliveries (the environment said 5).
    fleet.raw(&[
        "XADD", "es:{user.0}:log", "*", "event_id", "0190f1a2-0000-7000-8000-000000000001", "event_type",
        "UserRegistered", "aggregate_type", "user", "aggregate_id", "0190f1a2-0000-7000-8000-00000000dead", "version",
        "1", "schema_version", "2", "content_type", "application/json", "data", "{broken", "metadata",
        r#"{"correlation_id":"0190f1a2-0000-7000-8000-000000000002","causation_id":"0190f1a2-0000-7000-8000-000000000003"}"#,
        "created_at", "1",
    ]);
    let mut admin_api = fleet.projector_admin().await;
    let list = allies_contracts::projector::v1::ListDeadLettersRequest { projection: "rm.user".into(), limit: 10 };
    let deadline = Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let d = admin_api.list_dead_letters(bearer(list.clone(), &admin)).await.unwrap().into_inner().dead_letters;
        if !d.is_empty() {
            break d;
        }
        assert!(Instant::now() < deadline, "the poison was never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead[0].attempts, 2, "{dead:?}");
}

/// The configuration tells the truth: an environment-tuned value survives
/// an operator's change of another key and each value says where it comes
/// from; a rules version nobody can run is refused; maintenance mode is not
/// a key to set by hand; the history names the admin; departed instances
/// leave the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_values_survive_changes_sources_are_shown_and_bad_or_unrecorded_changes_are_refused() {
    // This fleet's guardians lock an account after 2 failures (their environment).
    let mut fleet = Fleet::start(&[("LOCKOUT_MAX_FAILURES", "2")]);
    let admin = fleet.admin().await;
    let mut config = Config::new(fleet.channel("command").await);
    let change = |expected: u64, key: &str, value: &str| UpdateConfigurationRequest {
        expected_version: expected,
        changes: std::collections::BTreeMap::from([(key.to_owned(), value.to_owned())]),
        reason: "tuning".into(),
    };
    // An operator changes an unrelated key.
    let v =
        config.update_configuration(bearer(change(0, "matchmaking.window", "150"), &admin)).await.unwrap().into_inner();
    applied_everywhere(&mut config, &admin, v.version, 4).await;
    let source = |v: &ConfigurationView, key: &str| {
        v.keys.iter().find(|k| k.key == key).map(|k| k.source.clone()).unwrap_or_default()
    };
    assert_eq!(source(&v, "matchmaking.window"), "configuration");
    assert_eq!(source(&v, "auth.lockout_max_failures"), "deployment");
    // The environment's lockout is still in force: two failures lock.
    let id = fleet.register("tuned").await;
    for _ in 0..2 {
        let _ = fleet.login_with("tuned", "wrong-password-1").await;
    }
    wait_locked(&fleet, &admin, &id).await;

    // The history names the admin.
    let history = config
        .list_configuration_history(bearer(ListConfigurationHistoryRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.records.last().map(|r| r.by_name.as_str()), Some(allies_e2e::FLEET_ADMIN));

    // A rules version that was never uploaded nor shipped: refused, naming the key.
    let e =
        config.update_configuration(bearer(change(v.version, "game.rules_version", "999"), &admin)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("game.rules_version") && e.message().contains("999"), "{}", e.message());
    // The shipped version is known.
    let ok = config.update_configuration(bearer(change(v.version, "game.rules_version", "1"), &admin)).await;
    assert!(ok.is_err_and(|e| e.code() == Code::FailedPrecondition), "1 is in force already: no change");

    // Maintenance mode only through the recorded operation.
    let e = config
        .update_configuration(bearer(change(v.version, "maintenance.writes_paused", "1"), &admin))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("PerformMaintenance"), "{}", e.message());

    // Status: every instance alive; one that stops cleanly leaves the list.
    let s = status(&mut config, &admin).await;
    assert!(s.instances.len() >= 4 && s.instances.iter().all(|i| i.alive && i.last_seen_ms > 0), "{s:?}");
    fleet.service_mut("timesquare").terminate(Duration::from_secs(10));
    let s = status(&mut config, &admin).await;
    assert!(s.instances.iter().all(|i| i.service != "timesquare"), "a departed instance is listed: {s:?}");
}

/// "Applied" means in force, or says why not: a rules version one replica
/// ships and another does not have is reported as not applied by the latter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_apply_a_version_says_why_in_the_status() {
    let fleet = Fleet::start(&[]);
    let admin = fleet.admin().await;
    // A second timesquare ships rules version 2 (a rolling upgrade half done).
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/game-rules.yaml")).unwrap();
    let v2 = dir.path().join("rules-v2.yaml");
    std::fs::write(&v2, shipped.replace("rules_version: 1", "rules_version: 2")).unwrap();
    let newer = fleet.replica("timesquare", &[("TIMESQUARE_RULES", v2.to_str().unwrap())]);
    let mut config = Config::new(fleet.channel("command").await);
    let v = config.get_configuration(bearer(GetConfigurationRequest {}, &admin)).await.unwrap().into_inner().version;
    let change = UpdateConfigurationRequest {
        expected_version: v,
        changes: std::collections::BTreeMap::from([("game.rules_version".to_owned(), "2".to_owned())]),
        reason: "new rules".into(),
    };
    let v = config.update_configuration(bearer(change, &admin)).await.expect("version 2 is shipped by one replica");
    let version = v.into_inner().version;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = status(&mut config, &admin).await;
        let ts: Vec<&InstanceStatus> = s.instances.iter().filter(|i| i.service == "timesquare").collect();
        let old = ts.iter().find(|i| !i.not_applied.is_empty());
        let new = ts.iter().find(|i| i.version == version && i.not_applied.is_empty());
        if let (Some(old), Some(_)) = (old, new) {
            assert!(old.not_applied.contains("rules version 2 is not available here"), "{old:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the status does not tell: {ts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(newer);
}
