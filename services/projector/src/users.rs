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
/// Key prefix of the first generation of the read models.
pub const DEFAULT_NAMESPACE: &str = "rm";
pub const USERNAME_INDEX: &str = "rm:user:idx:username";
/// Users by registration time (score: registered_at_ms).
pub const REGISTERED_INDEX: &str = "rm:user:idx:registered";
/// Users by lowercase username (lexicographic; member `<name>\t<id>`).
pub const NAME_INDEX: &str = "rm:user:idx:name";

/// Users holding a role.
pub fn role_index(role: &str) -> String {
    format!("rm:user:idx:role:{role}")
}

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

/// A ListUsers query, validated.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub role: Option<String>,
    pub prefix: Option<String>,
    /// Sort by username (else by registration time).
    pub by_name: bool,
    pub descending: bool,
    pub page_size: usize,
    /// Position in the sort index to continue from.
    pub offset: u64,
}

pub struct UserProjection {
    writer: ReadModelWriter,
    /// Key prefix of this generation of the read model (`rm` = the first).
    ns: String,
}

impl UserProjection {
    pub fn new(conn: RedisConn) -> Self {
        Self::in_namespace(conn, DEFAULT_NAMESPACE)
    }

    /// A projection writing and reading keys under `ns` (a rebuild's new generation).
    pub fn in_namespace(conn: RedisConn, ns: &str) -> Self {
        Self { writer: ReadModelWriter::new(conn), ns: ns.to_owned() }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    pub fn key(&self, user_id: &str) -> String {
        format!("{}:user:{user_id}", self.ns)
    }

    fn username_index(&self) -> String {
        format!("{}:user:idx:username", self.ns)
    }

    fn registered_index(&self) -> String {
        format!("{}:user:idx:registered", self.ns)
    }

    fn name_index(&self) -> String {
        format!("{}:user:idx:name", self.ns)
    }

    fn role_index(&self, role: &str) -> String {
        format!("{}:user:idx:role:{role}", self.ns)
    }

    /// Applies one event; returns whether the read model changed.
    pub async fn apply(&self, event: &RecordedEvent) -> Result<bool, HandlerError> {
        let env = &event.envelope;
        let v = env.version;
        let (fields, index) = changes(event)?;
        let new_roles = fields.iter().find(|(f, _)| *f == "roles").map(|(_, r)| r.clone());
        // A registration has no earlier roles to take out of the role indexes.
        let old_roles: Option<String> = match &new_roles {
            Some(_) if env.event_type != "UserRegistered" => {
                let mut conn = self.writer.conn.clone();
                redis::cmd("HGET")
                    .arg(self.key(&env.aggregate_id))
                    .arg("roles")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| HandlerError(e.to_string()))?
            }
            _ => None,
        };
        let registered_at = fields.iter().find(|(f, _)| *f == "registered_at_ms").map(|(_, t)| t.clone());
        let applied = self.writer.apply(&self.key(&env.aggregate_id), v, &fields).await?;
        let id = &env.aggregate_id;
        // One pipeline on a single Redis; one command each on a Cluster, where
        // the index keys live in different slots.
        let mut cmds: Vec<redis::Cmd> = Vec::new();
        if let Some(name) = index {
            // Idempotent on their own; written even on a redelivery so a crash
            // between the read-model write and these heals.
            cmds.push(redis::Cmd::hset(self.username_index(), &name, id));
            cmds.push(redis::Cmd::zadd(self.name_index(), format!("{name}\t{id}"), 0));
        }
        if let Some(at) = registered_at {
            cmds.push(redis::Cmd::zadd(self.registered_index(), id, at.parse::<i64>().unwrap_or_default()));
        }
        if let Some(new) = new_roles.filter(|_| applied) {
            let split = |s: &str| s.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect::<Vec<_>>();
            let new = split(&new);
            for old in split(old_roles.as_deref().unwrap_or_default()) {
                if !new.contains(&old) {
                    cmds.push(redis::Cmd::srem(self.role_index(&old), id));
                }
            }
            for role in &new {
                cmds.push(redis::Cmd::sadd(self.role_index(role), id));
            }
        }
        let mut conn = self.writer.conn.clone();
        if conn.is_cluster() {
            for cmd in cmds {
                let _: redis::Value = cmd.query_async(&mut conn).await.map_err(|e| HandlerError(e.to_string()))?;
            }
        } else if !cmds.is_empty() {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd).ignore();
            }
            let _: () = pipe.query_async(&mut conn).await.map_err(|e| HandlerError(e.to_string()))?;
        }
        Ok(applied)
    }

    /// Reads one user from the read model.
    pub async fn get(&self, user_id: &str) -> Result<Option<User>, redis::RedisError> {
        let mut conn = self.writer.conn.clone();
        let map: HashMap<String, String> = redis::cmd("HGETALL").arg(self.key(user_id)).query_async(&mut conn).await?;
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

    /// Users matching `q`, in its order, one page; returns the page and the
    /// position to continue from (None at the end). Iterates the sort index
    /// in chunks and filters with the role sets / usernames: at most
    /// `SCAN_LIMIT` index entries per call (a partial page then carries a token).
    pub async fn list(&self, q: &ListQuery) -> Result<(Vec<User>, Option<u64>), redis::RedisError> {
        const CHUNK: usize = 200;
        const SCAN_LIMIT: usize = 2_000;
        let mut conn = self.writer.conn.clone();
        let (mut pos, mut scanned, mut page) = (q.offset, 0usize, Vec::new());
        let prefix = q.prefix.as_ref().map(|p| p.to_ascii_lowercase());
        loop {
            let ids: Vec<String> = if q.by_name {
                let (min, max) = match &prefix {
                    Some(p) => (format!("[{p}"), format!("[{p}\u{7f}")),
                    None => ("-".to_owned(), "+".to_owned()),
                };
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(self.name_index());
                if q.descending {
                    cmd.arg(&max).arg(&min).arg("BYLEX").arg("REV");
                } else {
                    cmd.arg(&min).arg(&max).arg("BYLEX");
                }
                let members: Vec<String> = cmd.arg("LIMIT").arg(pos).arg(CHUNK).query_async(&mut conn).await?;
                members.into_iter().filter_map(|m| m.split_once('\t').map(|(_, id)| id.to_owned())).collect()
            } else {
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(self.registered_index()).arg(pos).arg(pos + CHUNK as u64 - 1);
                if q.descending {
                    cmd.arg("REV");
                }
                cmd.query_async(&mut conn).await?
            };
            if ids.is_empty() {
                return Ok((page, None));
            }
            let mut keep = vec![true; ids.len()];
            if let Some(role) = &q.role {
                let member: Vec<bool> =
                    redis::cmd("SMISMEMBER").arg(self.role_index(role)).arg(&ids).query_async(&mut conn).await?;
                keep.iter_mut().zip(member).for_each(|(k, m)| *k &= m);
            }
            if let (Some(p), false) = (&prefix, q.by_name) {
                // One HGET each (not a pipeline): the keys live in different Cluster slots.
                let mut names: Vec<Option<String>> = Vec::with_capacity(ids.len());
                for id in &ids {
                    names.push(redis::cmd("HGET").arg(self.key(id)).arg("username").query_async(&mut conn).await?);
                }
                keep.iter_mut()
                    .zip(names)
                    .for_each(|(k, n)| *k &= n.is_some_and(|n| n.to_ascii_lowercase().starts_with(p.as_str())));
            }
            let got = ids.len();
            for (id, ok) in ids.into_iter().zip(keep) {
                pos += 1;
                if ok && let Some(user) = self.get(&id).await? {
                    page.push(user);
                    if page.len() == q.page_size {
                        return Ok((page, Some(pos)));
                    }
                }
            }
            scanned += got;
            if got < CHUNK {
                return Ok((page, None));
            }
            if scanned >= SCAN_LIMIT {
                return Ok((page, Some(pos)));
            }
        }
    }

    /// Looks a user up by username, case-insensitively.
    pub async fn get_by_username(&self, username: &str) -> Result<Option<User>, redis::RedisError> {
        let mut conn = self.writer.conn.clone();
        let id: Option<String> = redis::cmd("HGET")
            .arg(self.username_index())
            .arg(username.to_ascii_lowercase())
            .query_async(&mut conn)
            .await?;
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
