//! Fixed-window rate limits on login attempts, kept in Redis so every
//! Guardian replica counts together: `rl:auth:<scope>:<key>` is incremented
//! and given the window's expiry by one script.

use allies_core::settings as table;
use std::time::Duration;

use allies_platform::config::{ConfigError, Env};
use allies_store::{RedisConn, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited { retry_after: Duration },
}

/// The limits: attempts per window per username and per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub window: Duration,
    pub per_username: u64,
    pub per_client: u64,
}

impl RateSettings {
    /// `AUTH_RATE_WINDOW_SECS` (60), `AUTH_RATE_PER_USERNAME` (10),
    /// `AUTH_RATE_PER_CLIENT` (30).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            window: env.value_secs(&table::RATE_WINDOW)?,
            per_username: env.value(&table::RATE_PER_USERNAME)?,
            per_client: env.value(&table::RATE_PER_CLIENT)?,
        })
    }
}

impl RateSettings {
    /// The limits of a live configuration version over `deployed` (the environment's).
    pub fn live(c: &allies_platform::live::LiveConfig, deployed: RateSettings) -> RateSettings {
        RateSettings {
            window: Duration::from_secs(c.int(&table::RATE_WINDOW, deployed.window.as_secs() as i64) as u64),
            per_username: c.int(&table::RATE_PER_USERNAME, deployed.per_username as i64) as u64,
            per_client: c.int(&table::RATE_PER_CLIENT, deployed.per_client as i64) as u64,
        }
    }
}

pub struct RateLimiter {
    conn: RedisConn,
    script: redis::Script,
    /// Replaced whole when the live configuration changes.
    settings: allies_store::Tunable<RateSettings>,
}

const SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
";

impl RateLimiter {
    pub fn new(conn: RedisConn, settings: allies_store::Tunable<RateSettings>) -> Self {
        Self { conn, script: redis::Script::new(SCRIPT), settings }
    }

    /// The limits in force.
    pub fn settings(&self) -> RateSettings {
        self.settings.get()
    }

    /// Counts one attempt for `key` in `scope` ("username" or "client").
    pub async fn check(&self, scope: &str, key: &str) -> Result<Verdict, StoreError> {
        let settings = self.settings();
        let limit = if scope == "username" { settings.per_username } else { settings.per_client };
        let mut conn = self.conn.clone();
        let (n, ttl_ms): (u64, i64) = self
            .script
            .key(format!("rl:auth:{scope}:{key}"))
            .arg(settings.window.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        if n > limit {
            Ok(Verdict::Limited { retry_after: Duration::from_millis(ttl_ms.max(1) as u64) })
        } else {
            Ok(Verdict::Allowed)
        }
    }
}
