//! The user projection against a real, private redis-server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_contracts::guardian::events::v1::UserRegistered;
use allies_core::{ExpectedVersion, Metadata};
use allies_store::subscriber::{self, SubscriptionConfig};
use allies_store::{EventStore, NewEvent, keys};
use allies_testkit::RedisServer;
use projector::users::{self, UserProjection};
use uuid::Uuid;

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

fn meta() -> Metadata {
    Metadata { correlation_id: Uuid::now_v7(), causation_id: Uuid::now_v7(), user_id: None, traceparent: None }
}

async fn append(store: &EventStore, id: &str, name: &str) {
    store.append("user", id, ExpectedVersion::NoStream, &meta(), 1, &[registered(id, name)]).await.unwrap();
}

async fn wait_until<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "condition not reached within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_redelivered_or_older_event_changes_nothing() {
    let redis = RedisServer::start();
    let store = EventStore::connect(&redis.url(), 4).await.unwrap();
    let id = Uuid::now_v7().to_string();
    append(&store, &id, "alice").await;
    let rec = store.read_stream("user", &id, 1).await.unwrap().remove(0);
    let projection = UserProjection::new(store.connection());

    assert!(projection.apply(&rec).await.unwrap(), "first delivery applies");
    let user = projection.get(&id).await.unwrap().expect("user in read model");
    assert_eq!((user.username.as_str(), user.version), ("alice", 1));

    // Someone edits the read model at version 1; a redelivery must not overwrite it.
    redis.raw(&["HSET", &users::key(&id), "email", "changed@example.com"]);
    assert!(!projection.apply(&rec).await.unwrap(), "redelivery is a no-op");
    assert_eq!(projection.get(&id).await.unwrap().unwrap().email, "changed@example.com");

    // The read model never holds the password hash.
    let raw = redis.raw(&["HGETALL", &users::key(&id)]);
    assert!(!raw.contains("argon2"), "{raw}");
}

#[tokio::test]
async fn a_restarted_consumer_first_finishes_its_own_pending_entries() {
    let redis = RedisServer::start();
    let store = EventStore::connect(&redis.url(), 1).await.unwrap();
    let first = Uuid::now_v7().to_string();
    append(&store, &first, "crashed").await;

    // A previous life of consumer "p1" read the entry and died before acking.
    let log = keys::log_key("user", 0);
    redis.raw(&["XGROUP", "CREATE", &log, users::GROUP, "0", "MKSTREAM"]);
    let delivered = redis.raw(&["XREADGROUP", "GROUP", users::GROUP, "p1", "COUNT", "10", "STREAMS", &log, ">"]);
    assert!(delivered.contains("crashed"), "{delivered}");
    assert_eq!(redis.raw(&["XPENDING", &log, users::GROUP]).lines().next(), Some(":1"));

    let projection = Arc::new(UserProjection::new(store.connection()));
    let client = allies_store::RedisTarget::parse(&redis.url()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = SubscriptionConfig::new(users::GROUP, "p1", "user", 1);
    let task = tokio::spawn(subscriber::run(client, config, projection.clone(), stopped));

    // Only pending delivery can bring "crashed" back: ">" never re-delivers it.
    let p = projection.clone();
    let id = first.clone();
    wait_until(|| {
        let p = p.clone();
        let id = id.clone();
        async move { p.get(&id).await.unwrap().is_some() }
    })
    .await;

    // New entries flow too, and everything ends acknowledged.
    let second = Uuid::now_v7().to_string();
    append(&store, &second, "fresh").await;
    let p = projection.clone();
    wait_until(|| {
        let p = p.clone();
        let id = second.clone();
        async move { p.get(&id).await.unwrap().is_some() }
    })
    .await;
    wait_until(|| {
        let pending = redis.raw(&["XPENDING", &log, users::GROUP]);
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
    let store = EventStore::connect(&redis.url(), 8).await.unwrap();
    let projection = Arc::new(UserProjection::new(store.connection()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = allies_store::RedisTarget::parse(&redis.url()).unwrap();
    let task = tokio::spawn(subscriber::run(
        client,
        SubscriptionConfig::new(users::GROUP, "p", "user", 8),
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
            async move { p.get(&id).await.unwrap().is_some() }
        })
        .await;
        assert_eq!(projection.get(id).await.unwrap().unwrap().username, format!("user{i}"));
    }
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_v1_user_registered_from_the_first_release_is_upcast_into_the_read_model() {
    let redis = RedisServer::start();
    let store = EventStore::connect(&redis.url(), 1).await.unwrap();
    let text = include_str!("../../guardian/tests/fixtures/user_registered_v1.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let id = v["aggregate_id"].as_str().unwrap().to_owned();
    let mut args = vec!["XADD".to_owned(), keys::log_key("user", 0), "*".into()];
    args.extend(v["fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    redis.raw(&args);

    let projection = Arc::new(UserProjection::new(store.connection()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = allies_store::RedisTarget::parse(&redis.url()).unwrap();
    let task = tokio::spawn(subscriber::run(
        client,
        SubscriptionConfig::new(users::GROUP, "p", "user", 1),
        projection.clone(),
        stopped,
    ));
    let p = projection.clone();
    let key = id.clone();
    wait_until(|| {
        let p = p.clone();
        let id = key.clone();
        async move { p.get(&id).await.unwrap().is_some() }
    })
    .await;
    let user = projection.get(&id).await.unwrap().unwrap();
    assert_eq!((user.username.as_str(), user.display_name.as_str()), ("OldTimer", "OldTimer"));
    stop.send(true).unwrap();
    task.await.unwrap();
}
