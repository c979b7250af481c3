//! Live configuration: every instance of every service follows the
//! Configuration aggregate (`configuration/fleet`, written by the command
//! service) on its own — not as one consumer of a group — and applies each
//! new version whole.
//!
//! At start the builder reads the latest version straight from Redis (a
//! service starting while the command service is down still gets it); then a
//! task polls the aggregate's stream every 250 ms, publishes the new values
//! on a watch channel (one atomic swap: a reader sees the old version or the
//! new one, never a mix), and reports `ConfigurationApplied` — the hash
//! `config:applied` (`<service>/<instance>` → version and time) and the
//! stream `config:applied:log`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use allies_contracts::command::events::{CONFIGURATION_ID, CONFIGURATION_TYPE, ConfigurationEvent};
use allies_store::{EventStore, RedisConn, RedisEventStore, StoreError};
use tokio::sync::watch;

pub const APPLIED: &str = "config:applied";
/// Every instance's operations endpoint (`<service>/<instance>` → host:port),
/// for the command service's metrics sampler.
pub const INSTANCES: &str = "fleet:instances";
pub const APPLIED_LOG: &str = "config:applied:log";
const POLL: Duration = Duration::from_millis(250);

/// A version of the fleet's configuration (version 0: every default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveConfig {
    pub version: u64,
    pub values: HashMap<String, String>,
}

/// Maintenance mode in `values`: the retry delay a client's write is
/// told while `maintenance.writes_paused` is 1 (None: writes go on).
pub fn maintenance(values: &HashMap<String, String>) -> Option<Duration> {
    if values.get("maintenance.writes_paused").map(String::as_str) != Some("1") {
        return None;
    }
    let secs = values.get("maintenance.retry_after_secs").and_then(|v| v.parse::<u64>().ok()).unwrap_or(30);
    Some(Duration::from_secs(secs.clamp(1, 3_600)))
}

/// Reads every version after `after`; the last one's values are in force.
async fn newer(store: &RedisEventStore, after: u64) -> Result<Option<LiveConfig>, StoreError> {
    let records = store.read(CONFIGURATION_TYPE, CONFIGURATION_ID, after + 1, usize::MAX).await?;
    let Some(last) = records.last() else { return Ok(None) };
    let event = last.typed::<ConfigurationEvent>()?;
    Ok(Some(LiveConfig {
        version: last.envelope.version,
        values: event.payload.values().clone().into_iter().collect(),
    }))
}

/// The configuration in force now (the defaults when none was ever written).
pub async fn load(store: &RedisEventStore) -> Result<LiveConfig, StoreError> {
    Ok(newer(store, 0).await?.unwrap_or_default())
}

async fn report(
    conn: &mut RedisConn,
    service: &str,
    instance: &str,
    http: &str,
    version: u64,
) -> redis::RedisResult<()> {
    let now = crate::context::now_ms();
    let who = format!("{service}/{instance}");
    redis::pipe()
        .cmd("HSET")
        .arg(APPLIED)
        .arg(&who)
        .arg(format!("{version}:{now}"))
        .ignore()
        .cmd("HSET")
        .arg(INSTANCES)
        .arg(&who)
        .arg(http)
        .ignore()
        .cmd("XADD")
        .arg(APPLIED_LOG)
        .arg("MAXLEN")
        .arg("~")
        .arg(10_000)
        .arg("*")
        .arg("event_type")
        .arg("ConfigurationApplied")
        .arg("service")
        .arg(service)
        .arg("instance")
        .arg(instance)
        .arg("version")
        .arg(version)
        .ignore()
        .query_async(conn)
        .await
}

/// Follows the configuration until `stop`, publishing each new version.
pub async fn follow(
    store: RedisEventStore,
    service: String,
    instance: String,
    http: String,
    tx: Arc<watch::Sender<Arc<LiveConfig>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = store.connection();
    let mut reported = None;
    loop {
        let current = tx.borrow().version;
        match newer(&store, current).await {
            Ok(Some(next)) => {
                tracing::info!(version = next.version, "configuration applied");
                tx.send_replace(Arc::new(next));
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the configuration; retrying"),
        }
        let version = tx.borrow().version;
        if reported != Some(version) && report(&mut conn, &service, &instance, &http, version).await.is_ok() {
            reported = Some(version);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
