use allies_platform::ServiceConfig;
use allies_platform::server::shutdown_signal;

#[global_allocator]
static ALLOC: allies_platform::Allocator = allies_platform::Allocator;

fn main() -> anyhow::Result<()> {
    let config = ServiceConfig::from_env("command")?;
    // Sized by WORKER_THREADS (read with the rest of the configuration).
    config.runtime()?.block_on(async move {
        allies_platform::telemetry::init(&config);
        command::build(config).await?.run_until(shutdown_signal()).await?;
        allies_platform::telemetry::shutdown();
        Ok(())
    })
}
