//! Projector: the query side.
//!
//! Owns the read models ([`users`]) and the query API ([`grpc`]). Reads every
//! context's events from the partition logs through one consumer group per
//! projection (the store's [`subscriber`](allies_store::subscriber)). Must not
//! know any context's command side: only its event schemas (contracts).

use std::future::Future;
use std::sync::Arc;

use allies_contracts::projector::v1::projector_admin_service_server::ProjectorAdminServiceServer;
use allies_contracts::projector::v1::projector_query_service_server::ProjectorQueryServiceServer;
use allies_platform::config::ServiceConfig;
use allies_platform::server::GrpcServer;
use allies_store::subscriber::SubscriptionConfig;
use tokio::net::TcpListener;
use tonic::server::NamedService;

pub mod admin;
pub mod consistency;
pub mod follow;
pub mod grpc;
pub mod manager;
pub mod ops;
pub mod readmodel;
pub mod sessions;
pub mod users;

/// Consumer name of this process: `PROJECTOR_CONSUMER`, else the host name
/// (the pod name on Kubernetes). Stable across restarts, so a restarted
/// projector finds its own pending entries.
pub fn consumer_name() -> String {
    std::env::var("PROJECTOR_CONSUMER")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "projector".to_owned())
}

/// Runs the projections and the query API until `shutdown` resolves.
pub async fn serve(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let store = allies_platform::connect_store(&config).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client = allies_store::RedisTarget::parse(&config.redis_url)?;
    let consumer = consumer_name();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = allies_store::metrics::SubscriberMetrics::register(&mut registry);
    let breaker_config = allies_store::breaker::BreakerConfig {
        failure_threshold: std::env::var("BREAKER_FAILURES").ok().and_then(|v| v.parse().ok()).unwrap_or(10),
        open_for: std::time::Duration::from_millis(
            std::env::var("BREAKER_OPEN_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000),
        ),
    };
    let user_breaker = Arc::new(allies_store::breaker::CircuitBreaker::new(breaker_config));
    let session_breaker = Arc::new(allies_store::breaker::CircuitBreaker::new(breaker_config));
    let tuned = |mut s: SubscriptionConfig| {
        s.metrics = Some(metrics.clone());
        s.batch = config.cqrs.subscriber_batch;
        s.block = config.cqrs.subscriber_block;
        s.claim_idle = config.cqrs.claim_idle;
        s.retry.max_attempts = config.cqrs.retry_max_attempts;
        s.retry.base = config.cqrs.retry_base;
        s
    };
    let template = tuned(SubscriptionConfig::new(users::GROUP, &consumer, users::AGGREGATE_TYPE, config.partitions));
    let breakers = vec![(users::GROUP, user_breaker), (sessions::GROUP, session_breaker)];
    tracing::info!(%consumer, partitions = config.partitions, "starting projections rm.user, rm.session");
    let manager =
        manager::Manager::start(client, store.connection(), config.partitions, template, breakers.clone()).await?;
    tokio::spawn(manager.clone().follow_pointers(stop_rx.clone()));

    // Operations endpoint: /healthz, /readyz, /metrics.
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ops = Arc::new(ops::Ops {
        registry,
        conn: store.connection(),
        partitions: config.partitions,
        running: running.clone(),
        breakers: breakers.clone(),
        manager: manager.clone(),
    });
    let http_addr = std::env::var("PROJECTOR_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:9464".into());
    let http =
        TcpListener::bind(&http_addr).await.map_err(|e| anyhow::anyhow!("PROJECTOR_HTTP_ADDR={http_addr}: {e}"))?;
    tracing::info!(addr = %http.local_addr()?, "serving /healthz, /readyz, /metrics");
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(async move {
        let stop = async move {
            let _ = http_stop.changed().await;
        };
        if let Err(e) = axum::serve(http, ops::router(ops)).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "operations endpoint failed");
        }
    });

    let mut server = GrpcServer::new()?;
    let guardian = std::env::var("GUARDIAN_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let auth = Arc::new(allies_platform::auth::Authenticator::new(
        allies_platform::auth::AuthSettings::from_env(),
        allies_platform::auth::KeySource::Guardian(guardian),
        store.clone(),
    ));
    server.routes.add_service(
        allies_contracts::projector::v1::event_subscription_service_server::EventSubscriptionServiceServer::new(
            follow::FollowApi { auth: auth.clone(), conn: store.connection(), partitions: config.partitions },
        ),
    );
    server.routes.add_service(ProjectorAdminServiceServer::new(admin::AdminApi {
        metrics: metrics.clone(),
        breakers: breakers.clone(),
        running: running.clone(),
        auth,
        conn: store.connection(),
        partitions: config.partitions,
        manager: manager.clone(),
    }));
    server.report_health(ProjectorAdminServiceServer::<admin::AdminApi>::NAME);
    server.routes.add_service(ProjectorQueryServiceServer::new(grpc::QueryApi {
        manager: manager.clone(),
        conn: store.connection(),
    }));
    server.report_health(ProjectorQueryServiceServer::<grpc::QueryApi>::NAME);

    // grpc.health.v1 follows readiness: Redis reachable and projections running.
    let health = server.health.clone();
    let probe = ops::Ops {
        registry: prometheus_client::registry::Registry::default(),
        conn: store.connection(),
        partitions: config.partitions,
        running: running.clone(),
        breakers,
        manager: manager.clone(),
    };
    let mut health_stop = stop_rx.clone();
    let health_task = tokio::spawn(async move {
        let names = [
            "",
            ProjectorQueryServiceServer::<grpc::QueryApi>::NAME,
            ProjectorAdminServiceServer::<admin::AdminApi>::NAME,
        ];
        let mut last = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                _ = health_stop.changed() => return,
            }
            let ok = probe.ready().await.is_ok();
            if ok != last {
                let status =
                    if ok { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
                tracing::warn!(?status, "readiness changed");
                for n in names {
                    health.set_service_status(n, status).await;
                }
                last = ok;
            }
        }
    });
    let served = server.serve(listener, config.shutdown_grace, shutdown).await;

    // Stop the projections: each finishes the entry it is applying.
    let _ = stop_tx.send(true);
    if !manager.stop(config.shutdown_grace).await {
        tracing::warn!("projections did not stop within the grace period; unacked entries stay pending");
    }
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = tokio::join!(http_task, health_task);
    served?;
    Ok(())
}
