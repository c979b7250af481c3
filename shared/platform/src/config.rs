//! A service's configuration, parsed once at start into typed values: the
//! environment (a snapshot, see [`Env`]) and `configs/cqrs.yaml`. A value
//! that cannot be used stops the service with a message naming the
//! variable. Service-specific settings are parsed by the service from the
//! same [`Env`] (`config.env`), with the same typed getters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use allies_core::settings as table;

use crate::cqrs::CqrsConfig;
pub use crate::env::{ConfigError, Env};

pub use crate::cqrs::DEFAULT_REDIS_URL;

/// Default listen addresses of the fleet.
pub const GUARDIAN_ADDR: &str = "127.0.0.1:50051";
pub const TIMESQUARE_ADDR: &str = "127.0.0.1:50052";
pub const COMMAND_ADDR: &str = "127.0.0.1:50053";
pub const PROJECTOR_ADDR: &str = "127.0.0.1:50054";

/// (service, gRPC address, operations HTTP address) of the fleet's services.
pub const FLEET: [(&str, &str, &str); 4] = [
    ("guardian", GUARDIAN_ADDR, "127.0.0.1:9461"),
    ("timesquare", TIMESQUARE_ADDR, "127.0.0.1:9462"),
    ("command", COMMAND_ADDR, "127.0.0.1:9463"),
    ("projector", PROJECTOR_ADDR, "127.0.0.1:9464"),
];

/// Who issues the access tokens every service verifies, and where its keys are.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `JWT_ISSUER`, default `defense-allies-guardian`.
    pub issuer: String,
    /// `JWT_AUDIENCE`, default `defense-allies`.
    pub audience: String,
    /// `GUARDIAN_URL`: where services fetch the JWKS, default `http://127.0.0.1:50051`.
    pub guardian_url: String,
}

/// What every service reads at start.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Service name, used in logs, health and metrics.
    pub name: String,
    /// gRPC listen address (`<NAME>_LISTEN_ADDR`).
    pub listen: SocketAddr,
    /// Operations endpoint, `/healthz` `/readyz` `/metrics` (`<NAME>_HTTP_ADDR`).
    pub http_listen: SocketAddr,
    /// This process among the replicas of the service: its consumer name in
    /// consumer groups, stable across restarts (`<NAME>_CONSUMER`, else the
    /// host name and the gRPC port).
    pub instance: String,
    /// `REDIS_URL`, default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// `ES_PARTITIONS`: partitions per aggregate type, default 16. Must never
    /// change for existing data.
    pub partitions: u32,
    /// `SHUTDOWN_GRACE_SECS`: how long in-flight work may take after
    /// SIGTERM/SIGINT, default 10.
    pub shutdown_grace: Duration,
    /// `WORKER_THREADS`: the async runtime's threads; None: one per CPU the
    /// process may use (tokio's default, which honours a cgroup CPU limit).
    pub worker_threads: Option<usize>,
    /// `TRUSTED_PROXIES`: the edge's addresses; their X-Forwarded-For names
    /// the client (per-client limits), anyone else's is ignored.
    pub trusted_proxies: Vec<crate::proxies::Network>,
    /// `ALLIES_DATA_DIR`: project-local data (dev keys, archives), default `.data`.
    pub data_dir: PathBuf,
    /// `EVENT_FORMAT`: how new events are written, `json` (default) or `protobuf`.
    pub event_format: allies_core::EventFormat,
    /// `SNAPSHOT_COMPRESSION`: `lz4` (default) or `none`.
    pub snapshot_compression: allies_store::SnapshotCompression,
    /// Everything from `configs/cqrs.yaml` and its overrides.
    pub cqrs: CqrsConfig,
    pub auth: AuthSettings,
    /// `LOG_FORMAT=json`: one JSON object per log line.
    pub log_json: bool,
    /// `RUST_LOG`, default `info`.
    pub log_filter: String,
    /// The environment snapshot, for the service's own settings.
    pub env: Env,
}

impl ServiceConfig {
    /// Reads the configuration of service `name` from the process environment.
    pub fn from_env(name: &str) -> Result<Self, ConfigError> {
        Self::from(name, Env::from_process())
    }

