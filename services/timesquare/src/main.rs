//! Timesquare: the game context (GameSession, Player, Match).
//!
//! So far it serves only `grpc.health.v1` and server reflection; its
//! aggregates and command API arrive with their own issue. It already stands
//! on the platform: configuration, logs, bounded graceful shutdown.

use allies_platform::config::{ServiceConfig, TIMESQUARE_ADDR};
use allies_platform::server::{GrpcServer, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    allies_platform::telemetry::init("timesquare");
    let config = ServiceConfig::from_env("timesquare", TIMESQUARE_ADDR)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    GrpcServer::new()?.serve(listener, config.shutdown_grace, shutdown_signal()).await?;
    Ok(())
}
