//! The operator's work on the event store, as a library: every aggregate
//! type the domain crates define ([`by_type!`]), a snapshot of any of them,
//! archiving (snapshot first when there is none), and finding the
//! aggregates idle since a date. The `allies-store` binary and the command
//! service's recorded maintenance both stand on it; it depends on domains
//! and contracts, never on a service.

use std::collections::HashMap;
use std::path::Path;

use allies_core::Snapshot;
use allies_store::archive::ArchiveReport;
use allies_store::{EventStore, RedisEventStore, StoreError, keys};

#[doc(hidden)]
pub use {guardian_domain, timesquare_domain};

/// Every aggregate type this library folds.
pub const KNOWN: &[&str] = &["user", "session", "game_session", "player", "ticket", "match"];

/// An aggregate type no domain defines.
#[derive(Debug, thiserror::Error)]
#[error("no aggregate type '{0}' (known: {known})", known = KNOWN.join(", "))]
pub struct UnknownType(pub String);

/// Runs `$body` with `$A` the state type of aggregate type `$t`, one line
/// per type; an unknown type is `Err(UnknownType.into())`.
#[macro_export]
macro_rules! by_type {
    ($t:expr, $A:ident => $body:expr) => {
        match $t {
            "user" => {
                type $A = $crate::guardian_domain::User;
                $body
            }
            "session" => {
                type $A = $crate::guardian_domain::Session;
                $body
            }
            "game_session" => {
                type $A = $crate::timesquare_domain::GameSession;
                $body
            }
            "player" => {
                type $A = $crate::timesquare_domain::player::Player;
                $body
            }
            "ticket" => {
                type $A = $crate::timesquare_domain::ticket::Ticket;
                $body
            }
            "match" => {
                type $A = $crate::timesquare_domain::matching::Match;
                $body
            }
            other => Err($crate::UnknownType(other.to_owned()).into()),
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    UnknownType(#[from] UnknownType),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A game session's state needs the game rules, which only timesquare
    /// has: the tool does not snapshot one (a snapshot without the rules
    /// would lose its towers' reach and the running wave).
    #[error(
        "{0} {1} has no snapshot yet, and this tool does not take one of a game session (it needs the game rules): archive it once timesquare has taken one"
    )]
    NeedsRules(String, String),
}

/// Takes a snapshot of the aggregate's current state; returns its version.
pub async fn snapshot<A: Snapshot + Send>(store: &RedisEventStore, id: &str) -> Result<u64, StoreError> {
    let loaded = allies_store::load::<A>(store, id).await?;
    allies_store::save_snapshot(
        store,
        id,
        &loaded.state,
        loaded.version,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default(),
    )
    .await?;
    Ok(loaded.version)
}

/// What [`archive`] did.
#[derive(Debug, Clone)]
pub struct Archived {
    /// The version snapshotted first, when the aggregate had no snapshot.
    pub snapshot_taken: Option<u64>,
    pub report: ArchiveReport,
}

/// Archives an aggregate's events up to its snapshot (taking one first when
/// there is none) into `dir`, then trims them from Redis.
pub async fn archive(
    store: &RedisEventStore,
    aggregate_type: &str,
    aggregate_id: &str,
    dir: &Path,
) -> Result<Archived, AdminError> {
    let snapshot_taken = if store.snapshot(aggregate_type, aggregate_id).await?.is_none() {
        if aggregate_type == "game_session" {
            return Err(AdminError::NeedsRules(aggregate_type.to_owned(), aggregate_id.to_owned()));
        }
        Some(by_type!(aggregate_type, A => snapshot::<A>(store, aggregate_id).await.map_err(AdminError::from))?)
    } else {
        None
    };
    let report = store.archive_and_trim(aggregate_type, aggregate_id, dir).await?;
    Ok(Archived { snapshot_taken, report })
}

/// The aggregates of `aggregate_type` whose last event was recorded before
/// `before_ms` (read from the partition logs, whose entry ids are the
/// recording times), oldest activity first.
pub async fn idle_since(
    store: &RedisEventStore,
    aggregate_type: &str,
    before_ms: i64,
) -> Result<Vec<(String, i64)>, AdminError> {
    if !KNOWN.contains(&aggregate_type) {
        return Err(UnknownType(aggregate_type.to_owned()).into());
    }
    let mut conn = store.connection();
    let mut last: HashMap<String, i64> = HashMap::new();
    for p in 0..store.partitions() {
        let log = keys::log_key(aggregate_type, p);
        let mut pages = allies_store::Pages::new(&log, "-", "+", 1000);
        while let Some(page) = pages.next(&mut conn).await? {
            for entry in &page {
                let at = entry.id.split('-').next().and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
                if let Some(id) = allies_store::entry_text(entry, "aggregate_id") {
                    last.insert(id.to_owned(), at);
                }
            }
        }
    }
    let mut idle: Vec<(String, i64)> = last.into_iter().filter(|(_, at)| *at < before_ms).collect();
    idle.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(idle)
}
