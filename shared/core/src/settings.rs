//! Every setting of the fleet, declared once: its name, the environment
//! variable and the `configs/cqrs.yaml` path that set it at deployment, whether
//! the live configuration can change it at run time (its live key is its
//! name), its type, range, default and unit, and the services that read it.
//!
//! Everything else is derived from this table: the environment and YAML
//! parsing (`allies_platform::env`, `allies_platform::cqrs`), the live
//! configuration's schema and validation (`command_domain::configuration`),
//! `GetConfiguration`'s listing and `allies config keys`.
//!
//! **Precedence, one rule.** At start a value comes from the environment
//! variable, else the YAML file, else the default. A live setting then
//! follows the live configuration only for keys an operator has set there
//! (`LiveConfig::int`): a key nobody set keeps the deployment's value.

/// A setting's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// Free text (a URL, a path, a filter).
    Text,
    /// One of a few words.
    Choice(&'static [&'static str]),
    /// A comma-separated list.
    List,
}

/// One row of the table (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Setting {
    /// The setting's name; a live setting's key in the live configuration.
    pub name: &'static str,
    /// The environment variable that sets it at deployment.
    pub env: Option<&'static str>,
    /// Its path in `configs/cqrs.yaml`, when that file can set it.
    pub yaml: Option<&'static str>,
    /// The services that apply a change of the live configuration at run
    /// time (empty: set at deployment only).
    pub live: &'static [&'static str],
    pub kind: Kind,
    /// The default (empty: none, or derived as the description says).
    pub default: &'static str,
    pub unit: &'static str,
    /// The services that read it.
    pub services: &'static [&'static str],
    pub description: &'static str,
}

impl Setting {
    /// Checks a raw value against the type and range; the reason when not.
    pub fn check(&self, raw: &str) -> Result<(), String> {
        let v = raw.trim();
        match self.kind {
            Kind::Int { min, max } => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(()),
                _ => Err(format!("must be an integer from {min} to {max}")),
            },
            Kind::Choice(words) if !words.iter().any(|w| w.eq_ignore_ascii_case(v)) => {
                Err(format!("must be one of {}", words.join(", ")))
            }
            _ => Ok(()),
        }
    }

    /// Whether the live configuration can change it.
    pub fn is_live(&self) -> bool {
        !self.live.is_empty()
    }

    /// The default of an integer setting (0 when it has none).
    pub fn int_default(&self) -> i64 {
        self.default.parse().unwrap_or(0)
    }

    /// The range of an integer setting.
    pub fn range(&self) -> Option<(i64, i64)> {
        match self.kind {
            Kind::Int { min, max } => Some((min, max)),
            _ => None,
        }
    }

    /// What the type allows, in words (for listings).
    pub fn allowed(&self) -> String {
        match self.kind {
            Kind::Int { min, max } => format!("{min}..={max}"),
            Kind::Text => "text".into(),
            Kind::Choice(words) => words.join("|"),
            Kind::List => "list".into(),
        }
    }
}

/// The setting named `name`.
pub fn by_name(name: &str) -> Option<&'static Setting> {
    ALL.iter().copied().find(|s| s.name == name)
}

/// The settings the live configuration can change.
pub fn live() -> impl Iterator<Item = &'static Setting> {
    ALL.iter().copied().filter(|s| s.is_live())
}

/// Where Redis is: redis://, rediss://, or redis-cluster:// (a comma-separated node list is a cluster).
pub const REDIS_URL: Setting = Setting {
    name: "redis.url",
    env: Some("REDIS_URL"),
    yaml: Some("redis.url"),
    live: &[],
    kind: Kind::Text,
    default: "redis://127.0.0.1:6379",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "where Redis is: redis://, rediss://, or redis-cluster:// (a comma-separated node list is a cluster)",
};

/// Partitions per aggregate type; never change it for live data.
pub const PARTITIONS: Setting = Setting {
    name: "redis.partitions",
    env: Some("ES_PARTITIONS"),
    yaml: Some("redis.partitions"),
    live: &[],
    kind: Kind::Int { min: 1, max: 1024 },
    default: "16",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "partitions per aggregate type; never change it for live data",
};

