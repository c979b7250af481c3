//! Applying a read model's changes against a real, private redis-server:
//! on a single Redis one script writes the models and their index entries
//! together, with the same rules as model by model on a Cluster.

use allies_store::RedisEventStore;
use allies_testkit::{RedisCluster, RedisServer};
use projector::readmodel::Namespace;
use projector::registry::{Change, IndexOp};

fn model(version: u64, set: &[(&str, &str)], del: &[&str]) -> Change {
    Change::Model {
        key: "thing:1".into(),
        id: "1".into(),
        version,
        set: set.iter().map(|(f, v)| ((*f).to_owned(), (*v).to_owned())).collect(),
        del: del.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn indexes(name: &str) -> Vec<Change> {
    vec![
        Change::Index(IndexOp::HSet { key: "idx:name".into(), field: name.into(), value: "1".into() }),
        Change::Index(IndexOp::ZAdd { key: "idx:sorted".into(), member: name.into(), score: 2.5 }),
        Change::Index(IndexOp::SAdd { key: "idx:set".into(), member: name.into() }),
    ]
}

#[tokio::test]
async fn an_events_model_and_index_writes_follow_the_version_rules() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let view = Namespace::new(store.connection(), "rm");

    // Version 2: the model and every index are written.
    let mut changes = vec![model(2, &[("name", "ann"), ("note", "x")], &[])];
    changes.extend(indexes("ann"));
    view.apply(&changes).await.unwrap();
    assert_eq!(redis.raw(&["HGET", "rm:thing:1", "name"]), "ann");
    assert_eq!(redis.raw(&["HGET", "rm:thing:1", "_version"]), "2");
    assert_eq!(redis.raw(&["HGET", "rm:idx:name", "ann"]), "1");
    assert_eq!(redis.raw(&["ZSCORE", "rm:idx:sorted", "ann"]), "2.5");
    assert_eq!(redis.raw(&["SISMEMBER", "rm:idx:set", "ann"]), ":1");

    // An older event (version 1) redelivered: neither the model nor an index moves.
    let mut older = vec![model(1, &[("name", "old")], &[])];
    older.extend(indexes("old"));
    view.apply(&older).await.unwrap();
    assert_eq!(redis.raw(&["HGET", "rm:thing:1", "name"]), "ann");
    assert_eq!(redis.raw(&["HEXISTS", "rm:idx:name", "old"]), ":0");
    assert_eq!(redis.raw(&["SISMEMBER", "rm:idx:set", "old"]), ":0");

    // The same version again (a redelivery of the latest event): the model
    // stays, its index writes are made again (a lost index entry heals).
    redis.raw(&["HDEL", "rm:idx:name", "ann"]);
    redis.raw(&["HSET", "rm:thing:1", "note", "edited"]);
    view.apply(&changes).await.unwrap();
    assert_eq!(redis.raw(&["HGET", "rm:thing:1", "note"]), "edited", "the model is not rewritten");
    assert_eq!(redis.raw(&["HGET", "rm:idx:name", "ann"]), "1", "the index entry is back");

    // A newer event sets, deletes, and removes index entries.
    let newer = vec![
        model(3, &[("name", "bea")], &["note"]),
        Change::Index(IndexOp::HDel { key: "idx:name".into(), field: "ann".into() }),
        Change::Index(IndexOp::ZRem { key: "idx:sorted".into(), member: "ann".into() }),
        Change::Index(IndexOp::SRem { key: "idx:set".into(), member: "ann".into() }),
        Change::Index(IndexOp::HSet { key: "idx:name".into(), field: "bea".into(), value: "1".into() }),
    ];
    view.apply(&newer).await.unwrap();
    assert_eq!(redis.raw(&["HGET", "rm:thing:1", "name"]), "bea");
    assert_eq!(redis.raw(&["HEXISTS", "rm:thing:1", "note"]), ":0");
    assert_eq!(redis.raw(&["HGET", "rm:thing:1", "_version"]), "3");
    assert_eq!(redis.raw(&["HEXISTS", "rm:idx:name", "ann"]), ":0");
    assert_eq!(redis.raw(&["HGET", "rm:idx:name", "bea"]), "1");
    assert_eq!(redis.raw(&["ZCARD", "rm:idx:sorted"]), ":0");
    assert_eq!(redis.raw(&["SCARD", "rm:idx:set"]), ":0");

    // Index writes without a model are always made.
    view.apply(&indexes("cid")).await.unwrap();
    assert_eq!(redis.raw(&["HGET", "rm:idx:name", "cid"]), "1");
}

fn model_of(key: &str, version: u64, set: &[(&str, &str)], del: &[&str]) -> Change {
    match model(version, set, del) {
        Change::Model { id, version, set, del, .. } => Change::Model { key: key.into(), id, version, set, del },
        other => other,
    }
}

/// Every key of a namespace and what it holds, by kind, for comparing two.
fn contents(redis: &RedisServer, ns: &str) -> Vec<(String, String)> {
    let keys = redis.raw(&["KEYS", &format!("{ns}:*")]);
    held(keys.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect(), ns, |args| redis.raw(args))
}

/// The same on a Redis Cluster (every master's keys).
fn cluster_contents(cluster: &RedisCluster, ns: &str) -> Vec<(String, String)> {
    held(cluster.keys(&format!("{ns}:*")), ns, |args| cluster.raw(args))
}

fn held(mut keys: Vec<String>, ns: &str, raw: impl Fn(&[&str]) -> String) -> Vec<(String, String)> {
    keys.sort();
    keys.iter()
        .map(|k| {
            let held = match raw(&["TYPE", k]).trim_start_matches('+') {
                "hash" => {
                    let mut lines: Vec<String> = raw(&["HGETALL", k]).lines().map(str::to_owned).collect();
                    let mut pairs: Vec<String> = lines.chunks_mut(2).map(|p| p.join("=")).collect();
                    pairs.sort();
                    pairs.join(",")
                }
                "zset" => raw(&["ZRANGE", k, "0", "-1", "WITHSCORES"]),
                "set" => {
                    let mut m: Vec<String> = raw(&["SMEMBERS", k]).lines().map(str::to_owned).collect();
                    m.sort();
                    m.join(",")
                }
                other => other.to_owned(),
            };
            (k.trim_start_matches(ns).to_owned(), held)
        })
        .collect()
}

#[tokio::test]
async fn a_reads_events_applied_together_end_as_applied_one_by_one() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let together = Namespace::new(store.connection(), "a");
    let one_by_one = Namespace::new(store.connection(), "b");

    // Two models, interleaved; an older event redelivered after a newer one
    // (its index writes must not be made), a same-version redelivery (they
    // are), index writes without a model, an event with no change at all.
    let with = |mut c: Vec<Change>, more: Vec<Change>| {
        c.extend(more);
        c
    };
    let events: Vec<Vec<Change>> = vec![
        with(vec![model_of("thing:1", 1, &[("name", "ann"), ("note", "x")], &[])], indexes("ann")),
        vec![model_of("thing:2", 1, &[("name", "cid")], &[])],
        with(
            vec![model_of("thing:1", 2, &[("name", "bea")], &["note"])],
            vec![
                Change::Index(IndexOp::HDel { key: "idx:name".into(), field: "ann".into() }),
                Change::Index(IndexOp::ZRem { key: "idx:sorted".into(), member: "ann".into() }),
                Change::Index(IndexOp::SRem { key: "idx:set".into(), member: "ann".into() }),
                Change::Index(IndexOp::HSet { key: "idx:name".into(), field: "bea".into(), value: "1".into() }),
            ],
        ),
        with(vec![model_of("thing:1", 1, &[("name", "old")], &[])], indexes("old")),
        with(vec![model_of("thing:1", 2, &[("name", "bea")], &["note"])], indexes("bea")),
        vec![],
        indexes("dan"),
        vec![model_of("thing:2", 2, &[("level", "3")], &[])],
    ];
    together.apply_many(&events).await.unwrap();
    for changes in &events {
        one_by_one.apply(changes).await.unwrap();
    }
    let (a, b) = (contents(&redis, "a"), contents(&redis, "b"));
    assert_eq!(a, b);
    // And what that is: the older event moved nothing, the rest applied in order.
    assert_eq!(redis.raw(&["HGET", "a:thing:1", "name"]), "bea");
    assert_eq!(redis.raw(&["HEXISTS", "a:thing:1", "note"]), ":0");
    assert_eq!(redis.raw(&["HEXISTS", "a:idx:name", "old"]), ":0");
    assert_eq!(redis.raw(&["HGET", "a:idx:name", "bea"]), "1");
    assert_eq!(redis.raw(&["HGET", "a:idx:name", "dan"]), "1");
    assert_eq!(redis.raw(&["HGET", "a:thing:2", "level"]), "3");
    assert_eq!(redis.raw(&["HGET", "a:thing:2", "_version"]), "2");

    // Applying the whole read again (a redelivery after a crash before the
    // ack) changes nothing.
    together.apply_many(&events).await.unwrap();
    assert_eq!(contents(&redis, "a"), a);

    // Nothing to write: no round trip, no error.
    together.apply_many(&[Vec::<Change>::new(), Vec::new()]).await.unwrap();
    assert_eq!(contents(&redis, "a"), a);
}

