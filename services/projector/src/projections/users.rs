//! The user read model: `user:<id>` (hash; never the password hash) and its
//! indexes — `user:idx:username` (lowercase username → id),
//! `user:idx:name` (lexicographic, member `<lowercase name>\t<id>`),
//! `user:idx:registered` (by registration time) and `user:idx:role:<role>`
//! (a set per role) — built from the User aggregate's events.
//!
//! Visibility: `user_id`, `username`, `display_name`, `registered_at_ms`
//! and the profile's version are public (any signed-in player sees them;
//! the aggregate's version is not: it moves on private events); `email`,
//! `roles`, `status`, `last_login_ms` and `locked_until_ms` are private
//! (the user themself and admins).

use allies_contracts::guardian::ROLES;
use allies_contracts::guardian::events::UserEvent;
use allies_contracts::projector::v1::User;
use allies_store::RecordedEvent;
use allies_store::subscriber::HandlerError;

use crate::readmodel::{Namespace, now_ms};
use crate::registry::{Change, IndexOp, Projection, typed};

pub const NAME: &str = "rm.user";
pub const AGGREGATE_TYPE: &str = "user";
const USERNAME_INDEX: &str = "user:idx:username";
const REGISTERED_INDEX: &str = "user:idx:registered";
const NAME_INDEX: &str = "user:idx:name";

fn role_index(role: &str) -> String {
    format!("user:idx:role:{role}")
}

fn key(user_id: &str) -> String {
    format!("user:{user_id}")
}

pub struct Users;

impl Projection for Users {
    fn name(&self) -> &'static str {
        NAME
    }

    fn sources(&self) -> &'static [&'static str] {
        &[AGGREGATE_TYPE]
    }

    fn changes(&self, event: &RecordedEvent) -> Result<Vec<Change>, HandlerError> {
        let env = &event.envelope;
        let (id, v) = (env.aggregate_id.as_str(), env.version);
        let model = |set: Vec<(&str, String)>| Change::model("user", id, v, set);
        let index = Change::Index;
        Ok(match typed::<UserEvent>(event)? {
            UserEvent::Registered(e) => {
                let lower = e.username.to_ascii_lowercase();
                let mut out = vec![
                    model(vec![
                        ("user_id", id.to_owned()),
                        ("display_name", if e.display_name.is_empty() { e.username.clone() } else { e.display_name }),
                        ("username", e.username),
                        ("email", e.email),
                        ("roles", e.roles.join(",")),
                        ("registered_at_ms", e.registered_at_ms.to_string()),
                        ("profile_version", v.to_string()),
                    ]),
                    index(IndexOp::HSet { key: USERNAME_INDEX.into(), field: lower.clone(), value: id.to_owned() }),
                    index(IndexOp::ZAdd { key: NAME_INDEX.into(), member: format!("{lower}\t{id}"), score: 0.0 }),
                    index(IndexOp::ZAdd {
                        key: REGISTERED_INDEX.into(),
                        member: id.to_owned(),
                        score: e.registered_at_ms as f64,
                    }),
                ];
                out.extend(e.roles.iter().map(|r| index(IndexOp::SAdd { key: role_index(r), member: id.to_owned() })));
                out
            }
            UserEvent::Authenticated(e) => vec![model(vec![
                ("last_login_ms", e.authenticated_at_ms.to_string()),
                ("consecutive_failures", "0".into()),
            ])],
            UserEvent::AuthenticationFailed(e) => {
                vec![model(vec![("consecutive_failures", e.consecutive_failures.to_string())])]
            }
            UserEvent::LockedOut(e) => vec![model(vec![
                ("locked_until_ms", e.locked_until_ms.to_string()),
                ("consecutive_failures", "0".into()),
            ])],
            UserEvent::Unlocked(_) => {
                vec![model(vec![("locked_until_ms", "0".into()), ("consecutive_failures", "0".into())])]
            }
            UserEvent::PasswordChanged(e) => vec![model(vec![("password_changed_at_ms", e.changed_at_ms.to_string())])],
            UserEvent::DisplayNameChanged(e) => {
                vec![model(vec![("display_name", e.display_name), ("profile_version", v.to_string())])]
            }
            UserEvent::RolesChanged(e) => {
                let mut out = vec![model(vec![("roles", e.roles.join(","))])];
                for role in ROLES {
                    let member = id.to_owned();
                    out.push(index(if e.roles.iter().any(|r| r == role) {
                        IndexOp::SAdd { key: role_index(role), member }
                    } else {
                        IndexOp::SRem { key: role_index(role), member }
                    }));
                }
                out
            }
        })
    }
}

