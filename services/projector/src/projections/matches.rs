//! The match read model: `match:<id>` (hash), from the Match (saga) events —
//! its players, where the saga is, why it was cancelled and which
//! compensation steps are done.
//!
//! Visibility: a match's players and admins.

use allies_contracts::projector::v1::{MatchPlayerEntry, MatchRecord};
use allies_contracts::timesquare::events::MatchEvent;
use allies_store::RecordedEvent;
use allies_store::subscriber::HandlerError;
use serde::{Deserialize, Serialize};

use crate::readmodel::{Fields, Namespace};
use crate::registry::{Change, Projection, typed};

pub const NAME: &str = "rm.match";
pub const AGGREGATE_TYPE: &str = "match";

fn key(match_id: &str) -> String {
    format!("match:{match_id}")
}

#[derive(Serialize, Deserialize)]
struct Member {
    user_id: String,
    rating: i32,
    ticket_id: String,
}

pub struct Matches;

impl Projection for Matches {
    fn name(&self) -> &'static str {
        NAME
    }

    fn sources(&self) -> &'static [&'static str] {
        &[AGGREGATE_TYPE]
    }

    fn changes(&self, event: &RecordedEvent) -> Result<Vec<Change>, HandlerError> {
        let env = &event.envelope;
        let (id, v) = (env.aggregate_id.as_str(), env.version);
        let model = |set: Vec<(String, String)>| Change::Model {
            key: key(id),
            id: id.to_owned(),
            version: v,
            set,
            del: Vec::new(),
        };
        let s = |f: &str, value: String| (f.to_owned(), value);
        Ok(vec![match typed::<MatchEvent>(event)? {
            MatchEvent::Formed(e) => {
                let members: Vec<Member> = e
                    .players
                    .iter()
                    .map(|p| Member { user_id: p.user_id.clone(), rating: p.rating, ticket_id: p.ticket_id.clone() })
                    .collect();
                model(vec![
                    s("match_id", id.to_owned()),
                    s("status", "forming".into()),
                    s("map", e.map),
                    s("difficulty", e.difficulty),
                    s("window", e.window.to_string()),
                    s("spread", e.spread.to_string()),
                    s("formed_at_ms", e.formed_at_ms.to_string()),
                    s("players", serde_json::to_string(&members).unwrap_or_default()),
                ])
            }
            MatchEvent::TicketsClaimed(_) => model(vec![s("status", "claimed".into())]),
            MatchEvent::SessionCreated(e) => {
                model(vec![s("status", "session_created".into()), s("session_id", e.session_id)])
            }
            MatchEvent::PlayerJoined(e) => model(vec![(format!("joined:{}", e.user_id), "1".into())]),
            MatchEvent::AwaitingConfirmation(e) => {
                model(vec![s("status", "awaiting_confirmation".into()), s("deadline_ms", e.deadline_ms.to_string())])
            }
            MatchEvent::PlayerConfirmed(e) => model(vec![(format!("confirmed:{}", e.user_id), "1".into())]),
            MatchEvent::Ready(e) => model(vec![s("status", "ready".into()), s("settled_at_ms", e.at_ms.to_string())]),
            MatchEvent::Cancelled(e) => model(vec![
                s("status", "cancelled".into()),
                s("reason", e.reason),
                s("culprits", e.culprits.join(",")),
                s("detail", e.detail),
                s("settled_at_ms", e.at_ms.to_string()),
            ]),
            MatchEvent::SessionClosed(e) => model(vec![(format!("done:session closed {}", e.session_id), "1".into())]),
            MatchEvent::TicketReleased(e) => model(vec![(format!("done:ticket released {}", e.ticket_id), "1".into())]),
            MatchEvent::TicketDropped(e) => model(vec![(format!("done:ticket dropped {}", e.ticket_id), "1".into())]),
            MatchEvent::PlayerReleased(e) => model(vec![(format!("done:player released {}", e.user_id), "1".into())]),
            MatchEvent::Compensated(_) => model(vec![s("status", "compensated".into())]),
        }])
    }
}

/// A match's record (None when there is no such match yet).
pub async fn get(view: &Namespace, match_id: &str) -> Result<Option<MatchRecord>, redis::RedisError> {
    let Some(m) = view.model(&key(match_id)).await? else { return Ok(None) };
    if !m.contains_key("match_id") {
        return Ok(None);
    }
    let members: Vec<Member> = serde_json::from_str(&m.text("players")).unwrap_or_default();
    let mut compensation: Vec<String> = m.keys().filter_map(|f| f.strip_prefix("done:").map(str::to_owned)).collect();
    compensation.sort();
    Ok(Some(MatchRecord {
        match_id: m.text("match_id"),
        status: m.text("status"),
        map: m.text("map"),
        difficulty: m.text("difficulty"),
        window: m.int("window") as i32,
        spread: m.int("spread") as i32,
        session_id: m.text("session_id"),
        reason: m.text("reason"),
        culprits: m.text("culprits").split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect(),
        players: members
            .into_iter()
            .map(|p| MatchPlayerEntry {
                joined: m.contains_key(&format!("joined:{}", p.user_id)),
                confirmed: m.contains_key(&format!("confirmed:{}", p.user_id)),
                user_id: p.user_id,
                rating: p.rating,
                ticket_id: p.ticket_id,
            })
            .collect(),
        formed_at_ms: m.int("formed_at_ms"),
        deadline_ms: m.int("deadline_ms"),
        settled_at_ms: m.int("settled_at_ms"),
        version: m.uint("_version"),
        compensation,
    }))
}
