//! Timesquare: the game context (GameSession, Player, Match).
//!
//! So far it serves the authenticated `PlayerService.WhoAmI` (the shared auth
//! layer end to end: Guardian's token verified here against Guardian's JWKS
//! and the session's live status), health and reflection. Its aggregates and
//! command API arrive with their own issue.

use std::sync::Arc;

use allies_contracts::timesquare::v1::player_service_server::{PlayerService, PlayerServiceServer};
use allies_contracts::timesquare::v1::{WhoAmIRequest, WhoAmIResponse};
use allies_platform::auth::{AuthSettings, Authenticator, KeySource};
use allies_platform::config::{ServiceConfig, TIMESQUARE_ADDR};
use allies_platform::server::{GrpcServer, shutdown_signal};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

struct Players {
    auth: Arc<Authenticator>,
}

#[tonic::async_trait]
impl PlayerService for Players {
    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        Ok(Response::new(WhoAmIResponse {
            user_id: caller.user_id,
            session_id: caller.session_id,
            roles: caller.roles,
            expires_at: caller.expires_at,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    allies_platform::telemetry::init("timesquare");
    let config = ServiceConfig::from_env("timesquare", TIMESQUARE_ADDR)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let store = allies_platform::connect_store(&config).await?;
    let guardian = std::env::var("GUARDIAN_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let auth = Arc::new(Authenticator::new(AuthSettings::from_env(), KeySource::Guardian(guardian), store));
    let mut server = GrpcServer::new()?;
    server.routes.add_service(PlayerServiceServer::new(Players { auth }));
    server.report_health(PlayerServiceServer::<Players>::NAME);
    server.serve(listener, config.shutdown_grace, shutdown_signal()).await?;
    Ok(())
}
