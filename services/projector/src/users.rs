//! The user read model: `rm:user:<user_id>` (hash) and the username index
//! `rm:user:idx:username` (lowercase username → id), built from the User
//! aggregate's events. Never holds the password hash.

use std::collections::HashMap;

use allies_contracts::guardian::events::v1::*;
use allies_contracts::projector::v1::User;
use allies_store::RecordedEvent;
use allies_store::RedisConn;
use allies_store::subscriber::{Handler, HandlerError};

use crate::readmodel::{Fields, ReadModelWriter, decode, now_ms};

/// Consumer group of this projection on the `user` partition logs.
pub const GROUP: &str = "rm.user";
pub const AGGREGATE_TYPE: &str = "user";
pub const USERNAME_INDEX: &str = "rm:user:idx:username";

pub fn key(user_id: &str) -> String {
    format!("rm:user:{user_id}")
}

/// What one event changes in a user's read model: fields, and the username
/// to index (on registration). Pure: also used by the consistency checker.
pub fn changes(event: &RecordedEvent) -> Result<(Fields, Option<String>), HandlerError> {
    let env = &event.envelope;
    let t = env.event_type.as_str();
    let mut index = None;
    let fields: Vec<(&'static str, String)> = match t {
        "UserRegistered" => {
            let e: UserRegistered = decode(event)?;
            index = Some(e.username.to_ascii_lowercase());
            vec![
                ("user_id", env.aggregate_id.clone()),
                ("display_name", if e.display_name.is_empty() { e.username.clone() } else { e.display_name }),
                ("username", e.username),
                ("email", e.email),
                ("roles", e.roles.join(",")),
                ("registered_at_ms", e.registered_at_ms.to_string()),
            ]
        }
        "UserAuthenticated" => {
            let e: UserAuthenticated = decode(event)?;
            vec![("last_login_ms", e.authenticated_at_ms.to_string()), ("consecutive_failures", "0".into())]
        }
        "AuthenticationFailed" => {
            let e: AuthenticationFailed = decode(event)?;
            vec![("consecutive_failures", e.consecutive_failures.to_string())]
        }
        "UserLockedOut" => {
            let e: UserLockedOut = decode(event)?;
            vec![("locked_until_ms", e.locked_until_ms.to_string()), ("consecutive_failures", "0".into())]
        }
        "PasswordChanged" => {
            let e: PasswordChanged = decode(event)?;
            vec![("password_changed_at_ms", e.changed_at_ms.to_string())]
        }
        "UserRolesChanged" => {
            let e: UserRolesChanged = decode(event)?;
            vec![("roles", e.roles.join(","))]
        }
        other => {
            // An event this projection does not read: only the version moves.
            tracing::debug!(event_type = other, "user projection ignores event");
            vec![]
        }
    };
    Ok((fields, index))
}

pub struct UserProjection {
    writer: ReadModelWriter,
}

impl UserProjection {
    pub fn new(conn: RedisConn) -> Self {
        Self { writer: ReadModelWriter::new(conn) }
    }

    /// Applies one event; returns whether the read model changed.
    pub async fn apply(&self, event: &RecordedEvent) -> Result<bool, HandlerError> {
        let env = &event.envelope;
        let v = env.version;
        let (fields, index) = changes(event)?;
        let applied = self.writer.apply(&key(&env.aggregate_id), v, &fields).await?;
        if let Some(name) = index {
            // Idempotent on its own; written even on a redelivery so a crash
            // between the two writes heals.
            let mut conn = self.writer.conn.clone();
            let _: i64 = redis::cmd("HSET")
                .arg(USERNAME_INDEX)
                .arg(name)
                .arg(&env.aggregate_id)
                .query_async(&mut conn)
                .await
                .map_err(|e| HandlerError(e.to_string()))?;
        }
        Ok(applied)
    }

    /// Reads one user from the read model.
    pub async fn get(&self, user_id: &str) -> Result<Option<User>, redis::RedisError> {
        let mut conn = self.writer.conn.clone();
        let map: HashMap<String, String> = redis::cmd("HGETALL").arg(key(user_id)).query_async(&mut conn).await?;
        if !map.contains_key("user_id") {
            return Ok(None);
        }
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        let num = |k: &str| get(k).parse::<i64>().unwrap_or_default();
        let locked_until_ms = num("locked_until_ms");
        Ok(Some(User {
            user_id: get("user_id"),
            username: get("username"),
            email: get("email"),
            roles: get("roles").split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect(),
            status: if locked_until_ms > now_ms() { "locked".into() } else { "active".into() },
            registered_at_ms: num("registered_at_ms"),
            version: get("_version").parse().unwrap_or_default(),
            last_login_ms: num("last_login_ms"),
            locked_until_ms,
            display_name: get("display_name"),
        }))
    }

    /// Looks a user up by username, case-insensitively.
    pub async fn get_by_username(&self, username: &str) -> Result<Option<User>, redis::RedisError> {
        let mut conn = self.writer.conn.clone();
        let id: Option<String> =
            redis::cmd("HGET").arg(USERNAME_INDEX).arg(username.to_ascii_lowercase()).query_async(&mut conn).await?;
        match id {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }
}

impl Handler for UserProjection {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.apply(event).await.map(|_| ())
    }
}
