use allies_platform::ServiceConfig;
use allies_platform::server::shutdown_signal;

#[global_allocator]
static ALLOC: allies_platform::Allocator = allies_platform::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ServiceConfig::from_env("guardian")?;
    allies_platform::telemetry::init(&config);
    guardian::build(config).await?.run_until(shutdown_signal()).await?;
    allies_platform::telemetry::shutdown();
    Ok(())
}
