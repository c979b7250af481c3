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

use allies_core::settings::{self as table, Setting};
use allies_core::{EventFormat, SnapshotPolicy};
use allies_store::{SnapshotCompression, Storage};

use crate::env::{ConfigError, Env};

/// The file's values by dotted path (`redis.partitions` → `16`), and its
/// `aggregates` map. Every path must be a setting's `yaml` path: a typo is
/// an error, never a silent default.
#[derive(Debug, Default)]
struct File {
    values: BTreeMap<String, String>,
    aggregates: BTreeMap<String, String>,
}

impl File {
    fn parse(text: &str, shown: &str) -> Result<Self, ConfigError> {
        // serde's message names the line.
        let value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| err(shown, "(file)", e))?;
        let mut file = Self::default();
        file.walk("", &value)?;
        Ok(file)
    }

    fn walk(&mut self, path: &str, value: &serde_norway::Value) -> Result<(), ConfigError> {
        use serde_norway::Value;
        match value {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let Some(k) = k.as_str() else { return Err(err(path, format!("{k:?}"), "keys are words")) };
                    let child = if path.is_empty() { k.to_owned() } else { format!("{path}.{k}") };
                    if let Some(aggregate) = child.strip_prefix("aggregates.") {
                        let text = scalar(v).ok_or_else(|| err(&child, format!("{v:?}"), "must be a word"))?;
                        self.aggregates.insert(aggregate.to_owned(), text);
                    } else {
                        self.walk(&child, v)?;
                    }
                }
                Ok(())
            }
            Value::Null if path == "aggregates" => Ok(()),
            _ => {
                if !table::ALL.iter().any(|s| s.yaml == Some(path)) {
                    return Err(err(path, format!("{value:?}"), format!("unknown key `{path}`")));
                }
                let text = scalar(value).ok_or_else(|| err(path, format!("{value:?}"), "must be a single value"))?;
                self.values.insert(path.to_owned(), text);
                Ok(())
            }
        }
    }

    /// A setting: the environment, else this file, else its default.
    fn get<T: std::str::FromStr>(&self, env: &Env, s: &Setting) -> Result<T, ConfigError>
    where
        T::Err: ToString,
    {
        let file = s.yaml.and_then(|y| self.values.get(y).cloned());
        let from = if s.env.and_then(|e| env.get(e)).is_some() { s.env } else { s.yaml };
        let raw = env.setting_from(s, file)?.unwrap_or_default();
        raw.parse::<T>().map_err(|e| err(from.unwrap_or(s.name), &raw, e))
    }
}

