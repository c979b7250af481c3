//! The session read model: `session:<id>` (hash; never a refresh token or
//! its hash) and each user's sessions `user:<user id>:sessions` (sorted set
//! by start time), built from the Session aggregate's events.
//!
//! Visibility: private — a session is seen by its user and by admins.

use allies_contracts::guardian::events::SessionEvent;
use allies_contracts::projector::v1::Session;
use allies_store::RecordedEvent;
use allies_store::subscriber::HandlerError;

use crate::readmodel::{Fields, Namespace};
use crate::registry::{Change, IndexOp, Projection, typed};

pub const NAME: &str = "rm.session";
pub const AGGREGATE_TYPE: &str = "session";

fn key(session_id: &str) -> String {
    format!("session:{session_id}")
}

fn user_sessions(user_id: &str) -> String {
    format!("user:{user_id}:sessions")
}

pub struct Sessions;

impl Projection for Sessions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn sources(&self) -> &'static [&'static str] {
        &[AGGREGATE_TYPE]
    }

    fn changes(&self, event: &RecordedEvent) -> Result<Vec<Change>, HandlerError> {
        let env = &event.envelope;
        let (id, v) = (env.aggregate_id.as_str(), env.version);
        let model = |set: Vec<(&str, String)>| Change::model("session", id, v, set);
        Ok(match typed::<SessionEvent>(event)? {
            SessionEvent::Started(e) => vec![
                model(vec![
                    ("session_id", id.to_owned()),
                    ("user_id", e.user_id.clone()),
                    ("status", "active".into()),
                    ("started_at_ms", e.started_at_ms.to_string()),
                    ("expires_at_ms", e.expires_at_ms.to_string()),
                    ("refresh_count", "0".into()),
                ]),
                Change::Index(IndexOp::ZAdd {
                    key: user_sessions(&e.user_id),
                    member: id.to_owned(),
                    score: e.started_at_ms as f64,
                }),
            ],
            SessionEvent::Refreshed(e) => vec![model(vec![
                ("last_refreshed_at_ms", e.refreshed_at_ms.to_string()),
                ("expires_at_ms", e.expires_at_ms.to_string()),
                // Every event after the start is one refresh until the session ends.
                ("refresh_count", (v - 1).to_string()),
            ])],
            SessionEvent::RefreshTokenReused(e) => {
                vec![model(vec![("status", "revoked".into()), ("ended_at_ms", e.detected_at_ms.to_string())])]
            }
            SessionEvent::LoggedOut(e) => {
                vec![model(vec![("status", "logged_out".into()), ("ended_at_ms", e.logged_out_at_ms.to_string())])]
            }
        })
    }
}

pub async fn get(view: &Namespace, session_id: &str) -> Result<Option<Session>, redis::RedisError> {
    let Some(m) = view.model(&key(session_id)).await? else { return Ok(None) };
    if !m.contains_key("session_id") {
        return Ok(None);
    }
    Ok(Some(Session {
        session_id: m.text("session_id"),
        user_id: m.text("user_id"),
        status: m.text("status"),
        started_at_ms: m.int("started_at_ms"),
        expires_at_ms: m.int("expires_at_ms"),
        last_refreshed_at_ms: m.int("last_refreshed_at_ms"),
        ended_at_ms: m.int("ended_at_ms"),
        refresh_count: m.uint("refresh_count"),
        version: m.uint("_version"),
    }))
}

/// A user's sessions, newest first.
pub async fn list_for_user(view: &Namespace, user_id: &str, limit: usize) -> Result<Vec<Session>, redis::RedisError> {
    let mut conn = view.conn.clone();
    let ids: Vec<String> = redis::cmd("ZREVRANGE")
        .arg(view.key(&user_sessions(user_id)))
        .arg(0)
        .arg(limit.saturating_sub(1))
        .query_async(&mut conn)
        .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(s) = get(view, &id).await? {
            out.push(s);
        }
    }
    Ok(out)
}
