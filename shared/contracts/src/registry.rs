//! Every event category (aggregate type) the contracts know, with how to
//! read its stored events as typed, upcast, secret-free proto3 JSON — for
//! the readers outside the owning context: the event subscription API, the
//! operator tool, dead-letter listings.

use allies_core::{DomainEvent, decode_stored};

use crate::guardian::events::{SessionEvent, UserEvent};
use crate::timesquare::events::{GameEvent, MatchEvent, PartyEvent, PlayerEvent, TicketEvent};

/// The categories with typed events.
pub const CATEGORIES: &[&str] =
    &["user", "session", "game_session", "player", "ticket", "match", "party", "configuration", "job"];

/// The integration topics: (publishing aggregate type, topic).
pub const TOPICS: &[(&str, &str)] =
    &[("user", "users"), ("game_session", "games"), ("game_session", "ts.waves"), ("game_session", "ts.search")];

/// A stored event of `category` as proto3 JSON, upcast to the current schema
/// (returned with it) and with every secret (password, refresh-token and
/// invite-code hashes) redacted. Unknown categories and event types are an error:
/// nothing unchecked leaves through this door.
pub fn public_json(
    category: &str,
    event_type: &str,
    schema_version: u32,
    content_type: &str,
    data: &[u8],
) -> Result<(serde_json::Value, u32), String> {
    fn show<E: DomainEvent>(
        e: E,
        redact: impl Fn(E) -> E,
        json: impl Fn(&E) -> serde_json::Value,
    ) -> (serde_json::Value, u32) {
        let v = e.schema_version();
        (json(&redact(e)), v)
    }
    let shown = match category {
        "user" => decode_stored::<UserEvent>(event_type, schema_version, content_type, data)
            .map(|e| show(e, UserEvent::redacted, UserEvent::to_json)),
        "session" => decode_stored::<SessionEvent>(event_type, schema_version, content_type, data)
            .map(|e| show(e, SessionEvent::redacted, SessionEvent::to_json)),
        "game_session" => decode_stored::<GameEvent>(event_type, schema_version, content_type, data)
            .map(|e| show(e, GameEvent::redacted, GameEvent::to_json)),
        "player" => decode_stored::<PlayerEvent>(event_type, schema_version, content_type, data)
            .map(|e| show(e, |e| e, PlayerEvent::to_json)),
        "ticket" => decode_stored::<TicketEvent>(event_type, schema_version, content_type, data)
            .map(|e| show(e, |e| e, TicketEvent::to_json)),
        "match" => decode_stored::<MatchEvent>(event_type, schema_version, content_type, data)
            .map(|e| show(e, |e| e, MatchEvent::to_json)),
        "party" => decode_stored::<PartyEvent>(event_type, schema_version, content_type, data)
            .map(|e| show(e, |e| e, PartyEvent::to_json)),
        "configuration" => {
            decode_stored::<crate::command::events::ConfigurationEvent>(event_type, schema_version, content_type, data)
                .map(|e| show(e, |e| e, crate::command::events::ConfigurationEvent::to_json))
        }
        "job" => decode_stored::<crate::command::events::JobEvent>(event_type, schema_version, content_type, data)
            .map(|e| show(e, |e| e, crate::command::events::JobEvent::to_json)),
        other => return Err(format!("no event contracts for category '{other}'")),
    };
    shown.map_err(|e| e.to_string())
}

/// What may be shown of a stored payload that could not be decoded (a dead
/// letter): JSON text with the values of secret-bearing fields masked, or a
/// note for binary payloads.
pub fn scrub_raw(content_type: &str, data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else {
        return format!("<{} bytes {content_type}>", data.len());
    };
    let mut out = text.to_owned();
    for field in SECRET_FIELDS {
        let needle = format!("\"{field}\"");
        let mut from = 0;
        while let Some(at) = out[from..].find(&needle).map(|i| i + from) {
            // Skip `"field"`, whitespace, ':' and whitespace; mask a string value.
            let mut i = at + needle.len();
            let bytes = out.as_bytes();
            while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b':') {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'"' {
                let end = out[i + 1..].find('"').map(|e| i + 1 + e).unwrap_or(out.len());
                out.replace_range(i..end.min(out.len()), &format!("\"{}", crate::guardian::events::REDACTED));
                from = i + 1;
            } else {
                from = at + needle.len();
            }
        }
    }
    out
}

/// proto3 JSON names of the fields that carry secrets, in any category.
pub const SECRET_FIELDS: &[&str] = &["passwordHash", "refreshTokenHash", "inviteCodeHash"];

/// The names the aggregates' states (snapshots, time travel) give secrets.
pub const SECRET_STATE_FIELDS: &[&str] =
    &["password_hash", "current_hash", "rotated_hashes", "invite_hash", "refresh_token_hash"];

/// Masks every secret in a JSON value (an event or an aggregate's state),
/// at any depth: what an operator's view may print.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_FIELDS.contains(&k.as_str()) || SECRET_STATE_FIELDS.contains(&k.as_str()) {
                    *v = serde_json::Value::String(crate::guardian::events::REDACTED.into());
                } else {
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn secrets_are_masked_at_any_depth_and_nothing_else() {
        let mut v = serde_json::json!({
            "profile": {"password_hash": "$argon2id$v=19$x", "username": "ann"},
            "sessions": [{"current_hash": "abc", "rotated_hashes": ["d", "e"]}],
            "inviteCodeHash": "f", "state_hash": "keep"
        });
        super::redact_json(&mut v);
        let text = v.to_string();
        for secret in ["argon2id", "abc", "\"d\"", "\"f\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("ann") && text.contains("keep"), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_leave_through_the_registry() {
        use crate::guardian::events::v1::{SessionStarted, UserRegistered};
        let e = UserEvent::Registered(UserRegistered {
            username: "a".into(),
            password_hash: "$argon2id$secret".into(),
            ..Default::default()
        });
        let (json, v) =
            public_json("user", "UserRegistered", 2, "application/json", &e.encode_json().unwrap()).unwrap();
        assert_eq!(v, 2);
        assert_eq!(json["passwordHash"], "[redacted]");
        assert_eq!(json["username"], "a");
        let s = SessionEvent::Started(SessionStarted { refresh_token_hash: "abc".into(), ..Default::default() });
        let proto = s.encode_protobuf().unwrap();
        let (json, _) = public_json("session", "SessionStarted", 1, "application/x-protobuf", &proto).unwrap();
        assert_eq!(json["refreshTokenHash"], "[redacted]");
        let g = GameEvent::Created(crate::timesquare::events::v1::GameSessionCreated {
            private: true,
            invite_code_hash: "9f86d081".into(),
            map: "meadow".into(),
            ..Default::default()
        });
        let (json, _) =
            public_json("game_session", "GameSessionCreated", 1, "application/json", &g.encode_json().unwrap())
                .unwrap();
        assert_eq!((json["inviteCodeHash"].as_str(), json["map"].as_str()), (Some("[redacted]"), Some("meadow")));
        assert!(public_json("nope", "X", 1, "application/json", b"{}").is_err());
        assert_eq!(
            scrub_raw("application/json", br#"{"passwordHash": "$argon2id$x", "n":1, "refreshTokenHash":"h"}"#),
            r#"{"passwordHash": "[redacted]", "n":1, "refreshTokenHash":"[redacted]"}"#
        );
        assert_eq!(scrub_raw("application/json", b"{broken"), "{broken");
        assert_eq!(scrub_raw("application/x-protobuf", &[0xff, 0xfe]), "<2 bytes application/x-protobuf>");
    }
}
