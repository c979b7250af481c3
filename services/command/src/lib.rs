//! Command: the operations context's service. Built so far: GameStatistics
//! ([`statistics`]). Configuration, SystemMetrics, reports and maintenance
//! are not built yet (issue 11).

use std::sync::Arc;

use allies_contracts::command::v1::game_statistics_service_server::GameStatisticsServiceServer;
use allies_platform::{Service, ServiceBuilder, ServiceConfig};

pub mod statistics;

/// Builds the command service on `config` (binds its ports; run it with `run_until`).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let mut builder = ServiceBuilder::new(config).await?;
    let conn = builder.store().connection();
    let topic = allies_contracts::timesquare::integration::TOPIC;
    builder.subscribe(
        statistics::GROUP,
        "game_session",
        Some(topic),
        Arc::new(statistics::GamesTopic { conn: conn.clone() }),
    )?;
    let auth = builder.auth();
    builder.add_service(GameStatisticsServiceServer::new(statistics::StatisticsApi { auth, conn }));
    Ok(builder.bind().await?)
}
