//! The session read model: `rm:session:<session_id>` (hash) and each user's
//! sessions `rm:user:<user_id>:sessions` (sorted set by start time), built
//! from the Session aggregate's events. Never holds a refresh token or its hash.

use std::collections::HashMap;

use allies_contracts::guardian::events::v1::*;
use allies_contracts::projector::v1::Session;
use allies_store::RecordedEvent;
use allies_store::RedisConn;
use allies_store::subscriber::{Handler, HandlerError};

use crate::readmodel::{Fields, ReadModelWriter, decode};

pub const GROUP: &str = "rm.session";
pub const AGGREGATE_TYPE: &str = "session";

pub fn key(session_id: &str) -> String {
    format!("rm:session:{session_id}")
}

pub fn user_sessions_key(user_id: &str) -> String {
    format!("rm:user:{user_id}:sessions")
}

/// What one event changes in a session's read model: fields, and the owner
/// (user, start time) to list it under. Pure: also used by the consistency checker.
pub fn changes(event: &RecordedEvent) -> Result<(Fields, Option<(String, i64)>), HandlerError> {
    let env = &event.envelope;
    let (t, v) = (env.event_type.as_str(), env.version);
    let mut owner = None;
    let fields: Vec<(&'static str, String)> = match t {
        "SessionStarted" => {
            let e: SessionStarted = decode(event)?;
            owner = Some((e.user_id.clone(), e.started_at_ms));
            vec![
                ("session_id", env.aggregate_id.clone()),
                ("user_id", e.user_id),
                ("status", "active".into()),
                ("started_at_ms", e.started_at_ms.to_string()),
                ("expires_at_ms", e.expires_at_ms.to_string()),
                ("refresh_count", "0".into()),
            ]
        }
        "TokenRefreshed" => {
            let e: TokenRefreshed = decode(event)?;
            vec![
                ("last_refreshed_at_ms", e.refreshed_at_ms.to_string()),
                ("expires_at_ms", e.expires_at_ms.to_string()),
                // Every event after the start is one refresh until the session ends.
                ("refresh_count", (v - 1).to_string()),
            ]
        }
        "RefreshTokenReused" => {
            let e: RefreshTokenReused = decode(event)?;
            vec![("status", "revoked".into()), ("ended_at_ms", e.detected_at_ms.to_string())]
        }
        "UserLoggedOut" => {
            let e: UserLoggedOut = decode(event)?;
            vec![("status", "logged_out".into()), ("ended_at_ms", e.logged_out_at_ms.to_string())]
        }
        other => {
            tracing::debug!(event_type = other, "session projection ignores event");
            vec![]
        }
    };
    Ok((fields, owner))
}

pub struct SessionProjection {
    writer: ReadModelWriter,
    ns: String,
}

impl SessionProjection {
    pub fn new(conn: RedisConn) -> Self {
        Self::in_namespace(conn, crate::users::DEFAULT_NAMESPACE)
    }

    pub fn in_namespace(conn: RedisConn, ns: &str) -> Self {
        Self { writer: ReadModelWriter::new(conn), ns: ns.to_owned() }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    pub fn key(&self, session_id: &str) -> String {
        format!("{}:session:{session_id}", self.ns)
    }

    fn user_sessions_key(&self, user_id: &str) -> String {
        format!("{}:user:{user_id}:sessions", self.ns)
    }

    pub async fn apply(&self, event: &RecordedEvent) -> Result<bool, HandlerError> {
        let env = &event.envelope;
        let v = env.version;
        let (fields, owner) = changes(event)?;
        let applied = self.writer.apply(&self.key(&env.aggregate_id), v, &fields).await?;
        if let Some((user_id, started)) = owner {
            let mut conn = self.writer.conn.clone();
            let _: i64 = redis::cmd("ZADD")
                .arg(self.user_sessions_key(&user_id))
                .arg(started)
                .arg(&env.aggregate_id)
                .query_async(&mut conn)
                .await
                .map_err(|e| HandlerError(e.to_string()))?;
        }
        Ok(applied)
    }

    pub async fn get(&self, session_id: &str) -> Result<Option<Session>, redis::RedisError> {
        let mut conn = self.writer.conn.clone();
        let map: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.key(session_id)).query_async(&mut conn).await?;
        if !map.contains_key("session_id") {
            return Ok(None);
        }
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        let num = |k: &str| get(k).parse::<i64>().unwrap_or_default();
        Ok(Some(Session {
            session_id: get("session_id"),
            user_id: get("user_id"),
            status: get("status"),
            started_at_ms: num("started_at_ms"),
            expires_at_ms: num("expires_at_ms"),
            last_refreshed_at_ms: num("last_refreshed_at_ms"),
            ended_at_ms: num("ended_at_ms"),
            refresh_count: get("refresh_count").parse().unwrap_or_default(),
            version: get("_version").parse().unwrap_or_default(),
        }))
    }

    /// A user's sessions, newest first.
    pub async fn list_for_user(&self, user_id: &str, limit: usize) -> Result<Vec<Session>, redis::RedisError> {
        let mut conn = self.writer.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(self.user_sessions_key(user_id))
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = self.get(&id).await? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

impl Handler for SessionProjection {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.apply(event).await.map(|_| ())
    }
}