    /// Reads the configuration of service `name` from `env`.
    pub fn from(name: &str, env: Env) -> Result<Self, ConfigError> {
        let (grpc_default, http_default) = FLEET
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, g, h)| (*g, *h))
            .unwrap_or(("127.0.0.1:0", "127.0.0.1:0"));
        let upper = name.to_uppercase().replace('-', "_");
        let addr = |key: &str, default: &str| -> Result<SocketAddr, ConfigError> {
            let v = env.text(key, default);
            v.parse::<SocketAddr>().map_err(|e| ConfigError::new(key, &v, e))
        };
        let listen = addr(&listen_var(name), grpc_default)?;
        let http_listen = addr(&format!("{upper}_HTTP_ADDR"), http_default)?;
        let cqrs = CqrsConfig::load(&env)?;
        let shutdown_grace = env.value_secs(&table::SHUTDOWN_GRACE)?;
        let worker_threads = env.value_opt::<usize>(&table::WORKER_THREADS)?;
        let data_dir = PathBuf::from(env.value::<String>(&table::DATA_DIR)?);
        let proxies = env.value_opt::<String>(&table::TRUSTED_PROXIES)?.unwrap_or_default();
        let trusted_proxies = proxies
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<crate::proxies::Network>().map_err(|e| ConfigError::new("TRUSTED_PROXIES", p, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let instance = env.get(&format!("{upper}_CONSUMER")).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| name.to_owned());
            format!("{host}-{}", listen.port())
        });
        let log_json = env.value::<String>(&table::LOG_FORMAT)? == "json";
        let auth = AuthSettings {
            issuer: env.value(&table::JWT_ISSUER)?,
            audience: env.value(&table::JWT_AUDIENCE)?,
            guardian_url: env.value(&table::GUARDIAN_URL)?,
        };
        if !auth.guardian_url.starts_with("http://") && !auth.guardian_url.starts_with("https://") {
            return Err(ConfigError::new("GUARDIAN_URL", &auth.guardian_url, "must start with http:// or https://"));
        }
        Ok(Self {
            name: name.to_owned(),
            listen,
            http_listen,
            instance,
            redis_url: cqrs.redis_url.clone(),
            partitions: cqrs.partitions,
            shutdown_grace,
            worker_threads,
            trusted_proxies,
            data_dir,
            event_format: cqrs.event_format,
            snapshot_compression: cqrs.snapshot_compression,
            cqrs,
            auth,
            log_json,
            log_filter: env.value(&table::LOG_FILTER)?,
            env,
        })
    }

    /// The service's async runtime: multi-threaded, `WORKER_THREADS`
    /// workers (else tokio's default: one per CPU the process may use).
    /// A service's `main` builds it from its configuration, so the setting
    /// is read, checked and listed like every other.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = self.worker_threads {
            builder.worker_threads(n);
        }
        builder.enable_all().build()
    }

    /// The circuit breaker settings of this service's subscriptions.
    pub fn breaker(&self) -> allies_store::breaker::BreakerConfig {
        allies_store::breaker::BreakerConfig {
            failure_threshold: self.cqrs.breaker_failures,
            open_for: self.cqrs.breaker_open,
        }
    }
}

/// `guardian` → `GUARDIAN_LISTEN_ADDR`.
pub fn listen_var(service: &str) -> String {
    format!("{}_LISTEN_ADDR", service.to_uppercase().replace('-', "_"))
}

/// A file's name (to show) and its text.
pub type Named = (String, String);

/// A file and the `.yaml` / `.yml` files of a directory (a missing directory
/// is none), each with its name to show, in name order: what a service or a
/// tool reads a versioned configuration from (the game rules and their older
/// versions). `what` names the setting in an error.
pub fn read_file_and_dir(
    what: &str,
    file: &std::path::Path,
    dir: &std::path::Path,
) -> Result<(Named, Vec<Named>), ConfigError> {
    let read = |path: &std::path::Path| -> Result<Named, ConfigError> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::new(what, &name, format!("cannot read it: {e}")))?;
        Ok((name, text))
    };
    let current = read(file)?;
    let mut older: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    older.sort();
    Ok((current, older.iter().map(|p| read(p)).collect::<Result<_, _>>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::from("guardian", Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn defaults_work_locally() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:9461");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.partitions, 16);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.worker_threads, None);
        assert!(c.instance.ends_with("-50051"), "{}", c.instance);
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = cfg(&[
            ("GUARDIAN_LISTEN_ADDR", "0.0.0.0:6000"),
            ("REDIS_URL", "redis://r:1"),
            ("ES_PARTITIONS", "4"),
            ("GUARDIAN_CONSUMER", "pod-7"),
            ("WORKER_THREADS", "3"),
        ])
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(c.redis_url, "redis://r:1");
        assert_eq!(c.partitions, 4);
        assert_eq!(c.instance, "pod-7");
        assert_eq!(c.worker_threads, Some(3));
        assert_eq!(c.runtime().unwrap().metrics().num_workers(), 3);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("GUARDIAN_LISTEN_ADDR", "nowhere"),
            ("GUARDIAN_HTTP_ADDR", "nowhere"),
            ("ES_PARTITIONS", "0"),
            ("SHUTDOWN_GRACE_SECS", "soon"),
            ("BREAKER_FAILURES", "many"),
            ("BREAKER_FAILURES", "0"),
            ("BREAKER_OPEN_MS", "-1"),
            ("LOG_FORMAT", "xml"),
            ("WORKER_THREADS", "0"),
            ("WORKER_THREADS", "lots"),
            ("GUARDIAN_URL", "guardian:50051"),
        ] {
            let e = cfg(&[(key, value)]).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().contains(key), "{e}");
        }
        let e = cfg(&[("REDIS_URL", "http://x")]).unwrap_err();
        assert!(e.to_string().contains("REDIS_URL"), "{e}");
    }
}
