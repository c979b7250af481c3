//! Configuration from the environment, with defaults that work locally.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration value that cannot be used. Names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration {key}={value:?}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// What every service reads at start.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Service name, used in logs and health.
    pub name: String,
    /// gRPC listen address (`<NAME>_LISTEN_ADDR`).
    pub listen: SocketAddr,
    /// `REDIS_URL`, default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// `ES_PARTITIONS`: partitions per aggregate type, default 16. Must never
    /// change for existing data.
    pub partitions: u32,
    /// `SHUTDOWN_GRACE_SECS`: how long in-flight work may take after
    /// SIGTERM/SIGINT, default 10.
    pub shutdown_grace: Duration,
    /// `ALLIES_DATA_DIR`: project-local data (dev keys, archives), default `.data`.
    pub data_dir: PathBuf,
    /// `EVENT_FORMAT`: how new events are written, `json` (default) or `protobuf`.
    pub event_format: allies_core::EventFormat,
    /// `SNAPSHOT_COMPRESSION`: `lz4` (default) or `none`.
    pub snapshot_compression: allies_store::SnapshotCompression,
    /// Everything from `configs/cqrs.yaml` and its overrides (the fields
    /// above are copies of the ones every service needs).
    pub cqrs: crate::cqrs::CqrsConfig,
}

/// Where Redis is when `REDIS_URL` says nothing: a local server on its standard port.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Default listen addresses of the fleet.
pub const GUARDIAN_ADDR: &str = "127.0.0.1:50051";
pub const TIMESQUARE_ADDR: &str = "127.0.0.1:50052";
pub const COMMAND_ADDR: &str = "127.0.0.1:50053";
pub const PROJECTOR_ADDR: &str = "127.0.0.1:50054";

impl ServiceConfig {
    /// Reads the configuration of service `name` (listen variable
    /// `<NAME>_LISTEN_ADDR`, defaulting to `default_listen`).
    pub fn from_env(name: &str, default_listen: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(name, default_listen, |k| std::env::var(k).ok())
    }

    /// As [`from_env`](Self::from_env) with an explicit lookup (for tests).
    pub fn from_lookup(
        name: &str,
        default_listen: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen_key = listen_var(name);
        let listen = parse(&listen_key, get(&listen_key).unwrap_or_else(|| default_listen.to_owned()), |v| {
            v.parse::<SocketAddr>().map_err(|e| e.to_string())
        })?;
        let cqrs = crate::cqrs::CqrsConfig::load(&get)?;
        let grace = parse("SHUTDOWN_GRACE_SECS", get("SHUTDOWN_GRACE_SECS").unwrap_or_else(|| "10".into()), |v| {
            v.parse::<u64>().map(Duration::from_secs).map_err(|e| e.to_string())
        })?;
        let data_dir = PathBuf::from(get("ALLIES_DATA_DIR").unwrap_or_else(|| ".data".into()));
        Ok(Self {
            name: name.to_owned(),
            listen,
            redis_url: cqrs.redis_url.clone(),
            partitions: cqrs.partitions,
            shutdown_grace: grace,
            data_dir,
            event_format: cqrs.event_format,
            snapshot_compression: cqrs.snapshot_compression,
            cqrs,
        })
    }
}

/// `guardian` → `GUARDIAN_LISTEN_ADDR`.
pub fn listen_var(service: &str) -> String {
    format!("{}_LISTEN_ADDR", service.to_uppercase())
}

fn parse<T>(key: &str, value: String, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
    f(&value).map_err(|reason| ConfigError { key: key.to_owned(), value, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ServiceConfig::from_lookup("guardian", GUARDIAN_ADDR, |k| m.get(k).cloned())
    }

    #[test]
    fn defaults_work_locally() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.partitions, 16);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = cfg(&[("GUARDIAN_LISTEN_ADDR", "0.0.0.0:6000"), ("REDIS_URL", "redis://r:1"), ("ES_PARTITIONS", "4")])
            .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(c.redis_url, "redis://r:1");
        assert_eq!(c.partitions, 4);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = cfg(&[("GUARDIAN_LISTEN_ADDR", "nowhere")]).unwrap_err();
        assert_eq!(e.key, "GUARDIAN_LISTEN_ADDR");
        let e = cfg(&[("ES_PARTITIONS", "0")]).unwrap_err();
        assert_eq!(e.key, "ES_PARTITIONS");
        let e = cfg(&[("REDIS_URL", "http://x")]).unwrap_err();
        assert!(e.to_string().contains("REDIS_URL"), "{e}");
    }
}
