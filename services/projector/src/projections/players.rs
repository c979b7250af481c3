//! The player read model and the leaderboards, from the Player events:
//! `player:<id>` (hash) and the boards — `lb:rating` (by rating),
//! `lb:wave:<map>:<difficulty>` (by best wave) and `lb:week:<YYYY-Www>`
//! (the week's score; one key per ISO week, so a new week starts empty and
//! old weeks stay). Events carry the values after the change (rating, best
//! wave, week totals): every index write is a plain ZADD, idempotent.
//!
//! Visibility: the profile is public; where the player is (ticket, match,
//! game) and a lockout are private (the player and admins).

use std::collections::HashMap;

use allies_contracts::projector::v1::{BestWaveEntry, LeaderboardEntry, PlayerProfile};
use allies_contracts::timesquare::events::PlayerEvent;
use allies_store::RecordedEvent;
use allies_store::subscriber::HandlerError;

use crate::readmodel::{Fields, Namespace};
use crate::registry::{Change, IndexOp, Projection, typed};

pub const NAME: &str = "rm.player";
pub const AGGREGATE_TYPE: &str = "player";
pub const RATING: &str = "lb:rating";

fn key(user_id: &str) -> String {
    format!("player:{user_id}")
}

pub fn wave_board(map: &str, difficulty: &str) -> String {
    format!("lb:wave:{map}:{difficulty}")
}

pub fn week_board(week: &str) -> String {
    format!("lb:week:{week}")
}

pub struct Players;

impl Projection for Players {
    fn name(&self) -> &'static str {
        NAME
    }

    fn sources(&self) -> &'static [&'static str] {
        &[AGGREGATE_TYPE]
    }

    fn changes(&self, event: &RecordedEvent) -> Result<Vec<Change>, HandlerError> {
        let env = &event.envelope;
        let (id, v) = (env.aggregate_id.as_str(), env.version);
        let model = |set: Vec<(&str, String)>| Change::model("player", id, v, set);
        let zadd = |key: String, score: f64| Change::Index(IndexOp::ZAdd { key, member: id.to_owned(), score });
        Ok(match typed::<PlayerEvent>(event)? {
            PlayerEvent::Registered(e) => vec![
                model(vec![
                    ("user_id", id.to_owned()),
                    ("username", e.username),
                    ("display_name", e.display_name),
                    ("rating", e.rating.to_string()),
                    ("games_played", "0".into()),
                    ("wins", "0".into()),
                    ("registered_at_ms", e.registered_at_ms.to_string()),
                ]),
                // Not on the rating board before their first game: a
                // newcomer's default rating is no rank.
            ],
            PlayerEvent::ProfileUpdated(e) => {
                vec![model(vec![("username", e.username), ("display_name", e.display_name)])]
            }
            PlayerEvent::Locked(e) => vec![model(vec![("locked_until_ms", e.until_ms.to_string())])],
            PlayerEvent::Unlocked(_) => vec![model(vec![("locked_until_ms", "0".into())])],
            PlayerEvent::Queued(e) => vec![model(vec![("ticket_id", e.ticket_id)])],
            PlayerEvent::Dequeued(_) => vec![model(vec![("ticket_id", String::new())])],
            PlayerEvent::EnteredMatch(e) => vec![model(vec![("match_id", e.match_id)])],
            PlayerEvent::LeftMatch(_) => vec![model(vec![("match_id", String::new())])],
            PlayerEvent::EnteredGame(e) => vec![model(vec![("session_id", e.session_id)])],
            PlayerEvent::LeftGame(_) => vec![model(vec![("session_id", String::new())])],
            PlayerEvent::GameRecorded(e) => {
                let best_field =
                    e.best.as_ref().map(|b| format!("best:{}/{}", b.map, b.difficulty)).unwrap_or_default();
                let mut set = vec![
                    ("rating", e.rating_after.to_string()),
                    ("games_played", e.games_played.to_string()),
                    ("wins", e.wins.to_string()),
                    ("last_game_at_ms", e.ended_at_ms.to_string()),
                    ("week", e.week.clone()),
                    ("week_score", e.week_score.to_string()),
                ];
                if let Some(b) = &e.best {
                    set.push((best_field.as_str(), b.waves.to_string()));
                }
                let mut changes = vec![model(set), zadd(RATING.into(), f64::from(e.rating_after))];
                if let Some(b) = e.best.as_ref().filter(|b| b.waves > 0) {
                    changes.push(zadd(wave_board(&b.map, &b.difficulty), f64::from(b.waves)));
                }
                if !e.week.is_empty() && e.week_score > 0 {
                    changes.push(zadd(week_board(&e.week), e.week_score as f64));
                }
                changes
            }
        })
    }
}

