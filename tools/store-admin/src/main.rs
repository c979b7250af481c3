//! `allies-store`: operator commands on the event store, with the fleet's
//! configuration (`REDIS_URL`, `configs/cqrs.yaml` and its overrides).
//!
//!     allies-store history user <id> [--from N] [--limit N] [--archived]
//!     allies-store as-of user <id> --version N | --time <unix ms>
//!     allies-store archive user <id>        # up to the snapshot, into retention.archive_dir
//!     allies-store restore user <id>

use allies_core::Snapshot;
use allies_platform::config::ServiceConfig;
use allies_store::{AsOf, EventStore, RecordedEvent};
use clap::{Parser, Subcommand};
use guardian::domain::User;
use guardian::session::Session;

#[derive(Parser)]
#[command(name = "allies-store", about = "Operator commands on the Defense Allies event store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An aggregate's events, paged, one JSON object per line.
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
    /// The state of an aggregate as of a version or a time (user, session).
    AsOf {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long, conflicts_with = "time", required_unless_present = "time")]
        version: Option<u64>,
        /// Unix epoch milliseconds.
        #[arg(long)]
        time: Option<i64>,
    },
    /// Archive the events up to the aggregate's snapshot, then trim them.
    Archive { aggregate_type: String, aggregate_id: String },
    /// Put archived events back into Redis.
    Restore { aggregate_type: String, aggregate_id: String },
}

fn line(r: &RecordedEvent) -> serde_json::Value {
    let e = &r.envelope;
    let data = if r.content_type == allies_store::CONTENT_TYPE_JSON {
        serde_json::from_slice(&r.data).unwrap_or(serde_json::Value::Null)
    } else {
        serde_json::Value::String(format!("<{} bytes {}>", r.data.len(), r.content_type))
    };
    serde_json::json!({
        "version": e.version, "eventType": e.event_type, "schemaVersion": e.schema_version,
        "eventId": e.event_id, "recordedAtMs": e.recorded_at_ms, "metadata": e.metadata, "data": data,
    })
}

async fn as_of<A: Snapshot + serde::Serialize>(store: &EventStore, id: &str, at: AsOf) -> anyhow::Result<()> {
    let (state, version) = store.load_as_of::<A>(id, at).await?;
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "version": version, "state": state }))?);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = ServiceConfig::from_env("store-admin", "127.0.0.1:0")?;
    let store = EventStore::connect(&config.redis_url, config.partitions)
        .await?
        .with_storage(config.cqrs.storage.clone(), config.cqrs.default_storage);
    let dir = &config.cqrs.archive_dir;
    match cli.command {
        Command::History { aggregate_type, aggregate_id, from, limit, archived } => {
            let events = if archived {
                let all = store.full_history(&aggregate_type, &aggregate_id, dir).await?;
                all.into_iter().skip(from.saturating_sub(1) as usize).take(limit).collect()
            } else {
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
            let at = match (version, time) {
                (Some(v), _) => AsOf::Version(v),
                (None, Some(t)) => AsOf::Time(t),
                (None, None) => anyhow::bail!("give --version or --time"),
            };
            match aggregate_type.as_str() {
                "user" => as_of::<User>(&store, &aggregate_id, at).await?,
                "session" => as_of::<Session>(&store, &aggregate_id, at).await?,
                other => anyhow::bail!("no state type for aggregate type '{other}' (user, session)"),
            }
        }
        Command::Archive { aggregate_type, aggregate_id } => {
            let r = store.archive_and_trim(&aggregate_type, &aggregate_id, dir).await?;
            match (r.range, r.file) {
                (Some((from, to)), Some(file)) => {
                    println!(
                        "archived versions {from}..={to} ({} events) to {}; trimmed from Redis",
                        r.archived,
                        file.display()
                    )
                }
                _ => println!("nothing to archive: no events before the snapshot are left in Redis"),
            }
        }
        Command::Restore { aggregate_type, aggregate_id } => {
            let n = store.restore_from_archive(&aggregate_type, &aggregate_id, dir).await?;
            println!("restored: the stream holds all {n} events again");
        }
    }
    Ok(())
}
