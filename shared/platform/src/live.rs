//! Live configuration: every instance of every service follows the
//! Configuration aggregate (`configuration/fleet`, written by the command
//! service) on its own — not as one consumer of a group — and applies each
//! new version whole.
//!
//! At start the builder reads the latest version straight from Redis (a
//! service starting while the command service is down still gets it); then a
//! task waits on the aggregate's stream with a blocking XREAD (woken by the
//! append itself, so a change is applied within milliseconds; without a
//! blocking connection it polls every 250 ms), publishes the new values
//! on a watch channel (one atomic swap: a reader sees the old version or the
//! new one, never a mix), and reports `ConfigurationApplied` — the hash
//! `config:applied` (`<service>/<instance>` → version and time) and the
//! stream `config:applied:log` — all four status keys under the hash tag
//! `{fleet}`, so the one pipeline that writes them runs on Redis Cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use allies_contracts::command::events::{CONFIGURATION_ID, CONFIGURATION_TYPE, ConfigurationEvent};
use allies_core::settings::{self as table, Setting};
use allies_store::{EventStore, RedisConn, RedisEventStore, StoreError};
use tokio::sync::watch;

pub const APPLIED: &str = "{fleet}:config:applied";
/// Every instance's operations endpoint (`<service>/<instance>` → host:port),
/// for the command service's metrics sampler.
pub const INSTANCES: &str = "{fleet}:instances";
pub const APPLIED_LOG: &str = "{fleet}:config:applied:log";
/// Every instance's last sign of life (`<service>/<instance>` → Unix ms).
pub const ALIVE: &str = "{fleet}:alive";
/// How often an instance says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Not seen for this long: shown as not alive.
pub const ALIVE_WITHIN_MS: i64 = 15_000;
/// Not seen for this long: dropped from the status.
pub const DEPARTED_AFTER_MS: i64 = 5 * 60_000;
/// How often the configuration is read when no blocking read is possible.
const POLL: Duration = Duration::from_millis(250);

/// The id of the configuration stream's last entry ("0-0": none).
async fn last_entry(conn: &mut RedisConn, key: &str) -> redis::RedisResult<String> {
    let last: redis::streams::StreamRangeReply =
        redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
    Ok(last.ids.first().map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
}

/// Waits until the stream has an entry after `after`, or `at_most`.
async fn appended_after(conn: &mut RedisConn, key: &str, after: &str, at_most: Duration) -> redis::RedisResult<()> {
    let _: redis::Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(at_most.as_millis() as u64)
        .arg("STREAMS")
        .arg(key)
        .arg(after)
        .query_async(conn)
        .await?;
    Ok(())
}

/// What of the version in force this instance could not apply, by key, with
/// why (a rules version it does not have, say): reported with the applied
/// version, so "applied" in the fleet's status means in force, or says why not.
/// It also knows each applier of the configuration (`on_live_config`) and
/// the last version it finished: a version is reported applied only once
/// every applier has finished it.
#[derive(Debug, Clone, Default)]
pub struct NotApplied(
    Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    /// Wakes the follower to report a change at once.
    Arc<tokio::sync::Notify>,
    /// Each applier and the version it last finished applying.
    Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>>,
);

impl NotApplied {
    /// An applier the instance's reports wait for.
    pub fn applier(&self, name: &'static str) {
        if let Ok(mut m) = self.2.lock() {
            m.entry(name).or_insert(0);
        }
    }

    /// `name` finished applying `version`: the follower reports it if it
    /// was the last to.
    pub fn finished(&self, name: &'static str, version: u64) {
        if let Ok(mut m) = self.2.lock() {
            m.insert(name, version);
        }
        self.1.notify_one();
    }

    /// What this instance may report as applied of `version` (the newest it
    /// read): `version` once every applier finished it, else the oldest
    /// version they all have.
    pub fn settled(&self, version: u64) -> u64 {
        self.2.lock().ok().and_then(|m| m.values().min().copied()).map_or(version, |v| v.min(version))
    }

    pub fn set(&self, key: &str, why: impl Into<String>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_owned(), why.into());
        }
        self.1.notify_one();
    }

    pub fn clear(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
        self.1.notify_one();
    }

    /// Every reason, one line (empty: all of it is in force).
    pub fn summary(&self) -> String {
        self.0.lock().map(|m| m.values().cloned().collect::<Vec<_>>().join("; ")).unwrap_or_default()
    }
}

#[cfg(test)]
mod settled_tests {
    use super::NotApplied;

    #[test]
    fn a_version_is_settled_once_every_applier_finished_it() {
        let n = NotApplied::default();
        assert_eq!(n.settled(3), 3, "no applier: what was read is in force");
        n.applier("rules");
        n.applier("rates");
        assert_eq!(n.settled(3), 0);
        n.finished("rules", 3);
        assert_eq!(n.settled(3), 0, "rates has not finished");
        n.finished("rates", 3);
        assert_eq!(n.settled(3), 3);
        assert_eq!(n.settled(4), 3, "version 4 read, not yet applied");
    }
}

/// A version of the fleet's configuration (version 0: every default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveConfig {
    pub version: u64,
    pub values: HashMap<String, String>,
    /// The keys an operator set: only these override this instance's own
    /// (environment) values.
    pub set: std::collections::HashSet<String>,
}

