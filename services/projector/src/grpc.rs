//! The projector's query API.

use std::sync::Arc;

use allies_contracts::projector::v1::projector_query_service_server::ProjectorQueryService;
use allies_contracts::projector::v1::{GetUserRequest, GetUserResponse};
use allies_platform::status;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::users::UserProjection;

pub struct QueryApi {
    pub users: Arc<UserProjection>,
}

#[tonic::async_trait]
impl ProjectorQueryService for QueryApi {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let id = request.into_inner().user_id;
        if id.is_empty() {
            return Err(status::invalid_argument("user_id", "must not be empty"));
        }
        let Ok(uuid) = Uuid::parse_str(&id) else {
            return Err(status::invalid_argument("user_id", "must be a UUID"));
        };
        match self.users.get(&uuid.to_string()).await {
            Ok(Some(user)) => Ok(Response::new(GetUserResponse { user: Some(user) })),
            Ok(None) => Err(Status::not_found(format!("user {uuid} not found"))),
            Err(e) => Err(Status::unavailable(format!("read model unavailable: {e}"))),
        }
    }
}
