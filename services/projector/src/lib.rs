//! Projector: the query side.
//!
//! Owns the read models ([`projections`], each a [`registry::Projection`]),
//! the projection [`manager`] (generations, blue/green rebuilds), the
//! [`consistency`] checker, and the APIs: queries ([`query`], authorized
//! per field), admin ([`admin`]) and event subscriptions ([`follow`],
//! redacted). Reads every context's events from the partition logs through
//! one consumer group per projection. Must not know any context's command
//! side: only its event contracts.

use allies_core::settings as table;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use allies_contracts::projector::v1::event_subscription_service_server::EventSubscriptionServiceServer;
use allies_contracts::projector::v1::game_query_service_server::GameQueryServiceServer;
use allies_contracts::projector::v1::player_query_service_server::PlayerQueryServiceServer;
use allies_contracts::projector::v1::projector_admin_service_server::ProjectorAdminServiceServer;
use allies_contracts::projector::v1::projector_query_service_server::ProjectorQueryServiceServer;
use allies_contracts::projector::v1::search_service_server::SearchServiceServer;
use allies_platform::{Service, ServiceBuilder, ServiceConfig};
use allies_store::RedisTarget;

pub mod admin;
pub mod consistency;
pub mod error;
pub mod follow;
pub mod game_query;
pub mod manager;
pub mod ops;
pub mod player_query;
pub mod projections;
pub mod readmodel;
pub mod reads;
pub mod registry;
pub mod search;
pub mod user_query;

/// Builds the projector on `config` with every registered projection
/// (binds its ports; run it with `run_until`).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let mut builder = ServiceBuilder::new(config).await?;
    let config = builder.config().clone();
    let store = builder.store();
    // The fleet's subscription settings; the manager names group and type per
    // projection. The retries and the breaker follow the live configuration.
    let mut template = builder.subscription("", "");
    // Read models are throughput consumers: a busy reader lingers (the
    // reactions elsewhere — the match saga, the statistics — never do).
    template.linger = config.cqrs.subscriber_linger;
    let from_env = template.retry.get();
    template.retry = builder.live_setting("live retries", from_env, move |c| {
        let attempts = c.int(&table::RETRY_MAX_ATTEMPTS, from_env.max_attempts.into());
        allies_store::subscriber::RetryPolicy { max_attempts: attempts as u32, ..from_env }
    });
    let deployed = config.breaker();
    let breaker = builder.live_setting("live breakers", deployed, move |c| allies_store::breaker::BreakerConfig {
        failure_threshold: c.int(&table::BREAKER_FAILURES, deployed.failure_threshold.into()) as u32,
        open_for: std::time::Duration::from_millis(
            c.int(&table::BREAKER_OPEN, deployed.open_for.as_millis() as i64) as u64
        ),
    });
    let metrics = template.metrics.clone().ok_or_else(|| anyhow::anyhow!("subscriber metrics"))?;
    let settings = manager::Settings {
        target: RedisTarget::parse(&config.redis_url)?,
        conn: store.connection(),
        partitions: config.partitions,
        template,
        breaker,
        replicas: config.cqrs.replica_acks,
    };
    let registry = projections::registry();
    tracing::info!(consumer = %config.instance, projections = ?registry.names(), "starting projections");
    let manager = manager::Manager::start(settings, registry).await?;
    let running = Arc::new(AtomicBool::new(true));

    // The search projection: this replica's own indexes, fed from the logs.
    let search_dir = match config.env.value_opt::<String>(&table::SEARCH_DIR)? {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => config.data_dir.join("search").join(&config.instance),
    };
    let search = search::Search::start(
        &search_dir,
        RedisTarget::parse(&config.redis_url)?,
        store.connection(),
        config.partitions,
        config.cqrs.subscriber_linger,
    )?;
    tracing::info!(dir = %search_dir.display(), "search indexes open");
    let s = search.clone();
    builder.scrape(move || s.clone().gauges());
    let s = search.clone();
    builder.readiness("search", move || {
        let s = s.clone();
        async move {
            if s.caught_up() { Ok(()) } else { Err("the search indexes are catching up with the logs".to_owned()) }
        }
    });
    let s = search.clone();
    builder.background("search", move |mut stop| async move {
        let _ = stop.wait_for(|s| *s).await;
        // Each index commits what it folded before the process ends.
        let _ = tokio::task::spawn_blocking(move || s.stop()).await;
    });

    let (m, r) = (manager.clone(), running.clone());
    builder.readiness("projections", move || {
        let (m, r) = (m.clone(), r.clone());
        async move { ops::ready(&m, &r).await }
    });
    let (m, conn) = (manager.clone(), store.connection());
    builder.scrape(move || ops::gauges(m.clone(), conn.clone()));
    let m = manager.clone();
    builder.background("generation pointers", move |stop| m.follow_pointers(stop));
    let (m, r, grace) = (manager.clone(), running.clone(), config.shutdown_grace);
    builder.background("projections", move |mut stop| async move {
        let _ = stop.wait_for(|s| *s).await;
        // Stop the projections: each finishes the entry it is applying.
        if !m.stop(grace).await {
            tracing::warn!("projections did not stop within the grace period; unacked entries stay pending");
        }
        r.store(false, Ordering::SeqCst);
    });

    let auth = builder.auth();
    builder.add_service(EventSubscriptionServiceServer::new(follow::FollowApi {
        auth: auth.clone(),
        conn: store.connection(),
        partitions: config.partitions,
        stopping: builder.stopping(),
    }));
    builder
        .add_service(SearchServiceServer::new(search::query::SearchApi { search: search.clone(), auth: auth.clone() }));
    builder.add_service(ProjectorAdminServiceServer::new(admin::AdminApi {
        metrics,
        running,
        search,
        auth: auth.clone(),
        conn: store.connection(),
        manager: manager.clone(),
    }));
    builder.add_service(PlayerQueryServiceServer::new(player_query::PlayerQueryApi {
        manager: manager.clone(),
        auth: auth.clone(),
        conn: store.connection(),
    }));
    builder.add_service(GameQueryServiceServer::new(game_query::GameQueryApi {
        manager: manager.clone(),
        auth: auth.clone(),
        conn: store.connection(),
    }));
    builder.add_service(ProjectorQueryServiceServer::new(user_query::UserQueryApi {
        manager,
        auth,
        conn: store.connection(),
    }));
    Ok(builder.bind().await?)
}