impl LiveConfig {
    /// The value of an integer key in force on this instance — the one
    /// precedence rule: a value an operator set in the configuration wins;
    /// a key nobody set keeps `deployed`, this instance's own value (its
    /// environment, or the built-in default).
    /// Only a live setting of the table can be asked for, so a misspelled
    /// key does not compile; a value outside the setting's range (the
    /// command service refuses one, but an older version may hold it)
    /// keeps `deployed` too.
    pub fn int(&self, setting: &Setting, deployed: i64) -> i64 {
        debug_assert!(setting.is_live(), "{} is not a live setting", setting.name);
        if !self.set.contains(setting.name) {
            return deployed;
        }
        self.values
            .get(setting.name)
            .filter(|v| setting.check(v).is_ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(deployed)
    }
}

/// Maintenance mode in `values`: the retry delay a client's write is
/// told while `maintenance.writes_paused` is 1 (None: writes go on).
pub fn maintenance(values: &HashMap<String, String>) -> Option<Duration> {
    let int =
        |s: &Setting| values.get(s.name).filter(|v| s.check(v).is_ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if int(&table::WRITES_PAUSED) != Some(1) {
        return None;
    }
    let secs = int(&table::RETRY_AFTER).unwrap_or(table::RETRY_AFTER.int_default() as u64);
    Some(Duration::from_secs(secs))
}

/// Reads every version after `after`; the last one's values are in force.
async fn newer(store: &RedisEventStore, after: u64) -> Result<Option<LiveConfig>, StoreError> {
    let records = store.read(CONFIGURATION_TYPE, CONFIGURATION_ID, after + 1, usize::MAX).await?;
    let Some(last) = records.last() else { return Ok(None) };
    let event = last.typed::<ConfigurationEvent>()?;
    Ok(Some(LiveConfig {
        version: last.envelope.version,
        values: event.payload.values().clone().into_iter().collect(),
        set: event.payload.set_keys().into_iter().collect(),
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
    not_applied: &str,
) -> redis::RedisResult<()> {
    let now = crate::context::now_ms();
    let who = format!("{service}/{instance}");
    redis::pipe()
        .cmd("HSET")
        .arg(APPLIED)
        .arg(&who)
        .arg(format!("{version}:{now}:{not_applied}"))
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
/// `(service, instance, http)`: who this instance is, and its operations endpoint.
pub async fn follow(
    store: RedisEventStore,
    target: allies_store::RedisTarget,
    (service, instance, http): (String, String, String),
    tx: Arc<watch::Sender<Arc<LiveConfig>>>,
    not_applied: NotApplied,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = store.connection();
    let key =
        allies_store::keys::stream_key(CONFIGURATION_TYPE, store.partition_of(CONFIGURATION_ID), CONFIGURATION_ID);
    // A connection of its own for the blocking read (None: poll).
    let mut blocking: Option<RedisConn> = None;
    let mut reported = None;
    let who = format!("{service}/{instance}");
    let mut beat: Option<std::time::Instant> = None;
    loop {
        if beat.is_none_or(|b| b.elapsed() >= HEARTBEAT) {
            let alive: redis::RedisResult<()> =
                redis::cmd("HSET").arg(ALIVE).arg(&who).arg(crate::context::now_ms()).query_async(&mut conn).await;
            if alive.is_ok() {
                beat = Some(std::time::Instant::now());
            }
        }
        // The stream's last entry before reading: an append after this
        // point wakes the blocking read below, so none is missed.
        let mark = last_entry(&mut conn, &key).await.ok();
        let current = tx.borrow().version;
        match newer(&store, current).await {
            Ok(Some(next)) => {
                tracing::info!(version = next.version, "configuration applied");
                tx.send_replace(Arc::new(next));
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the configuration; retrying"),
        }
        // Reported once every applier finished it: "applied" means in force.
        let now = (not_applied.settled(tx.borrow().version), not_applied.summary());
        if reported.as_ref() != Some(&now) && report(&mut conn, &service, &instance, &http, now.0, &now.1).await.is_ok()
        {
            reported = Some(now);
        }
        if blocking.is_none() {
            blocking = target.dedicated(HEARTBEAT + Duration::from_secs(5)).await.ok();
        }
        let wait = async {
            match (blocking.as_mut(), mark.as_deref()) {
                (Some(c), Some(after)) => {
                    // Until the next append, or the next heartbeat.
                    if let Err(e) = appended_after(c, &key, after, HEARTBEAT).await {
                        tracing::debug!(error = %e, "the blocking read of the configuration failed; polling");
                        blocking = None;
                        tokio::time::sleep(POLL).await;
                    }
                }
                _ => tokio::time::sleep(POLL).await,
            }
        };
        tokio::select! {
            _ = wait => {}
            // What this instance could not apply changed: report it now.
            _ = not_applied.1.notified() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Stopping cleanly: this instance leaves the fleet's status.
    for key in [APPLIED, INSTANCES, ALIVE] {
        let _: redis::RedisResult<()> = redis::cmd("HDEL").arg(key).arg(&who).query_async(&mut conn).await;
    }
}
