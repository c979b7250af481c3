//! The user read model: `rm:user:<user_id>` (hash), built from the User
//! aggregate's events. Never holds the password hash.

use std::collections::HashMap;

use allies_contracts::guardian::events::v1::UserRegistered;
use allies_contracts::projector::v1::User;
use allies_store::RecordedEvent;
use allies_store::subscriber::{Handler, HandlerError};
use redis::aio::ConnectionManager;

/// Consumer group of this projection on the `user` partition logs.
pub const GROUP: &str = "rm.user";
pub const AGGREGATE_TYPE: &str = "user";

pub fn key(user_id: &str) -> String {
    format!("rm:user:{user_id}")
}

pub struct UserProjection {
    conn: ConnectionManager,
    apply: redis::Script,
}

impl UserProjection {
    pub fn new(conn: ConnectionManager) -> Self {
        Self { conn, apply: redis::Script::new(include_str!("apply.lua")) }
    }

    /// Applies one event; returns whether the read model changed.
    pub async fn apply(&self, event: &RecordedEvent) -> Result<bool, HandlerError> {
        let env = &event.envelope;
        let fields: Vec<(&str, String)> = match (env.event_type.as_str(), env.schema_version) {
            ("UserRegistered", 1) => {
                let e: UserRegistered = serde_json::from_slice(&event.data)
                    .map_err(|e| HandlerError(format!("malformed UserRegistered at version {}: {e}", env.version)))?;
                vec![
                    ("user_id", env.aggregate_id.clone()),
                    ("username", e.username),
                    ("email", e.email),
                    ("roles", e.roles.join(",")),
                    ("status", "active".to_owned()),
                    ("registered_at_ms", e.registered_at_ms.to_string()),
                ]
            }
            (other, v) => {
                // Not an event this projection reads: acknowledge and move on.
                tracing::debug!(event_type = other, schema_version = v, "user projection ignores event");
                return Ok(false);
            }
        };
        let mut inv = self.apply.key(key(&env.aggregate_id));
        inv.arg(env.version);
        for (f, v) in &fields {
            inv.arg(*f).arg(v);
        }
        let mut conn = self.conn.clone();
        let applied: i64 = inv.invoke_async(&mut conn).await.map_err(|e| HandlerError(e.to_string()))?;
        Ok(applied == 1)
    }

    /// Reads one user from the read model.
    pub async fn get(&self, user_id: &str) -> Result<Option<User>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = redis::cmd("HGETALL").arg(key(user_id)).query_async(&mut conn).await?;
        if map.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        Ok(Some(User {
            user_id: get("user_id"),
            username: get("username"),
            email: get("email"),
            roles: get("roles").split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect(),
            status: get("status"),
            registered_at_ms: get("registered_at_ms").parse().unwrap_or_default(),
            version: get("_version").parse().unwrap_or_default(),
        }))
    }
}

impl Handler for UserProjection {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.apply(event).await.map(|_| ())
    }
}
