//! What matchmaking keeps beside its aggregates: the waiting set (ticket id →
//! what the matchmaker needs, kept by the `ts.tickets` group), the trace
//! each waiting ticket was created in, each player's index of party
//! invitations, and the lease that lets one replica run the matchmaker.
//! The aggregates stay the truth; these are indexes a pass or a listing
//! reads. An interface with two homes: Redis for the fleet, memory for the
//! use-case scenarios.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use allies_store::{RedisConn, StoreError};

pub const WAITING: &str = "mm:waiting";
/// The trace context each waiting ticket was created in (ticket id →
/// traceparent): a match links to the traces of the tickets it joins.
pub const WAITING_TRACES: &str = "{mm:waiting}:traces"; // the slot of `mm:waiting`
pub const LEASE: &str = "mm:lease";

/// The invitations to a player (a sorted set: host → expiry), an index of
/// the parties' events for ListPartyInvites.
pub fn invites_key(user: &str) -> String {
    format!("mm:invites:{{{user}}}")
}

/// See the module documentation.
#[async_trait::async_trait]
pub trait MatchmakingIndex: Send + Sync + 'static {
    /// A ticket waits (its JSON for the matchmaker), with the trace it was created in.
    async fn put_waiting(&self, ticket_id: &str, json: &str, traceparent: Option<&str>) -> Result<(), StoreError>;
    /// A ticket no longer waits; `done`: its trace goes too.
    async fn remove_waiting(&self, ticket_id: &str, done: bool) -> Result<(), StoreError>;
    /// Every waiting ticket's JSON.
    async fn waiting(&self) -> Result<Vec<String>, StoreError>;
    /// The traces of these tickets (None: unknown).
    async fn traces(&self, ticket_ids: &[String]) -> Vec<Option<String>>;
    /// `host` invited `user` until `until_ms`.
    async fn add_invite(&self, user: &str, host: &str, until_ms: i64, ttl_ms: i64) -> Result<(), StoreError>;
    async fn remove_invite(&self, user: &str, host: &str) -> Result<(), StoreError>;
    /// The hosts whose invitation to `user` is open at `now_ms`.
    async fn invites(&self, user: &str, now_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Takes the lease if free, or extends it if `instance` holds it; true when held.
    async fn lease(&self, instance: &str, ttl_ms: u64) -> bool;
}

/// Takes the lease if free, or extends it if this instance holds it.
const LEASE_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// The fleet's index, in Redis.
pub struct RedisMatchmakingIndex {
    conn: RedisConn,
    lease: redis::Script,
}

impl RedisMatchmakingIndex {
    pub fn new(conn: RedisConn) -> Self {
        Self { conn, lease: redis::Script::new(LEASE_SCRIPT) }
    }
}

#[async_trait::async_trait]
impl MatchmakingIndex for RedisMatchmakingIndex {
    async fn put_waiting(&self, ticket_id: &str, json: &str, traceparent: Option<&str>) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg(WAITING).arg(ticket_id).arg(json).ignore();
        if let Some(tp) = traceparent {
            pipe.cmd("HSET").arg(WAITING_TRACES).arg(ticket_id).arg(tp).ignore();
        }
        Ok(pipe.query_async::<()>(&mut self.conn.clone()).await?)
    }

    async fn remove_waiting(&self, ticket_id: &str, done: bool) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL").arg(WAITING).arg(ticket_id).ignore();
        if done {
            pipe.cmd("HDEL").arg(WAITING_TRACES).arg(ticket_id).ignore();
        }
        Ok(pipe.query_async::<()>(&mut self.conn.clone()).await?)
    }

    async fn waiting(&self) -> Result<Vec<String>, StoreError> {
        let all: HashMap<String, String> =
            redis::cmd("HGETALL").arg(WAITING).query_async(&mut self.conn.clone()).await?;
        Ok(all.into_values().collect())
    }

    async fn traces(&self, ticket_ids: &[String]) -> Vec<Option<String>> {
        redis::cmd("HMGET")
            .arg(WAITING_TRACES)
            .arg(ticket_ids)
            .query_async(&mut self.conn.clone())
            .await
            .unwrap_or_default()
    }

    async fn add_invite(&self, user: &str, host: &str, until_ms: i64, ttl_ms: i64) -> Result<(), StoreError> {
        Ok(redis::pipe()
            .cmd("ZADD")
            .arg(invites_key(user))
            .arg(until_ms)
            .arg(host)
            .ignore()
            .cmd("PEXPIRE")
            .arg(invites_key(user))
            .arg(ttl_ms)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?)
    }

    async fn remove_invite(&self, user: &str, host: &str) -> Result<(), StoreError> {
        Ok(redis::cmd("ZREM").arg(invites_key(user)).arg(host).query_async::<()>(&mut self.conn.clone()).await?)
    }

    async fn invites(&self, user: &str, now_ms: i64) -> Result<Vec<String>, StoreError> {
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(invites_key(user))
            .arg(now_ms)
            .arg("+inf")
            .query_async(&mut self.conn.clone())
            .await?)
    }

    async fn lease(&self, instance: &str, ttl_ms: u64) -> bool {
        let held: redis::RedisResult<i64> =
            self.lease.key(LEASE).arg(instance).arg(ttl_ms).invoke_async(&mut self.conn.clone()).await;
        held.map(|h| h == 1).unwrap_or(false)
    }
}

