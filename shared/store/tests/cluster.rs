//! The event store, unchanged, against a real three-master Redis Cluster.

use std::sync::Arc;

use allies_core::{EventFormat, ExpectedVersion};
use allies_store::{
    AppendError, AppendRequest, CommandRecord, EventStore, EventStoreExt, NewEvent, RedisEventStore, keys, load,
    save_snapshot,
};
use allies_testkit::RedisCluster;
use allies_testkit::fixtures::{Added, Counter, meta};

/// One cluster for all tests of this file would be faster, but each test
/// owns its processes so they can run in parallel and clean up.
async fn cluster_store() -> (RedisCluster, RedisEventStore) {
    let cluster = RedisCluster::start();
    let store = RedisEventStore::connect(&cluster.url(), 16).await.expect("connect to the cluster");
    (cluster, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_append_load_conflicts_and_partitions_across_masters() {
    let (cluster, store) = cluster_store().await;
    let ids: Vec<String> = (0..48).map(|i| format!("agg-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let out = store
            .append_events::<Counter>(
                id,
                ExpectedVersion::NoStream,
                &meta(),
                0,
                &[Added::new(i as i64, 0), Added::new(1, 0)],
            )
            .await
            .unwrap();
        assert_eq!(out.version, 2);
    }
    for (i, id) in ids.iter().enumerate() {
        let (t, v) = store.load_events::<Counter>(id).await.unwrap();
        assert_eq!((t.total, v), (i as i64 + 1, 2));
    }
    let r = store.append_events::<Counter>(&ids[0], ExpectedVersion::Exact(1), &meta(), 0, &[Added::new(1, 0)]).await;
    assert!(matches!(r, Err(AppendError::Conflict { actual: 2, .. })), "{r:?}");
    // The partitions really are spread over the three masters.
    let owners: std::collections::HashSet<usize> = (0..16)
        .filter_map(|p| {
            let key = keys::log_key("counter", p);
            cluster
                .nodes
                .iter()
                .position(|n| n.raw(&["XLEN", &key]).starts_with(':') && n.raw(&["EXISTS", &key]) == ":1")
        })
        .collect();
    assert_eq!(owners.len(), 3, "partition logs live on every master");
    let total_log: usize = (0..16)
        .map(|p| {
            cluster.raw(&["XLEN", &keys::log_key("counter", p)]).trim_start_matches(':').parse::<usize>().unwrap_or(0)
        })
        .sum();
    assert_eq!(total_log, 96);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_fifty_concurrent_writers_never_lose_or_duplicate() {
    let (_cluster, store) = cluster_store().await;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            for _ in 0..10 {
                let v = store.read("counter", "hot", 1, usize::MAX).await.unwrap().len() as u64;
                let e = NewEvent::encode(&Added::new(1, 0)).unwrap();
                let id = e.event_id;
                match store
                    .append(AppendRequest::new("counter", "hot", ExpectedVersion::after_load(v), &meta(), 0, vec![e]))
                    .await
                {
                    Ok(out) => wins.push((id, out.version)),
                    Err(AppendError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            wins
        }));
    }
    let mut wins = Vec::new();
    for t in tasks {
        wins.extend(t.await.unwrap());
    }
    let stream = store.read("counter", "hot", 1, usize::MAX).await.unwrap();
    let versions: Vec<u64> = stream.iter().map(|r| r.envelope.version).collect();
    assert_eq!(versions, (1..=wins.len() as u64).collect::<Vec<_>>());
    for (id, v) in wins {
        assert_eq!(stream[v as usize - 1].envelope.event_id, id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_snapshots_state_and_idempotency() {
    let (_cluster, store) = cluster_store().await;
    let batch: Vec<Added> = (0..10).map(|n| Added::new(n, 0)).collect();
    store.append_events::<Counter>("s", ExpectedVersion::Any, &meta(), 0, &batch).await.unwrap();
    let (t, v) = store.load_events::<Counter>("s").await.unwrap();
    assert!(save_snapshot(&store, "s", &t, v, 1).await.unwrap());
    store.append_events::<Counter>("s", ExpectedVersion::Exact(10), &meta(), 0, &batch[..2]).await.unwrap();
    let loaded = load::<Counter>(&store, "s").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version, loaded.snapshot.map(|s| s.0)), (46, 12, Some(10)));

    let request = || {
        AppendRequest::typed::<Counter>("i", ExpectedVersion::NoStream, &meta(), 0, &batch[..1], EventFormat::Json)
            .unwrap()
            .with_state_fields(allies_store::StateWrite {
                fields: vec![("status".into(), "active".into())],
                expire_at_ms: None,
            })
            .with_command(CommandRecord {
                id: "c1".into(),
                scope: String::new(),
                fingerprint: "f".into(),
                ttl: std::time::Duration::from_secs(60),
            })
    };
    let first = store.append(request()).await.unwrap();
    let again = store.append(request()).await.unwrap();
    assert!(again.duplicate && again.log_ids == first.log_ids);
    assert_eq!(store.state_field("counter", "i", "status").await.unwrap().as_deref(), Some("active"));
    assert_eq!(store.read("counter", "i", 1, usize::MAX).await.unwrap().len(), 1);
}