/// The fields a user's reads show, in [`read`]'s order: the public
/// profile first (see the module's visibility), then the private fields.
const FIELDS: [&str; 10] = [
    "user_id",
    "username",
    "display_name",
    "registered_at_ms",
    "profile_version",
    "email",
    "roles",
    "_version",
    "last_login_ms",
    "locked_until_ms",
];
/// How many of [`FIELDS`] are public.
const PUBLIC: usize = 5;

/// Reads one user (None when not in the read model).
pub async fn get(view: &Namespace, user_id: &str) -> Result<Option<User>, redis::RedisError> {
    read(view, user_id, false).await
}

/// Reads one user's public profile (None when not in the read model):
/// what another player may see, and nothing more is read — the private
/// fields never leave Redis for such a query. Equal to
/// `get(..).map(public)`.
pub async fn get_public(view: &Namespace, user_id: &str) -> Result<Option<User>, redis::RedisError> {
    read(view, user_id, true).await
}

/// One `HMGET` of the fields shown (only the public ones for `public`):
/// no field names in the reply and no map built from it.
async fn read(view: &Namespace, user_id: &str, public: bool) -> Result<Option<User>, redis::RedisError> {
    let mut conn = view.conn.clone();
    let values = read_cmd(view, user_id, public).query_async(&mut conn).await?;
    Ok(profile(values, public))
}

/// The `HMGET` of [`read`].
fn read_cmd(view: &Namespace, user_id: &str, public: bool) -> redis::Cmd {
    let fields = if public { &FIELDS[..PUBLIC] } else { &FIELDS[..] };
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(view.key(&key(user_id))).arg(fields);
    cmd
}

/// The user of [`read_cmd`]'s reply (None when not in the read model).
fn profile(values: Vec<Option<String>>, public: bool) -> Option<User> {
    let mut values = values.into_iter();
    let mut next = || values.next().flatten().unwrap_or_default();
    let user_id = next();
    if user_id.is_empty() {
        return None;
    }
    let (username, display_name) = (next(), next());
    let registered_at_ms = next().parse().unwrap_or_default();
    let profile_version = next().parse().unwrap_or_default();
    if public {
        return Some(public_profile(user_id, username, display_name, registered_at_ms, profile_version));
    }
    let (email, roles) = (next(), next());
    let version = next().parse().unwrap_or_default();
    let last_login_ms = next().parse().unwrap_or_default();
    let locked_until_ms = next().parse().unwrap_or_default();
    Some(User {
        user_id,
        username,
        email,
        roles: roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect(),
        status: if locked_until_ms > now_ms() { "locked".into() } else { "active".into() },
        registered_at_ms,
        version,
        last_login_ms,
        locked_until_ms,
        display_name,
        profile_version,
    })
}

/// A public profile of these fields.
fn public_profile(
    user_id: String,
    username: String,
    display_name: String,
    registered_at_ms: i64,
    profile_version: u64,
) -> User {
    User {
        user_id,
        username,
        display_name,
        registered_at_ms,
        // Not the aggregate's version: it moves on private events.
        version: profile_version,
        profile_version,
        ..Default::default()
    }
}

/// The public profile of a user read in full: what other players may see
/// (what [`get_public`] reads).
pub fn public(user: User) -> User {
    public_profile(user.user_id, user.username, user.display_name, user.registered_at_ms, user.profile_version)
}

/// The id of the user with this username, case-insensitively.
pub async fn id_by_username(view: &Namespace, username: &str) -> Result<Option<String>, redis::RedisError> {
    let mut conn = view.conn.clone();
    redis::cmd("HGET").arg(view.key(USERNAME_INDEX)).arg(username.to_ascii_lowercase()).query_async(&mut conn).await
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
    /// Whose profiles the page shows in full.
    pub full: Full,
}