fn scalar(v: &serde_norway::Value) -> Option<String> {
    use serde_norway::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
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
    /// With the credentials of `REDIS_USERNAME` / `REDIS_PASSWORD` in it:
    /// never log it, log `RedisTarget::redacted` of it.
    pub redis_url: String,
    /// The Redis ACL user (empty: the default user).
    pub redis_user: String,
    pub partitions: u32,
    pub replica_acks: allies_store::ReplicaAcks,
    pub subscriber_batch: usize,
    pub subscriber_block: Duration,
    /// After a read that found entries, the next one waits this long.
    pub subscriber_linger: Duration,
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
        let file = match text {
            Some(t) if !t.trim().is_empty() => File::parse(t, &shown)?,
            _ => File::default(),
        };
        let default_storage: Storage = file.get(env, &table::DEFAULT_STORAGE)?;
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
                "party",
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
        let every: u64 = file.get(env, &table::SNAPSHOT_EVERY)?;
        let max_age: u64 = file.get(env, &table::SNAPSHOT_MAX_AGE)?;
        let ttl: u64 = file.get(env, &table::IDEMPOTENCY_TTL)?;
        let event_format: EventFormat = file.get(env, &table::EVENT_FORMAT)?;
        let snapshot_compression: SnapshotCompression = file.get(env, &table::SNAPSHOT_COMPRESSION)?;
        let redis_url: String = file.get(env, &table::REDIS_URL)?;
        if !["redis://", "rediss://", "redis-cluster://"].iter().any(|p| redis_url.starts_with(p)) {
            return Err(err(
                if env.get("REDIS_URL").is_some() { "REDIS_URL" } else { "redis.url" },
                &redis_url,
                "must start with redis://, rediss:// or redis-cluster:// (a comma-separated node list is a cluster)",
            ));
        }
        let username: String = file.get(env, &table::REDIS_USERNAME)?;
        let mut password: String = file.get(env, &table::REDIS_PASSWORD)?;
        let password_file: String = file.get(env, &table::REDIS_PASSWORD_FILE)?;
        if password.is_empty() && !password_file.is_empty() {
            password = std::fs::read_to_string(&password_file)
                .map_err(|e| err("REDIS_PASSWORD_FILE", &password_file, format!("cannot read it: {e}")))?
                .trim()
                .to_owned();
        }
        let redis_url = allies_store::RedisTarget::with_credentials(&redis_url, &username, &password);
        let tls_ca: String = file.get(env, &table::REDIS_TLS_CA_FILE)?;
        let tls_cert: String = file.get(env, &table::REDIS_TLS_CERT_FILE)?;
        let tls_key: String = file.get(env, &table::REDIS_TLS_KEY_FILE)?;
        let tls_set = !(tls_ca.is_empty() && tls_cert.is_empty() && tls_key.is_empty());
        if tls_set && !redis_url.contains("rediss://") {
            return Err(err("REDIS_TLS_CA_FILE", &tls_ca, "TLS files are set but REDIS_URL is not rediss://"));
        }
        allies_store::use_tls_files(&tls_ca, &tls_cert, &tls_key).map_err(|e| err(e.setting, e.path, e.reason))?;
        let partitions: u32 = file.get(env, &table::PARTITIONS)?;
        let replicas: u32 = file.get(env, &table::REPLICA_ACKS)?;
        let replica_timeout_ms: u64 = file.get(env, &table::REPLICA_ACK_TIMEOUT)?;
        let batch: usize = file.get(env, &table::SUBSCRIBER_BATCH)?;
        let block_ms: u64 = file.get(env, &table::SUBSCRIBER_BLOCK)?;
        let linger_ms: u64 = file.get(env, &table::SUBSCRIBER_LINGER)?;
        let attempts: u32 = file.get(env, &table::RETRY_MAX_ATTEMPTS)?;
        let retry_base_ms: u64 = file.get(env, &table::RETRY_BASE)?;
        let claim_idle_ms: u64 = file.get(env, &table::CLAIM_IDLE)?;
        let breaker_failures: u32 = file.get(env, &table::BREAKER_FAILURES)?;
        let breaker_open_ms: u64 = file.get(env, &table::BREAKER_OPEN)?;
        let archive_dir: String = file.get(env, &table::ARCHIVE_DIR)?;
        // Contradictions: snapshot settings only make sense where events are the truth.
        let all_state_based =
            default_storage == Storage::StateBased && storage.values().all(|s| *s == Storage::StateBased);
        if all_state_based && file.values.get("event_sourcing.snapshot_frequency").is_some_and(|f| f != "0") {
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
            redis_user: username,
            partitions,
            replica_acks: allies_store::ReplicaAcks { replicas, timeout: Duration::from_millis(replica_timeout_ms) },
            subscriber_batch: batch,
            subscriber_block: Duration::from_millis(block_ms),
            subscriber_linger: Duration::from_millis(linger_ms),
            retry_max_attempts: attempts,
            retry_base: Duration::from_millis(retry_base_ms.max(1)),
            claim_idle: Duration::from_millis(claim_idle_ms),
            breaker_failures,
            breaker_open: Duration::from_millis(breaker_open_ms),
            archive_dir: PathBuf::from(archive_dir),
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
        assert_eq!(e.key, "redis.partitions");
        let e = CqrsConfig::from_text(None, None, &env(&[("SUBSCRIBER_BATCH", "0")])).unwrap_err();
        assert_eq!((e.key.as_str(), e.reason.as_str()), ("SUBSCRIBER_BATCH", "must be an integer from 1 to 10000"));
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
        // TLS files are for rediss:// URLs, and must be readable PEM.
        let e = CqrsConfig::from_text(None, None, &env(&[("REDIS_TLS_CA_FILE", "/etc/ssl/certs/ca.pem")])).unwrap_err();
        assert_eq!(e.key, "REDIS_TLS_CA_FILE");
        assert!(e.reason.contains("not rediss://"), "{e}");
        let tls = [("REDIS_URL", "rediss://redis:6380"), ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem")];
        let e = CqrsConfig::from_text(None, None, &env(&tls)).unwrap_err();
        assert_eq!((e.key.as_str(), e.value.as_str()), ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"));
        let tls = [("REDIS_URL", "rediss://redis:6380"), ("REDIS_TLS_KEY_FILE", "/nonexistent/key.pem")];
        assert_eq!(CqrsConfig::from_text(None, None, &env(&tls)).unwrap_err().key, "REDIS_TLS_KEY_FILE");
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
