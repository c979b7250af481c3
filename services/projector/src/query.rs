//! The projector's query API. Every query needs a valid access token; a
//! player sees their own private fields and only the public profile of
//! others; admins see everything (per-field visibility is documented on
//! each read model).

use std::sync::Arc;
use std::time::Duration;

use allies_contracts::projector::v1::projector_query_service_server::ProjectorQueryService;
use allies_contracts::projector::v1::*;
use allies_core::{Failure, FieldViolation, Invalid};
use allies_platform::OrStatus;
use allies_platform::auth::{Authenticator, Caller};
use allies_store::RedisConn;
use allies_store::subscriber::{ConsistencyToken, has_applied};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::{ProjectorError, Result};
use crate::manager::Manager;
use crate::projections::{sessions, users};

pub struct QueryApi {
    pub manager: Arc<Manager>,
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
}

/// A page size (1 to 100, default 20) and the offset a page token names,
/// each wrong one noted in `invalid`.
pub fn paging(page_size: u32, page_token: &str, invalid: &mut Invalid) -> (usize, usize) {
    let size = match page_size {
        0 => 20,
        n @ 1..=100 => n as usize,
        _ => {
            invalid.push("page_size", "must be 1 to 100");
            20
        }
    };
    let offset = match page_token {
        "" => 0,
        t => t.strip_prefix("o:").and_then(|o| o.parse().ok()).unwrap_or_else(|| {
            invalid.push("page_token", "is not a token this API returned");
            0
        }),
    };
    (size, offset)
}

/// The token of the page at `offset` (empty: no more pages).
pub fn page_token<T: std::fmt::Display>(next: Option<T>) -> String {
    next.map(|o| format!("o:{o}")).unwrap_or_default()
}

pub fn uuid_field(field: &str, value: &str) -> std::result::Result<String, FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    Uuid::parse_str(value).map(|u| u.to_string()).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// How long a query waits for its consistency token at most.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

/// Waits until `group` has applied the write `token` names (read-your-writes).
pub async fn wait_for(conn: &RedisConn, group: &str, aggregate_types: &[&str], token: &str) -> Result<()> {
    if token.is_empty() {
        return Ok(());
    }
    let parsed: ConsistencyToken = token.parse().map_err(|e: String| FieldViolation::new("consistency_token", e))?;
    if !aggregate_types.contains(&parsed.aggregate_type.as_str()) {
        return Err(FieldViolation::new(
            "consistency_token",
            format!("is a token of {} writes; this query reads {}", parsed.aggregate_type, aggregate_types.join(", ")),
        )
        .into());
    }
    let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
    let mut conn = conn.clone();
    loop {
        if has_applied(&mut conn, group, &parsed).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                allies_core::ErrorCode::DeadlineExceeded,
                format!("the read model has not caught up with {token} within {READ_YOUR_WRITES_WAIT:?}"),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What `caller` may see of `user`.
fn visible(caller: &Caller, user: User) -> User {
    if caller.user_id == user.user_id || caller.is_admin() { user } else { users::public(user) }
}

impl QueryApi {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller> {
        Ok(self.auth.authenticate(request).await?)
    }

    async fn wait_for_users(&self, token: &str) -> Result<()> {
        let group = self.manager.generation(users::NAME).group;
        wait_for(&self.conn, &group, &[users::AGGREGATE_TYPE], token).await
    }

    async fn user(&self, request: Request<GetUserRequest>) -> Result<GetUserResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let id = uuid_field("user_id", &r.user_id)?;
        self.wait_for_users(&r.consistency_token).await?;
        let user = users::get(&self.manager.view(users::NAME), &id).await?;
        let user = user.ok_or_else(|| Failure::not_found(format!("user {id} not found")))?;
        Ok(GetUserResponse { user: Some(visible(&caller, user)) })
    }

    async fn user_by_username(&self, request: Request<GetUserByUsernameRequest>) -> Result<GetUserResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let name = r.username;
        if name.is_empty() || name.len() > 64 {
            return Err(FieldViolation::new("username", "must be 1 to 64 characters").into());
        }
        self.wait_for_users(&r.consistency_token).await?;
        let user = users::by_username(&self.manager.view(users::NAME), &name).await?;
        let user = user.ok_or_else(|| Failure::not_found(format!("user '{name}' not found")))?;
        Ok(GetUserResponse { user: Some(visible(&caller, user)) })
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
        };
        let (page, next) = users::list(&self.manager.view(users::NAME), &q).await?;
        Ok(ListUsersResponse {
            users: page.into_iter().map(|u| visible(&caller, u)).collect(),
            next_page_token: page_token(next),
        })
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
impl ProjectorQueryService for QueryApi {
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