#[tokio::test]
async fn a_models_runs_written_as_one_change_end_as_event_by_event_from_any_version() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    // A game's read: two models' tower events interleaved (model only,
    // consecutive versions: folded), a field deleted then set again, an
    // event with an index write in the middle of one model's run, a gap.
    let with_index = |mut c: Vec<Change>| {
        c.extend(indexes("joined"));
        c
    };
    let events: Vec<Vec<Change>> = vec![
        vec![model_of("g:1", 1, &[("t:1", "a0"), ("gold", "90")], &[])],
        vec![model_of("g:2", 1, &[("gold", "50")], &[])],
        vec![model_of("g:1", 2, &[("t:1", "a1"), ("gold", "80")], &[])],
        vec![model_of("g:1", 3, &[("gold", "95")], &["t:1"])],
        vec![model_of("g:2", 2, &[("t:7", "x")], &[])],
        vec![model_of("g:1", 4, &[("t:1", "c0"), ("t:2", "b0")], &[])],
        with_index(vec![model_of("g:1", 5, &[("players", "2")], &[])]),
        vec![model_of("g:1", 6, &[("t:2", "b1")], &["gold"])],
        vec![model_of("g:1", 7, &[("gold", "5")], &[])],
        vec![model_of("g:2", 4, &[("t:7", "y")], &[])],
    ];
    assert!(projector::readmodel::coalesce(&events).len() < events.len(), "the read folds");
    // Whatever the models held already (a redelivery after a crash part-way),
    // the read applied together ends where it ends applied event by event.
    for (n, already) in (0..=events.len()).enumerate() {
        let (together, one_by_one) = (format!("a{n}"), format!("b{n}"));
        let (together, one_by_one) =
            (Namespace::new(store.connection(), &together), Namespace::new(store.connection(), &one_by_one));
        for changes in &events[..already] {
            together.apply(changes).await.unwrap();
            one_by_one.apply(changes).await.unwrap();
        }
        together.apply_many(&events).await.unwrap();
        for changes in &events {
            one_by_one.apply(changes).await.unwrap();
        }
        assert_eq!(contents(&redis, &format!("a{n}")), contents(&redis, &format!("b{n}")), "{already} applied before");
    }
    assert_eq!(redis.raw(&["HGETALL", "a0:g:1"]).lines().count(), 2 * 5, "t:1, t:2, gold, players, _version");

    // A read missing a version the model has (acknowledged before, say: a
    // pending entry's retry) is not folded across the gap: version 1's
    // field never overwrites what version 2 wrote.
    let (together, one_by_one) = (Namespace::new(store.connection(), "c"), Namespace::new(store.connection(), "d"));
    let gap = vec![vec![model_of("g:3", 1, &[("gold", "10")], &[])], vec![model_of("g:3", 3, &[("t:1", "a")], &[])]];
    for ns in [&together, &one_by_one] {
        ns.apply(&[model_of("g:3", 1, &[("gold", "10")], &[])]).await.unwrap();
        ns.apply(&[model_of("g:3", 2, &[("gold", "20")], &[])]).await.unwrap();
    }
    together.apply_many(&gap).await.unwrap();
    for changes in &gap {
        one_by_one.apply(changes).await.unwrap();
    }
    assert_eq!(contents(&redis, "c"), contents(&redis, "d"));
    assert_eq!(redis.raw(&["HGET", "c:g:3", "gold"]), "20");
    assert_eq!(redis.raw(&["HGET", "a0:g:1", "_version"]), "7");
    assert_eq!(redis.raw(&["HGET", "a0:g:2", "t:7"]), "y");
}

