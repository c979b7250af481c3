//! `allies-store`: operator commands on the event store, with the fleet's
//! configuration: `REDIS_URL` and `configs/cqrs.yaml` as the services read
//! them, else `.data/fleet.env` (what `dev/up` started), else the defaults.
//!
//!     allies-store history <type> <id> [--from N] [--limit N] [--archived]
//!     allies-store as-of <type> <id> --version N | --time <unix ms>
//!     allies-store archive <type> <id>   # up to the snapshot (taken first if there is none)
//!     allies-store restore <type> <id>
//!     allies-store verify-game <session id>   # re-run a game, check every wave hash
//!
//! Works for every aggregate type the domain crates define (see `by_type!`);
//! it depends on domains and contracts, never on a service.

use std::process::ExitCode;

use allies_core::Snapshot;
use allies_platform::ServiceConfig;
use allies_platform::config::Env;
use allies_store::{AsOf, RecordedEvent, RedisEventStore};
use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};

use allies_store_admin::by_type;

#[derive(Parser)]
#[command(name = "allies-store", about = "Operator commands on the Defense Allies event store")]
struct Cli {
    /// The event store's Redis (default: `REDIS_URL`, else the fleet `dev/up`
    /// started, found in `.data/fleet.env` here or in a parent directory).
    #[arg(long, global = true)]
    redis: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `.data/fleet.env` in the current directory or the nearest parent that has one.
fn fleet_file() -> Option<std::path::PathBuf> {
    let here = std::env::current_dir().ok()?;
    here.ancestors().map(|d| d.join(".data/fleet.env")).find(|f| f.is_file())
}

#[derive(Subcommand)]
enum Command {
    /// An aggregate's events, paged, one JSON object per line (secrets redacted).
    History {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Include events already archived and trimmed from Redis.
        #[arg(long)]
        archived: bool,
    },
    /// The state of an aggregate as of a version or a time.
    AsOf {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long, conflicts_with = "time", required_unless_present = "time")]
        version: Option<u64>,
        /// Unix epoch milliseconds.
        #[arg(long)]
        time: Option<i64>,
    },
    /// Archive the events up to the aggregate's snapshot (taking one first
    /// if there is none), then trim them from Redis.
    Archive { aggregate_type: String, aggregate_id: String },
    /// Put archived events back into Redis.
    Restore { aggregate_type: String, aggregate_id: String },
    /// Re-run a game session from all its events (archived ones included)
    /// with the rules version it pinned, and check every recorded wave
    /// outcome and state hash. Exits 1 on a mismatch.
    VerifyGame {
        session_id: String,
        /// The current rules file (older versions are read from --rules-dir).
        #[arg(long, default_value = "configs/game-rules.yaml")]
        rules: std::path::PathBuf,
        #[arg(long, default_value = "configs/game-rules.d")]
        rules_dir: std::path::PathBuf,
    },
}

fn line(r: &RecordedEvent) -> serde_json::Value {
    let e = &r.envelope;
    let data = allies_contracts::registry::public_json(
        &e.aggregate_type,
        &e.event_type,
        e.schema_version,
        &r.content_type,
        &r.data,
    )
    .map(|(json, _)| json)
    .unwrap_or_else(|_| serde_json::Value::String(allies_contracts::registry::scrub_raw(&r.content_type, &r.data)));
    serde_json::json!({
        "version": e.version, "eventType": e.event_type, "schemaVersion": e.schema_version,
        "eventId": e.event_id, "recordedAtMs": e.recorded_at_ms, "metadata": e.metadata, "data": data,
    })
}

