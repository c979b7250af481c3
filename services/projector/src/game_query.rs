//! The game queries (`GameQueryService`) on the `rm.game` read model.
//! Visibility: a public session is seen by anyone signed in, a private one
//! by its players and admins; a player's history by the player and admins.

use std::sync::Arc;

use allies_contracts::projector::v1::game_query_service_server::GameQueryService;
use allies_contracts::projector::v1::*;
use allies_core::{Failure, Invalid};
use allies_platform::OrStatus;
use allies_platform::auth::{Authenticator, Caller};
use allies_store::RedisConn;
use tonic::{Request, Response, Status};

use crate::error::Result;
use crate::manager::Manager;
use crate::projections::games::{self, Filter};
use crate::readmodel::Namespace;
use crate::reads::{page_token, paging, uuid_field, wait_for};

pub struct GameQueryApi {
    pub manager: Arc<Manager>,
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
}

/// A map or difficulty filter: empty (any) or a name.
fn name_filter(field: &str, value: &str, invalid: &mut Invalid) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 64 || !value.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
        invalid.push(field, "must be a name of letters, digits, '_' and '-' (at most 64)");
    }
    Some(value.to_owned())
}

impl GameQueryApi {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Arc<Caller>> {
        Ok(self.auth.authenticate(request).await?)
    }

    fn view(&self) -> Namespace {
        self.manager.view(games::NAME)
    }

    fn filter(&self, caller: &Caller, map: &str, difficulty: &str, invalid: &mut Invalid) -> Filter {
        Filter {
            map: name_filter("map", map, invalid),
            difficulty: name_filter("difficulty", difficulty, invalid),
            viewer: caller.user_id.clone(),
            admin: caller.is_admin(),
        }
    }

    async fn lobbies(&self, request: Request<ListOpenLobbiesRequest>) -> Result<ListGamesResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let mut invalid = Invalid::new();
        let filter = self.filter(&caller, &r.map, &r.difficulty, &mut invalid);
        let min_free = match r.min_free_slots {
            0 => 1,
            n @ 1..=4 => u64::from(n),
            _ => {
                invalid.push("min_free_slots", "must be 1 to 4");
                1
            }
        };
        let by_free = match r.sort_by.as_str() {
            "" | "created_at" => false,
            "free_slots" => true,
            _ => {
                invalid.push("sort_by", "must be created_at or free_slots");
                false
            }
        };
        let (size, offset) = paging(r.page_size, &r.page_token, &mut invalid);
        invalid.into_result()?;
        let (games, next) = games::lobbies(&self.view(), &filter, min_free, by_free, offset, size).await?;
        Ok(ListGamesResponse { games, next_page_token: page_token(next) })
    }

    async fn active(&self, request: Request<ListActiveGamesRequest>) -> Result<ListGamesResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let mut invalid = Invalid::new();
        let filter = self.filter(&caller, &r.map, &r.difficulty, &mut invalid);
        let (size, offset) = paging(r.page_size, &r.page_token, &mut invalid);
        invalid.into_result()?;
        let (games, next) = games::active(&self.view(), &filter, offset, size).await?;
        Ok(ListGamesResponse { games, next_page_token: page_token(next) })
    }

    async fn session(&self, request: Request<GetGameSessionRequest>) -> Result<GetGameSessionResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let id = uuid_field("session_id", &r.session_id)?;
        let group = || self.manager.generation(games::NAME).group;
        wait_for(&self.conn, group, &[games::AGGREGATE_TYPE], &r.consistency_token).await?;
        let model = games::get(&self.view(), &id).await?;
        let model = model.ok_or_else(|| Failure::not_found(format!("game session {id} not found")))?;
        if model.private() && !caller.is_admin() && !model.is_member(&caller.user_id) {
            return Err(Failure::permission_denied("a private session is seen by its players and admins only").into());
        }
        Ok(GetGameSessionResponse { session: Some(model.details()) })
    }

    async fn player_games(&self, request: Request<ListPlayerGamesRequest>) -> Result<ListGamesResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let mut invalid = Invalid::new();
        let id = uuid_field("user_id", &r.user_id);
        invalid.check(id.as_ref().map(|_| ()).map_err(Clone::clone));
        let (size, offset) = paging(r.page_size, &r.page_token, &mut invalid);
        invalid.into_result()?;
        let id = id.map_err(crate::error::ProjectorError::from)?;
        caller.require_self_or_admin(&id)?;
        let (games, next) = games::of_player(&self.view(), &id, offset, size).await?;
        Ok(ListGamesResponse { games, next_page_token: page_token(next) })
    }
}

#[tonic::async_trait]
impl GameQueryService for GameQueryApi {
    async fn list_open_lobbies(
        &self,
        request: Request<ListOpenLobbiesRequest>,
    ) -> std::result::Result<Response<ListGamesResponse>, Status> {
        self.lobbies(request).await.map(Response::new).or_status()
    }

    async fn list_active_games(
        &self,
        request: Request<ListActiveGamesRequest>,
    ) -> std::result::Result<Response<ListGamesResponse>, Status> {
        self.active(request).await.map(Response::new).or_status()
    }

    async fn get_game_session(
        &self,
        request: Request<GetGameSessionRequest>,
    ) -> std::result::Result<Response<GetGameSessionResponse>, Status> {
        self.session(request).await.map(Response::new).or_status()
    }

    async fn list_player_games(
        &self,
        request: Request<ListPlayerGamesRequest>,
    ) -> std::result::Result<Response<ListGamesResponse>, Status> {
        self.player_games(request).await.map(Response::new).or_status()
    }
}
