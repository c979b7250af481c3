//! Timesquare: the game context's service.
//!
//! The domain (rules, simulation, GameSession, Player, Ticket, Match) lives
//! in `timesquare-domain`; this crate is the use cases on hot handles
//! ([`game`], [`players`], [`matchmaking`]), the saga's driver ([`saga`]),
//! the thin gRPC layers ([`grpc`], [`grpc_match`]), client views ([`view`]),
//! live streams ([`watch`], [`ticket_watch`]), the sweeper that completes
//! waves nobody acts on ([`sweeper`]), the error type ([`error`]) and the
//! settings ([`settings`]).

use allies_core::settings::{self as table, Setting};
use std::sync::Arc;

use allies_contracts::timesquare::v1::game_service_server::GameServiceServer;
use allies_contracts::timesquare::v1::matchmaking_service_server::MatchmakingServiceServer;
use allies_contracts::timesquare::v1::player_service_server::PlayerServiceServer;
use allies_platform::{Service, ServiceBuilder, ServiceConfig};
use allies_store::{Handles, RedisTarget};

pub mod error;
pub mod game;
pub mod grpc;
pub mod grpc_match;
pub mod matchmaking;
pub mod metrics;
pub mod mm_index;
pub mod players;
pub mod rules_live;
pub mod saga;
pub mod schedule;
pub mod settings;
pub mod sweeper;
pub mod ticket_watch;
pub mod view;
pub mod watch;

/// Builds Timesquare on `config` (binds its ports; run it with `run_until`).
/// The longest reason EndGame takes (the API's default string limit).
pub const MAX_REASON_BYTES: usize = allies_platform::limits::DEFAULT_BYTES;

pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let settings = settings::Settings::from_env(&config.env)?;
    let (book, rules_version) = settings::load_rules(&settings)?;
    let rules = book.get(rules_version).ok_or_else(|| anyhow::anyhow!("rules not loaded"))?;
    let tick_ms = settings.tick_ms.unwrap_or(1000 / rules.ticks_per_second.max(1));
    tracing::info!(rules_version, tick_ms, versions = ?book.versions(), "game rules loaded");

    let mut builder = ServiceBuilder::new(config).await?;
    let config = builder.config().clone();
    let store = builder.store();
    let target = RedisTarget::parse(&config.redis_url)?;
    let executor = builder.executor();
    let schedule: Arc<dyn schedule::Schedule> = Arc::new(schedule::RedisSchedule::new(store.connection()));
    let game = Arc::new(game::Game::new(
        executor.clone(),
        settings.handles,
        book,
        schedule.clone(),
        tick_ms,
        rules_version,
        config.cqrs.archive_dir.clone(),
    ));
    let players = Arc::new(players::Players::new(Handles::new(executor.clone(), settings.handles * 10)));
    // The rating window and the ticket expiry follow the live configuration.
    let from_env = settings.matchmaking;
    let mm_settings = builder.live_setting("live matchmaking", from_env, move |c| {
        let mut s = from_env;
        s.pass.base_window = c.int(&table::MM_WINDOW, from_env.pass.base_window.into()) as i32;
        s.pass.max_window = s.pass.max_window.max(s.pass.base_window);
        let ttl = c.int(&table::MM_TICKET_TTL, from_env.ticket_ttl.as_secs() as i64);
        s.ticket_ttl = std::time::Duration::from_secs(ttl as u64);
        s
    });
    // Per-player command rates, live.
    let rate = |builder: &mut ServiceBuilder,
                what,
                from_env: allies_platform::rate::Rate,
                per: &'static Setting,
                burst: &'static Setting,
                scale: f64| {
        let rate = builder.live_setting(what, from_env, move |c| allies_platform::rate::Rate {
            per_second: c.int(per, (from_env.per_second * scale).round() as i64) as f64 / scale,
            burst: c.int(burst, from_env.burst.into()) as u32,
        });
        Arc::new(allies_platform::rate::PlayerRates::new(what, rate))
    };
    let game_rate = rate(
        &mut builder,
        "game commands",
        settings.game_rate,
        &table::COMMANDS_PER_SECOND,
        &table::COMMANDS_BURST,
        1.0,
    );
    let mm_rate = rate(
        &mut builder,
        "matchmaking requests",
        settings.matchmaking_rate,
        &table::MM_REQUESTS_PER_MINUTE,
        &table::MM_REQUESTS_BURST,
        60.0,
    );
    let mm = Arc::new(matchmaking::Matchmaking::new(
        settings.handles,
        players.clone(),
        game.clone(),
        Arc::new(mm_index::RedisMatchmakingIndex::new(store.connection())),
        Arc::new(schedule::RedisSchedule::at(store.connection(), saga::DEADLINES)),
        mm_settings,
        config.instance.clone(),
    ));
    let watch = watch::Watch::new(
        store.clone(),
        target.clone(),
        game.seed(),
        (settings.watch_buffer, settings.frame),
        builder.stopping(),
    );
    let tickets = ticket_watch::TicketWatch::new(store.clone(), target, config.partitions, builder.stopping());

    // Waves complete even when nobody acts: the schedule and the sweeper.
    let scheduler = Arc::new(sweeper::Scheduler { schedule, settle: settings.settle });
    builder.subscribe(sweeper::GROUP, "game_session", Some(sweeper::TOPIC), scheduler)?;
    let (g, every) = (game.clone(), settings.settle);
    builder.background("wave sweeper", move |stop| sweeper::sweep(g, every, stop));

    // Players from guardian's users and from the games played.
    use allies_contracts::{guardian, timesquare as ts};
    builder.subscribe(
        "ts.users",
        "user",
        Some(guardian::integration::TOPIC),
        Arc::new(players::UsersTopic { players: players.clone(), tickets: mm.clone() }),
    )?;
    builder.subscribe(
        "ts.players",
        "game_session",
        Some(ts::integration::TOPIC),
        Arc::new(players::GamesTopic { players: players.clone() }),
    )?;

    // Matchmaking: the ticket reactions, the saga, the matchmaker, deadlines.
    builder.subscribe("ts.tickets", "ticket", None, Arc::new(matchmaking::TicketReactions { mm: mm.clone() }))?;
    builder.subscribe("ts.matches", "match", None, Arc::new(saga::Saga { mm: mm.clone() }))?;
    let m = mm.clone();
    builder.background("matchmaker", move |stop| m.run(stop));
    let (m, every) = (mm.clone(), settings.matchmaking.interval);
    builder.background("match deadlines", move |stop| saga::sweep_deadlines(m, every, stop));

    let (g, w, conn) = (game.clone(), watch.clone(), store.connection());
    builder.scrape(move || metrics::gauges(g.clone(), w.clone(), conn.clone()));
    let auth = builder.auth();
    builder.add_service(PlayerServiceServer::new(grpc::PlayerApi { auth: auth.clone() }));
    builder.add_service(MatchmakingServiceServer::new(grpc_match::MatchApi {
        mm,
        watch: tickets,
        auth: auth.clone(),
        replies: builder.replies(),
        rate: mm_rate,
        stopping: builder.stopping(),
    }));
    let live = builder.live_config();
    rules_live::install_uploaded(&game, &store.connection()).await;
    let (g, conn, not_applied) = (game.clone(), store.connection(), builder.not_applied());
    builder.on_live_config("rules version", move |c| {
        let (g, conn, not_applied) = (g.clone(), conn.clone(), not_applied.clone());
        async move { rules_live::apply(&g, &conn, &c, &not_applied).await }
    });
    builder.add_service(GameServiceServer::new(grpc::GameApi {
        game,
        watch,
        auth,
        live,
        replies: builder.replies(),
        rate: game_rate,
        stopping: builder.stopping(),
    }));
    Ok(builder.bind().await?)
}
