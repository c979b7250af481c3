//! The game's gauges on `/metrics`, read at scrape time:
//!
//! - `allies_game_sessions_hot`: game sessions this replica holds in memory;
//! - `allies_game_watchers`: game watch streams open on this replica (players
//!   and spectators: what a drain or a crash of it sends elsewhere);
//! - `allies_game_waves_running`: waves running in the fleet (`ts:waves:due`);
//! - `allies_matchmaking_tickets_waiting`: tickets in the matchmaker's waiting set;
//! - `allies_matchmaking_matches_awaiting_confirmation`: matches with a
//!   confirmation deadline pending.
//!
//! A gauge Redis cannot give right now is left out of the scrape (no fake 0).

use std::fmt::Write;
use std::sync::Arc;

use allies_store::RedisConn;

use crate::game::Game;
use crate::watch::Watch;
use crate::{matchmaking, saga, sweeper};

fn gauge(out: &mut String, name: &str, help: &str, value: Option<u64>) {
    if let Some(v) = value {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
    }
}

pub async fn gauges(game: Arc<Game>, watch: Arc<Watch>, conn: RedisConn) -> String {
    let count = |cmd: &'static str, key: &'static str| {
        let mut c = conn.clone();
        async move { redis::cmd(cmd).arg(key).query_async::<u64>(&mut c).await.ok() }
    };
    let waves = count("ZCARD", sweeper::DUE).await;
    let waiting = count("HLEN", matchmaking::WAITING).await;
    let awaiting = count("ZCARD", saga::DEADLINES).await;
    let mut out = String::new();
    gauge(
        &mut out,
        "allies_game_sessions_hot",
        "Game sessions this replica holds in memory.",
        Some(game.handles.len() as u64),
    );
    gauge(&mut out, "allies_game_watchers", "Game watch streams open on this replica.", Some(watch.watchers() as u64));
    gauge(&mut out, "allies_game_waves_running", "Waves running in the fleet.", waves);
    gauge(&mut out, "allies_matchmaking_tickets_waiting", "Tickets waiting for a match.", waiting);
    gauge(
        &mut out,
        "allies_matchmaking_matches_awaiting_confirmation",
        "Matches waiting for their players to confirm.",
        awaiting,
    );
    out
}
