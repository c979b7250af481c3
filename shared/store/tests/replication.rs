//! Appends acknowledged only once a replica holds them (`WAIT`), against a
//! real redis-server and its real replica.

use std::time::{Duration, Instant};

use allies_core::{EventFormat, ExpectedVersion};
use allies_store::{AppendError, AppendRequest, CommandRecord, EventStore, RedisEventStore, ReplicaAcks};
use allies_testkit::RedisServer;
use allies_testkit::fixtures::{Added, Counter, meta};

const TIMEOUT: Duration = Duration::from_millis(150);

async fn connect(redis: &RedisServer, replicas: u32) -> RedisEventStore {
    RedisEventStore::connect(&redis.url(), 16)
        .await
        .expect("connect")
        .with_replica_acks(ReplicaAcks { replicas, timeout: TIMEOUT })
}

fn request(id: &str, command_id: &str, n: i64) -> AppendRequest {
    AppendRequest::typed::<Counter>(id, ExpectedVersion::Any, &meta(), 0, &[Added::new(n, 0)], EventFormat::Json)
        .unwrap()
        .with_command(CommandRecord {
            id: command_id.into(),
            scope: String::new(),
            fingerprint: format!("f{n}"),
            ttl: Duration::from_secs(60),
        })
}

/// Appends until a replica acknowledges it, as a client retries an
/// UNAVAILABLE answer: the same command id, so a retry confirms what the
/// first attempt wrote instead of writing again. With a healthy replica the
/// first attempt is acknowledged; on a loaded test machine the replica's
/// ack can miss the short timeout this file uses.
async fn acknowledged(store: &RedisEventStore, request: impl Fn() -> AppendRequest) -> allies_store::AppendOutcome {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store.append(request()).await {
            Err(AppendError::NotReplicated { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_acknowledged_only_once_a_replica_holds_it_and_a_retry_confirms_without_writing_again() {
    let master = RedisServer::start();
    let replica = master.start_replica();
    let store = connect(&master, 1).await;

    // With the replica up: acknowledged, and the replica has it.
    let first = acknowledged(&store, || request("c", "k1", 1)).await;
    assert_eq!(first.version, 1);
    let stream = allies_store::keys::stream_key("counter", first.partition, "c");
    assert_eq!(replica.raw(&["XLEN", &stream]).trim(), ":1", "acknowledged means on the replica");

    // The replica stalls: the append is written on the master but not
    // acknowledged — UNAVAILABLE after the timeout, retry with the same id.
    replica.freeze();
    let began = Instant::now();
    let r = store.append(request("c", "k2", 2)).await;
    let waited = began.elapsed();
    assert!(matches!(r, Err(AppendError::NotReplicated { acked: 0, wanted: 1, .. })), "{r:?}");
    assert!(waited >= TIMEOUT, "it waited for the replica: {waited:?}");
    let status = allies_core::ServiceError::code(r.as_ref().unwrap_err());
    assert_eq!(status, allies_core::ErrorCode::Unavailable);
    assert_eq!(master.raw(&["XLEN", &stream]).trim(), ":2", "written on the master");

    // A retry while it is still stalled is refused the same way, through
    // another connection too (the probe write covers what it did not write).
    let other = connect(&master, 1).await;
    let r = other.append(request("c", "k2", 2)).await;
    assert!(matches!(r, Err(AppendError::NotReplicated { .. })), "{r:?}");
    let r = other.command_outcome("counter", "c", &request("c", "k2", 2).command.unwrap()).await;
    assert!(matches!(r, Err(AppendError::NotReplicated { .. })), "{r:?}");

    // The replica is back: the retry is acknowledged with the first write's
    // answer, and nothing was written twice.
    replica.resume();
    let again = acknowledged(&other, || request("c", "k2", 2)).await;
    assert!(again.duplicate);
    assert_eq!(again.version, 2);
    assert_eq!(master.raw(&["XLEN", &stream]).trim(), ":2");
    let deadline = Instant::now() + Duration::from_secs(5);
    while replica.raw(&["XLEN", &stream]).trim() != ":2" {
        assert!(Instant::now() < deadline, "the replica caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cost of the round trip to the replica, printed (not asserted: a
/// benchmark's business). Off, an append never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replica_acks_an_append_does_not_wait_for_a_stalled_replica() {
    let master = RedisServer::start();
    let replica = master.start_replica();
    let off = connect(&master, 0).await;
    let on = connect(&master, 1).await;
    let mut took = [Duration::ZERO; 2];
    for (i, s) in [&off, &on].into_iter().enumerate() {
        let began = Instant::now();
        for n in 0..200 {
            acknowledged(s, || request(&format!("x{i}"), &format!("k{n}"), n)).await;
        }
        took[i] = began.elapsed() / 200;
    }
    eprintln!("one append, one connection: {:?} without WAIT, {:?} with WAIT 1", took[0], took[1]);
    replica.freeze();
    let began = Instant::now();
    off.append(request("y", "k", 1)).await.unwrap();
    assert!(began.elapsed() < TIMEOUT, "no wait without replica acks");
    replica.resume();
}
