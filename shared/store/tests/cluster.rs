//! The event store, unchanged, against a real three-master Redis Cluster.

use std::sync::Arc;

use allies_core::{Aggregate, DecodeError, DomainEvent, ExpectedVersion, Metadata, Snapshot};
use allies_store::{AppendError, AppendOptions, CommandRecord, EventStore, NewEvent, keys};
use allies_testkit::RedisCluster;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Tally {
    total: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counted {
    n: i64,
}

impl DomainEvent for Counted {
    fn event_type(&self) -> &'static str {
        "Counted"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn encode_json(&self) -> Result<Vec<u8>, DecodeError> {
        serde_json::to_vec(self).map_err(|e| DecodeError::malformed("Counted", e))
    }
    fn decode_json(t: &str, _v: u32, data: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(data).map_err(|e| DecodeError::malformed(t, e))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = i64;
    type Event = Counted;
    type Error = Never;
    fn decide(&self, n: &i64) -> Result<Vec<Counted>, Never> {
        Ok(vec![Counted { n: *n }])
    }
    fn evolve(&mut self, e: &Counted) {
        self.total += e.n;
    }
}

impl Snapshot for Tally {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

fn meta() -> Metadata {
    Metadata { correlation_id: Uuid::now_v7(), causation_id: Uuid::now_v7(), user_id: None, traceparent: None }
}

/// One cluster for all tests of this file would be faster, but each test
/// owns its processes so they can run in parallel and clean up.
async fn cluster_store() -> (RedisCluster, EventStore) {
    let cluster = RedisCluster::start();
    let store = EventStore::connect(&cluster.url(), 16).await.expect("connect to the cluster");
    (cluster, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_append_load_conflicts_and_partitions_across_masters() {
    let (cluster, store) = cluster_store().await;
    let ids: Vec<String> = (0..48).map(|i| format!("agg-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let out = store
            .append_events::<Tally>(
                id,
                ExpectedVersion::NoStream,
                &meta(),
                0,
                &[Counted { n: i as i64 }, Counted { n: 1 }],
            )
            .await
            .unwrap();
        assert_eq!(out.version, 2);
    }
    for (i, id) in ids.iter().enumerate() {
        let (t, v) = store.load::<Tally>(id).await.unwrap();
        assert_eq!((t.total, v), (i as i64 + 1, 2));
    }
    let r = store.append_events::<Tally>(&ids[0], ExpectedVersion::Exact(1), &meta(), 0, &[Counted { n: 1 }]).await;
    assert!(matches!(r, Err(AppendError::Conflict { actual: 2, .. })), "{r:?}");
    // The partitions really are spread over the three masters.
    let owners: std::collections::HashSet<usize> = (0..16)
        .filter_map(|p| {
            let key = keys::log_key("tally", p);
            cluster
                .nodes
                .iter()
                .position(|n| n.raw(&["XLEN", &key]).starts_with(':') && n.raw(&["EXISTS", &key]) == ":1")
        })
        .collect();
    assert_eq!(owners.len(), 3, "partition logs live on every master");
    let total_log: usize = (0..16)
        .map(|p| {
            cluster.raw(&["XLEN", &keys::log_key("tally", p)]).trim_start_matches(':').parse::<usize>().unwrap_or(0)
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
                let v = store.read_stream("tally", "hot", 1).await.unwrap().len() as u64;
                let e = NewEvent::encode(&Counted { n: 1 }).unwrap();
                let id = e.event_id;
                match store.append("tally", "hot", ExpectedVersion::after_load(v), &meta(), 0, &[e]).await {
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
    let stream = store.read_stream("tally", "hot", 1).await.unwrap();
    let versions: Vec<u64> = stream.iter().map(|r| r.envelope.version).collect();
    assert_eq!(versions, (1..=wins.len() as u64).collect::<Vec<_>>());
    for (id, v) in wins {
        assert_eq!(stream[v as usize - 1].envelope.event_id, id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_snapshots_state_and_idempotency() {
    let (_cluster, store) = cluster_store().await;
    let batch: Vec<Counted> = (0..10).map(|n| Counted { n }).collect();
    store.append_events::<Tally>("s", ExpectedVersion::Any, &meta(), 0, &batch).await.unwrap();
    let (t, v) = store.load::<Tally>("s").await.unwrap();
    assert!(store.save_snapshot("s", &t, v, 1).await.unwrap());
    store.append_events::<Tally>("s", ExpectedVersion::Exact(10), &meta(), 0, &batch[..2]).await.unwrap();
    let loaded = store.load_with_snapshot::<Tally>("s").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version, loaded.snapshot.map(|s| s.0)), (46, 12, Some(10)));

    let options = AppendOptions {
        state: Some(allies_store::StateWrite { fields: vec![("status".into(), "active".into())], expire_at_ms: None }),
        command: Some(CommandRecord {
            id: "c1".into(),
            fingerprint: "f".into(),
            ttl: std::time::Duration::from_secs(60),
        }),
        ..Default::default()
    };
    let first = store
        .append_events_with::<Tally>("i", ExpectedVersion::NoStream, &meta(), 0, &batch[..1], &options)
        .await
        .unwrap();
    let again = store
        .append_events_with::<Tally>("i", ExpectedVersion::NoStream, &meta(), 0, &batch[..1], &options)
        .await
        .unwrap();
    assert!(again.duplicate && again.log_ids == first.log_ids);
    assert_eq!(store.state_field("tally", "i", "status").await.unwrap().as_deref(), Some("active"));
    assert_eq!(store.read_stream("tally", "i", 1).await.unwrap().len(), 1);
}