#[tokio::test]
async fn a_reads_index_writes_sent_key_by_key_end_as_write_by_write() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    // A long read (more members for one key than one command carries)
    // whose events add, overwrite and remove the same few fields and
    // members of three indexes, switching op on a key often; some events
    // also write a model (an older version among them: its index writes
    // are not made), and one index key is a model key too (a field of it
    // written by both).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut events: Vec<Vec<Change>> = Vec::new();
    let mut version = 0;
    for i in 0..1_500 {
        // "model" is also a field the model written to idx:h sets.
        let member = match next(6) {
            5 => "model".to_owned(),
            m => format!("m{m}"),
        };
        let mut changes = Vec::new();
        match next(4) {
            0 => {
                version += 1;
                changes.push(model_of("thing:1", version, &[("n", &i.to_string())], &[]));
            }
            1 => changes.push(model_of("thing:1", version.saturating_sub(1), &[("n", "old")], &[])),
            2 => changes.push(model_of("idx:h", 10_000 + i, &[("model", "yes")], &[])),
            _ => {}
        }
        for _ in 0..=next(3) {
            changes.push(Change::Index(match next(6) {
                0 => IndexOp::HSet { key: "idx:h".into(), field: member.clone(), value: i.to_string() },
                1 => IndexOp::HDel { key: "idx:h".into(), field: member.clone() },
                2 => IndexOp::ZAdd { key: "idx:z".into(), member: member.clone(), score: (i % 7) as f64 },
                3 => IndexOp::ZRem { key: "idx:z".into(), member: member.clone() },
                4 => IndexOp::SAdd { key: "idx:s".into(), member: member.clone() },
                _ => IndexOp::SRem { key: "idx:s".into(), member: member.clone() },
            }));
        }
        events.push(changes);
    }
    // And last, an index write to a field the next event's model write sets.
    events.push(vec![Change::Index(IndexOp::HSet {
        key: "idx:h".into(),
        field: "model".into(),
        value: "index".into(),
    })]);
    events.push(vec![model_of("idx:h", 20_000, &[("model", "last")], &[])]);
    let (together, one_by_one) = (Namespace::new(store.connection(), "a"), Namespace::new(store.connection(), "b"));
    together.apply_many(&events).await.unwrap();
    for changes in &events {
        one_by_one.apply(changes).await.unwrap();
    }
    let a = contents(&redis, "a");
    assert_eq!(a, contents(&redis, "b"));
    assert!(a.iter().any(|(k, v)| k == ":idx:z" && !v.is_empty()), "the indexes hold something: {a:?}");
    assert_eq!(redis.raw(&["HGET", "a:idx:h", "model"]), "last");
    // The gathered writes were sent as fewer commands than writes (runs
    // of one op on a key are about two writes long here: ~1/4 of the
    // writes, against ~1/2 sent one by one, the older events' left out).
    let calls = |redis: &RedisServer, cmds: &[&str]| -> usize {
        let stats = redis.raw(&["INFO", "commandstats"]);
        cmds.iter()
            .filter_map(|cmd| {
                let prefix = format!("cmdstat_{cmd}:calls=");
                stats
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix).map(|rest| rest.split(',').next().unwrap().to_owned()))
            })
            .map(|n| n.parse::<usize>().unwrap())
            .sum()
    };
    redis.raw(&["CONFIG", "RESETSTAT"]);
    let c = Namespace::new(store.connection(), "c");
    c.apply_many(&events).await.unwrap();
    let sent = calls(&redis, &["zadd", "zrem", "sadd", "srem"]);
    let writes: usize = events.iter().map(|c| c.iter().filter(|c| matches!(c, Change::Index(_))).count()).sum();
    assert!(sent > 0 && sent * 5 < writes * 2, "{sent} set commands for {writes} index writes");
    assert_eq!(contents(&redis, "c"), a);

    // More members for one key than one command carries: sent in parts.
    let many: Vec<Vec<Change>> = (0..1_500)
        .map(|i| vec![Change::Index(IndexOp::SAdd { key: "idx:big".into(), member: format!("u{i}") })])
        .collect();
    redis.raw(&["CONFIG", "RESETSTAT"]);
    c.apply_many(&many).await.unwrap();
    assert_eq!(calls(&redis, &["sadd"]), 2, "1,500 members: 1,024 then 476");
    assert_eq!(redis.raw(&["SCARD", "c:idx:big"]), ":1500");
}

