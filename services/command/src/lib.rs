//! Command: the operations context's service — the live Configuration,
//! feature flags and game-rules uploads ([`configuration`]),
//! GameStatistics ([`statistics`]), SystemMetrics ([`metrics`]), and long
//! work as jobs ([`jobs`]): reports ([`reports`]) and recorded maintenance
//! ([`maintenance`]), done by the workers of consumer group `cmd.jobs`.
//!
//! It is exempt from maintenance mode (it must be able to end it).

use allies_core::settings as table;
use std::sync::Arc;

use allies_contracts::command::v1::configuration_service_server::ConfigurationServiceServer;
use allies_contracts::command::v1::game_statistics_service_server::GameStatisticsServiceServer;
use allies_platform::{Service, ServiceBuilder, ServiceConfig};

pub mod attempt;
pub mod configuration;
pub mod jobs;
pub mod maintenance;
pub mod metrics;
pub mod report_data;
pub mod reports;
pub mod statistics;

/// Builds the command service on `config` (binds its ports; run it with `run_until`).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let mut builder = ServiceBuilder::new(config).await?;
    builder.exempt_from_maintenance();
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
        replies: builder.replies(),
        executor,
        conn: conn.clone(),
    }));
    let live = builder.live_config();
    builder.add_service(allies_contracts::command::v1::feature_flag_service_server::FeatureFlagServiceServer::new(
        configuration::FlagsApi { auth: auth.clone(), live },
    ));
    // SystemMetrics: COMMAND_METRICS_INTERVAL_MS (10 s), COMMAND_METRICS_RETENTION_SECS (1 day).
    let env = &builder.config().env;
    let interval = env.value_ms(&table::METRICS_INTERVAL)?;
    let retention = env.value_secs(&table::METRICS_RETENTION)?;
    let sampler = conn.clone();
    builder.background("system metrics", move |stop| metrics::run(sampler, interval, retention, stop));
    builder.add_service(allies_contracts::command::v1::system_metrics_service_server::SystemMetricsServiceServer::new(
        metrics::MetricsApi { auth: auth.clone(), conn: conn.clone(), interval },
    ));
    // Reports and maintenance: COMMAND_REPORT_PAGE_PAUSE_MS (0),
    // COMMAND_REPORT_RETENTION_SECS (7 days), PROJECTOR_URL.
    let env = &builder.config().env;
    let page_pause = env.value_ms(&table::REPORT_PAGE_PAUSE)?;
    let report_retention = env.value_secs(&table::REPORT_RETENTION)?;
    let projector_url = env.value::<String>(&table::PROJECTOR_URL)?;
    if !projector_url.starts_with("http://") && !projector_url.starts_with("https://") {
        anyhow::bail!("PROJECTOR_URL={projector_url}: must start with http:// or https://");
    }
    let executor = builder.executor();
    let store = builder.store();
    let worker = jobs::Worker {
        executor: executor.clone(),
        name: format!("command/{}", builder.config().instance),
        reports: Arc::new(reports::Reports {
            store: executor.store().clone(),
            data: Arc::new(report_data::RedisReportData {
                conn: conn.clone(),
                partitions: store.partitions(),
                page_pause,
            }),
            retention: report_retention,
        }),
        maintenance: Some(Arc::new(maintenance::Maintenance {
            conn: conn.clone(),
            store: store.clone(),
            executor: executor.clone(),
            projector_url,
            archive_dir: builder.config().cqrs.archive_dir.clone(),
        })),
    };
    builder.subscribe(jobs::GROUP, allies_contracts::command::events::JOB_TYPE, None, Arc::new(worker))?;
    let api = jobs::JobsApi { auth: auth.clone(), replies: builder.replies(), executor, conn: conn.clone() };
    builder.add_service(allies_contracts::command::v1::report_service_server::ReportServiceServer::new(api.clone()));
    builder.add_service(allies_contracts::command::v1::maintenance_service_server::MaintenanceServiceServer::new(api));
    builder.add_service(GameStatisticsServiceServer::new(statistics::StatisticsApi { auth, conn }));
    Ok(builder.bind().await?)
}
