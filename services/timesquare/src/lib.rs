//! Timesquare: the game context's service.
//!
//! The domain (rules, simulation, GameSession) lives in `timesquare-domain`;
//! this crate is the use cases on hot session handles ([`game`]), the thin
//! gRPC layer ([`grpc`]), client views ([`view`]), live streams ([`watch`]),
//! the sweeper that completes waves nobody acts on ([`sweeper`]) and the
//! settings ([`settings`]).

use std::sync::Arc;

use allies_contracts::timesquare::v1::game_service_server::GameServiceServer;
use allies_contracts::timesquare::v1::player_service_server::PlayerServiceServer;
use allies_platform::{Service, ServiceBuilder, ServiceConfig};
use allies_store::subscriber::SubscriptionConfig;
use allies_store::{Handles, RedisTarget};

pub mod game;
pub mod grpc;
pub mod settings;
pub mod sweeper;
pub mod view;
pub mod watch;

/// Builds Timesquare on `config` (binds its ports; run it with `run_until`).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let settings = settings::Settings::from_env(&config.env)?;
    let rules_version = settings::load_rules(&settings)?;
    let rules = timesquare_domain::Book::get(rules_version).ok_or_else(|| anyhow::anyhow!("rules not loaded"))?;
    let tick_ms = settings.tick_ms.unwrap_or(1000 / rules.ticks_per_second.max(1));
    tracing::info!(rules_version, tick_ms, versions = ?timesquare_domain::Book::versions(), "game rules loaded");

    let mut builder = ServiceBuilder::new(config).await?;
    let config = builder.config().clone();
    let store = builder.store();
    let target = RedisTarget::parse(&config.redis_url)?;
    let game = Arc::new(game::Game::new(
        Handles::new(builder.executor(), settings.handles),
        store.clone(),
        tick_ms,
        rules_version,
        config.cqrs.archive_dir.clone(),
    ));
    let watch =
        watch::Watch::new(store.clone(), target.clone(), settings.watch_buffer, settings.frame, builder.stopping());

    // Waves complete even when nobody acts: the schedule and the sweeper.
    let metrics = allies_store::metrics::SubscriberMetrics::register(builder.registry());
    let mut schedule = SubscriptionConfig::new(sweeper::GROUP, &config.instance, "game_session", config.partitions);
    schedule.source = allies_store::subscriber::Source::Topic(sweeper::TOPIC.into());
    schedule.metrics = Some(metrics);
    schedule.block = config.cqrs.subscriber_block;
    schedule.claim_idle = config.cqrs.claim_idle;
    schedule.breaker = Arc::new(allies_store::breaker::CircuitBreaker::new(config.breaker()));
    let scheduler = Arc::new(sweeper::Scheduler { conn: store.connection(), settle: settings.settle });
    builder.background("wave schedule", move |stop| allies_store::subscriber::run(target, schedule, scheduler, stop));
    let (g, conn, every) = (game.clone(), store.connection(), settings.settle);
    builder.background("wave sweeper", move |stop| sweeper::sweep(g, conn, every, stop));

    let auth = builder.auth();
    builder.add_service(PlayerServiceServer::new(grpc::Players { auth: auth.clone() }));
    builder.add_service(GameServiceServer::new(grpc::GameApi { game, watch, auth }));
    Ok(builder.bind().await?)
}