/// A read as the user projection's would be (twenty registrations, then
/// anything): registrations of distinct
/// users (a model and four index writes each), updates of users registered
/// earlier in the read (their index entries moved), redeliveries of a
/// user's latest event (its index writes are made again) and of an older
/// one (they are not), and now and then a model whose key is an index key.
fn users_read(n: usize) -> Vec<Vec<Change>> {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut users: Vec<(String, u64, String, String)> = Vec::new(); // id, version, name, role
    let mut events = Vec::new();
    for i in 0..n {
        // Twenty registrations first, then anything.
        let roll = if i < 20 { 0 } else { next(10) };
        let mut changes = Vec::new();
        match roll {
            0..=4 => {
                let (id, name, role) = (format!("u{i}"), format!("name{}", next(40)), format!("r{}", next(3)));
                changes.push(model_of(&format!("user:{id}"), 1, &[("name", &name), ("role", &role)], &[]));
                changes.push(Change::Index(IndexOp::HSet {
                    key: "idx:name".into(),
                    field: name.clone(),
                    value: id.clone(),
                }));
                changes.push(Change::Index(IndexOp::ZAdd {
                    key: "idx:reg".into(),
                    member: id.clone(),
                    score: i as f64,
                }));
                changes.push(Change::Index(IndexOp::SAdd { key: format!("idx:role:{role}"), member: id.clone() }));
                users.push((id, 1, name, role));
            }
            5..=7 => {
                let j = next(users.len() as u64) as usize;
                let (id, version, name, role) = users[j].clone();
                let (new_name, new_role) = (format!("name{}", next(40)), format!("r{}", next(3)));
                changes.push(model_of(
                    &format!("user:{id}"),
                    version + 1,
                    &[("name", &new_name), ("role", &new_role)],
                    &[],
                ));
                changes.push(Change::Index(IndexOp::HDel { key: "idx:name".into(), field: name }));
                changes.push(Change::Index(IndexOp::HSet {
                    key: "idx:name".into(),
                    field: new_name.clone(),
                    value: id.clone(),
                }));
                changes.push(Change::Index(IndexOp::SRem { key: format!("idx:role:{role}"), member: id.clone() }));
                changes.push(Change::Index(IndexOp::SAdd { key: format!("idx:role:{new_role}"), member: id.clone() }));
                users[j] = (id, version + 1, new_name, new_role);
            }
            8 => {
                let j = next(users.len() as u64) as usize;
                let (id, version, ..) = users[j].clone();
                let version = version - next(2).min(version - 1); // the latest, or an older one
                changes.push(model_of(&format!("user:{id}"), version, &[("name", "redelivered")], &[]));
                changes.push(Change::Index(IndexOp::ZRem { key: "idx:reg".into(), member: id }));
            }
            _ => changes.push(model_of("idx:name", 1_000 + i as u64, &[("note", &i.to_string())], &[])),
        }
        events.push(changes);
    }
    events
}

