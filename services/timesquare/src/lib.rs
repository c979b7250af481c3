//! Timesquare: the game context's service (GameSession, Player, Match).

use std::sync::Arc;

use allies_contracts::timesquare::v1::player_service_server::{PlayerService, PlayerServiceServer};
use allies_contracts::timesquare::v1::{WhoAmIRequest, WhoAmIResponse};
use allies_platform::auth::Authenticator;
use allies_platform::{OrStatus, Service, ServiceBuilder, ServiceConfig};
use tonic::{Request, Response, Status};

struct Players {
    auth: Arc<Authenticator>,
}

#[tonic::async_trait]
impl PlayerService for Players {
    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.auth.authenticate(&request).await.or_status()?;
        Ok(Response::new(WhoAmIResponse {
            user_id: caller.user_id,
            session_id: caller.session_id,
            roles: caller.roles,
            expires_at: caller.expires_at,
        }))
    }
}

/// Builds Timesquare on `config` (binds its ports; run it with `run_until`).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let mut builder = ServiceBuilder::new(config).await?;
    builder.add_service(PlayerServiceServer::new(Players { auth: builder.auth() }));
    Ok(builder.bind().await?)
}