#[derive(Default)]
struct Held {
    waiting: BTreeMap<String, String>,
    traces: BTreeMap<String, String>,
    invites: BTreeMap<String, BTreeMap<String, i64>>,
    /// The lease holder (a scenario's clock does not expire it).
    lease: Option<String>,
}

/// The index in memory (use-case scenarios; one process).
#[derive(Default)]
pub struct MemoryMatchmakingIndex {
    held: Mutex<Held>,
}

impl MemoryMatchmakingIndex {
    fn with<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        f(&mut self.held.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The waiting tickets' ids.
    pub fn waiting_ids(&self) -> Vec<String> {
        self.with(|h| h.waiting.keys().cloned().collect())
    }
}

#[async_trait::async_trait]
impl MatchmakingIndex for MemoryMatchmakingIndex {
    async fn put_waiting(&self, ticket_id: &str, json: &str, traceparent: Option<&str>) -> Result<(), StoreError> {
        self.with(|h| {
            h.waiting.insert(ticket_id.to_owned(), json.to_owned());
            if let Some(tp) = traceparent {
                h.traces.insert(ticket_id.to_owned(), tp.to_owned());
            }
        });
        Ok(())
    }

    async fn remove_waiting(&self, ticket_id: &str, done: bool) -> Result<(), StoreError> {
        self.with(|h| {
            h.waiting.remove(ticket_id);
            if done {
                h.traces.remove(ticket_id);
            }
        });
        Ok(())
    }

    async fn waiting(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.with(|h| h.waiting.values().cloned().collect()))
    }

    async fn traces(&self, ticket_ids: &[String]) -> Vec<Option<String>> {
        self.with(|h| ticket_ids.iter().map(|t| h.traces.get(t).cloned()).collect())
    }

    async fn add_invite(&self, user: &str, host: &str, until_ms: i64, _ttl_ms: i64) -> Result<(), StoreError> {
        self.with(|h| h.invites.entry(user.to_owned()).or_default().insert(host.to_owned(), until_ms));
        Ok(())
    }

    async fn remove_invite(&self, user: &str, host: &str) -> Result<(), StoreError> {
        self.with(|h| h.invites.get_mut(user).map(|i| i.remove(host)));
        Ok(())
    }

    async fn invites(&self, user: &str, now_ms: i64) -> Result<Vec<String>, StoreError> {
        Ok(self.with(|h| {
            h.invites
                .get(user)
                .map(|i| i.iter().filter(|(_, until)| **until >= now_ms).map(|(host, _)| host.clone()).collect())
                .unwrap_or_default()
        }))
    }

    async fn lease(&self, instance: &str, _ttl_ms: u64) -> bool {
        self.with(|h| {
            let holder = h.lease.get_or_insert_with(|| instance.to_owned());
            holder == instance
        })
    }
}
