//! Guardian's gRPC API: translation between the wire and [`Guardian`].

use std::sync::Arc;

use allies_contracts::guardian::v1::guardian_service_server::GuardianService;
use allies_contracts::guardian::v1::*;
use allies_core::{CommandContext, Metadata};
use allies_platform::auth::{Authenticator, Caller, ROLE_ADMIN};
use allies_platform::status;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::app::{Guardian, GuardianError, Tokens};
use crate::domain::UserError;
use crate::session::SessionError;

pub struct GuardianApi {
    pub guardian: Arc<Guardian>,
    pub auth: Arc<Authenticator>,
}

/// Correlation id from `x-correlation-id` when it is a UUID, else a new one.
fn context<T>(request: &Request<T>, caller: Option<&Caller>) -> CommandContext {
    let correlation_id = request
        .metadata()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::now_v7);
    let traceparent = request.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    CommandContext {
        metadata: Metadata {
            correlation_id,
            causation_id: Uuid::now_v7(),
            user_id: caller.map(|c| c.user_id.clone()),
            traceparent,
        },
        now_ms,
    }
}

/// The client's idempotency key, `x-command-id` (1 to 128 printable ASCII).
fn command_id<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    let Some(v) = request.metadata().get("x-command-id") else { return Ok(None) };
    match v.to_str() {
        Ok(s) if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(s.to_owned())),
        _ => Err(status::invalid_argument("x-command-id", "must be 1 to 128 printable ASCII characters")),
    }
}

/// The one mapping of Guardian's errors to gRPC statuses.
fn to_status(e: GuardianError) -> Status {
    match &e {
        GuardianError::Invalid(f) => status::invalid_argument(f.field, &f.reason),
        GuardianError::User(UserError::UsernameTaken(_)) => Status::already_exists(e.to_string()),
        GuardianError::User(UserError::UnknownUser) => Status::not_found("user not found"),
        GuardianError::User(UserError::AccountLocked { .. }) | GuardianError::BadCredentials => {
            Status::unauthenticated(GuardianError::BadCredentials.to_string())
        }
        GuardianError::WrongCurrentPassword => Status::unauthenticated(e.to_string()),
        GuardianError::Session(
            SessionError::UnknownSession
            | SessionError::Ended(_)
            | SessionError::RefreshTokenExpired
            | SessionError::InvalidRefreshToken,
        )
        | GuardianError::MalformedRefreshToken
        | GuardianError::RefreshTokenReused => Status::unauthenticated(format!("refresh refused: {e}")),
        GuardianError::Session(SessionError::AlreadyStarted) => Status::aborted(e.to_string()),
        GuardianError::RateLimited { retry_after, .. } => {
            let details = ErrorDetails::with_retry_info(Some(*retry_after));
            Status::with_error_details(Code::ResourceExhausted, e.to_string(), details)
        }
        GuardianError::Store(s) => status::from_store(s),
        GuardianError::Append(a) => status::from_append(a),
        GuardianError::Hashing(_) | GuardianError::Keys(_) => {
            tracing::error!(error = %e, "internal failure");
            Status::internal("internal error")
        }
    }
}

fn tokens(t: Tokens) -> AuthenticateUserResponse {
    AuthenticateUserResponse {
        access_token: t.access_token,
        expires_in: t.expires_in,
        refresh_token: t.refresh_token,
        refresh_expires_in: t.refresh_expires_in,
        user_id: t.user_id,
        session_id: t.session_id,
        roles: t.roles,
        token_type: "Bearer".into(),
    }
}

fn refused(call: &str, s: Status) -> Status {
    tracing::info!(call, code = ?s.code(), message = s.message(), "refused");
    s
}

#[tonic::async_trait]
impl GuardianService for GuardianApi {
    async fn register_user(
        &self,
        request: Request<RegisterUserRequest>,
    ) -> Result<Response<RegisterUserResponse>, Status> {
        let ctx = context(&request, None);
        let command_id = command_id(&request)?;
        let r = request.into_inner();
        let (user_id, outcome) = self
            .guardian
            .register(&r.username, &r.email, &r.password, command_id.as_deref(), &ctx)
            .await
            .map_err(|e| refused("RegisterUser", to_status(e)))?;
        tracing::info!(user_id, correlation_id = %ctx.metadata.correlation_id, "user registered");
        Ok(Response::new(RegisterUserResponse {
            user_id,
            version: outcome.version,
            consistency_token: outcome.consistency_token,
        }))
    }

    async fn authenticate_user(
        &self,
        request: Request<AuthenticateUserRequest>,
    ) -> Result<Response<AuthenticateUserResponse>, Status> {
        let ctx = context(&request, None);
        let client = request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into());
        let r = request.into_inner();
        let t = self
            .guardian
            .authenticate(&r.username, &r.password, &client, &ctx)
            .await
            .map_err(|e| refused("AuthenticateUser", to_status(e)))?;
        tracing::info!(user_id = t.user_id, session_id = t.session_id, "user authenticated");
        Ok(Response::new(tokens(t)))
    }

    async fn refresh_token(
        &self,
        request: Request<RefreshTokenRequest>,
    ) -> Result<Response<AuthenticateUserResponse>, Status> {
        let ctx = context(&request, None);
        let r = request.into_inner();
        if r.refresh_token.is_empty() {
            return Err(status::invalid_argument("refresh_token", "must not be empty"));
        }
        let t =
            self.guardian.refresh(&r.refresh_token, &ctx).await.map_err(|e| refused("RefreshToken", to_status(e)))?;
        Ok(Response::new(tokens(t)))
    }

    async fn logout_user(&self, request: Request<LogoutUserRequest>) -> Result<Response<LogoutUserResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let ctx = context(&request, Some(&caller));
        self.guardian.logout(&caller, &ctx).await.map_err(|e| refused("LogoutUser", to_status(e)))?;
        tracing::info!(user_id = caller.user_id, session_id = caller.session_id, "user logged out");
        Ok(Response::new(LogoutUserResponse { session_id: caller.session_id }))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let ctx = context(&request, Some(&caller));
        let r = request.into_inner();
        let version = self
            .guardian
            .change_password(&caller, &r.current_password, &r.new_password, &ctx)
            .await
            .map_err(|e| refused("ChangePassword", to_status(e)))?;
        Ok(Response::new(ChangePasswordResponse { version }))
    }

    async fn change_user_roles(
        &self,
        request: Request<ChangeUserRolesRequest>,
    ) -> Result<Response<ChangeUserRolesResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        caller.require_role(ROLE_ADMIN)?;
        let ctx = context(&request, Some(&caller));
        let r = request.into_inner();
        let (roles, version) = self
            .guardian
            .change_roles(&caller, &r.user_id, r.roles, &ctx)
            .await
            .map_err(|e| refused("ChangeUserRoles", to_status(e)))?;
        Ok(Response::new(ChangeUserRolesResponse { roles, version }))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse { keys: self.guardian.keys.jwks().to_vec() }))
    }
}