/// The Redis ACL user this service signs in as (configs/redis/users.acl names one per service).
pub const REDIS_USERNAME: Setting = Setting {
    name: "redis.username",
    env: Some("REDIS_USERNAME"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "the Redis ACL user this service signs in as (empty: the URL's, or none)",
};

/// That user's password (secret; from a Secret or a file, never a config file).
pub const REDIS_PASSWORD: Setting = Setting {
    name: "redis.password",
    env: Some("REDIS_PASSWORD"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "the Redis user's password (secret; empty: the URL's, or none)",
};

/// A file holding that password (a mounted Docker or Kubernetes secret); REDIS_PASSWORD wins.
pub const REDIS_PASSWORD_FILE: Setting = Setting {
    name: "redis.password_file",
    env: Some("REDIS_PASSWORD_FILE"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "a file holding the Redis user's password (a mounted secret); REDIS_PASSWORD wins",
};

/// The CA that signed Redis's TLS certificate (PEM), for `rediss://` URLs.
pub const REDIS_TLS_CA_FILE: Setting = Setting {
    name: "redis.tls_ca_file",
    env: Some("REDIS_TLS_CA_FILE"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "the CA that signed Redis's TLS certificate, PEM (rediss:// URLs; empty: the system's trusted roots)",
};

/// A client certificate (PEM) for Redis's `tls-auth-clients yes`.
pub const REDIS_TLS_CERT_FILE: Setting = Setting {
    name: "redis.tls_cert_file",
    env: Some("REDIS_TLS_CERT_FILE"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "this service's TLS client certificate for Redis, PEM (when Redis requires one; with REDIS_TLS_KEY_FILE)",
};

/// The client certificate's private key (PEM).
pub const REDIS_TLS_KEY_FILE: Setting = Setting {
    name: "redis.tls_key_file",
    env: Some("REDIS_TLS_KEY_FILE"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "the private key of REDIS_TLS_CERT_FILE, PEM (a mounted secret)",
};

/// Replicas that must hold an append before it is acknowledged (WAIT); 0 = asynchronous replication.
pub const REPLICA_ACKS: Setting = Setting {
    name: "redis.replica_acks",
    env: Some("REDIS_REPLICA_ACKS"),
    yaml: Some("redis.replica_acks"),
    live: &[],
    kind: Kind::Int { min: 0, max: 5 },
    default: "0",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "replicas that must hold an append before it is acknowledged (WAIT); 0 = asynchronous replication",
};

/// How long an append waits for its replicas before it is answered UNAVAILABLE (written, retry with the same id).
pub const REPLICA_ACK_TIMEOUT: Setting = Setting {
    name: "redis.replica_ack_timeout_ms",
    env: Some("REDIS_REPLICA_ACK_TIMEOUT_MS"),
    yaml: Some("redis.replica_ack_timeout_ms"),
    live: &[],
    kind: Kind::Int { min: 1, max: 500 },
    default: "200",
    unit: "ms",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "how long an append waits for its replicas before it is answered UNAVAILABLE (retry with the same id)",
};

/// The CQRS settings file (must exist when set; the default is read when present).
pub const CQRS_CONFIG: Setting = Setting {
    name: "cqrs.file",
    env: Some("CQRS_CONFIG"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "configs/cqrs.yaml",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "the CQRS settings file (must exist when set; the default is read when present)",
};

/// Storage strategy of an aggregate type not named under aggregates (STORAGE_<TYPE> overrides one type).
pub const DEFAULT_STORAGE: Setting = Setting {
    name: "storage.default",
    env: Some("DEFAULT_STORAGE"),
    yaml: Some("default_storage"),
    live: &[],
    kind: Kind::Choice(&["event_sourced", "state_based", "hybrid"]),
    default: "event_sourced",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "storage strategy of an aggregate type not named under aggregates (STORAGE_<TYPE> overrides one type)",
};

/// Events between snapshots (0: none by count).
pub const SNAPSHOT_EVERY: Setting = Setting {
    name: "snapshots.every",
    env: Some("SNAPSHOT_EVERY"),
    yaml: Some("event_sourcing.snapshot_frequency"),
    live: &[],
    kind: Kind::Int { min: 0, max: 1000000 },
    default: "100",
    unit: "events",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "events between snapshots (0: none by count)",
};

/// A snapshot older than this is renewed on the next command (0: no age policy).
pub const SNAPSHOT_MAX_AGE: Setting = Setting {
    name: "snapshots.max_age_secs",
    env: Some("SNAPSHOT_MAX_AGE_SECS"),
    yaml: Some("event_sourcing.snapshot_max_age_secs"),
    live: &[],
    kind: Kind::Int { min: 0, max: 31536000 },
    default: "0",
    unit: "s",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "a snapshot older than this is renewed on the next command (0: no age policy)",
};

/// How long command ids and their replies are remembered.
pub const IDEMPOTENCY_TTL: Setting = Setting {
    name: "commands.idempotency_ttl_secs",
    env: Some("IDEMPOTENCY_TTL_SECS"),
    yaml: Some("event_sourcing.idempotency_ttl_secs"),
    live: &[],
    kind: Kind::Int { min: 1, max: 31536000 },
    default: "86400",
    unit: "s",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "how long command ids and their replies are remembered",
};

/// How new events are written (both are read).
pub const EVENT_FORMAT: Setting = Setting {
    name: "events.format",
    env: Some("EVENT_FORMAT"),
    yaml: Some("serialization.format"),
    live: &[],
    kind: Kind::Choice(&["json", "protobuf"]),
    default: "json",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "how new events are written (both are read)",
};

/// How snapshots are compressed.
pub const SNAPSHOT_COMPRESSION: Setting = Setting {
    name: "snapshots.compression",
    env: Some("SNAPSHOT_COMPRESSION"),
    yaml: Some("serialization.snapshot_compression"),
    live: &[],
    kind: Kind::Choice(&["lz4", "none"]),
    default: "lz4",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "how snapshots are compressed",
};

/// Where archived events go before they are trimmed.
pub const ARCHIVE_DIR: Setting = Setting {
    name: "retention.archive_dir",
    env: Some("ARCHIVE_DIR"),
    yaml: Some("retention.archive_dir"),
    live: &[],
    kind: Kind::Text,
    default: ".data/archive",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "where archived events go before they are trimmed",
};

/// Entries per XREADGROUP.
pub const SUBSCRIBER_BATCH: Setting = Setting {
    name: "subscriber.batch",
    env: Some("SUBSCRIBER_BATCH"),
    yaml: Some("performance.subscriber_batch"),
    live: &[],
    kind: Kind::Int { min: 1, max: 10000 },
    default: "128",
    unit: "entries",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "entries per XREADGROUP",
};

/// XREADGROUP block time.
pub const SUBSCRIBER_BLOCK: Setting = Setting {
    name: "subscriber.block_ms",
    env: Some("SUBSCRIBER_BLOCK_MS"),
    yaml: Some("performance.subscriber_block_ms"),
    live: &[],
    kind: Kind::Int { min: 10, max: 60000 },
    default: "5000",
    unit: "ms",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "XREADGROUP block time at most (an entry wakes it at once; a lease renewal ends it sooner)",
};

/// How long a busy reader of the projector (its read models' partition
/// readers, its search tails) waits before its next read.
pub const SUBSCRIBER_LINGER: Setting = Setting {
    name: "subscriber.linger_ms",
    env: Some("SUBSCRIBER_LINGER_MS"),
    yaml: Some("performance.subscriber_linger_ms"),
    live: &[],
    kind: Kind::Int { min: 0, max: 1000 },
    default: "5",
    unit: "ms",
    services: &["projector"],
    description: "the projector's read-model readers and search tails: after a read that found entries but not all it asked for, the next read waits this long, so more come in one read; a quiet log's first entry is read at once (0: never wait)",
};

/// Deliveries of a failing entry before it is dead-lettered (live: the projector's).
pub const RETRY_MAX_ATTEMPTS: Setting = Setting {
    name: "projector.retry_max_attempts",
    env: Some("SUBSCRIBER_MAX_ATTEMPTS"),
    yaml: Some("performance.retry_max_attempts"),
    live: &["projector"],
    kind: Kind::Int { min: 1, max: 100 },
    default: "5",
    unit: "deliveries",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "deliveries of a failing entry before it is dead-lettered (live: the projector's)",
};

/// First retry delay (exponential, with jitter).
pub const RETRY_BASE: Setting = Setting {
    name: "subscriber.retry_base_ms",
    env: Some("SUBSCRIBER_RETRY_BASE_MS"),
    yaml: Some("performance.retry_base_ms"),
    live: &[],
    kind: Kind::Int { min: 1, max: 600000 },
    default: "200",
    unit: "ms",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "first retry delay (exponential, with jitter)",
};

/// Entries idle this long on another consumer are claimed.
pub const CLAIM_IDLE: Setting = Setting {
    name: "subscriber.claim_idle_ms",
    env: Some("SUBSCRIBER_CLAIM_IDLE_MS"),
    yaml: Some("performance.claim_idle_ms"),
    live: &[],
    kind: Kind::Int { min: 100, max: 3600000 },
    default: "30000",
    unit: "ms",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "entries idle this long on another consumer are claimed",
};

/// Consecutive handler failures that open a subscription's breaker (live: the projector's).
pub const BREAKER_FAILURES: Setting = Setting {
    name: "projector.breaker_failures",
    env: Some("BREAKER_FAILURES"),
    yaml: Some("performance.breaker_failures"),
    live: &["projector"],
    kind: Kind::Int { min: 1, max: 1000000 },
    default: "10",
    unit: "failures",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "consecutive handler failures that open a subscription's breaker (live: the projector's)",
};

/// How long an open breaker stays open before a trial (live: the projector's).
pub const BREAKER_OPEN: Setting = Setting {
    name: "projector.breaker_open_ms",
    env: Some("BREAKER_OPEN_MS"),
    yaml: Some("performance.breaker_open_ms"),
    live: &["projector"],
    kind: Kind::Int { min: 10, max: 3600000 },
    default: "5000",
    unit: "ms",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "how long an open breaker stays open before a trial (live: the projector's)",
};

/// Time in-flight calls get to finish on SIGTERM/SIGINT.
pub const SHUTDOWN_GRACE: Setting = Setting {
    name: "service.shutdown_grace_secs",
    env: Some("SHUTDOWN_GRACE_SECS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 0, max: 3600 },
    default: "10",
    unit: "s",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "time in-flight calls get to finish on SIGTERM/SIGINT",
};

/// Threads of the service's async runtime (default: one per CPU it may use).
pub const WORKER_THREADS: Setting = Setting {
    name: "service.worker_threads",
    env: Some("WORKER_THREADS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 1, max: 1024 },
    default: "",
    unit: "threads",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "threads of the async runtime (default: one per CPU the process may use; a container without a CPU limit sees every core of its node)",
};

/// The proxies whose X-Forwarded-For names the client (the edge).
pub const TRUSTED_PROXIES: Setting = Setting {
    name: "service.trusted_proxies",
    env: Some("TRUSTED_PROXIES"),
    yaml: None,
    live: &[],
    kind: Kind::List,
    default: "",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "addresses or CIDR ranges of the proxies (the edge) whose X-Forwarded-For names the client for per-client limits; from others it is ignored",
};

/// Project-local data (dev keys, archives).
pub const DATA_DIR: Setting = Setting {
    name: "service.data_dir",
    env: Some("ALLIES_DATA_DIR"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: ".data",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "project-local data (dev keys, archives)",
};

/// Where the projector keeps its search indexes.
pub const SEARCH_DIR: Setting = Setting {
    name: "projector.search_dir",
    env: Some("PROJECTOR_SEARCH_DIR"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["projector"],
    description: "where this replica keeps its search indexes (empty: <ALLIES_DATA_DIR>/search/<instance>); each replica its own, rebuilt from the logs when empty",
};

/// Text, or one JSON object per log line.
pub const LOG_FORMAT: Setting = Setting {
    name: "service.log_format",
    env: Some("LOG_FORMAT"),
    yaml: None,
    live: &[],
    kind: Kind::Choice(&["text", "json"]),
    default: "text",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "text, or one JSON object per log line",
};

/// The log filter (tracing EnvFilter syntax).
pub const LOG_FILTER: Setting = Setting {
    name: "service.log_filter",
    env: Some("RUST_LOG"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "info",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "the log filter (tracing EnvFilter syntax)",
};

/// Who issues the access tokens every service verifies.
pub const JWT_ISSUER: Setting = Setting {
    name: "auth.jwt_issuer",
    env: Some("JWT_ISSUER"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "defense-allies-guardian",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "who issues the access tokens every service verifies",
};

/// The audience of the access tokens.
pub const JWT_AUDIENCE: Setting = Setting {
    name: "auth.jwt_audience",
    env: Some("JWT_AUDIENCE"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "defense-allies",
    unit: "",
    services: &["guardian", "timesquare", "command", "projector"],
    description: "the audience of the access tokens",
};

/// Where services fetch the token keys (JWKS).
pub const GUARDIAN_URL: Setting = Setting {
    name: "auth.guardian_url",
    env: Some("GUARDIAN_URL"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "http://127.0.0.1:50051",
    unit: "",
    services: &["timesquare", "command", "projector"],
    description: "where services fetch the token keys (JWKS)",
};

/// An access token's life.
pub const ACCESS_TOKEN_TTL: Setting = Setting {
    name: "auth.access_token_ttl_secs",
    env: Some("ACCESS_TOKEN_TTL_SECS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 1, max: 86400 },
    default: "900",
    unit: "s",
    services: &["guardian"],
    description: "an access token's life",
};

/// A refresh token's (a session's) life.
pub const REFRESH_TOKEN_TTL: Setting = Setting {
    name: "auth.refresh_token_ttl_secs",
    env: Some("REFRESH_TOKEN_TTL_SECS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 60, max: 31622400 },
    default: "2592000",
    unit: "s",
    services: &["guardian"],
    description: "a refresh token's (a session's) life",
};

/// Failed logins before an account locks.
pub const LOCKOUT_MAX_FAILURES: Setting = Setting {
    name: "auth.lockout_max_failures",
    env: Some("LOCKOUT_MAX_FAILURES"),
    yaml: None,
    live: &["guardian"],
    kind: Kind::Int { min: 1, max: 1000 },
    default: "5",
    unit: "failures",
    services: &["guardian"],
    description: "failed logins before an account locks",
};

/// How long a locked account stays locked.
pub const LOCKOUT: Setting = Setting {
    name: "auth.lockout_secs",
    env: Some("LOCKOUT_SECS"),
    yaml: None,
    live: &["guardian"],
    kind: Kind::Int { min: 1, max: 2592000 },
    default: "900",
    unit: "s",
    services: &["guardian"],
    description: "how long a locked account stays locked",
};

/// Login attempts per username per window.
pub const RATE_PER_USERNAME: Setting = Setting {
    name: "auth.rate_per_username",
    env: Some("AUTH_RATE_PER_USERNAME"),
    yaml: None,
    live: &["guardian"],
    kind: Kind::Int { min: 1, max: 1000000 },
    default: "10",
    unit: "attempts",
    services: &["guardian"],
    description: "login attempts per username per window",
};

/// Login attempts per client address per window.
pub const RATE_PER_CLIENT: Setting = Setting {
    name: "auth.rate_per_client",
    env: Some("AUTH_RATE_PER_CLIENT"),
    yaml: None,
    live: &["guardian"],
    kind: Kind::Int { min: 1, max: 1000000 },
    default: "30",
    unit: "attempts",
    services: &["guardian"],
    description: "login attempts per client address per window",
};

/// The login rate limits' window.
pub const RATE_WINDOW: Setting = Setting {
    name: "auth.rate_window_secs",
    env: Some("AUTH_RATE_WINDOW_SECS"),
    yaml: None,
    live: &["guardian"],
    kind: Kind::Int { min: 1, max: 86400 },
    default: "60",
    unit: "s",
    services: &["guardian"],
    description: "the login rate limits' window",
};

/// Usernames made admins when they register (comma-separated).
pub const BOOTSTRAP_ADMINS: Setting = Setting {
    name: "auth.bootstrap_admins",
    env: Some("GUARDIAN_BOOTSTRAP_ADMINS"),
    yaml: None,
    live: &[],
    kind: Kind::List,
    default: "",
    unit: "",
    services: &["guardian"],
    description: "usernames made admins when they register (comma-separated)",
};

/// Threads hashing passwords (default: the cores).
pub const ARGON2_THREADS: Setting = Setting {
    name: "auth.argon2_threads",
    env: Some("ARGON2_THREADS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 1, max: 256 },
    default: "",
    unit: "threads",
    services: &["guardian"],
    description: "threads hashing passwords (default: the cores)",
};

/// Signing keys directory (default: <data dir>/keys).
pub const JWT_KEYS_DIR: Setting = Setting {
    name: "auth.jwt_keys_dir",
    env: Some("JWT_KEYS_DIR"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian"],
    description: "signing keys directory (default: <data dir>/keys)",
};

/// A PEM signing key given directly (secret; overrides the directory).
pub const JWT_SIGNING_KEY: Setting = Setting {
    name: "auth.jwt_signing_key",
    env: Some("JWT_SIGNING_KEY"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian"],
    description: "a PEM signing key given directly (secret; overrides the directory)",
};

/// The key id of JWT_SIGNING_KEY.
pub const JWT_SIGNING_KID: Setting = Setting {
    name: "auth.jwt_signing_kid",
    env: Some("JWT_SIGNING_KID"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "env",
    unit: "",
    services: &["guardian"],
    description: "the key id of JWT_SIGNING_KEY",
};

/// The key that signs (default: the newest).
pub const JWT_ACTIVE_KID: Setting = Setting {
    name: "auth.jwt_active_kid",
    env: Some("JWT_ACTIVE_KID"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "",
    unit: "",
    services: &["guardian"],
    description: "the key that signs (default: the newest)",
};

/// Production refuses generated development keys.
pub const ENVIRONMENT: Setting = Setting {
    name: "service.environment",
    env: Some("ALLIES_ENV"),
    yaml: None,
    live: &[],
    kind: Kind::Choice(&["development", "production", "dev", "prod"]),
    default: "development",
    unit: "",
    services: &["guardian"],
    description: "production refuses generated development keys",
};

/// The current rules file.
pub const RULES_FILE: Setting = Setting {
    name: "game.rules_file",
    env: Some("TIMESQUARE_RULES"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "configs/game-rules.yaml",
    unit: "",
    services: &["timesquare"],
    description: "the current rules file",
};

/// Older rules versions, one file each (a missing directory is none).
pub const RULES_DIR: Setting = Setting {
    name: "game.rules_dir",
    env: Some("TIMESQUARE_RULES_DIR"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "configs/game-rules.d",
    unit: "",
    services: &["timesquare"],
    description: "older rules versions, one file each (a missing directory is none)",
};

/// The rules version new game sessions use.
pub const RULES_VERSION: Setting = Setting {
    name: "game.rules_version",
    env: None,
    yaml: None,
    live: &["timesquare"],
    kind: Kind::Int { min: 1, max: 1000000 },
    default: "1",
    unit: "",
    services: &["timesquare"],
    description: "the rules version new game sessions use",
};

/// Wall time of one game tick (default: 1000 / the rules' ticks_per_second).
pub const TICK: Setting = Setting {
    name: "game.tick_ms",
    env: Some("TIMESQUARE_TICK_MS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 1, max: 10000 },
    default: "",
    unit: "ms",
    services: &["timesquare"],
    description: "wall time of one game tick (default: 1000 / the rules' ticks_per_second)",
};

/// Frames to watchers during a wave.
pub const FRAME: Setting = Setting {
    name: "game.frame_ms",
    env: Some("TIMESQUARE_FRAME_MS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 10, max: 60000 },
    default: "200",
    unit: "ms",
    services: &["timesquare"],
    description: "frames to watchers during a wave",
};

/// How often running waves are checked for their end.
pub const SETTLE: Setting = Setting {
    name: "game.settle_ms",
    env: Some("TIMESQUARE_SETTLE_MS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 5, max: 60000 },
    default: "250",
    unit: "ms",
    services: &["timesquare"],
    description: "how often running waves are checked for their end",
};

/// Aggregates kept hot in memory.
pub const HANDLES: Setting = Setting {
    name: "game.handles",
    env: Some("TIMESQUARE_HANDLES"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 1, max: 10000000 },
    default: "10000",
    unit: "sessions",
    services: &["timesquare"],
    description: "aggregates kept hot in memory",
};

/// Updates buffered per session for its watchers.
pub const WATCH_BUFFER: Setting = Setting {
    name: "game.watch_buffer",
    env: Some("TIMESQUARE_WATCH_BUFFER"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 8, max: 1000000 },
    default: "256",
    unit: "updates",
    services: &["timesquare"],
    description: "updates buffered per session for its watchers",
};

/// Game commands a player may send per second on average (0: no limit).
pub const COMMANDS_PER_SECOND: Setting = Setting {
    name: "game.commands_per_second",
    env: Some("TIMESQUARE_COMMANDS_PER_SEC"),
    yaml: None,
    live: &["timesquare"],
    kind: Kind::Int { min: 0, max: 10000 },
    default: "20",
    unit: "per s",
    services: &["timesquare"],
    description: "game commands a player may send per second on average (0: no limit)",
};

/// Game commands a player may send at once.
pub const COMMANDS_BURST: Setting = Setting {
    name: "game.commands_burst",
    env: Some("TIMESQUARE_COMMANDS_BURST"),
    yaml: None,
    live: &["timesquare"],
    kind: Kind::Int { min: 1, max: 10000 },
    default: "40",
    unit: "commands",
    services: &["timesquare"],
    description: "game commands a player may send at once",
};

/// Time between two matchmaker passes.
pub const MM_INTERVAL: Setting = Setting {
    name: "matchmaking.interval_ms",
    env: Some("TIMESQUARE_MM_INTERVAL_MS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 10, max: 60000 },
    default: "250",
    unit: "ms",
    services: &["timesquare"],
    description: "time between two matchmaker passes",
};

/// A ticket not matched by then expires.
pub const MM_TICKET_TTL: Setting = Setting {
    name: "matchmaking.ticket_ttl_secs",
    env: Some("TIMESQUARE_MM_TICKET_TTL_SECS"),
    yaml: None,
    live: &["timesquare"],
    kind: Kind::Int { min: 1, max: 86400 },
    default: "120",
    unit: "s",
    services: &["timesquare"],
    description: "a ticket not matched by then expires",
};

/// The time players have to confirm a match.
pub const MM_CONFIRM: Setting = Setting {
    name: "matchmaking.confirm_secs",
    env: Some("TIMESQUARE_MM_CONFIRM_SECS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 1, max: 3600 },
    default: "20",
    unit: "s",
    services: &["timesquare"],
    description: "the time players have to confirm a match",
};

/// The matchmaker's initial rating window.
pub const MM_WINDOW: Setting = Setting {
    name: "matchmaking.window",
    env: Some("TIMESQUARE_MM_WINDOW"),
    yaml: None,
    live: &["timesquare"],
    kind: Kind::Int { min: 0, max: 5000 },
    default: "100",
    unit: "rating",
    services: &["timesquare"],
    description: "the matchmaker's initial rating window",
};

/// How fast the window widens while a ticket waits.
pub const MM_WIDEN: Setting = Setting {
    name: "matchmaking.widen_per_sec",
    env: Some("TIMESQUARE_MM_WIDEN_PER_SEC"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 0, max: 5000 },
    default: "20",
    unit: "rating/s",
    services: &["timesquare"],
    description: "how fast the window widens while a ticket waits",
};

/// The widest window.
pub const MM_MAX_WINDOW: Setting = Setting {
    name: "matchmaking.max_window",
    env: Some("TIMESQUARE_MM_MAX_WINDOW"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 0, max: 5000 },
    default: "1000",
    unit: "rating",
    services: &["timesquare"],
    description: "the widest window",
};

/// When a group smaller than its maximum may form.
pub const MM_FILL_AFTER: Setting = Setting {
    name: "matchmaking.fill_after_ms",
    env: Some("TIMESQUARE_MM_FILL_AFTER_MS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 0, max: 3600000 },
    default: "10000",
    unit: "ms",
    services: &["timesquare"],
    description: "when a group smaller than its maximum may form",
};

/// Matchmaking requests (find, cancel, confirm) a player may send per minute (0: no limit).
pub const MM_REQUESTS_PER_MINUTE: Setting = Setting {
    name: "matchmaking.requests_per_minute",
    env: Some("TIMESQUARE_MM_REQUESTS_PER_MIN"),
    yaml: None,
    live: &["timesquare"],
    kind: Kind::Int { min: 0, max: 60000 },
    default: "60",
    unit: "per min",
    services: &["timesquare"],
    description: "matchmaking requests (find, cancel, confirm) a player may send per minute (0: no limit)",
};

/// Matchmaking requests a player may send at once.
pub const MM_REQUESTS_BURST: Setting = Setting {
    name: "matchmaking.requests_burst",
    env: Some("TIMESQUARE_MM_REQUESTS_BURST"),
    yaml: None,
    live: &["timesquare"],
    kind: Kind::Int { min: 1, max: 10000 },
    default: "10",
    unit: "requests",
    services: &["timesquare"],
    description: "matchmaking requests a player may send at once",
};

/// Maintenance mode: 1 pauses every client's writes (UNAVAILABLE with retry info), reads go on.
pub const WRITES_PAUSED: Setting = Setting {
    name: "maintenance.writes_paused",
    env: None,
    yaml: None,
    live: &["guardian", "timesquare"],
    kind: Kind::Int { min: 0, max: 1 },
    default: "0",
    unit: "",
    services: &["guardian", "timesquare"],
    description: "maintenance mode: 1 pauses every client's writes (UNAVAILABLE with retry info), reads go on",
};

/// In maintenance mode, when a refused write should retry.
pub const RETRY_AFTER: Setting = Setting {
    name: "maintenance.retry_after_secs",
    env: None,
    yaml: None,
    live: &["guardian", "timesquare"],
    kind: Kind::Int { min: 1, max: 3600 },
    default: "30",
    unit: "s",
    services: &["guardian", "timesquare"],
    description: "in maintenance mode, when a refused write should retry",
};

/// How often the fleet's metrics are sampled.
pub const METRICS_INTERVAL: Setting = Setting {
    name: "command.metrics_interval_ms",
    env: Some("COMMAND_METRICS_INTERVAL_MS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 100, max: 3600000 },
    default: "10000",
    unit: "ms",
    services: &["command"],
    description: "how often the fleet's metrics are sampled",
};

/// How long metric samples are kept.
pub const METRICS_RETENTION: Setting = Setting {
    name: "command.metrics_retention_secs",
    env: Some("COMMAND_METRICS_RETENTION_SECS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 60, max: 31536000 },
    default: "86400",
    unit: "s",
    services: &["command"],
    description: "how long metric samples are kept",
};

/// A pause between a report's pages (spreads its load).
pub const REPORT_PAGE_PAUSE: Setting = Setting {
    name: "command.report_page_pause_ms",
    env: Some("COMMAND_REPORT_PAGE_PAUSE_MS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 0, max: 10000 },
    default: "0",
    unit: "ms",
    services: &["command"],
    description: "a pause between a report's pages (spreads its load)",
};

/// How long a report's bytes are kept.
pub const REPORT_RETENTION: Setting = Setting {
    name: "command.report_retention_secs",
    env: Some("COMMAND_REPORT_RETENTION_SECS"),
    yaml: None,
    live: &[],
    kind: Kind::Int { min: 60, max: 31536000 },
    default: "604800",
    unit: "s",
    services: &["command"],
    description: "how long a report's bytes are kept",
};

/// The projector's admin API (maintenance jobs).
pub const PROJECTOR_URL: Setting = Setting {
    name: "command.projector_url",
    env: Some("PROJECTOR_URL"),
    yaml: None,
    live: &[],
    kind: Kind::Text,
    default: "http://127.0.0.1:50054",
    unit: "",
    services: &["command"],
    description: "the projector's admin API (maintenance jobs)",
};

/// Every setting, in the order `allies config keys` prints them.
pub const ALL: &[&Setting] = &[
    &REDIS_URL,
    &REDIS_USERNAME,
    &REDIS_PASSWORD,
    &REDIS_PASSWORD_FILE,
    &REDIS_TLS_CA_FILE,
    &REDIS_TLS_CERT_FILE,
    &REDIS_TLS_KEY_FILE,
    &PARTITIONS,
    &REPLICA_ACKS,
    &REPLICA_ACK_TIMEOUT,
    &CQRS_CONFIG,
    &DEFAULT_STORAGE,
    &SNAPSHOT_EVERY,
    &SNAPSHOT_MAX_AGE,
    &IDEMPOTENCY_TTL,
    &EVENT_FORMAT,
    &SNAPSHOT_COMPRESSION,
    &ARCHIVE_DIR,
    &SUBSCRIBER_BATCH,
    &SUBSCRIBER_BLOCK,
    &SUBSCRIBER_LINGER,
    &RETRY_MAX_ATTEMPTS,
    &RETRY_BASE,
    &CLAIM_IDLE,
    &BREAKER_FAILURES,
    &BREAKER_OPEN,
    &SHUTDOWN_GRACE,
    &WORKER_THREADS,
    &TRUSTED_PROXIES,
    &DATA_DIR,
    &LOG_FORMAT,
    &LOG_FILTER,
    &JWT_ISSUER,
    &JWT_AUDIENCE,
    &GUARDIAN_URL,
    &ACCESS_TOKEN_TTL,
    &REFRESH_TOKEN_TTL,
    &LOCKOUT_MAX_FAILURES,
    &LOCKOUT,
    &RATE_PER_USERNAME,
    &RATE_PER_CLIENT,
    &RATE_WINDOW,
    &BOOTSTRAP_ADMINS,
    &ARGON2_THREADS,
    &JWT_KEYS_DIR,
    &JWT_SIGNING_KEY,
    &JWT_SIGNING_KID,
    &JWT_ACTIVE_KID,
    &ENVIRONMENT,
    &RULES_FILE,
    &RULES_DIR,
    &RULES_VERSION,
    &TICK,
    &FRAME,
    &SETTLE,
    &HANDLES,
    &WATCH_BUFFER,
    &COMMANDS_PER_SECOND,
    &COMMANDS_BURST,
    &MM_INTERVAL,
    &MM_TICKET_TTL,
    &MM_CONFIRM,
    &MM_WINDOW,
    &MM_WIDEN,
    &MM_MAX_WINDOW,
    &MM_FILL_AFTER,
    &MM_REQUESTS_PER_MINUTE,
    &MM_REQUESTS_BURST,
    &WRITES_PAUSED,
    &RETRY_AFTER,
    &METRICS_INTERVAL,
    &METRICS_RETENTION,
    &REPORT_PAGE_PAUSE,
    &REPORT_RETENTION,
    &PROJECTOR_URL,
    &SEARCH_DIR,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_whole_and_named_once() {
        let mut names = std::collections::BTreeSet::new();
        let mut envs = std::collections::BTreeSet::new();
        let mut yamls = std::collections::BTreeSet::new();
        for s in ALL {
            assert!(names.insert(s.name), "{} twice", s.name);
            if let Some(e) = s.env {
                assert!(envs.insert(e), "{e} twice");
            }
            if let Some(y) = s.yaml {
                assert!(yamls.insert(y), "{y} twice");
            }
            assert!(s.env.is_some() || s.is_live(), "{}: neither deployed nor live", s.name);
            assert!(!s.services.is_empty() && !s.description.is_empty(), "{}", s.name);
            if !s.default.is_empty() {
                assert_eq!(s.check(s.default), Ok(()), "{}: its default is out of its range", s.name);
            }
            if s.is_live() {
                assert!(
                    matches!(s.kind, Kind::Int { .. }) && !s.default.is_empty(),
                    "{}: live keys are integers",
                    s.name
                );
            }
        }
    }

    #[test]
    fn values_are_checked_against_type_and_range() {
        assert!(SUBSCRIBER_BATCH.check("0").is_err());
        assert!(SUBSCRIBER_BATCH.check("128").is_ok());
        assert_eq!(EVENT_FORMAT.check("xml"), Err("must be one of json, protobuf".into()));
        assert_eq!(by_name("game.commands_burst"), Some(&COMMANDS_BURST));
        assert!(by_name("game.comands_burst").is_none());
        assert!(live().all(Setting::is_live));
    }
}
