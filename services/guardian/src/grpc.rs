//! Guardian's gRPC API.

use allies_contracts::guardian::v1::guardian_service_server::GuardianService;
use allies_contracts::guardian::v1::{RegisterUserRequest, RegisterUserResponse};
use allies_core::{CommandContext, Metadata};
use allies_platform::status;
use allies_store::EventStore;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::UserError;
use crate::password::PasswordHasher;
use crate::registration::{self, RegisterError};

pub struct GuardianApi {
    pub store: EventStore,
    pub hasher: PasswordHasher,
}

/// Correlation id from `x-correlation-id` when it is a UUID, else a new one.
fn context<T>(request: &Request<T>) -> CommandContext {
    let correlation_id = request
        .metadata()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::now_v7);
    let traceparent = request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    CommandContext {
        metadata: Metadata {
            correlation_id,
            causation_id: Uuid::now_v7(),
            user_id: None,
            traceparent,
        },
        now_ms,
    }
}

fn to_status(e: &RegisterError) -> Status {
    match e {
        RegisterError::Invalid(f) => status::invalid_argument(f.field, &f.reason),
        RegisterError::Rejected(UserError::UsernameTaken(_)) => {
            Status::already_exists(e.to_string())
        }
        RegisterError::Store(s) => status::from_store(s),
        RegisterError::Append(a) => status::from_append(a),
        RegisterError::Hashing(_) => {
            tracing::error!(error = %e, "password hashing failed");
            Status::internal("password hashing failed")
        }
    }
}

#[tonic::async_trait]
impl GuardianService for GuardianApi {
    async fn register_user(
        &self,
        request: Request<RegisterUserRequest>,
    ) -> Result<Response<RegisterUserResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        match registration::register(
            &self.store,
            &self.hasher,
            &r.username,
            &r.email,
            &r.password,
            &ctx,
        )
        .await
        {
            Ok(done) => {
                tracing::info!(user_id = %done.user_id, correlation_id = %ctx.metadata.correlation_id, "user registered");
                Ok(Response::new(RegisterUserResponse {
                    user_id: done.user_id,
                    version: done.outcome.version,
                    consistency_token: done.outcome.consistency_token,
                }))
            }
            Err(e) => {
                let s = to_status(&e);
                tracing::info!(code = ?s.code(), error = %e, "RegisterUser refused");
                Err(s)
            }
        }
    }
}
