//! Following streams without a consumer group (`tail::follow_all`), on a
//! real redis-server: one XREAD for several streams, each from its own
//! position, every entry after it handed on once, in its stream's order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allies_store::{RedisTarget, tail};
use allies_testkit::RedisServer;
use tokio::sync::watch;

fn xadd(redis: &RedisServer, key: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| redis.raw(&["XADD", key, "*", "n", &i.to_string()])).collect()
}

#[tokio::test]
async fn one_tail_follows_several_streams_each_from_its_position_in_order_and_once() {
    let redis = RedisServer::start();
    let (a, b, c) = ("t:{x}:a", "t:{x}:b", "t:{x}:c");
    let a_before = xadd(&redis, a, 3);
    let b_before = xadd(&redis, b, 300); // more than one read's COUNT (256)
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let streams = vec![
        (a.to_owned(), "0-0".to_owned()),     // from the start
        (b.to_owned(), b_before[99].clone()), // after its 100th entry
        (c.to_owned(), "0-0".to_owned()),     // empty yet
    ];
    let s = seen.clone();
    let follow = tail::follow_all(
        RedisTarget::parse(&redis.url()).unwrap(),
        streams,
        Duration::from_millis(5),
        stop_rx,
        move |i, entry| {
            s.lock().unwrap().push((i, entry.id));
            async {}
        },
    );
    let task = tokio::spawn(follow);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Entries arriving while it waits, on every stream.
    let c_after = xadd(&redis, c, 2);
    let a_after = xadd(&redis, a, 2);
    let b_after = xadd(&redis, b, 1);
    let want = |i: usize, ids: Vec<&String>| ids.into_iter().map(|id| (i, id.clone())).collect::<Vec<_>>();
    let expected = [
        want(0, a_before.iter().chain(&a_after).collect()),
        want(1, b_before[100..].iter().chain(&b_after).collect()),
        want(2, c_after.iter().collect()),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = seen.lock().unwrap().clone();
        let per = |i: usize| got.iter().filter(|(s, _)| *s == i).cloned().collect::<Vec<_>>();
        if (0..3).all(|i| per(i).len() >= expected[i].len()) || Instant::now() > deadline {
            for (i, want) in expected.iter().enumerate() {
                assert_eq!(per(i), *want, "stream {i}: every entry after its position, once, in order");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("a stop ends the tail").unwrap();
}

#[tokio::test]
async fn a_tail_of_one_stream_hands_on_what_comes_after_its_position() {
    let redis = RedisServer::start();
    let before = xadd(&redis, "t:one", 2);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let s = seen.clone();
    let task = tokio::spawn(tail::follow(
        RedisTarget::parse(&redis.url()).unwrap(),
        "t:one".into(),
        before[0].clone(),
        Duration::ZERO,
        stop_rx,
        move |entry| {
            s.lock().unwrap().push(entry.id);
            async {}
        },
    ));
    let after = xadd(&redis, "t:one", 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*seen.lock().unwrap(), vec![before[1].clone(), after[0].clone()]);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("a stop ends the tail").unwrap();
}
