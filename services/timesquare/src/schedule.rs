//! Schedules of things due at a time — the running waves (what the game
//! writes when a wave starts and the sweeper reads to complete it) and the
//! matches' confirmation deadlines (the saga's): a room below the game, the
//! sweeper and the saga, so none imports another for it. An interface with
//! two homes: Redis for the fleet (a sorted set every replica shares, claims
//! in one script) and memory for the use-case scenarios.

use std::collections::BTreeMap;
use std::sync::Mutex;

use allies_store::RedisConn;

/// Running waves: member `<session id>:<wave>`, score: when to look next.
pub const DUE: &str = "ts:waves:due";
/// The consumer group that keeps [`DUE`] from the wave starts.
pub const GROUP: &str = "ts.waves";
/// The topic started waves are published on.
pub const TOPIC: &str = "ts.waves";

/// A running wave's member in the schedule.
pub fn member(session_id: &str, wave: u32) -> String {
    format!("{session_id}:{wave}")
}

/// The session and wave of a member (None: not a member).
pub fn parse_member(member: &str) -> Option<(&str, u32)> {
    member.rsplit_once(':').and_then(|(id, w)| Some((id, w.parse::<u32>().ok()?)))
}

/// A schedule: members, each due at a time.
#[async_trait::async_trait]
pub trait Schedule: Send + Sync + 'static {
    /// Schedules a member's first look at `at_ms`, unless it is scheduled already.
    async fn add(&self, member: &str, at_ms: i64) -> Result<(), String>;

    /// Schedules a member at `at_ms`, replacing its time if scheduled.
    async fn put(&self, member: &str, at_ms: i64) -> Result<(), String>;

    /// Claims up to `limit` members due at `now_ms`: they are pushed to
    /// `next_ms` in the same step, so replicas do not pile onto one session.
    async fn claim_due(&self, now_ms: i64, next_ms: i64, limit: usize) -> Result<Vec<String>, String>;

    /// Drops a member (it is over).
    async fn remove(&self, member: &str) -> Result<(), String>;

    /// How many members are scheduled.
    async fn running(&self) -> u64;
}

const CLAIM: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
return ids
";

/// A schedule of the fleet: a sorted set (claims in one script).
pub struct RedisSchedule {
    conn: RedisConn,
    key: &'static str,
    claim: redis::Script,
}

impl RedisSchedule {
    /// The running waves ([`DUE`]).
    pub fn new(conn: RedisConn) -> Self {
        Self::at(conn, DUE)
    }

    /// The schedule in the sorted set `key`.
    pub fn at(conn: RedisConn, key: &'static str) -> Self {
        Self { conn, key, claim: redis::Script::new(CLAIM) }
    }
}

#[async_trait::async_trait]
impl Schedule for RedisSchedule {
    async fn add(&self, member: &str, at_ms: i64) -> Result<(), String> {
        let mut c = self.conn.clone();
        redis::cmd("ZADD")
            .arg(self.key)
            .arg("NX")
            .arg(at_ms)
            .arg(member)
            .query_async::<i64>(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn put(&self, member: &str, at_ms: i64) -> Result<(), String> {
        let mut c = self.conn.clone();
        redis::cmd("ZADD")
            .arg(self.key)
            .arg(at_ms)
            .arg(member)
            .query_async::<i64>(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn claim_due(&self, now_ms: i64, next_ms: i64, limit: usize) -> Result<Vec<String>, String> {
        let mut c = self.conn.clone();
        self.claim
            .key(self.key)
            .arg(now_ms)
            .arg(next_ms)
            .arg(limit)
            .invoke_async(&mut c)
            .await
            .map_err(|e| e.to_string())
    }

    async fn remove(&self, member: &str) -> Result<(), String> {
        let mut c = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.key)
            .arg(member)
            .query_async::<i64>(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn running(&self) -> u64 {
        let mut c = self.conn.clone();
        redis::cmd("ZCARD").arg(self.key).query_async::<u64>(&mut c).await.unwrap_or(0)
    }
}

/// A schedule in memory (use-case scenarios; one process).
#[derive(Default)]
pub struct MemorySchedule {
    due: Mutex<BTreeMap<String, i64>>,
}

impl MemorySchedule {
    /// The scheduled waves and when each is next looked at.
    pub fn entries(&self) -> BTreeMap<String, i64> {
        self.due.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Schedule for MemorySchedule {
    async fn add(&self, member: &str, at_ms: i64) -> Result<(), String> {
        let mut due = self.due.lock().map_err(|e| e.to_string())?;
        due.entry(member.to_owned()).or_insert(at_ms);
        Ok(())
    }

    async fn put(&self, member: &str, at_ms: i64) -> Result<(), String> {
        self.due.lock().map_err(|e| e.to_string())?.insert(member.to_owned(), at_ms);
        Ok(())
    }

    async fn claim_due(&self, now_ms: i64, next_ms: i64, limit: usize) -> Result<Vec<String>, String> {
        let mut due = self.due.lock().map_err(|e| e.to_string())?;
        let mut ready: Vec<(i64, String)> =
            due.iter().filter(|(_, at)| **at <= now_ms).map(|(m, at)| (*at, m.clone())).collect();
        ready.sort();
        ready.truncate(limit);
        for (_, m) in &ready {
            due.insert(m.clone(), next_ms);
        }
        Ok(ready.into_iter().map(|(_, m)| m).collect())
    }

    async fn remove(&self, member: &str) -> Result<(), String> {
        self.due.lock().map_err(|e| e.to_string())?.remove(member);
        Ok(())
    }

    async fn running(&self) -> u64 {
        self.due.lock().map(|d| d.len() as u64).unwrap_or(0)
    }
}