/// A player's profile (None when there is no such player yet); `private`
/// adds where they are and their lockout.
pub async fn get(view: &Namespace, user_id: &str, private: bool) -> Result<Option<PlayerProfile>, redis::RedisError> {
    let Some(m) = view.model(&key(user_id)).await? else { return Ok(None) };
    if !m.contains_key("user_id") {
        return Ok(None);
    }
    let mut best: Vec<BestWaveEntry> = m
        .iter()
        .filter_map(|(f, v)| {
            let (map, difficulty) = f.strip_prefix("best:")?.split_once('/')?;
            Some(BestWaveEntry { map: map.into(), difficulty: difficulty.into(), waves: v.parse().ok()? })
        })
        .collect();
    best.sort_by(|a, b| (&a.map, &a.difficulty).cmp(&(&b.map, &b.difficulty)));
    let mut conn = view.conn.clone();
    let rank = rank_of(&mut conn, &view.key(RATING), user_id).await?;
    let private_text = |f: &str| if private { m.text(f) } else { String::new() };
    Ok(Some(PlayerProfile {
        user_id: m.text("user_id"),
        username: m.text("username"),
        display_name: m.text("display_name"),
        rating: m.int("rating") as i32,
        rating_rank: rank.map(|r| r + 1).unwrap_or(0),
        games_played: m.uint("games_played") as u32,
        wins: m.uint("wins") as u32,
        registered_at_ms: m.int("registered_at_ms"),
        best,
        recent_games: Vec::new(),
        week: m.text("week"),
        week_score: m.int("week_score"),
        version: m.uint("_version"),
        locked_until_ms: if private { m.int("locked_until_ms") } else { 0 },
        ticket_id: private_text("ticket_id"),
        match_id: private_text("match_id"),
        session_id: private_text("session_id"),
    }))
}

/// A player's rank on a board (None: not on it). Ties share a rank, the
/// next one skips ("1, 2, 2, 4"): one more than the players strictly ahead.
async fn rank_of(
    conn: &mut allies_store::RedisConn,
    key: &str,
    user_id: &str,
) -> Result<Option<u64>, redis::RedisError> {
    let score: Option<f64> = redis::cmd("ZSCORE").arg(key).arg(user_id).query_async(conn).await?;
    let Some(score) = score else { return Ok(None) };
    let ahead: u64 = redis::cmd("ZCOUNT").arg(key).arg(format!("({score}")).arg("+inf").query_async(conn).await?;
    Ok(Some(ahead))
}

/// Display names of players, for board entries.
async fn names(view: &Namespace, ids: &[String]) -> Result<HashMap<String, String>, redis::RedisError> {
    let keys: Vec<String> = ids.iter().map(|id| key(id)).collect();
    let models = view.models(&keys).await?;
    Ok(ids
        .iter()
        .zip(models)
        .map(|(id, m)| {
            let name =
                m.map(|m| if m.text("display_name").is_empty() { m.text("username") } else { m.text("display_name") });
            (id.clone(), name.unwrap_or_default())
        })
        .collect())
}

/// A page of a board: `limit` entries from the top, or around `around`
/// (that player in the middle). Returns the entries and the board's size.
pub async fn board(
    view: &Namespace,
    board: &str,
    limit: usize,
    around: Option<&str>,
) -> Result<(Vec<LeaderboardEntry>, u64), redis::RedisError> {
    let mut conn = view.conn.clone();
    let key = view.key(board);
    let total: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await?;
    let start = match around {
        Some(user) => {
            let rank: Option<u64> = redis::cmd("ZREVRANK").arg(&key).arg(user).query_async(&mut conn).await?;
            match rank {
                Some(r) => r.saturating_sub(limit as u64 / 2),
                None => return Ok((Vec::new(), total)),
            }
        }
        None => 0,
    };
    let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(start)
        .arg(start + limit as u64 - 1)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    let names = names(view, &ids).await?;
    // Ties share a rank: the first entry's from the players strictly ahead,
    // each next one its position unless it ties the one before.
    let mut entries: Vec<LeaderboardEntry> = Vec::with_capacity(rows.len());
    for (i, (user_id, score)) in rows.into_iter().enumerate() {
        let rank = match entries.last() {
            Some(prev) if prev.value == score as i64 => prev.rank,
            Some(_) => start + i as u64 + 1,
            None => rank_of(&mut conn, &key, &user_id).await?.map_or(start + 1, |ahead| ahead + 1),
        };
        let display_name = names.get(&user_id).cloned().unwrap_or_default();
        entries.push(LeaderboardEntry { rank, display_name, user_id, value: score as i64 });
    }
    Ok((entries, total))
}
