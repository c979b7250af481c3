use allies_platform::config::{PROJECTOR_ADDR, ServiceConfig};
use allies_platform::server::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    allies_platform::telemetry::init("projector");
    let config = ServiceConfig::from_env("projector", PROJECTOR_ADDR)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    projector::serve(config, listener, shutdown_signal()).await
}
