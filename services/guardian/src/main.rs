use allies_platform::config::{GUARDIAN_ADDR, ServiceConfig};
use allies_platform::server::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    allies_platform::telemetry::init("guardian");
    let config = ServiceConfig::from_env("guardian", GUARDIAN_ADDR)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    guardian::serve(config, listener, shutdown_signal()).await
}
