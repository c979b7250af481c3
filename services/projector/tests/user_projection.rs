//! The user projection against a real, private redis-server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_contracts::guardian::events::v1::UserRegistered;
use allies_core::ExpectedVersion;
use allies_store::subscriber::{self, Handler, SubscriptionConfig};
use allies_store::{AppendRequest, EventStore, NewEvent, RedisEventStore, keys};
use allies_testkit::fixtures::meta;
use allies_testkit::{RedisCluster, RedisServer};
use projector::manager::Applier;
use projector::projections::users;
use projector::readmodel::Namespace;
use uuid::Uuid;

/// The user projection writing into the first generation's namespace.
fn user_projection(store: &RedisEventStore) -> Applier {
    Applier {
        projection: Arc::new(users::Users),
        view: Namespace::new(store.connection(), "rm"),
        replicas: Default::default(),
    }
}

/// Reads a user from the read model.
async fn get(p: &Applier, id: &str) -> Option<allies_contracts::projector::v1::User> {
    users::get(&p.view, id).await.unwrap()
}

fn registered(id: &str, name: &str) -> NewEvent {
    let e = UserRegistered {
        user_id: id.into(),
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: vec!["player".into()],
        registered_at_ms: 1_700_000_000_000,
        display_name: name.into(),
    };
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "UserRegistered".into(),
        schema_version: 2,
        content_type: allies_store::CONTENT_TYPE_JSON.into(),
        data: serde_json::to_vec(&e).unwrap(),
    }
}

async fn append(store: &RedisEventStore, id: &str, name: &str) {
    let request = AppendRequest::new("user", id, ExpectedVersion::NoStream, &meta(), 1, vec![registered(id, name)]);
    store.append(request).await.unwrap();
}

async fn wait_until<F: std::future::Future<Output = bool>>(f: impl FnMut() -> F) {
    allies_testkit::fixtures::wait_for("the read model", Duration::from_secs(10), f).await
}

#[tokio::test]
async fn a_redelivered_or_older_event_changes_nothing() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 4).await.unwrap();
    let id = Uuid::now_v7().to_string();
    append(&store, &id, "alice").await;
    let rec = store.read("user", &id, 1, 1).await.unwrap().remove(0);
    let projection = user_projection(&store);

    projection.handle(&rec).await.unwrap();
    let user = get(&projection, &id).await.expect("first delivery applies");
    assert_eq!((user.username.as_str(), user.version), ("alice", 1));

    // Someone edits the read model at version 1; a redelivery must not overwrite it.
    let key = format!("rm:user:{id}");
    redis.raw(&["HSET", &key, "email", "changed@example.com"]);
    projection.handle(&rec).await.unwrap();
    assert_eq!(get(&projection, &id).await.unwrap().email, "changed@example.com", "redelivery is a no-op");

    // The read model never holds the password hash.
    let raw = redis.raw(&["HGETALL", &key]);
    assert!(!raw.contains("argon2"), "{raw}");
}

#[tokio::test]
async fn a_restarted_consumer_first_finishes_its_own_pending_entries() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let first = Uuid::now_v7().to_string();
    append(&store, &first, "crashed").await;

    // A previous life of consumer "p1" read the entry and died before acking.
    let log = keys::log_key("user", 0);
    redis.raw(&["XGROUP", "CREATE", &log, users::NAME, "0", "MKSTREAM"]);
    let delivered = redis.raw(&["XREADGROUP", "GROUP", users::NAME, "p1", "COUNT", "10", "STREAMS", &log, ">"]);
    assert!(delivered.contains("crashed"), "{delivered}");
    assert_eq!(redis.raw(&["XPENDING", &log, users::NAME]).lines().next(), Some(":1"));

    let projection = Arc::new(user_projection(&store));
    let client = allies_store::RedisTarget::parse(&redis.url()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = SubscriptionConfig::new(users::NAME, "p1", "user", 1);
    let task = tokio::spawn(subscriber::run(client, config, projection.clone(), stopped));

    // Only pending delivery can bring "crashed" back: ">" never re-delivers it.
    let p = projection.clone();
    let id = first.clone();
    wait_until(|| {
        let p = p.clone();
        let id = id.clone();
        async move { get(&p, &id).await.is_some() }
    })
    .await;

    // New entries flow too, and everything ends acknowledged.
    let second = Uuid::now_v7().to_string();
    append(&store, &second, "fresh").await;
    let p = projection.clone();
    wait_until(|| {
        let p = p.clone();
        let id = second.clone();
        async move { get(&p, &id).await.is_some() }
    })
    .await;
    wait_until(|| {
        let pending = redis.raw(&["XPENDING", &log, users::NAME]);
        async move { pending.lines().next() == Some(":0") }
    })
    .await;

    // Shutdown is prompt even while a read is blocked.
    let t = Instant::now();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("subscription stops").unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
}

