//! Command: the operations context's service. Built so far: the live
//! Configuration ([`configuration`]) and GameStatistics ([`statistics`]).
//! Feature flags, rules uploads, SystemMetrics, reports and maintenance are
//! not built yet (issue 11).

use std::sync::Arc;

use allies_contracts::command::v1::configuration_service_server::ConfigurationServiceServer;
use allies_contracts::command::v1::game_statistics_service_server::GameStatisticsServiceServer;
use allies_platform::{Service, ServiceBuilder, ServiceConfig};

pub mod configuration;
pub mod metrics;
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
    let executor = builder.executor();
    builder.add_service(ConfigurationServiceServer::new(configuration::ConfigurationApi {
        auth: auth.clone(),
        executor,
        conn: conn.clone(),
    }));
    let live = builder.live_config();
    builder.add_service(allies_contracts::command::v1::feature_flag_service_server::FeatureFlagServiceServer::new(
        configuration::FlagsApi { auth: auth.clone(), live },
    ));
    // SystemMetrics: COMMAND_METRICS_INTERVAL_MS (10 s), COMMAND_METRICS_RETENTION_SECS (1 day).
    let env = &builder.config().env;
    let interval = env.millis("COMMAND_METRICS_INTERVAL_MS", 10_000, 100..=3_600_000)?;
    let retention = env.secs("COMMAND_METRICS_RETENTION_SECS", 86_400, 60..=31_536_000)?;
    let sampler = conn.clone();
    builder.background("system metrics", move |stop| metrics::run(sampler, interval, retention, stop));
    builder.add_service(allies_contracts::command::v1::system_metrics_service_server::SystemMetricsServiceServer::new(
        metrics::MetricsApi { auth: auth.clone(), conn: conn.clone(), interval },
    ));
    builder.add_service(GameStatisticsServiceServer::new(statistics::StatisticsApi { auth, conn }));
    Ok(builder.bind().await?)
}