#[tokio::test]
async fn on_a_cluster_a_reads_events_applied_in_groups_end_as_event_by_event_and_as_on_one_redis() {
    let cluster = RedisCluster::start();
    let redis = RedisServer::start();
    let on_cluster = RedisEventStore::connect(&cluster.url(), 1).await.unwrap();
    let single = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    let events = users_read(400);
    let together = Namespace::new(on_cluster.connection(), "a");
    together.apply_many(&events).await.unwrap();
    let one_by_one = Namespace::new(on_cluster.connection(), "b");
    for changes in &events {
        one_by_one.apply(changes).await.unwrap();
    }
    Namespace::new(single.connection(), "c").apply_many(&events).await.unwrap();
    let a = cluster_contents(&cluster, "a");
    assert!(a.len() > 100, "{} keys", a.len());
    assert_eq!(a, cluster_contents(&cluster, "b"), "together and event by event");
    assert_eq!(a, contents(&redis, "c"), "on a Cluster and on one Redis");

    // A crash after a group's models were written but before its index
    // writes (each model appears once in a group): the read's redelivery
    // makes them, and everything ends as before.
    let registration =
        |c: &Vec<Change>| matches!(c.first(), Some(Change::Model { key, version: 1, .. }) if key.starts_with("user:"));
    let first_group = events.iter().take_while(|c| registration(c)).count();
    assert!(first_group > 1, "the read starts with several registrations");
    let crashed = Namespace::new(on_cluster.connection(), "d");
    for changes in &events[..first_group] {
        let models: Vec<Change> = changes.iter().filter(|c| matches!(c, Change::Model { .. })).cloned().collect();
        crashed.apply(&models).await.unwrap();
    }
    crashed.apply_many(&events).await.unwrap();
    assert_eq!(cluster_contents(&cluster, "d"), a);
}
