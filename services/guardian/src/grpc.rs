//! Guardian's gRPC API: translation between the wire and [`Guardian`].
//! Authentication, the request context and error statuses come from the
//! platform; nothing here maps codes by hand.

use std::sync::Arc;

use allies_contracts::guardian::v1::guardian_service_server::GuardianService;
use allies_contracts::guardian::v1::*;
use allies_platform::auth::{Authenticator, ROLE_ADMIN};
use allies_platform::{OrStatus, Replies, RequestContext};
use tonic::{Request, Response, Status};

use crate::app::{Guardian, Tokens};

pub struct GuardianApi {
    pub guardian: Arc<Guardian>,
    pub auth: Arc<Authenticator>,
    /// A retried command answers its first reply.
    pub replies: Arc<Replies>,
}

impl GuardianApi {
    /// The context of an anonymous call.
    fn anonymous<T: prost::Message>(&self, request: &Request<T>) -> Result<RequestContext, Status> {
        RequestContext::from_request(request, None).or_status()
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

/// What a registration or a login is about, for the scope of its command
/// id: the username as it is matched (case-insensitively).
fn username_subject(username: &str) -> String {
    format!("username:{}", username.to_ascii_lowercase())
}

#[tonic::async_trait]
impl GuardianService for GuardianApi {
    async fn register_user(
        &self,
        request: Request<RegisterUserRequest>,
    ) -> Result<Response<RegisterUserResponse>, Status> {
        let mut ctx = self.anonymous(&request)?;
        // Passwords stay out of the stored fingerprint (see RequestContext::fingerprint_public).
        ctx.fingerprint_public(&request, &RegisterUserRequest { password: String::new(), ..request.get_ref().clone() });
        ctx.about(&username_subject(&request.get_ref().username));
        self.replies
            .once(&ctx, async {
            let r = request.into_inner();
            let (user_id, done) = self
                .guardian
                .register(&r.username, &r.email, &r.password, ctx.command_id(), &ctx.command_context())
                .await
                .or_status()?;
            tracing::info!(user_id, correlation_id = %ctx.correlation_id, duplicate = done.duplicate(), "user registered");
            Ok(Response::new(RegisterUserResponse {
                user_id,
                version: done.version,
                consistency_token: done.consistency_token(),
            }))
            })
            .await
    }

    async fn authenticate_user(
        &self,
        request: Request<AuthenticateUserRequest>,
    ) -> Result<Response<AuthenticateUserResponse>, Status> {
        let mut ctx = self.anonymous(&request)?;
        // Passwords stay out of the stored fingerprint (see RequestContext::fingerprint_public).
        ctx.fingerprint_public(
            &request,
            &AuthenticateUserRequest { password: String::new(), ..request.get_ref().clone() },
        );
        ctx.about(&username_subject(&request.get_ref().username));
        self.replies
            .once(&ctx, async {
                let client = ctx.client.clone().unwrap_or_else(|| "unknown".into());
                let r = request.into_inner();
                let t = self
                    .guardian
                    .authenticate(&r.username, &r.password, &client, &ctx.command_context())
                    .await
                    .or_status()?;
                tracing::info!(user_id = t.user_id, session_id = t.session_id, "user authenticated");
                Ok(Response::new(tokens(t)))
            })
            .await
    }

    async fn refresh_token(
        &self,
        request: Request<RefreshTokenRequest>,
    ) -> Result<Response<AuthenticateUserResponse>, Status> {
        let mut ctx = self.anonymous(&request)?;
        // The token is the subject: another token under the same id is
        // another client's (or another session's) request.
        ctx.about(&format!("refresh:{}", request.get_ref().refresh_token));
        self.replies
            .once(&ctx, async {
                let r = request.into_inner();
                let t = self.guardian.refresh(&r.refresh_token, &ctx.command_context()).await.or_status()?;
                Ok(Response::new(tokens(t)))
            })
            .await
    }

    async fn logout_user(&self, request: Request<LogoutUserRequest>) -> Result<Response<LogoutUserResponse>, Status> {
        // A retried logout names a session the first one ended: its recorded
        // reply is found by the token's signature; anything else must pass
        // the full check below.
        let ctx = match self.auth.context(&request).await {
            Ok(ctx) => ctx,
            Err(_) if request.metadata().contains_key(allies_platform::context::COMMAND_ID) => {
                self.auth.signed_context(&request).await?
            }
            Err(status) => return Err(status),
        };
        self.replies
            .once(&ctx, async {
                let ctx = self.auth.context(&request).await?;
                let caller = ctx.caller().or_status()?;
                self.guardian.logout(caller, &ctx.command_context()).await.or_status()?;
                tracing::info!(user_id = caller.user_id, session_id = caller.session_id, "user logged out");
                Ok(Response::new(LogoutUserResponse { session_id: caller.session_id.clone() }))
            })
            .await
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let mut ctx = self.auth.context(&request).await?;
        // Passwords stay out of the stored fingerprint (see RequestContext::fingerprint_public).
        ctx.fingerprint_public(&request, &ChangePasswordRequest::default());
        self.replies
            .once(&ctx, async {
                let r = request.get_ref();
                let version = self
                    .guardian
                    .change_password(
                        ctx.caller().or_status()?,
                        &r.current_password,
                        &r.new_password,
                        &ctx.command_context(),
                    )
                    .await
                    .or_status()?;
                Ok(Response::new(ChangePasswordResponse { version }))
            })
            .await
    }

    async fn change_user_roles(
        &self,
        request: Request<ChangeUserRolesRequest>,
    ) -> Result<Response<ChangeUserRolesResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.replies
            .once(&ctx, async {
                let caller = ctx.caller().or_status()?;
                caller.require_role(ROLE_ADMIN).or_status()?;
                let r = request.into_inner();
                let (roles, version) = self
                    .guardian
                    .change_roles(caller, &r.user_id, r.roles, &ctx.command_context())
                    .await
                    .or_status()?;
                Ok(Response::new(ChangeUserRolesResponse { roles, version }))
            })
            .await
    }

    async fn unlock_user(&self, request: Request<UnlockUserRequest>) -> Result<Response<UnlockUserResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.replies
            .once(&ctx, async {
                let caller = ctx.caller().or_status()?;
                caller.require_role(ROLE_ADMIN).or_status()?;
                let version = self
                    .guardian
                    .unlock(caller, &request.get_ref().user_id, &ctx.command_context())
                    .await
                    .or_status()?;
                tracing::warn!(
                    by = caller.user_id,
                    user_id = request.get_ref().user_id,
                    "account unlocked by an admin"
                );
                Ok(Response::new(UnlockUserResponse { version }))
            })
            .await
    }

    async fn set_display_name(
        &self,
        request: Request<SetDisplayNameRequest>,
    ) -> Result<Response<SetDisplayNameResponse>, Status> {
        let ctx = self.auth.context(&request).await?;
        self.replies
            .once(&ctx, async {
                let done = self
                    .guardian
                    .set_display_name(
                        ctx.caller().or_status()?,
                        &request.get_ref().display_name,
                        &ctx.command_context(),
                    )
                    .await
                    .or_status()?;
                Ok(Response::new(SetDisplayNameResponse {
                    display_name: done.state.display_name.clone(),
                    version: done.version,
                    consistency_token: done.consistency_token(),
                }))
            })
            .await
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse { keys: self.guardian.keys.jwks().to_vec() }))
    }
}
