//! Fixed-window rate limits on login attempts, kept in Redis so every
//! Guardian replica counts together: `rl:auth:<scope>:<key>` is incremented
//! and given the window's expiry by one script.

use std::time::Duration;

use allies_store::RedisConn;

use allies_store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited { retry_after: Duration },
}

pub struct RateLimiter {
    conn: RedisConn,
    script: redis::Script,
    window: Duration,
    per_username: u64,
    per_client: u64,
}

const SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
";

impl RateLimiter {
    pub fn new(conn: RedisConn, window: Duration, per_username: u64, per_client: u64) -> Self {
        Self { conn, script: redis::Script::new(SCRIPT), window, per_username, per_client }
    }

    /// `AUTH_RATE_WINDOW_SECS` (60), `AUTH_RATE_PER_USERNAME` (10),
    /// `AUTH_RATE_PER_CLIENT` (30).
    pub fn from_env(conn: RedisConn) -> Self {
        let get = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(d);
        Self::new(
            conn,
            Duration::from_secs(get("AUTH_RATE_WINDOW_SECS", 60)),
            get("AUTH_RATE_PER_USERNAME", 10),
            get("AUTH_RATE_PER_CLIENT", 30),
        )
    }

    /// Counts one attempt for `key` in `scope` ("username" or "client").
    pub async fn check(&self, scope: &str, key: &str) -> Result<Verdict, StoreError> {
        let limit = if scope == "username" { self.per_username } else { self.per_client };
        let mut conn = self.conn.clone();
        let (n, ttl_ms): (u64, i64) = self
            .script
            .key(format!("rl:auth:{scope}:{key}"))
            .arg(self.window.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        if n > limit {
            Ok(Verdict::Limited { retry_after: Duration::from_millis(ttl_ms.max(1) as u64) })
        } else {
            Ok(Verdict::Allowed)
        }
    }
}
