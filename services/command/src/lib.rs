//! Command: the operations context's service (Configuration, GameStatistics,
//! SystemMetrics, reports, maintenance).

use allies_platform::{Service, ServiceBuilder, ServiceConfig};

/// Builds the command service on `config` (binds its ports; run it with `run_until`).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let builder = ServiceBuilder::new(config).await?;
    Ok(builder.bind().await?)
}
