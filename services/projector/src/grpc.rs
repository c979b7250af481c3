//! The projector's query API.

use std::sync::Arc;

use allies_contracts::projector::v1::projector_query_service_server::ProjectorQueryService;
use allies_contracts::projector::v1::*;
use allies_platform::status;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct QueryApi {
    pub manager: Arc<crate::manager::Manager>,
    pub conn: allies_store::RedisConn,
}

fn uuid_field(field: &str, value: &str) -> Result<String, Status> {
    if value.is_empty() {
        return Err(status::invalid_argument(field, "must not be empty"));
    }
    Uuid::parse_str(value).map(|u| u.to_string()).map_err(|_| status::invalid_argument(field, "must be a UUID"))
}

/// How long a query waits for its consistency token at most.
const READ_YOUR_WRITES_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until `group` has applied the write `token` names (read-your-writes).
async fn wait_for(
    conn: &allies_store::RedisConn,
    group: &str,
    aggregate_type: &str,
    token: &str,
) -> Result<(), Status> {
    if token.is_empty() {
        return Ok(());
    }
    let parsed: allies_store::subscriber::ConsistencyToken =
        token.parse().map_err(|e: String| status::invalid_argument("consistency_token", &e))?;
    if parsed.aggregate_type != aggregate_type {
        return Err(status::invalid_argument(
            "consistency_token",
            &format!("is a token of {} writes; this query reads {aggregate_type}", parsed.aggregate_type),
        ));
    }
    let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
    let mut conn = conn.clone();
    loop {
        match allies_store::subscriber::has_applied(&mut conn, group, &parsed).await {
            Ok(true) => return Ok(()),
            Ok(false) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            Ok(false) => {
                return Err(Status::deadline_exceeded(format!(
                    "the read model has not caught up with {token} within {READ_YOUR_WRITES_WAIT:?}"
                )));
            }
            Err(e) => return Err(Status::unavailable(format!("cannot check the read model's position: {e}"))),
        }
    }
}

fn unavailable(e: redis::RedisError) -> Status {
    Status::unavailable(format!("read model unavailable: {e}"))
}

impl QueryApi {
    /// Read-your-writes on the live generation of the user projection.
    async fn wait_for_users(&self, token: &str) -> Result<(), Status> {
        let group = self.manager.generation(crate::users::GROUP).group;
        wait_for(&self.conn, &group, crate::users::AGGREGATE_TYPE, token).await
    }
}

fn found(user: Option<User>, what: String) -> Result<Response<GetUserResponse>, Status> {
    match user {
        Some(user) => Ok(Response::new(GetUserResponse { user: Some(user) })),
        None => Err(Status::not_found(format!("{what} not found"))),
    }
}

#[tonic::async_trait]
impl ProjectorQueryService for QueryApi {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let r = request.into_inner();
        let id = uuid_field("user_id", &r.user_id)?;
        self.wait_for_users(&r.consistency_token).await?;
        found(self.manager.users().get(&id).await.map_err(unavailable)?, format!("user {id}"))
    }

    async fn get_user_by_username(
        &self,
        request: Request<GetUserByUsernameRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let r = request.into_inner();
        let name = r.username;
        if name.is_empty() || name.len() > 64 {
            return Err(status::invalid_argument("username", "must be 1 to 64 characters"));
        }
        self.wait_for_users(&r.consistency_token).await?;
        found(self.manager.users().get_by_username(&name).await.map_err(unavailable)?, format!("user '{name}'"))
    }

    async fn get_session(&self, request: Request<GetSessionRequest>) -> Result<Response<GetSessionResponse>, Status> {
        let id = uuid_field("session_id", &request.into_inner().session_id)?;
        match self.manager.sessions().get(&id).await.map_err(unavailable)? {
            Some(session) => Ok(Response::new(GetSessionResponse { session: Some(session) })),
            None => Err(Status::not_found(format!("session {id} not found"))),
        }
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let r = request.into_inner();
        let ok_word = |s: &str| s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !ok_word(&r.role) {
            return Err(status::invalid_argument("role", "must be a role name"));
        }
        if !ok_word(&r.username_prefix) {
            return Err(status::invalid_argument(
                "username_prefix",
                "may contain only letters, digits, '_', '-' and '.'",
            ));
        }
        let by_name = match r.sort_by.as_str() {
            "" | "registered_at" => false,
            "username" => true,
            _ => return Err(status::invalid_argument("sort_by", "must be registered_at or username")),
        };
        let page_size = match r.page_size {
            0 => 20,
            n @ 1..=100 => n as usize,
            _ => return Err(status::invalid_argument("page_size", "must be 1 to 100")),
        };
        let offset = match r.page_token.as_str() {
            "" => 0,
            t => t
                .strip_prefix("o:")
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| status::invalid_argument("page_token", "is not a token this API returned"))?,
        };
        let q = crate::users::ListQuery {
            role: (!r.role.is_empty()).then_some(r.role),
            prefix: (!r.username_prefix.is_empty()).then_some(r.username_prefix),
            by_name,
            descending: r.descending,
            page_size,
            offset,
        };
        let (users, next) = self.manager.users().list(&q).await.map_err(unavailable)?;
        Ok(Response::new(ListUsersResponse {
            users,
            next_page_token: next.map(|o| format!("o:{o}")).unwrap_or_default(),
        }))
    }

    async fn list_user_sessions(
        &self,
        request: Request<ListUserSessionsRequest>,
    ) -> Result<Response<ListUserSessionsResponse>, Status> {
        let r = request.into_inner();
        let id = uuid_field("user_id", &r.user_id)?;
        let limit = match r.limit {
            0 => 20,
            n @ 1..=100 => n as usize,
            _ => return Err(status::invalid_argument("limit", "must be 1 to 100")),
        };
        let sessions = self.manager.sessions().list_for_user(&id, limit).await.map_err(unavailable)?;
        Ok(Response::new(ListUserSessionsResponse { sessions }))
    }
}
