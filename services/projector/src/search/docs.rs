//! What the search indexes hold, folded from events — pure, no tantivy: a
//! player (from the Player events) and a game (from the GameSession
//! events), each kept whole as JSON in its document so an update is a
//! read-modify-write of the document alone. Only public fields: no invite
//! code, lockout, ticket or queue state ever enters the index.

use std::collections::BTreeMap;

use allies_contracts::timesquare::events::{GameEvent, PlayerEvent};
use allies_contracts::timesquare::integration::{SEARCH_TOPIC, SEARCHABLE};
use allies_store::RecordedEvent;
use allies_store::subscriber::HandlerError;
use serde::{Deserialize, Serialize};

use crate::registry::typed;

/// The two kinds of document, each in its own index fed by one aggregate type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Players,
    Games,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Players, Kind::Games];

    /// The aggregate type whose partition logs feed it.
    pub fn source(self) -> &'static str {
        match self {
            Self::Players => "player",
            Self::Games => "game_session",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Players => "players",
            Self::Games => "games",
        }
    }

    /// The topic its source publishes the events it folds on, when it
    /// follows one (its normal-priority stream of every partition) instead
    /// of the partition logs: a game's searchable events are a few of its
    /// hundreds (its towers', its enemies'), and every projector replica
    /// reads what its index follows. The logs are still read once, up to
    /// where they ended, by an index that began before the topic (see
    /// `search::Search::spawn`).
    pub fn topic(self) -> Option<&'static str> {
        match self {
            Self::Players => None,
            Self::Games => Some(SEARCH_TOPIC),
        }
    }

    /// Whether an event of `event_type` can change a document of this
    /// kind. The folds below change nothing for any other type, whatever
    /// its payload, so a tail hands such an entry on unread: only its
    /// position moves (most of a game's events are its towers').
    pub fn can_change(self, event_type: &str) -> bool {
        match self {
            Self::Players => matches!(event_type, "PlayerRegistered" | "PlayerProfileUpdated" | "PlayerGameRecorded"),
            Self::Games => SEARCHABLE.contains(&event_type),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlayerDoc {
    pub username: String,
    pub display_name: String,
    pub rating: i32,
    pub games_played: u32,
    pub wins: u32,
    /// Games recorded per map (the favourite is the most played).
    pub maps: BTreeMap<String, u32>,
    /// The Player aggregate's version this reflects.
    pub version: u64,
}

impl PlayerDoc {
    /// The map played most ("" before the first game; ties: the first by name).
    pub fn favourite_map(&self) -> String {
        let mut best: Option<(&String, u32)> = None;
        for (map, n) in &self.maps {
            if best.is_none_or(|(_, b)| *n > b) {
                best = Some((map, *n));
            }
        }
        best.map(|(m, _)| m.clone()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GameDoc {
    pub map: String,
    pub difficulty: String,
    pub private: bool,
    /// lobby | building | in_wave | ended
    pub status: String,
    pub outcome: String,
    /// (user id, display name in this game), in join order; players who left
    /// the lobby are gone, those who left a started game stay.
    pub players: Vec<(String, String)>,
    pub created_at_ms: i64,
    pub ended_at_ms: i64,
    pub waves_cleared: u32,
    pub score: i64,
    pub version: u64,
}

impl GameDoc {
    /// lobby | active | ended: what a search filters on (active: to spectate).
    pub fn status_group(&self) -> &'static str {
        match self.status.as_str() {
            "lobby" => "lobby",
            "ended" => "ended",
            _ => "active",
        }
    }
}

/// Rating bands of 200 points: "1400-1599".
pub fn rating_band(rating: i32) -> String {
    let low = rating.div_euclid(200) * 200;
    format!("{low}-{}", low + 199)
}

/// Games played, in bands: "0", "1-9", "10-49", "50-99", "100+".
pub fn games_band(games: u32) -> &'static str {
    match games {
        0 => "0",
        1..=9 => "1-9",
        10..=49 => "10-49",
        50..=99 => "50-99",
        _ => "100+",
    }
}

/// Folds a Player event into `doc` (created empty for a new player).
/// Returns whether the document changed; an event at or below the version
/// the document reflects changes nothing (idempotent on redelivery).
pub fn apply_player(doc: &mut PlayerDoc, event: &RecordedEvent) -> Result<bool, HandlerError> {
    let version = event.envelope.version;
    if version <= doc.version || !Kind::Players.can_change(&event.envelope.event_type) {
        return Ok(false);
    }
    let changed = match typed::<PlayerEvent>(event)? {
        PlayerEvent::Registered(e) => {
            doc.username = e.username;
            doc.display_name = e.display_name;
            doc.rating = e.rating;
            true
        }
        PlayerEvent::ProfileUpdated(e) => {
            doc.username = e.username;
            doc.display_name = e.display_name;
            true
        }
        PlayerEvent::GameRecorded(e) => {
            doc.rating = e.rating_after;
            doc.games_played = e.games_played;
            doc.wins = e.wins;
            *doc.maps.entry(e.map).or_default() += 1;
            true
        }
        _ => false,
    };
    doc.version = version;
    Ok(changed)
}

/// Folds a GameSession event into `doc`, as [`apply_player`].
/// The versions of a game's events on the search topic are their
/// command's (two events of one command share one), so an event of the
/// document's own version is folded again, not skipped: every fold here
/// sets what it shows (none counts), so folding an event twice in order is
/// harmless, and a skipped one would be lost.
pub fn apply_game(doc: &mut GameDoc, event: &RecordedEvent) -> Result<bool, HandlerError> {
    let version = event.envelope.version;
    if version < doc.version || !Kind::Games.can_change(&event.envelope.event_type) {
        return Ok(false);
    }
    let changed = match typed::<GameEvent>(event)? {
        GameEvent::Created(e) => {
            doc.map = e.map;
            doc.difficulty = e.difficulty;
            doc.private = e.private;
            doc.status = "lobby".into();
            doc.created_at_ms = e.created_at_ms;
            true
        }
        GameEvent::PlayerJoined(e) => {
            doc.players.retain(|(id, _)| *id != e.user_id);
            doc.players.push((e.user_id, e.display_name));
            true
        }
        GameEvent::PlayerLeft(e) => {
            if e.in_lobby {
                doc.players.retain(|(id, _)| *id != e.user_id);
            }
            e.in_lobby
        }
        GameEvent::Started(_) => {
            doc.status = "building".into();
            true
        }
        GameEvent::WaveStarted(_) => {
            doc.status = "in_wave".into();
            true
        }
        GameEvent::WaveCompleted(e) => {
            doc.status = "building".into();
            doc.waves_cleared = e.waves_cleared;
            doc.score = e.score;
            true
        }
        GameEvent::Ended(e) => {
            doc.status = "ended".into();
            doc.outcome = e.outcome;
            doc.score = e.score;
            doc.waves_cleared = e.waves_cleared;
            doc.ended_at_ms = e.ended_at_ms;
            true
        }
        _ => false,
    };
    doc.version = version;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_and_the_favourite_map() {
        assert_eq!(rating_band(1500), "1400-1599");
        assert_eq!(rating_band(1400), "1400-1599");
        assert_eq!(rating_band(1399), "1200-1399");
        assert_eq!(rating_band(-5), "-200--1");
        assert_eq!((games_band(0), games_band(9), games_band(10), games_band(100)), ("0", "1-9", "10-49", "100+"));
        let mut p = PlayerDoc::default();
        assert_eq!(p.favourite_map(), "");
        p.maps.insert("meadow".into(), 2);
        p.maps.insert("canyon".into(), 2);
        p.maps.insert("delta".into(), 1);
        assert_eq!(p.favourite_map(), "canyon", "a tie goes to the first by name");
        p.maps.insert("meadow".into(), 3);
        assert_eq!(p.favourite_map(), "meadow");
    }

    fn recorded(aggregate_type: &str, version: u64, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            envelope: allies_core::EventEnvelope {
                event_id: uuid::Uuid::now_v7(),
                aggregate_type: aggregate_type.into(),
                aggregate_id: "a1".into(),
                version,
                event_type: event_type.into(),
                schema_version: 1,
                metadata: allies_core::Metadata {
                    correlation_id: uuid::Uuid::now_v7(),
                    causation_id: uuid::Uuid::now_v7(),
                    user_id: None,
                    traceparent: None,
                },
                recorded_at_ms: 1,
                payload: (),
            },
            content_type: allies_store::CONTENT_TYPE_JSON.into(),
            data: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_kind_folds_only_the_event_types_it_names_and_every_other_one_leaves_the_document_as_it_was() {
        // Every name is one of the aggregate's event types (a misspelt one
        // would never be folded): counted against the codec's own list, and
        // each decodes.
        let folded = |kind: Kind, all: &[&str]| all.iter().filter(|t| kind.can_change(t)).count();
        assert_eq!(folded(Kind::Players, PlayerEvent::EVENT_TYPES), 3);
        assert_eq!(folded(Kind::Games, GameEvent::EVENT_TYPES), 7);
        for t in PlayerEvent::EVENT_TYPES.iter().filter(|t| Kind::Players.can_change(t)) {
            assert!(apply_player(&mut PlayerDoc::default(), &recorded("player", 1, t)).is_ok(), "{t}");
        }
        for t in GameEvent::EVENT_TYPES.iter().filter(|t| Kind::Games.can_change(t)) {
            assert!(apply_game(&mut GameDoc::default(), &recorded("game_session", 1, t)).is_ok(), "{t}");
        }
        // The rest — a game's towers, a player's queue — change nothing, not
        // even the version, whatever they carry (here: a payload that does
        // not decode), just as when a tail passes them on unread.
        let game = GameDoc { map: "canyon".into(), status: "building".into(), version: 3, ..GameDoc::default() };
        for t in GameEvent::EVENT_TYPES.iter().filter(|t| !Kind::Games.can_change(t)) {
            let mut doc = game.clone();
            let mut e = recorded("game_session", 9, t);
            e.data = b"not json".to_vec();
            assert_eq!(apply_game(&mut doc, &e).ok(), Some(false), "{t}");
            assert_eq!(doc, game, "{t}");
        }
        assert!(!Kind::Games.can_change("TowerPlaced") && !Kind::Players.can_change("PlayerQueued"));
        let player = PlayerDoc { username: "eve".into(), version: 2, ..PlayerDoc::default() };
        for t in PlayerEvent::EVENT_TYPES.iter().filter(|t| !Kind::Players.can_change(t)) {
            let mut doc = player.clone();
            assert_eq!(apply_player(&mut doc, &recorded("player", 5, t)).ok(), Some(false), "{t}");
            assert_eq!(doc, player, "{t}");
        }
    }
}
