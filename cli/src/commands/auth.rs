//! Logging in and out: `allies login | whoami | refresh | logout | password |
//! session | jwks`. The tokens are kept per profile (see `Context`).

use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_contracts::guardian::v1::*;
use allies_contracts::projector::v1::projector_query_service_client::ProjectorQueryServiceClient;
use allies_contracts::projector::v1::{GetSessionRequest, Session};
use allies_contracts::timesquare::v1::WhoAmIRequest;
use allies_contracts::timesquare::v1::player_service_client::PlayerServiceClient;
use clap::Subcommand;

use crate::context::{Context, Saved};
use crate::output::{Failure, print};

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Log in; the tokens are kept for later calls (per --profile).
    Login {
        #[arg(long)]
        username: String,
        /// Prefer ALLIES_PASSWORD to keep it out of shell history.
        #[arg(long, env = "ALLIES_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Who the kept access token says you are (checked by timesquare).
    Whoami,
    /// Exchange the kept refresh token for new tokens.
    Refresh {
        /// Use this refresh token instead of the kept one.
        #[arg(long)]
        refresh_token: Option<String>,
    },
    /// End the session of the kept token.
    Logout,
    /// Change your password.
    Password {
        #[arg(long, env = "ALLIES_PASSWORD", hide_env_values = true)]
        current: String,
        #[arg(long, env = "ALLIES_NEW_PASSWORD", hide_env_values = true)]
        new: String,
    },
    /// Read one session from the read model (yours, or any for admins).
    Session { session_id: String },
    /// Guardian's token-verification keys (JWKS).
    Jwks,
}

pub fn show_session(s: &Session) -> String {
    format!(
        "session {}\n  user id:   {}\n  status:    {}\n  started:   {}\n  expires:   {}\n  refreshes: {}",
        s.session_id,
        s.user_id,
        s.status,
        crate::output::when(s.started_at_ms),
        crate::output::when(s.expires_at_ms),
        s.refresh_count
    )
}

fn kept(t: &AuthenticateUserResponse, username: &str) -> Saved {
    Saved {
        access_token: t.access_token.clone(),
        refresh_token: t.refresh_token.clone(),
        user_id: t.user_id.clone(),
        session_id: t.session_id.clone(),
        roles: t.roles.clone(),
        username: username.to_owned(),
    }
}

/// The `exp` claim (Unix seconds) of a JWT, read without verifying it
/// (the services verify; the CLI only needs to know when to refresh).
fn expires_at(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("exp")?.as_i64()
}

/// Access tokens live minutes: a saved login whose token expires within
/// 30 s is refreshed with its refresh token before the command runs, and
/// the new tokens are kept. When that fails (the session ended or expired),
/// the command goes on with the old token and the user is told to log in.
pub async fn refresh_if_expiring(ctx: &Context) {
    if ctx.token.is_some() {
        return; // a token given on the command line is used as it is
    }
    let Ok(saved) = ctx.load_saved() else { return };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if expires_at(&saved.access_token).is_none_or(|exp| exp - now > 30) || saved.refresh_token.is_empty() {
        return;
    }
    let refreshed = async {
        let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
        let request = RefreshTokenRequest { refresh_token: saved.refresh_token.clone() };
        Ok::<_, Failure>(client.refresh_token(ctx.anonymous(request)?).await?.into_inner())
    };
    match refreshed.await {
        Ok(r) => {
            if let Err(e) = ctx.save(&kept(&r, &saved.username)) {
                eprintln!("warning: the login was refreshed but not kept: {}", e.message);
            }
        }
        Err(e) => {
            let flag = if ctx.profile == "default" { String::new() } else { format!(" --profile {}", ctx.profile) };
            eprintln!(
                "warning: the saved login has expired and could not be refreshed ({}): run `allies{flag} login`",
                e.message
            );
        }
    }
}

pub async fn run(command: &AuthCommand, ctx: &Context) -> Result<(), Failure> {
    let json = ctx.json;
    match command {
        AuthCommand::Login { username, password } => {
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let request = AuthenticateUserRequest { username: username.clone(), password: password.clone() };
            let r = client.authenticate_user(ctx.anonymous(request)?).await?.into_inner();
            ctx.save(&kept(&r, username))?;
            let shown = serde_json::json!({
                "userId": r.user_id, "sessionId": r.session_id, "roles": r.roles,
                "expiresIn": r.expires_in, "profile": ctx.profile, "savedTo": ctx.saved_path(),
            });
            print(json, &shown, || {
                format!(
                    "logged in as {username} (profile {})\n  user id:  {}\n  session:  {}\n  roles:    {}\n  access token valid {} s; tokens kept in {}",
                    ctx.profile,
                    r.user_id,
                    r.session_id,
                    r.roles.join(", "),
                    r.expires_in,
                    ctx.saved_path().display()
                )
            });
        }
        AuthCommand::Whoami => {
            let mut client = PlayerServiceClient::new(ctx.channel(&ctx.timesquare).await?);
            let r = client.who_am_i(ctx.authorized(WhoAmIRequest {})?).await?.into_inner();
            print(json, &r, || {
                format!(
                    "user id:  {}\nsession:  {}\nroles:    {}\nexpires:  {}",
                    r.user_id,
                    r.session_id,
                    r.roles.join(", "),
                    crate::output::when(r.expires_at * 1000)
                )
            });
        }
        AuthCommand::Refresh { refresh_token } => {
            let saved = ctx.load_saved().ok();
            let refresh_token = match (refresh_token, &saved) {
                (Some(t), _) => t.clone(),
                (None, Some(s)) => s.refresh_token.clone(),
                (None, None) => ctx.load_saved()?.refresh_token,
            };
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let r = client.refresh_token(ctx.anonymous(RefreshTokenRequest { refresh_token })?).await?.into_inner();
            ctx.save(&kept(&r, &saved.map(|s| s.username).unwrap_or_default()))?;
            let shown = serde_json::json!({ "sessionId": r.session_id, "expiresIn": r.expires_in });
            print(json, &shown, || format!("refreshed session {}; new tokens kept", r.session_id));
        }
        AuthCommand::Logout => {
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let r = client.logout_user(ctx.authorized(LogoutUserRequest {})?).await?.into_inner();
            if ctx.token.is_none() {
                ctx.forget();
            }
            print(json, &r, || format!("logged out; session {} ended", r.session_id));
        }
        AuthCommand::Password { current, new } => {
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let request = ChangePasswordRequest { current_password: current.clone(), new_password: new.clone() };
            let r = client.change_password(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || format!("password changed (user version {})", r.version));
        }
        AuthCommand::Session { session_id } => {
            let mut client = ProjectorQueryServiceClient::new(ctx.channel(&ctx.projector).await?);
            let r = client.get_session(ctx.authorized(GetSessionRequest { session_id: session_id.clone() })?).await?;
            let s = r.into_inner().session.unwrap_or_default();
            print(json, &s, || show_session(&s));
        }
        AuthCommand::Jwks => {
            let mut client = GuardianServiceClient::new(ctx.channel(&ctx.guardian).await?);
            let r = client.get_jwks(GetJwksRequest {}).await?.into_inner();
            print(json, &r, || {
                r.keys
                    .iter()
                    .map(|k| format!("{}  {} {} x={}", k.kid, k.kty, k.crv, k.x))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}