#[tokio::test]
async fn events_of_every_partition_reach_the_read_model() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 8).await.unwrap();
    let projection = Arc::new(user_projection(&store));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = allies_store::RedisTarget::parse(&redis.url()).unwrap();
    let task = tokio::spawn(subscriber::run(
        client,
        SubscriptionConfig::new(users::NAME, "p", "user", 8),
        projection.clone(),
        stopped,
    ));
    let ids: Vec<String> = (0..64).map(|_| Uuid::now_v7().to_string()).collect();
    for (i, id) in ids.iter().enumerate() {
        append(&store, id, &format!("user{i}")).await;
    }
    let partitions: std::collections::HashSet<u32> = ids.iter().map(|id| store.partition_of(id)).collect();
    assert!(partitions.len() > 4, "ids spread over partitions");
    for (i, id) in ids.iter().enumerate() {
        let p = projection.clone();
        wait_until(|| {
            let p = p.clone();
            let id = id.clone();
            async move { get(&p, &id).await.is_some() }
        })
        .await;
        assert_eq!(get(&projection, id).await.unwrap().username, format!("user{i}"));
    }
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_v1_user_registered_from_the_first_release_is_upcast_into_the_read_model() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let text = include_str!("../../guardian/tests/fixtures/user_registered_v1.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let id = v["aggregate_id"].as_str().unwrap().to_owned();
    let mut args = vec!["XADD".to_owned(), keys::log_key("user", 0), "*".into()];
    args.extend(v["fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    redis.raw(&args);

    let projection = Arc::new(user_projection(&store));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = allies_store::RedisTarget::parse(&redis.url()).unwrap();
    let task = tokio::spawn(subscriber::run(
        client,
        SubscriptionConfig::new(users::NAME, "p", "user", 1),
        projection.clone(),
        stopped,
    ));
    let p = projection.clone();
    let key = id.clone();
    wait_until(|| {
        let p = p.clone();
        let id = key.clone();
        async move { get(&p, &id).await.is_some() }
    })
    .await;
    let user = get(&projection, &id).await.unwrap();
    assert_eq!((user.username.as_str(), user.display_name.as_str()), ("OldTimer", "OldTimer"));
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// The consistency check reads the logs first and the read models after:
/// models the projector moves on meanwhile are not drift (they are checked
/// again against the logs read anew), and a repair never rolls one back.
/// Renames flow through the live projection while the check runs, over and
/// over; a read model really ahead of its events is still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_moves_on_during_the_check_is_not_drift_and_is_not_rolled_back() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 4).await.unwrap();
    let ids: Vec<String> = (0..20).map(|_| Uuid::now_v7().to_string()).collect();
    for (i, id) in ids.iter().enumerate() {
        append(&store, id, &format!("mover{i}")).await;
    }
    let projection = Arc::new(user_projection(&store));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = SubscriptionConfig::new("rm.user", "c", "user", 4);
    let target = allies_store::RedisTarget::parse(&redis.url()).unwrap();
    let live = tokio::spawn(subscriber::run(target, config, projection.clone(), stopped));
    let rename = |n: u32| {
        let e = allies_contracts::guardian::events::v1::DisplayNameChanged {
            display_name: format!("name {n}"),
            changed_at_ms: 1_700_000_000_000 + i64::from(n),
        };
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "DisplayNameChanged".into(),
            schema_version: 1,
            content_type: allies_store::CONTENT_TYPE_JSON.into(),
            data: serde_json::to_vec(&e).unwrap(),
        }
    };
    let writer = {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            for n in 0..600u32 {
                let id = &ids[n as usize % ids.len()];
                let request = AppendRequest::new("user", id, ExpectedVersion::Any, &meta(), 1, vec![rename(n)]);
                store.append(request).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() {
        let report = projector::consistency::check(&projection.view, &users::Users, 4, true).await.unwrap();
        // A model may lag the logs read (not applied yet): that is reported
        // and repaired forward. None may be reported for moving on.
        for d in &report.drifted {
            assert!(!d.problem.contains("_version: expected") || behind(&d.problem), "moved on, not drift: {d:?}");
        }
        checks += 1;
    }
    writer.await.unwrap();
    assert!(checks >= 3, "the check ran while renames flowed ({checks} times)");
    // Once the projection caught up, nothing differs.
    wait_until(|| {
        let p = projection.clone();
        async move { projector::consistency::check(&p.view, &users::Users, 4, false).await.unwrap().drifted.is_empty() }
    })
    .await;
    let _ = stop.send(true);
    let _ = live.await;
    // A read model really ahead of its events (they are not in the logs) is drift.
    let key = format!("rm:user:{}", ids[0]);
    redis.raw(&["HSET", &key, "_version", "9999"]);
    let report = projector::consistency::check(&projection.view, &users::Users, 4, false).await.unwrap();
    assert_eq!(report.drifted.len(), 1, "{report:?}");
    assert!(report.drifted[0].problem.contains("_version"), "{report:?}");
}

/// Whether a `_version: expected "a", found "b"` problem is a model behind its events (b < a).
fn behind(problem: &str) -> bool {
    let Some(rest) = problem.split("_version: expected \"").nth(1) else { return false };
    let mut nums = rest.split('"').filter_map(|s| s.parse::<u64>().ok());
    matches!((nums.next(), nums.next()), (Some(want), Some(have)) if have < want)
}

#[tokio::test]
async fn another_players_read_is_the_public_profile_and_reads_nothing_private() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 4).await.unwrap();
    let projection = user_projection(&store);
    let id = Uuid::now_v7().to_string();
    assert_eq!(users::get_public(&projection.view, &id).await.unwrap(), None, "no such user");
    append(&store, &id, "alice").await;
    let rec = store.read("user", &id, 1, 1).await.unwrap().remove(0);
    projection.handle(&rec).await.unwrap();
    // Later events' fields, as the projection writes them: a login, a lockout,
    // a new display name (the profile's version moves, the aggregate's further).
    let key = format!("rm:user:{id}");
    redis.raw(&["HSET", &key, "last_login_ms", "1700000000500", "locked_until_ms", "4102444800000"]);
    redis.raw(&["HSET", &key, "display_name", "Alice A.", "profile_version", "3", "_version", "5"]);

    let full = get(&projection, &id).await.unwrap();
    assert_eq!((full.email.as_str(), full.status.as_str(), full.version), ("alice@example.com", "locked", 5));
    let public = users::get_public(&projection.view, &id).await.unwrap().unwrap();
    assert_eq!(public, users::public(full), "the same profile as the full read, made public");
    assert_eq!(
        (public.display_name.as_str(), public.version, public.registered_at_ms),
        ("Alice A.", 3, 1_700_000_000_000)
    );
    assert!(
        public.email.is_empty() && public.roles.is_empty() && public.status.is_empty() && public.last_login_ms == 0
    );

    // A list: the profiles it names in full, every other one public.
    let bob = Uuid::now_v7().to_string();
    append(&store, &bob, "bob").await;
    projection.handle(&store.read("user", &bob, 1, 1).await.unwrap().remove(0)).await.unwrap();
    let list = |full: users::Full| {
        let view = &projection.view;
        async move {
            let q = users::ListQuery { page_size: 10, by_name: true, full, ..Default::default() };
            let (page, _) = users::list(view, &q).await.unwrap();
            page.into_iter().map(|u| (u.username, !u.email.is_empty())).collect::<Vec<_>>()
        }
    };
    let named = |a: bool, b: bool| vec![("alice".to_owned(), a), ("bob".to_owned(), b)];
    assert_eq!(list(users::Full::default()).await, named(false, false), "by default none in full");
    assert_eq!(list(users::Full::Own(bob.clone())).await, named(false, true), "a player's own in full");
    assert_eq!(list(users::Full::All).await, named(true, true), "an admin's: all in full");
}

/// The username of the `i`-th seeded user: every third starts "zed".
fn username(i: usize) -> String {
    if i.is_multiple_of(3) { format!("zed{i:04}") } else { format!("lst{i:04}") }
}

/// `n` users written into the read model as the projection writes them,
/// registered in order; every third one's username starts "zed"; `gone`
/// are in the registration index without a model (a model removed, or a
/// Cluster crash between a model and its index writes). Returns the ids.
async fn seeded(view: &Namespace, n: usize, gone: &[usize]) -> Vec<String> {
    let mut conn = view.conn.clone();
    let ids: Vec<String> = (0..n).map(|i| format!("u{i:04}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let name = username(i);
        if !gone.contains(&i) {
            let fields =
                [("user_id", id.clone()), ("username", name.clone()), ("email", format!("{name}@example.com"))];
            let _: () = redis::cmd("HSET")
                .arg(view.key(&format!("user:{id}")))
                .arg(&fields)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let _: () = redis::cmd("ZADD")
            .arg(view.key("user:idx:registered"))
            .arg(i)
            .arg(id)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    ids
}

/// Every page of `q` from the start, following the tokens: the usernames
/// of each page and whether each was read in full.
async fn pages(view: &Namespace, mut q: users::ListQuery) -> Vec<Vec<(String, bool)>> {
    let mut out = Vec::new();
    loop {
        let (page, next) = users::list(view, &q).await.unwrap();
        assert!(page.len() <= q.page_size, "{} > {}", page.len(), q.page_size);
        out.push(page.into_iter().map(|u| (u.username, !u.email.is_empty())).collect());
        match next {
            Some(pos) => q.offset = pos,
            None => return out,
        }
    }
}

#[tokio::test]
async fn a_lists_pages_on_one_redis_and_on_a_cluster_follow_their_tokens_over_chunks_and_gaps() {
    let (redis, cluster) = (RedisServer::start(), RedisCluster::start());
    const N: usize = 450;
    let gone = [10, 33, 199, 200, 201, 399];
    let name = username;
    let present = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..N).filter(|i| !gone.contains(i) && keep(*i)).map(name).collect()
    };
    for url in [redis.url(), cluster.url()] {
        let store = RedisEventStore::connect(&url, 1).await.unwrap();
        let view = Namespace::new(store.connection(), "rm");
        let ids = seeded(&view, N, &gone).await;

        // Registration order in pages of 7 (the chunk of 200 index entries
        // ends inside a page, and a gap sits at its edge).
        let own = ids[5].clone();
        let q = users::ListQuery { page_size: 7, full: users::Full::Own(own.clone()), ..Default::default() };
        let got = pages(&view, q.clone()).await;
        assert!(got.iter().rev().skip(1).all(|p| p.len() == 7), "{url}: full pages before the last");
        let flat: Vec<(String, bool)> = got.into_iter().flatten().collect();
        let names: Vec<String> = flat.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, present(&|_| true), "{url}: every present user once, in order");
        assert_eq!(
            flat.iter().filter(|(_, full)| *full).map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            vec![name(5).as_str()],
            "{url}: the caller's own profile alone in full"
        );
        // Newest first, pages of 100, an admin's list: all in full.
        let q = users::ListQuery { page_size: 100, descending: true, full: users::Full::All, ..q };
        let flat: Vec<(String, bool)> = pages(&view, q).await.into_iter().flatten().collect();
        let mut newest = present(&|_| true);
        newest.reverse();
        assert_eq!(flat.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), newest, "{url}: newest first");
        assert!(flat.iter().all(|(_, full)| *full), "{url}: an admin's list in full");
        // A username prefix in registration order (each name checked).
        let q = users::ListQuery { page_size: 9, prefix: Some("ZED".into()), ..Default::default() };
        let names: Vec<String> = pages(&view, q).await.into_iter().flatten().map(|(n, _)| n).collect();
        assert_eq!(names, present(&|i| i.is_multiple_of(3)), "{url}: the prefix's users, case-insensitively");

        // Several models at once, in order, a missing one as None.
        let keys: Vec<String> = [0, 10, 2, 449].iter().map(|i| format!("user:{}", ids[*i])).collect();
        let models = view.models(&keys).await.unwrap();
        let got: Vec<Option<String>> = models.into_iter().map(|m| m.map(|m| m["username"].clone())).collect();
        assert_eq!(got, vec![Some(name(0)), None, Some(name(2)), Some(name(449))], "{url}");
    }
}