/// Whose profiles a list shows in full; every other profile is read as its
/// public fields alone. The default shows none in full.
#[derive(Debug, Clone, PartialEq)]
pub enum Full {
    /// Every profile (an admin's list).
    All,
    /// This user's own profile alone (a player's list).
    Own(String),
}

impl Default for Full {
    fn default() -> Self {
        Full::Own(String::new())
    }
}

/// Users matching `q`, in its order, one page; returns the page and the
/// position to continue from (None at the end). Iterates the sort index in
/// chunks and filters with the role sets / usernames: at most `SCAN_LIMIT`
/// index entries per call (a partial page then carries a token).
pub async fn list(view: &Namespace, q: &ListQuery) -> Result<(Vec<User>, Option<u64>), redis::RedisError> {
    const CHUNK: usize = 200;
    const SCAN_LIMIT: usize = 2_000;
    let mut conn = view.conn.clone();
    let (mut pos, mut scanned, mut page) = (q.offset, 0usize, Vec::new());
    let prefix = q.prefix.as_ref().map(|p| p.to_ascii_lowercase());
    loop {
        let ids: Vec<String> = if q.by_name {
            let (min, max) = match &prefix {
                Some(p) => (format!("[{p}"), format!("[{p}\u{7f}")),
                None => ("-".to_owned(), "+".to_owned()),
            };
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(view.key(NAME_INDEX));
            if q.descending {
                cmd.arg(&max).arg(&min).arg("BYLEX").arg("REV");
            } else {
                cmd.arg(&min).arg(&max).arg("BYLEX");
            }
            let members: Vec<String> = cmd.arg("LIMIT").arg(pos).arg(CHUNK).query_async(&mut conn).await?;
            members.into_iter().filter_map(|m| m.split_once('\t').map(|(_, id)| id.to_owned())).collect()
        } else {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(view.key(REGISTERED_INDEX)).arg(pos).arg(pos + CHUNK as u64 - 1);
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
                redis::cmd("SMISMEMBER").arg(view.key(&role_index(role))).arg(&ids).query_async(&mut conn).await?;
            keep.iter_mut().zip(member).for_each(|(k, m)| *k &= m);
        }
        if let (Some(p), false) = (&prefix, q.by_name) {
            let names: Vec<Option<String>> = view
                .each(
                    ids.iter()
                        .map(|id| {
                            let mut cmd = redis::cmd("HGET");
                            cmd.arg(view.key(&key(id))).arg("username");
                            cmd
                        })
                        .collect(),
                )
                .await?;
            keep.iter_mut()
                .zip(names)
                .for_each(|(k, n)| *k &= n.is_some_and(|n| n.to_ascii_lowercase().starts_with(p.as_str())));
        }
        let got = ids.len();
        // The kept users with the position after each, read at once as
        // many as the page still needs (fewer when some have gone).
        let kept: Vec<(u64, String)> =
            (pos + 1..).zip(ids).zip(keep).filter_map(|(entry, ok)| ok.then_some(entry)).collect();
        let mut rest = &kept[..];
        while !rest.is_empty() {
            // A page size of 0 (no query sends one) has no limit.
            let need = q.page_size.checked_sub(page.len()).filter(|n| *n > 0).unwrap_or(rest.len());
            let (now, later) = rest.split_at(need.min(rest.len()));
            rest = later;
            let shown: Vec<bool> = now
                .iter()
                .map(|(_, id)| match &q.full {
                    Full::All => true,
                    Full::Own(me) => me == id,
                })
                .collect();
            let replies: Vec<Vec<Option<String>>> =
                view.each(now.iter().zip(&shown).map(|((_, id), full)| read_cmd(view, id, !full)).collect()).await?;
            for (((after, _), full), values) in now.iter().zip(&shown).zip(replies) {
                if let Some(user) = profile(values, !full) {
                    page.push(user);
                    if page.len() == q.page_size {
                        return Ok((page, Some(*after)));
                    }
                }
            }
        }
        pos += got as u64;
        scanned += got;
        if got < CHUNK {
            return Ok((page, None));
        }
        if scanned >= SCAN_LIMIT {
            return Ok((page, Some(pos)));
        }
    }
}
