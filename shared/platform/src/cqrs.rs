//! `configs/cqrs.yaml`: storage strategy per aggregate type, snapshots,
//! serialization, Redis and performance settings — every value overridable
//! by an environment variable. Precedence: built-in defaults < file < env.
//!
//! The file is `CQRS_CONFIG` if set (it must then exist), else
//! `configs/cqrs.yaml` when present. A malformed or contradictory file is an
//! error naming the key; unknown keys are errors too (a typo must not
//! silently fall back to a default).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use allies_core::{EventFormat, SnapshotPolicy};
use allies_store::{SnapshotCompression, Storage};
use serde::Deserialize;

use crate::env::{ConfigError, Env};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default_storage: Option<String>,
    #[serde(default)]
    aggregates: BTreeMap<String, String>,
    #[serde(default)]
    event_sourcing: EventSourcing,
    #[serde(default)]
    serialization: Serialization,
    #[serde(default)]
    redis: Redis,
    #[serde(default)]
    performance: Performance,
    #[serde(default)]
    retention: Retention,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {
    archive_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSourcing {
    snapshot_frequency: Option<u64>,
    snapshot_max_age_secs: Option<u64>,
    idempotency_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Serialization {
    format: Option<String>,
    snapshot_compression: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Redis {
    url: Option<String>,
    partitions: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Performance {
    subscriber_batch: Option<usize>,
    subscriber_block_ms: Option<u64>,
    retry_max_attempts: Option<u32>,
    retry_base_ms: Option<u64>,
    claim_idle_ms: Option<u64>,
    breaker_failures: Option<u32>,
    breaker_open_ms: Option<u64>,
}

/// Where Redis is when `REDIS_URL` says nothing: a local server on its standard port.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The effective CQRS settings.
#[derive(Debug, Clone)]
pub struct CqrsConfig {
    /// The file read, if any.
    pub source: Option<PathBuf>,
    pub default_storage: Storage,
    pub storage: HashMap<String, Storage>,
    pub snapshots: SnapshotPolicy,
    pub idempotency_ttl: Duration,
    pub event_format: EventFormat,
    pub snapshot_compression: SnapshotCompression,
    pub redis_url: String,
    pub partitions: u32,
    pub subscriber_batch: usize,
    pub subscriber_block: Duration,
    /// Where archived events go before they are trimmed.
    pub archive_dir: PathBuf,
    /// Deliveries of a failing entry before it is dead-lettered.
    pub retry_max_attempts: u32,
    /// First retry delay (exponential backoff with jitter).
    pub retry_base: Duration,
    /// Entries idle this long on another consumer are claimed.
    pub claim_idle: Duration,
    /// Consecutive handler failures that open a subscription's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker stays open before a trial.
    pub breaker_open: Duration,
}

fn err(key: &str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError { key: key.to_owned(), value: value.to_string(), reason: reason.to_string() }
}

/// Picks env over file over default, parsing and naming the key on failure.
fn pick<T: std::str::FromStr>(
    env: &Env,
    var: &str,
    key: &str,
    file: Option<String>,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: ToString,
{
    let (name, raw) = match (env.get(var), file) {
        (Some(v), _) => (var.to_owned(), v),
        (None, Some(v)) => (key.to_owned(), v),
        (None, None) => (key.to_owned(), default.to_owned()),
    };
    raw.parse::<T>().map_err(|e| err(&name, &raw, e))
}

impl CqrsConfig {
    /// Reads the file named by `CQRS_CONFIG` (or `configs/cqrs.yaml` when it
    /// exists), then applies environment overrides.
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let path = match env.get("CQRS_CONFIG") {
            Some(p) => Some(PathBuf::from(p)),
            None => Some(PathBuf::from("configs/cqrs.yaml")).filter(|p| p.exists()),
        };
        let text = match &path {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| err("CQRS_CONFIG", p.display(), e))?),
            None => None,
        };
        Self::from_text(text.as_deref(), path.as_deref(), env)
    }

    /// As [`load`](Self::load) with the file's text given.
    pub fn from_text(text: Option<&str>, path: Option<&Path>, env: &Env) -> Result<Self, ConfigError> {
        let shown = path.map(|p| p.display().to_string()).unwrap_or_else(|| "cqrs config".into());
        let file: File = match text {
            Some(t) if !t.trim().is_empty() => serde_norway::from_str(t).map_err(|e| {
                // serde's message names the offending key (unknown field `x`,
                // invalid type for `y`, …) and the line.
                err(&shown, "(file)", e)
            })?,
            _ => File::default(),
        };
        let num = |v: Option<u64>| v.map(|n| n.to_string());
        let default_storage: Storage =
            pick(env, "DEFAULT_STORAGE", "default_storage", file.default_storage.clone(), "event_sourced")?;
        let mut storage = HashMap::new();
        for (aggregate, value) in &file.aggregates {
            let s: Storage = value.parse().map_err(|e| err(&format!("aggregates.{aggregate}"), value, e))?;
            storage.insert(aggregate.clone(), s);
        }
        // STORAGE_<TYPE> overrides (and may add) an aggregate type's strategy.
        let mut types: Vec<String> = storage.keys().cloned().collect();
        types.extend(
            [
                "user",
                "session",
                "game_session",
                "player",
                "match",
                "configuration",
                "game_statistics",
                "system_metrics",
                "job",
            ]
            .map(String::from),
        );
        for aggregate in types {
            let var = format!("STORAGE_{}", aggregate.to_uppercase());
            if let Some(v) = env.get(&var) {
                storage.insert(aggregate, v.parse().map_err(|e| err(&var, &v, e))?);
            }
        }
        let every: u64 = pick(
            env,
            "SNAPSHOT_EVERY",
            "event_sourcing.snapshot_frequency",
            num(file.event_sourcing.snapshot_frequency),
            "100",
        )?;
        let max_age: u64 = pick(
            env,
            "SNAPSHOT_MAX_AGE_SECS",
            "event_sourcing.snapshot_max_age_secs",
            num(file.event_sourcing.snapshot_max_age_secs),
            "0",
        )?;
        let ttl: u64 = pick(
            env,
            "IDEMPOTENCY_TTL_SECS",
            "event_sourcing.idempotency_ttl_secs",
            num(file.event_sourcing.idempotency_ttl_secs),
            "86400",
        )?;
        if ttl == 0 {
            return Err(err("event_sourcing.idempotency_ttl_secs", ttl, "must be at least 1"));
        }
        let event_format: EventFormat =
            pick(env, "EVENT_FORMAT", "serialization.format", file.serialization.format.clone(), "json")?;
        let snapshot_compression: SnapshotCompression = pick(
            env,
            "SNAPSHOT_COMPRESSION",
            "serialization.snapshot_compression",
            file.serialization.snapshot_compression.clone(),
            "lz4",
        )?;
        let redis_url: String = pick(env, "REDIS_URL", "redis.url", file.redis.url.clone(), DEFAULT_REDIS_URL)?;
        if !["redis://", "rediss://", "redis-cluster://"].iter().any(|p| redis_url.starts_with(p)) {
            return Err(err(
                if env.get("REDIS_URL").is_some() { "REDIS_URL" } else { "redis.url" },
                &redis_url,
                "must start with redis://, rediss:// or redis-cluster:// (a comma-separated node list is a cluster)",
            ));
        }
        let partitions: u32 =
            pick(env, "ES_PARTITIONS", "redis.partitions", file.redis.partitions.map(|p| p.to_string()), "16")?;
        if !(1..=1024).contains(&partitions) {
            return Err(err(
                if env.get("ES_PARTITIONS").is_some() { "ES_PARTITIONS" } else { "redis.partitions" },
                partitions,
                "must be an integer from 1 to 1024",
            ));
        }
        let batch: usize = pick(
            env,
            "SUBSCRIBER_BATCH",
            "performance.subscriber_batch",
            file.performance.subscriber_batch.map(|b| b.to_string()),
            "128",
        )?;
        let block_ms: u64 = pick(
            env,
            "SUBSCRIBER_BLOCK_MS",
            "performance.subscriber_block_ms",
            num(file.performance.subscriber_block_ms),
            "2000",
        )?;
        if batch == 0 || batch > 10_000 {
            return Err(err("performance.subscriber_batch", batch, "must be 1 to 10000"));
        }
        if !(10..=60_000).contains(&block_ms) {
            return Err(err("performance.subscriber_block_ms", block_ms, "must be 10 to 60000"));
        }
        let attempts: u32 = pick(
            env,
            "SUBSCRIBER_MAX_ATTEMPTS",
            "performance.retry_max_attempts",
            file.performance.retry_max_attempts.map(|a| a.to_string()),
            "5",
        )?;
        let retry_base_ms: u64 = pick(
            env,
            "SUBSCRIBER_RETRY_BASE_MS",
            "performance.retry_base_ms",
            num(file.performance.retry_base_ms),
            "200",
        )?;
        let claim_idle_ms: u64 = pick(
            env,
            "SUBSCRIBER_CLAIM_IDLE_MS",
            "performance.claim_idle_ms",
            num(file.performance.claim_idle_ms),
            "30000",
        )?;
        if attempts == 0 {
            return Err(err("performance.retry_max_attempts", attempts, "must be at least 1"));
        }
        let breaker_failures: u32 = pick(
            env,
            "BREAKER_FAILURES",
            "performance.breaker_failures",
            file.performance.breaker_failures.map(|a| a.to_string()),
            "10",
        )?;
        if !(1..=1_000_000).contains(&breaker_failures) {
            return Err(err(
                if env.get("BREAKER_FAILURES").is_some() { "BREAKER_FAILURES" } else { "performance.breaker_failures" },
                breaker_failures,
                "must be an integer from 1 to 1000000",
            ));
        }
        let breaker_open_ms: u64 =
            pick(env, "BREAKER_OPEN_MS", "performance.breaker_open_ms", num(file.performance.breaker_open_ms), "5000")?;
        if !(10..=3_600_000).contains(&breaker_open_ms) {
            return Err(err(
                if env.get("BREAKER_OPEN_MS").is_some() { "BREAKER_OPEN_MS" } else { "performance.breaker_open_ms" },
                breaker_open_ms,
                "must be an integer from 10 to 3600000",
            ));
        }
        if claim_idle_ms < 100 {
            return Err(err("performance.claim_idle_ms", claim_idle_ms, "must be at least 100"));
        }
        // Contradictions: snapshot settings only make sense where events are the truth.
        let all_state_based =
            default_storage == Storage::StateBased && storage.values().all(|s| *s == Storage::StateBased);
        if all_state_based && file.event_sourcing.snapshot_frequency.is_some_and(|f| f > 0) {
            return Err(err(
                "event_sourcing.snapshot_frequency",
                every,
                "every aggregate type is state_based: there are no events to snapshot",
            ));
        }
        Ok(Self {
            source: path.map(Path::to_path_buf),
            default_storage,
            storage,
            snapshots: SnapshotPolicy { every, max_age_ms: (max_age > 0).then_some(max_age as i64 * 1000) },
            idempotency_ttl: Duration::from_secs(ttl),
            event_format,
            snapshot_compression,
            redis_url,
            partitions,
            subscriber_batch: batch,
            subscriber_block: Duration::from_millis(block_ms),
            retry_max_attempts: attempts,
            retry_base: Duration::from_millis(retry_base_ms.max(1)),
            claim_idle: Duration::from_millis(claim_idle_ms),
            breaker_failures,
            breaker_open: Duration::from_millis(breaker_open_ms),
            archive_dir: PathBuf::from(
                env.get("ARCHIVE_DIR").or(file.retention.archive_dir.clone()).unwrap_or_else(|| ".data/archive".into()),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars.iter().copied())
    }

    const SHIPPED: &str = include_str!("../../../configs/cqrs.yaml");

    #[test]
    fn the_shipped_file_parses_into_the_documented_strategies() {
        let c = CqrsConfig::from_text(Some(SHIPPED), None, &env(&[])).unwrap();
        assert_eq!(c.default_storage, Storage::EventSourced);
        assert_eq!(c.storage["user"], Storage::EventSourced);
        assert_eq!(c.storage["session"], Storage::Hybrid);
        assert_eq!(c.storage["system_metrics"], Storage::StateBased);
        assert_eq!(c.snapshots.every, 100);
        assert_eq!(c.event_format, EventFormat::Json);
        assert_eq!(c.snapshot_compression, SnapshotCompression::Lz4);
        assert_eq!(c.partitions, 16);
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = CqrsConfig::from_text(
            Some(SHIPPED),
            None,
            &env(&[("STORAGE_USER", "hybrid"), ("SNAPSHOT_EVERY", "5"), ("EVENT_FORMAT", "protobuf")]),
        )
        .unwrap();
        assert_eq!((c.storage["user"], c.snapshots.every, c.event_format), (Storage::Hybrid, 5, EventFormat::Protobuf));
    }

    #[test]
    fn malformed_or_contradictory_files_name_the_key() {
        let e = CqrsConfig::from_text(Some("aggregates:\n  user: event_sorced\n"), None, &env(&[])).unwrap_err();
        assert_eq!(e.key, "aggregates.user");
        let e = CqrsConfig::from_text(Some("event_sourcing:\n  snapshot_frequncy: 5\n"), None, &env(&[])).unwrap_err();
        assert!(e.reason.contains("snapshot_frequncy"), "{e}");
        let e = CqrsConfig::from_text(Some("redis:\n  partitions: many\n"), None, &env(&[])).unwrap_err();
        assert!(e.reason.contains("partitions"), "{e}");
        let e = CqrsConfig::from_text(Some("redis:\n  partitions: 0\n"), None, &env(&[])).unwrap_err();
        assert_eq!(e.key, "redis.partitions");
        let e = CqrsConfig::from_text(Some("serialization:\n  format: xml\n"), None, &env(&[])).unwrap_err();
        assert_eq!(e.key, "serialization.format");
        let e = CqrsConfig::from_text(
            Some("default_storage: state_based\nevent_sourcing:\n  snapshot_frequency: 10\n"),
            None,
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(e.key, "event_sourcing.snapshot_frequency");
        let e = CqrsConfig::from_text(None, None, &env(&[("STORAGE_USER", "nope")])).unwrap_err();
        assert_eq!(e.key, "STORAGE_USER");
        let e = CqrsConfig::from_text(Some(": : :"), Some(Path::new("x.yaml")), &env(&[])).unwrap_err();
        assert_eq!(e.key, "x.yaml");
    }

    #[test]
    fn no_file_means_defaults() {
        let c = CqrsConfig::from_text(None, None, &env(&[])).unwrap();
        assert_eq!(
            (c.default_storage, c.partitions, c.redis_url.as_str()),
            (Storage::EventSourced, 16, DEFAULT_REDIS_URL)
        );
    }
}
