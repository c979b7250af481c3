//! Player queries (`PlayerQueryService`): profiles, leaderboards, matches.

use std::sync::Arc;

use allies_contracts::projector::v1::player_query_service_server::PlayerQueryService;
use allies_contracts::projector::v1::*;
use allies_core::{Failure, Invalid};
use allies_platform::OrStatus;
use allies_platform::auth::{Authenticator, Caller};
use allies_store::RedisConn;
use tonic::{Request, Response, Status};

use crate::error::Result;
use crate::manager::Manager;
use crate::projections::{games, matches, players};
use crate::reads::{uuid_field, wait_for};

pub struct PlayerQueryApi {
    pub manager: Arc<Manager>,
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
}

impl PlayerQueryApi {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Arc<Caller>> {
        Ok(self.auth.authenticate(request).await?)
    }

    async fn player(&self, request: Request<GetPlayerRequest>) -> Result<GetPlayerResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let id = uuid_field("user_id", &r.user_id)?;
        let group = || self.manager.generation(players::NAME).group;
        wait_for(&self.conn, group, &[players::AGGREGATE_TYPE], &r.consistency_token).await?;
        let private = caller.user_id == id || caller.is_admin();
        let mut p = players::get(&self.manager.view(players::NAME), &id, private)
            .await?
            .ok_or_else(|| Failure::not_found(format!("player {id} not found")))?;
        // Recent games: only those the caller may see.
        let (recent, _) = games::of_player(&self.manager.view(games::NAME), &id, 0, 10).await?;
        p.recent_games = recent.into_iter().filter(|g| !g.private || private).collect();
        Ok(GetPlayerResponse { player: Some(p) })
    }

    async fn leaderboard(&self, request: Request<GetLeaderboardRequest>) -> Result<GetLeaderboardResponse> {
        self.caller(&request).await?;
        let r = request.into_inner();
        let mut invalid = Invalid::new();
        let board = match r.board.as_str() {
            "" | "rating" => players::RATING.to_owned(),
            "wave" => {
                invalid.name("map", &r.map).name("difficulty", &r.difficulty);
                players::wave_board(&r.map, &r.difficulty)
            }
            "weekly" => {
                let week = if r.week.is_empty() {
                    allies_core::calendar::iso_week(allies_platform::context::now_ms())
                } else {
                    let ok = r.week.len() == 8
                        && r.week.as_bytes()[4] == b'-'
                        && r.week.as_bytes()[5] == b'W'
                        && r.week[..4].chars().chain(r.week[6..].chars()).all(|c| c.is_ascii_digit());
                    if !ok {
                        invalid.push("week", "must be an ISO week like 2026-W47");
                    }
                    r.week.clone()
                };
                players::week_board(&week)
            }
            _ => {
                invalid.push("board", "must be rating, wave or weekly");
                String::new()
            }
        };
        let limit = match r.limit {
            0 => 10,
            n @ 1..=100 => n as usize,
            _ => {
                invalid.push("limit", "must be 1 to 100");
                10
            }
        };
        let around = if r.around_user_id.is_empty() {
            None
        } else {
            match uuid_field("around_user_id", &r.around_user_id) {
                Ok(id) => Some(id),
                Err(v) => {
                    invalid.push(v.field, v.reason);
                    None
                }
            }
        };
        invalid.into_result()?;
        let (entries, total) =
            players::board(&self.manager.view(players::NAME), &board, limit, around.as_deref()).await?;
        let shown = board.strip_prefix("lb:").unwrap_or(&board).replace("week:", "weekly:");
        Ok(GetLeaderboardResponse { board: shown, entries, total })
    }

    async fn match_record(&self, request: Request<GetMatchRequest>) -> Result<GetMatchResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let id = uuid_field("match_id", &r.match_id)?;
        let group = || self.manager.generation(matches::NAME).group;
        wait_for(&self.conn, group, &[matches::AGGREGATE_TYPE], &r.consistency_token).await?;
        let m = matches::get(&self.manager.view(matches::NAME), &id)
            .await?
            .ok_or_else(|| Failure::not_found(format!("match {id} not found")))?;
        if !caller.is_admin() && !m.players.iter().any(|p| p.user_id == caller.user_id) {
            return Err(Failure::permission_denied("a match is seen by its players and admins").into());
        }
        Ok(GetMatchResponse { r#match: Some(m) })
    }
}

#[tonic::async_trait]
impl PlayerQueryService for PlayerQueryApi {
    async fn get_player(
        &self,
        request: Request<GetPlayerRequest>,
    ) -> std::result::Result<Response<GetPlayerResponse>, Status> {
        self.player(request).await.map(Response::new).or_status()
    }

    async fn get_leaderboard(
        &self,
        request: Request<GetLeaderboardRequest>,
    ) -> std::result::Result<Response<GetLeaderboardResponse>, Status> {
        self.leaderboard(request).await.map(Response::new).or_status()
    }

    async fn get_match(
        &self,
        request: Request<GetMatchRequest>,
    ) -> std::result::Result<Response<GetMatchResponse>, Status> {
        self.match_record(request).await.map(Response::new).or_status()
    }
}
