//! The users and sessions queries (`ProjectorQueryService`). Every query needs a valid access token; a
//! player sees their own private fields and only the public profile of
//! others; admins see everything (per-field visibility is documented on
//! each read model).

use std::sync::Arc;

use allies_contracts::projector::v1::projector_query_service_server::ProjectorQueryService;
use allies_contracts::projector::v1::*;
use allies_core::{Failure, FieldViolation, Invalid};
use allies_platform::OrStatus;
use allies_platform::auth::{Authenticator, Caller};
use allies_store::RedisConn;
use tonic::{Request, Response, Status};

use crate::error::{ProjectorError, Result};
use crate::manager::Manager;
use crate::projections::{sessions, users};
use crate::readmodel::Namespace;
use crate::reads::{page_token, paging, uuid_field, wait_for};

pub struct UserQueryApi {
    pub manager: Arc<Manager>,
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
}

/// What `caller` may see of user `id`, reading no more than that: another
/// player's profile is read as its public fields alone (None: no such user).
async fn profile(caller: &Caller, view: &Namespace, id: &str) -> std::result::Result<Option<User>, redis::RedisError> {
    if caller.user_id == id || caller.is_admin() {
        users::get(view, id).await
    } else {
        users::get_public(view, id).await
    }
}

impl UserQueryApi {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Arc<Caller>> {
        Ok(self.auth.authenticate(request).await?)
    }

    async fn wait_for_users(&self, token: &str) -> Result<()> {
        wait_for(&self.conn, || self.manager.generation(users::NAME).group, &[users::AGGREGATE_TYPE], token).await
    }

    async fn user(&self, request: Request<GetUserRequest>) -> Result<GetUserResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let id = uuid_field("user_id", &r.user_id)?;
        self.wait_for_users(&r.consistency_token).await?;
        let user = profile(&caller, &self.manager.view(users::NAME), &id).await?;
        let user = user.ok_or_else(|| Failure::not_found(format!("user {id} not found")))?;
        Ok(GetUserResponse { user: Some(user) })
    }

    async fn user_by_username(&self, request: Request<GetUserByUsernameRequest>) -> Result<GetUserResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let name = r.username;
        if name.is_empty() || name.len() > 64 {
            return Err(FieldViolation::new("username", "must be 1 to 64 characters").into());
        }
        self.wait_for_users(&r.consistency_token).await?;
        let view = self.manager.view(users::NAME);
        let user = match users::id_by_username(&view, &name).await? {
            Some(id) => profile(&caller, &view, &id).await?,
            None => None,
        };
        let user = user.ok_or_else(|| Failure::not_found(format!("user '{name}' not found")))?;
        Ok(GetUserResponse { user: Some(user) })
    }

    async fn session(&self, request: Request<GetSessionRequest>) -> Result<GetSessionResponse> {
        let caller = self.caller(&request).await?;
        let id = uuid_field("session_id", &request.get_ref().session_id)?;
        let session = sessions::get(&self.manager.view(sessions::NAME), &id).await?;
        let session = session.ok_or_else(|| Failure::not_found(format!("session {id} not found")))?;
        caller.require_self_or_admin(&session.user_id)?;
        Ok(GetSessionResponse { session: Some(session) })
    }

    async fn users(&self, request: Request<ListUsersRequest>) -> Result<ListUsersResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let ok_word = |s: &str| s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        let mut invalid = Invalid::new();
        if !ok_word(&r.role) {
            invalid.push("role", "must be a role name");
        }
        if !ok_word(&r.username_prefix) {
            invalid.push("username_prefix", "may contain only letters, digits, '_', '-' and '.'");
        }
        let by_name = match r.sort_by.as_str() {
            "" | "registered_at" => false,
            "username" => true,
            _ => {
                invalid.push("sort_by", "must be registered_at or username");
                false
            }
        };
        let (page_size, offset) = paging(r.page_size, &r.page_token, &mut invalid);
        invalid.into_result()?;
        if !r.role.is_empty() && !caller.is_admin() {
            return Err(Failure::permission_denied("filtering by role is for admins (roles are private)").into());
        }
        let q = users::ListQuery {
            role: (!r.role.is_empty()).then_some(r.role),
            prefix: (!r.username_prefix.is_empty()).then_some(r.username_prefix),
            by_name,
            descending: r.descending,
            page_size,
            offset: offset as u64,
            full: if caller.is_admin() { users::Full::All } else { users::Full::Own(caller.user_id.clone()) },
        };
        let (users, next) = users::list(&self.manager.view(users::NAME), &q).await?;
        Ok(ListUsersResponse { users, next_page_token: page_token(next) })
    }

    async fn user_sessions(&self, request: Request<ListUserSessionsRequest>) -> Result<ListUserSessionsResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let mut invalid = Invalid::new();
        let id = uuid_field("user_id", &r.user_id);
        invalid.check(id.as_ref().map(|_| ()).map_err(Clone::clone));
        let limit = match r.limit {
            0 => 20,
            n @ 1..=100 => n as usize,
            _ => {
                invalid.push("limit", "must be 1 to 100");
                20
            }
        };
        invalid.into_result()?;
        let id = id.map_err(ProjectorError::from)?;
        caller.require_self_or_admin(&id)?;
        let sessions = sessions::list_for_user(&self.manager.view(sessions::NAME), &id, limit).await?;
        Ok(ListUserSessionsResponse { sessions })
    }
}

#[tonic::async_trait]
impl ProjectorQueryService for UserQueryApi {
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> std::result::Result<Response<GetUserResponse>, Status> {
        self.user(request).await.map(Response::new).or_status()
    }

    async fn get_user_by_username(
        &self,
        request: Request<GetUserByUsernameRequest>,
    ) -> std::result::Result<Response<GetUserResponse>, Status> {
        self.user_by_username(request).await.map(Response::new).or_status()
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> std::result::Result<Response<GetSessionResponse>, Status> {
        self.session(request).await.map(Response::new).or_status()
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> std::result::Result<Response<ListUsersResponse>, Status> {
        self.users(request).await.map(Response::new).or_status()
    }

    async fn list_user_sessions(
        &self,
        request: Request<ListUserSessionsRequest>,
    ) -> std::result::Result<Response<ListUserSessionsResponse>, Status> {
        self.user_sessions(request).await.map(Response::new).or_status()
    }
}