async fn as_of<A: Snapshot + serde::Serialize + Send>(
    store: &RedisEventStore,
    id: &str,
    at: AsOf,
) -> anyhow::Result<()> {
    let (state, version) = allies_store::load_as_of::<A>(store, id, at).await?;
    // Secrets are masked as in `history` and the event subscription.
    let mut state = serde_json::to_value(&state)?;
    allies_contracts::registry::redact_json(&mut state);
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "version": version, "state": state }))?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Never a Redis nobody named: an operator command may write (archive,
    // restore), and 127.0.0.1:6379 may be somebody else's.
    let named = cli.redis.is_some() || Env::from_process().get("REDIS_URL").is_some();
    let file = fleet_file();
    let (mut env, from_file) = match &file {
        Some(f) if !named => Env::from_process_with_defaults(f),
        _ => (Env::from_process(), false),
    };
    if let Some(url) = &cli.redis {
        env = env.with("REDIS_URL", url);
    }
    if !named && !from_file {
        bail!(
            "which Redis? no fleet found (no .data/fleet.env here or above: dev/up writes it) and no REDIS_URL or \
             --redis given; run from the checkout whose fleet you mean, or name it: --redis redis://host:port"
        );
    }
    let config = ServiceConfig::from("store-admin", env)?;
    if let (true, Some(f)) = (from_file, &file) {
        eprintln!(
            "using the fleet of {}: Redis at {}",
            f.display(),
            allies_store::RedisTarget::redacted(&config.redis_url)
        );
    }
    let store = RedisEventStore::connect(&config.redis_url, config.partitions)
        .await
        .with_context(|| {
            format!(
                "cannot reach Redis at {} (set REDIS_URL, or start the fleet with dev/up)",
                allies_store::RedisTarget::redacted(&config.redis_url)
            )
        })?
        .with_storage(config.cqrs.storage.clone(), config.cqrs.default_storage)
        .with_snapshot_compression(config.snapshot_compression);
    let dir = &config.cqrs.archive_dir;
    let exists = |t: String, id: String| {
        let store = store.clone();
        async move {
            if !store.exists(&t, &id).await? {
                bail!("no {t} with id {id} in the event store at {}", config.redis_url);
            }
            Ok(())
        }
    };
    match cli.command {
        Command::History { aggregate_type, aggregate_id, from, limit, archived } => {
            let events = if archived {
                let all = store.full_history(&aggregate_type, &aggregate_id, dir).await?;
                all.into_iter().skip(from.saturating_sub(1) as usize).take(limit).collect()
            } else {
                exists(aggregate_type.clone(), aggregate_id.clone()).await?;
                store.read_range(&aggregate_type, &aggregate_id, from, None, limit).await?
            };
            for e in &events {
                println!("{}", line(e));
            }
            if let Some(last) = events.last().filter(|_| events.len() == limit) {
                eprintln!("next page: --from {}", last.envelope.version + 1);
            }
        }
        Command::AsOf { aggregate_type, aggregate_id, version, time } => {
            exists(aggregate_type.clone(), aggregate_id.clone()).await?;
            let at = match (version, time) {
                (Some(v), _) => AsOf::Version(v),
                (None, Some(t)) => AsOf::Time(t),
                (None, None) => bail!("give --version or --time"),
            };
            by_type!(aggregate_type.as_str(), A => as_of::<A>(&store, &aggregate_id, at).await)?;
        }
        Command::Archive { aggregate_type, aggregate_id } => {
            exists(aggregate_type.clone(), aggregate_id.clone()).await?;
            let r = allies_store_admin::archive(&store, &aggregate_type, &aggregate_id, dir).await?;
            if let Some(v) = r.snapshot_taken {
                eprintln!("took a snapshot at version {v} first (only events up to a snapshot are archived)");
            }
            match (r.report.range, r.report.file) {
                (Some((from, to)), Some(file)) => {
                    println!(
                        "archived versions {from}..={to} ({} events) to {}; trimmed from Redis",
                        r.report.archived,
                        file.display()
                    )
                }
                _ => println!("nothing to archive: no events before the snapshot are left in Redis"),
            }
        }
        Command::VerifyGame { session_id, rules, rules_dir } => {
            let (current, older) = allies_platform::config::read_file_and_dir("--rules", &rules, &rules_dir)?;
            let (book, _) = timesquare_domain::Book::of_texts((&current.0, &current.1), &older)
                .map_err(|(file, e)| anyhow!("{file}: at {}: {}", e.key, e.reason))?;
            exists("game_session".into(), session_id.clone()).await?;
            let records = store.full_history("game_session", &session_id, dir).await?;
            let mut events = Vec::with_capacity(records.len());
            for r in &records {
                let e = r
                    .decode::<allies_contracts::timesquare::events::GameEvent>()
                    .with_context(|| format!("event {} of game {session_id}", r.envelope.version))?;
                events.push(e.payload);
            }
            let report = timesquare_domain::replay::verify(&events, &book);
            for w in &report.waves {
                let mark = if w.ok { "ok" } else { "MISMATCH" };
                println!(
                    "wave {:>2}  {:<8} {mark}  recorded {}  replayed {}",
                    w.wave, w.recorded_outcome, w.recorded_hash, w.replayed_hash
                );
            }
            for p in &report.problems {
                println!("problem: {p}");
            }
            if !report.ok() {
                bail!("the replay of {session_id} does not reproduce the recorded game ({} events)", report.events);
            }
            println!("replay verified: {} events, {} waves", report.events, report.waves.len());
        }
        Command::Restore { aggregate_type, aggregate_id } => {
            exists(aggregate_type.clone(), aggregate_id.clone()).await?;
            let n = store.restore_from_archive(&aggregate_type, &aggregate_id, dir).await?;
            println!("restored: the stream holds all {n} events again");
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes on one line, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
