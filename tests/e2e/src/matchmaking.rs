//! Matchmaking steps the end-to-end tests share: many players at once,
//! polling a player's state, and writing integration events the way the
//! append script does (to replay a delivery, or to give players a history).

use std::time::{Duration, Instant};

use allies_contracts::timesquare::integration::{GameIntegrationEvent, TOPIC as GAMES, v1};
use allies_contracts::timesquare::v1::{GetPlayerStateRequest, PlayerStateView};
use allies_core::Metadata;
use allies_store::{NewEvent, Priority, RedisConn, RedisTarget, keys};
use redis::streams::StreamRangeReply;
use uuid::Uuid;

use crate::game::{Gamer, Matchmaking};
use crate::{Fleet, bearer};

/// Registers and logs in `n` players named `<prefix><i>`, `parallel` at a time.
pub async fn gamers(fleet: &Fleet, prefix: &str, n: usize, parallel: usize) -> Vec<Gamer> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(parallel.max(1)) {
        let mut tasks = Vec::new();
        for i in chunk {
            let name = format!("{prefix}{i:03}");
            let mut g = fleet.guardian().await;
            tasks.push(async move {
                let r = allies_contracts::guardian::v1::RegisterUserRequest {
                    username: name.clone(),
                    email: format!("{name}@example.com"),
                    password: crate::PASSWORD.into(),
                };
                let id = g.register_user(r).await.expect("register").into_inner().user_id;
                let login = allies_contracts::guardian::v1::AuthenticateUserRequest {
                    username: name.clone(),
                    password: crate::PASSWORD.into(),
                };
                let token = g.authenticate_user(login).await.expect("login").into_inner().access_token;
                Gamer { id, token, name }
            });
        }
        for g in futures_join(tasks).await {
            out.push(g);
        }
    }
    out
}

async fn futures_join<F>(tasks: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

pub async fn player_state(mm: &mut Matchmaking, who: &Gamer) -> PlayerStateView {
    let request = GetPlayerStateRequest { user_id: String::new() };
    mm.get_player_state(bearer(request, &who.token)).await.expect("player state").into_inner()
}

/// Polls the caller's player state until `until` holds (10 s).
pub async fn wait_player(
    mm: &mut Matchmaking,
    who: &Gamer,
    until: impl Fn(&PlayerStateView) -> bool,
) -> PlayerStateView {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = player_state(mm, who).await;
        if until(&p) || Instant::now() > deadline {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection to the fleet's Redis.
pub async fn conn(fleet: &Fleet) -> RedisConn {
    RedisTarget::parse(&fleet.redis_url()).expect("url").connect().await.expect("connect")
}

/// Every entry of a topic's streams of one partition, with its key.
async fn topic_entries(
    fleet: &Fleet,
    topic: &str,
    aggregate_type: &str,
    partition: u32,
) -> Vec<(String, redis::streams::StreamId)> {
    let mut c = conn(fleet).await;
    let mut out = Vec::new();
    for p in Priority::ALL {
        let key = keys::integration_key(topic, aggregate_type, partition, p);
        let r: StreamRangeReply =
            redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut c).await.expect("xrange");
        out.extend(r.ids.into_iter().map(|e| (key.clone(), e)));
    }
    out
}

/// Writes the users-topic entry of `event_type` for `user_id` again (the
/// same event id: a redelivery), or deletes it (`delete`: the event never
/// reached anyone). Returns whether it was found.
pub async fn users_topic_entry(fleet: &Fleet, user_id: &str, event_type: &str, delete: bool) -> bool {
    let p = keys::partition_of(user_id, 16);
    let mut c = conn(fleet).await;
    for (key, entry) in topic_entries(fleet, "users", "user", p).await {
        let matches = allies_store::entry_text(&entry, "aggregate_id") == Some(user_id)
            && allies_store::entry_text(&entry, "event_type") == Some(event_type);
        if !matches {
            continue;
        }
        if delete {
            let _: i64 = redis::cmd("XDEL").arg(&key).arg(&entry.id).query_async(&mut c).await.expect("xdel");
        } else {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&key).arg("*");
            for (field, value) in &entry.map {
                let v: Vec<u8> = redis::from_redis_value(value.clone()).expect("field");
                cmd.arg(field).arg(v);
            }
            let _: String = cmd.query_async(&mut c).await.expect("xadd");
        }
        return true;
    }
    false
}

/// Publishes a finished game of `players` on the games topic, as timesquare
/// would: their ratings, statistics and boards follow from it.
pub async fn publish_game(
    fleet: &Fleet,
    players: &[&Gamer],
    map: &str,
    difficulty: &str,
    outcome: &str,
    waves: u32,
) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    publish_game_at(fleet, players, (map, difficulty), outcome, waves, now).await
}

/// [`publish_game`] for a game that ended at `now` (a past week, say).
pub async fn publish_game_at(
    fleet: &Fleet,
    players: &[&Gamer],
    (map, difficulty): (&str, &str),
    outcome: &str,
    waves: u32,
    now: i64,
) -> String {
    let session = Uuid::now_v7().to_string();
    let event = GameIntegrationEvent::Ended(v1::GameEnded {
        session_id: session.clone(),
        match_id: String::new(),
        map: map.into(),
        difficulty: difficulty.into(),
        rules_version: 1,
        outcome: outcome.into(),
        score: i64::from(waves) * 100,
        waves_cleared: waves,
        total_waves: 20,
        started_at_ms: now - 60_000,
        ended_at_ms: now,
        duration_ms: 60_000,
        players: players
            .iter()
            .map(|p| v1::PlayerResult {
                user_id: p.id.clone(),
                display_name: p.name.clone(),
                present: true,
                ..Default::default()
            })
            .collect(),
        towers: vec![],
    });
    publish_games_event(fleet, &session, &event, 1).await;
    session
}

/// Writes `event` on the games topic `times` times with one event id (a
/// redelivery), as timesquare's append script would.
pub async fn publish_games_event(fleet: &Fleet, session: &str, event: &GameIntegrationEvent, times: usize) {
    let meta =
        Metadata { correlation_id: Uuid::now_v7(), causation_id: Uuid::now_v7(), user_id: None, traceparent: None };
    let mut c = conn(fleet).await;
    let partition = keys::partition_of(session, 16);
    let encoded = NewEvent::encode(event).expect("encode");
    for _ in 0..times {
        allies_store::priority::publish(
            &mut c,
            GAMES,
            "game_session",
            partition,
            Priority::Normal,
            (session, 1),
            &meta,
            &encoded,
        )
        .await
        .expect("publish");
    }
}
