//! `allies`: drives every API of the fleet from the command line.
//!
//! Readable output by default, `--json` for scripts. A failed call prints the
//! gRPC status code and message (and every field violation, the broken rule,
//! the retry hint) and exits with 1. `allies login` keeps the tokens per
//! profile in `$ALLIES_HOME` (default `~/.allies`, mode 0600).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod commands;
mod context;
mod output;

use commands::{admin, auth, config, game, health, matchmaking, ops, players, search, stats, user};
use context::Context;
use output::Failure;

#[derive(Parser)]
#[command(name = "allies", version, about = "Command-line client of the Defense Allies fleet")]
struct Cli {
    /// Print machine-readable JSON instead of text (errors too).
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// Guardian (authentication) endpoint.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ALLIES_GUARDIAN",
        default_value = "http://127.0.0.1:50051"
    )]
    guardian: String,
    /// Timesquare (game) endpoint.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ALLIES_TIMESQUARE",
        default_value = "http://127.0.0.1:50052"
    )]
    timesquare: String,
    /// Command (operations) endpoint.
    #[arg(
        long = "command-url",
        global = true,
        help_heading = "Global options",
        env = "ALLIES_COMMAND",
        default_value = "http://127.0.0.1:50053"
    )]
    command_url: String,
    /// Projector (queries) endpoint.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ALLIES_PROJECTOR",
        default_value = "http://127.0.0.1:50054"
    )]
    projector: String,
    /// Access token to send instead of the one `allies login` kept.
    #[arg(long, global = true, help_heading = "Global options", env = "ALLIES_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Which saved login to use (an admin and a player side by side).
    #[arg(long, global = true, help_heading = "Global options", env = "ALLIES_PROFILE", default_value = "default")]
    profile: String,
    /// Idempotency key sent as x-command-id: a retry with the same key
    /// returns the first result instead of acting twice.
    #[arg(long, global = true, help_heading = "Global options")]
    command_id: Option<String>,
    /// Deadline of each call, in seconds.
    #[arg(long, global = true, help_heading = "Global options", default_value_t = 10)]
    timeout: u64,
    /// W3C trace context to continue (`00-<trace id>-<span id>-01`); by
    /// default each run starts a trace of its own. Every call carries it.
    #[arg(long, global = true, help_heading = "Global options", env = "TRACEPARENT")]
    traceparent: Option<String>,
    /// Print the run's trace id on stderr (find it in your tracing backend).
    #[arg(long, global = true, help_heading = "Global options")]
    trace: bool,
    /// Print only this field of the answer, raw, for scripts: a name from
    /// the `--json` output, dots for nesting (`G=$(allies game create
    /// --map meadow --field sessionId)`). A list prints an item a line.
    #[arg(long, global = true, help_heading = "Global options", value_name = "PATH")]
    field: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Users: register, read, list, roles, sessions, unlock, display name.
    #[command(subcommand)]
    User(user::UserCommand),
    /// The game: lobbies, towers, waves, the live board, history, replays.
    Game(game::GameArgs),
    /// Matchmaking: queue (alone or with friends), follow, confirm, matches.
    #[command(subcommand)]
    Match(matchmaking::MatchCommand),
    /// Players: profiles with rating, rank, stats and recent games.
    #[command(subcommand)]
    Player(players::PlayerCommand),
    /// Leaderboards: by rating, by best wave on a map, weekly.
    Leaderboard(players::Leaderboard),
    /// Search players and games by name, with counts per facet.
    #[command(subcommand)]
    Search(search::SearchCommand),
    /// Operations (admins): configuration, flags, statistics, metrics, reports, maintenance.
    #[command(subcommand)]
    Ops(ops::OpsCommand),
    /// Game statistics per map and difficulty (also `allies ops stats`).
    Stats(stats::Stats),
    // Shorter names kept for scripts written before `allies ops`.
    #[command(hide = true)]
    Metrics(stats::Metrics),
    #[command(subcommand, hide = true)]
    Config(config::ConfigCommand),
    #[command(flatten)]
    Auth(auth::AuthCommand),
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Health of every service (grpc.health.v1).
    Health(health::Health),
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let profile_ok = !cli.profile.is_empty()
        && cli.profile.len() <= 64
        && cli.profile.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    if !profile_ok {
        return Err(Failure::local("--profile must be 1 to 64 letters, digits, '-' or '_'"));
    }
    let traceparent = match cli.traceparent.as_deref() {
        Some(tp) => context::continue_trace(tp).ok_or_else(|| {
            Failure::local("--traceparent must be 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>")
        })?,
        None => context::new_trace(),
    };
    if cli.trace {
        eprintln!("trace {}", traceparent.split('-').nth(1).unwrap_or_default());
    }
    if let Some(path) = &cli.field {
        output::select_field(path.clone());
    }
    let ctx = Context {
        json: cli.json || cli.field.is_some(),
        guardian: cli.guardian,
        timesquare: cli.timesquare,
        command: cli.command_url,
        projector: cli.projector,
        token: cli.token,
        profile: cli.profile,
        command_id: cli.command_id,
        timeout: Duration::from_secs(cli.timeout),
        traceparent,
    };
    if !matches!(cli.command, Command::Auth(_) | Command::Health(_)) {
        auth::refresh_if_expiring(&ctx).await;
    }
    match &cli.command {
        Command::User(c) => user::run(c, &ctx).await,
        Command::Game(g) => game::run(g, &ctx).await,
        Command::Match(c) => matchmaking::run_match(c, &ctx).await,
        Command::Player(c) => players::run_player(c, &ctx).await,
        Command::Leaderboard(l) => players::run_leaderboard(l, &ctx).await,
        Command::Search(c) => search::run(c, &ctx).await,
        Command::Ops(c) => ops::run(c, &ctx).await,
        Command::Stats(s) => stats::run(s, &ctx).await,
        Command::Config(c) => config::run(c, &ctx).await,
        Command::Metrics(m) => stats::run_metrics(m, &ctx).await,
        Command::Auth(c) => auth::run(c, &ctx).await,
        Command::Admin(c) => admin::run(c, &ctx).await,
        Command::Health(h) => health::run(h, &ctx).await,
    }
}

/// A command line that does not parse: clap's message, or with `--json`
/// one JSON object on stderr like every other failure; exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args().any(|a| a == "--json");
    if !json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let message = e.render().to_string();
    let first = message.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let error = serde_json::json!({ "error": { "code": "Usage", "message": first.trim_start_matches("error: ") } });
    eprintln!("{error}");
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // `allies … | head`: a reader that stops reading ends the CLI quietly,
    // as it does any Unix tool, instead of a panic on the closed pipe (Rust
    // ignores SIGPIPE, so every print would fail with EPIPE).
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal at start,
    // before any thread or handler exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report(json);
            ExitCode::FAILURE
        }
    }
}
