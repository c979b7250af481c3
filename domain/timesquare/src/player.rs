//! The Player aggregate (`player`, id = the user id): a user as the game
//! knows them — profile, rating, statistics, and where they are (a ticket, a
//! match, a game). Created from guardian's `UserRegistered` integration
//! event; a user who acts before it arrives is registered by that first
//! action and the profile follows when the event does.
//!
//! The matchmaking invariants live here, on one stream per player, so they
//! hold across replicas: one ticket at a time, one match at a time, not
//! while in a game, not while locked out.

use std::collections::BTreeMap;

use allies_contracts::timesquare::events::PlayerEvent;
use allies_contracts::timesquare::events::v1::*;
use allies_core::{Aggregate, ErrorCode, RuleViolation, ServiceError};
use serde::{Deserialize, Serialize};

use crate::rating;

/// How many recorded games a player remembers (a replayed GameEnded for one
/// of them is recognised and recorded once).
pub const RECENT: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Player {
    pub user_id: String,
    pub username: String,
    pub display_name: String,
    pub registered_at_ms: i64,
    pub source: String,
    pub rating: i32,
    pub games_played: u32,
    pub rated_games: u32,
    pub wins: u32,
    /// Best waves cleared per `map/difficulty`.
    pub best: BTreeMap<String, u32>,
    pub locked_until_ms: i64,
    pub ticket: Option<String>,
    pub match_id: Option<String>,
    pub session: Option<String>,
    /// The last recorded games' session ids, newest last.
    pub recent: Vec<String>,
    /// The ISO week of the last recorded game and the totals in it.
    #[serde(default)]
    pub week: String,
    #[serde(default)]
    pub week_score: i64,
    #[serde(default)]
    pub week_wins: u32,
}

impl allies_core::Snapshot for Player {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

/// A game's result for one player (from the `GameEnded` integration event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameResult {
    pub session_id: String,
    pub match_id: String,
    pub map: String,
    pub difficulty: String,
    pub outcome: String,
    pub waves_cleared: u32,
    pub total_waves: u32,
    pub score: i64,
    pub kills: u32,
    /// 0: it ended before it started (nothing to rate or count).
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayerCommand {
    /// From `UserRegistered` (`source` "guardian") or a first action
    /// ("first_action", empty names). Registering again fills a missing profile.
    Register {
        user_id: String,
        username: String,
        display_name: String,
        registered_at_ms: i64,
        source: String,
    },
    UpdateProfile {
        display_name: String,
    },
    Lock {
        until_ms: i64,
        at_ms: i64,
    },
    Unlock {
        at_ms: i64,
    },
    Queue {
        ticket_id: String,
        now_ms: i64,
    },
    Dequeue {
        ticket_id: String,
        reason: String,
        now_ms: i64,
    },
    EnterMatch {
        match_id: String,
        now_ms: i64,
    },
    /// `session_id`: the match became this game (the player is in it now).
    LeaveMatch {
        match_id: String,
        reason: String,
        session_id: Option<String>,
        now_ms: i64,
    },
    EnterGame {
        session_id: String,
        now_ms: i64,
    },
    LeaveGame {
        session_id: String,
        now_ms: i64,
    },
    RecordGame {
        result: GameResult,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayerError {
    #[error("no such player")]
    NotRegistered,
    #[error("the account is locked out until {0} (unix ms)")]
    LockedOut(i64),
    #[error("already queued with ticket {0}")]
    AlreadyQueued(String),
    #[error("already in match {0}")]
    InAMatch(String),
    #[error("already in game {0}")]
    InAGame(String),
}

impl PlayerError {
    fn rule_name(&self) -> &'static str {
        match self {
            Self::NotRegistered => "NO_SUCH_PLAYER",
            Self::LockedOut(_) => "LOCKED_OUT",
            Self::AlreadyQueued(_) => "ALREADY_QUEUED",
            Self::InAMatch(_) => "IN_A_MATCH",
            Self::InAGame(_) => "IN_A_GAME",
        }
    }
}

impl ServiceError for PlayerError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotRegistered => ErrorCode::NotFound,
            _ => ErrorCode::FailedPrecondition,
        }
    }
    fn rule(&self) -> Option<RuleViolation> {
        Some(RuleViolation { rule: self.rule_name().into(), subject: "player".into(), description: self.to_string() })
    }
}

impl Player {
    pub fn exists(&self) -> bool {
        !self.user_id.is_empty()
    }

    pub fn is_locked_at(&self, now_ms: i64) -> bool {
        now_ms < self.locked_until_ms
    }

    fn best_key(map: &str, difficulty: &str) -> String {
        format!("{map}/{difficulty}")
    }

    /// Whether the player may join a ticket or a match now.
    fn free(&self, now_ms: i64, for_match: Option<&str>) -> Result<(), PlayerError> {
        if self.is_locked_at(now_ms) {
            return Err(PlayerError::LockedOut(self.locked_until_ms));
        }
        match (&self.match_id, for_match) {
            (Some(m), Some(f)) if m == f => {}
            (Some(m), _) => return Err(PlayerError::InAMatch(m.clone())),
            _ => {}
        }
        if let Some(s) = &self.session {
            return Err(PlayerError::InAGame(s.clone()));
        }
        Ok(())
    }

    fn record(&self, r: &GameResult) -> Vec<PlayerEvent> {
        if self.recent.contains(&r.session_id) {
            return Vec::new();
        }
        let counts = r.started_at_ms > 0;
        let rated = counts && rating::rates(&r.outcome);
        let opponent = rating::of_difficulty(&r.difficulty);
        let after = if rated {
            rating::update(
                self.rating,
                opponent,
                rating::score_pm(&r.outcome, r.waves_cleared, r.total_waves),
                self.rated_games,
            )
        } else {
            self.rating
        };
        let key = Self::best_key(&r.map, &r.difficulty);
        let week = allies_core::calendar::iso_week(r.ended_at_ms);
        let same_week = week == self.week;
        let won = counts && r.outcome == "victory";
        let week_score = if same_week { self.week_score } else { 0 } + if counts { r.score } else { 0 };
        let week_wins = if same_week { self.week_wins } else { 0 } + u32::from(won);
        let best = self.best.get(&key).copied().unwrap_or(0).max(if counts { r.waves_cleared } else { 0 });
        let mut out = vec![PlayerEvent::GameRecorded(PlayerGameRecorded {
            session_id: r.session_id.clone(),
            map: r.map.clone(),
            difficulty: r.difficulty.clone(),
            outcome: r.outcome.clone(),
            waves_cleared: r.waves_cleared,
            total_waves: r.total_waves,
            score: r.score,
            kills: r.kills,
            ended_at_ms: r.ended_at_ms,
            rating_before: self.rating,
            rating_after: after,
            opponent_rating: if rated { opponent } else { 0 },
            games_played: self.games_played + u32::from(counts),
            wins: self.wins + u32::from(counts && r.outcome == "victory"),
            best: Some(BestWave { map: r.map.clone(), difficulty: r.difficulty.clone(), waves: best }),
            match_id: r.match_id.clone(),
            week,
            week_score,
            week_wins,
        })];
        // The game is over: the player is free again (said as its own event,
        // so every reader sees it without knowing the rule).
        if self.session.as_ref() == Some(&r.session_id) {
            out.push(PlayerEvent::LeftGame(PlayerLeftGame { session_id: r.session_id.clone(), at_ms: r.ended_at_ms }));
        }
        out
    }
}

impl Aggregate for Player {
    const TYPE: &'static str = "player";
    type Command = PlayerCommand;
    type Event = PlayerEvent;
    type Error = PlayerError;

    fn decide(&self, command: &PlayerCommand) -> Result<Vec<PlayerEvent>, PlayerError> {
        use PlayerCommand::*;
        if let Register { user_id, username, display_name, registered_at_ms, source } = command {
            if !self.exists() {
                return Ok(vec![PlayerEvent::Registered(PlayerRegistered {
                    user_id: user_id.clone(),
                    username: username.clone(),
                    display_name: display_name.clone(),
                    registered_at_ms: *registered_at_ms,
                    source: source.clone(),
                    rating: rating::START,
                })]);
            }
            // Registered by a first action: the profile arrives now.
            if !username.is_empty() && (self.username != *username || self.display_name.is_empty()) {
                let name = if self.display_name.is_empty() { display_name.clone() } else { self.display_name.clone() };
                return Ok(vec![PlayerEvent::ProfileUpdated(PlayerProfileUpdated {
                    username: username.clone(),
                    display_name: name,
                })]);
            }
            return Ok(Vec::new());
        }
        if !self.exists() {
            return Err(PlayerError::NotRegistered);
        }
        Ok(match command {
            Register { .. } => unreachable!("decided above"),
            UpdateProfile { display_name } if *display_name != self.display_name => {
                vec![PlayerEvent::ProfileUpdated(PlayerProfileUpdated {
                    username: self.username.clone(),
                    display_name: display_name.clone(),
                })]
            }
            UpdateProfile { .. } => Vec::new(),
            Lock { until_ms, at_ms } if *until_ms != self.locked_until_ms => {
                vec![PlayerEvent::Locked(PlayerLocked { until_ms: *until_ms, at_ms: *at_ms })]
            }
            Lock { .. } => Vec::new(),
            Unlock { at_ms } if self.locked_until_ms != 0 => {
                vec![PlayerEvent::Unlocked(PlayerUnlocked { at_ms: *at_ms })]
            }
            Unlock { .. } => Vec::new(),
            Queue { ticket_id, now_ms } => {
                if self.ticket.as_ref() == Some(ticket_id) {
                    return Ok(Vec::new());
                }
                if let Some(t) = &self.ticket {
                    return Err(PlayerError::AlreadyQueued(t.clone()));
                }
                self.free(*now_ms, None)?;
                vec![PlayerEvent::Queued(PlayerQueued { ticket_id: ticket_id.clone(), at_ms: *now_ms })]
            }
            Dequeue { ticket_id, reason, now_ms } if self.ticket.as_ref() == Some(ticket_id) => {
                vec![PlayerEvent::Dequeued(PlayerDequeued {
                    ticket_id: ticket_id.clone(),
                    reason: reason.clone(),
                    at_ms: *now_ms,
                })]
            }
            Dequeue { .. } => Vec::new(),
            EnterMatch { match_id, now_ms } => {
                if self.match_id.as_ref() == Some(match_id) {
                    return Ok(Vec::new());
                }
                self.free(*now_ms, Some(match_id))?;
                vec![PlayerEvent::EnteredMatch(PlayerEnteredMatch { match_id: match_id.clone(), at_ms: *now_ms })]
            }
            LeaveMatch { match_id, reason, session_id, now_ms } if self.match_id.as_ref() == Some(match_id) => {
                let mut out = vec![PlayerEvent::LeftMatch(PlayerLeftMatch {
                    match_id: match_id.clone(),
                    reason: reason.clone(),
                    at_ms: *now_ms,
                })];
                if let Some(s) = session_id {
                    out.push(PlayerEvent::EnteredGame(PlayerEnteredGame { session_id: s.clone(), at_ms: *now_ms }));
                }
                out
            }
            LeaveMatch { .. } => Vec::new(),
            EnterGame { session_id, now_ms } if self.session.as_ref() != Some(session_id) => {
                vec![PlayerEvent::EnteredGame(PlayerEnteredGame { session_id: session_id.clone(), at_ms: *now_ms })]
            }
            EnterGame { .. } => Vec::new(),
            LeaveGame { session_id, now_ms } if self.session.as_ref() == Some(session_id) => {
                vec![PlayerEvent::LeftGame(PlayerLeftGame { session_id: session_id.clone(), at_ms: *now_ms })]
            }
            LeaveGame { .. } => Vec::new(),
            RecordGame { result } => self.record(result),
        })
    }

    fn evolve(&mut self, event: &PlayerEvent) {
        match event {
            PlayerEvent::Registered(e) => {
                self.user_id = e.user_id.clone();
                self.username = e.username.clone();
                self.display_name = e.display_name.clone();
                self.registered_at_ms = e.registered_at_ms;
                self.source = e.source.clone();
                self.rating = e.rating;
            }
            PlayerEvent::ProfileUpdated(e) => {
                self.username = e.username.clone();
                self.display_name = e.display_name.clone();
            }
            PlayerEvent::Locked(e) => self.locked_until_ms = e.until_ms,
            PlayerEvent::Unlocked(_) => self.locked_until_ms = 0,
            PlayerEvent::Queued(e) => self.ticket = Some(e.ticket_id.clone()),
            PlayerEvent::Dequeued(_) => self.ticket = None,
            PlayerEvent::EnteredMatch(e) => self.match_id = Some(e.match_id.clone()),
            PlayerEvent::LeftMatch(_) => self.match_id = None,
            PlayerEvent::EnteredGame(e) => self.session = Some(e.session_id.clone()),
            PlayerEvent::LeftGame(_) => self.session = None,
            PlayerEvent::GameRecorded(e) => {
                if self.session.as_ref() == Some(&e.session_id) {
                    self.session = None;
                }
                self.rating = e.rating_after;
                if e.opponent_rating != 0 {
                    self.rated_games += 1;
                }
                self.games_played = e.games_played;
                self.wins = e.wins;
                if let Some(b) = &e.best {
                    self.best.insert(Self::best_key(&b.map, &b.difficulty), b.waves);
                }
                self.week = e.week.clone();
                self.week_score = e.week_score;
                self.week_wins = e.week_wins;
                self.recent.push(e.session_id.clone());
                if self.recent.len() > RECENT {
                    self.recent.remove(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use allies_core::testing::given;

    use super::*;

    fn registered() -> Vec<PlayerEvent> {
        vec![PlayerEvent::Registered(PlayerRegistered {
            user_id: "u1".into(),
            username: "ann".into(),
            display_name: "Ann".into(),
            registered_at_ms: 1,
            source: "guardian".into(),
            rating: rating::START,
        })]
    }

    fn register(source: &str, username: &str) -> PlayerCommand {
        PlayerCommand::Register {
            user_id: "u1".into(),
            username: username.into(),
            display_name: username.into(),
            registered_at_ms: 1,
            source: source.into(),
        }
    }

    fn queue(t: &str) -> PlayerCommand {
        PlayerCommand::Queue { ticket_id: t.into(), now_ms: 10 }
    }

    fn result(session: &str, outcome: &str, waves: u32, started: i64) -> GameResult {
        GameResult {
            session_id: session.into(),
            match_id: String::new(),
            map: "meadow".into(),
            difficulty: "normal".into(),
            outcome: outcome.into(),
            waves_cleared: waves,
            total_waves: 20,
            score: 100,
            kills: 5,
            started_at_ms: started,
            ended_at_ms: 99,
        }
    }

    #[test]
    fn registration_is_idempotent_and_a_first_action_gets_its_profile_later() {
        given::<Player>(registered()).when(register("guardian", "ann")).then([]);
        let first = given::<Player>(vec![]).when(register("first_action", "")).then_ok();
        assert_eq!(first.len(), 1);
        let mut early = Player::default();
        for e in &first {
            early.evolve(e);
        }
        let later = early.decide(&register("guardian", "ann")).unwrap();
        assert!(
            matches!(&later[..], [PlayerEvent::ProfileUpdated(p)] if p.username == "ann" && p.display_name == "ann")
        );
        given::<Player>(vec![]).when(queue("t1")).then_err(PlayerError::NotRegistered);
    }

    #[test]
    fn one_ticket_one_match_no_game_not_locked() {
        let queued = {
            let mut h = registered();
            h.push(PlayerEvent::Queued(PlayerQueued { ticket_id: "t1".into(), at_ms: 5 }));
            h
        };
        given::<Player>(queued.clone()).when(queue("t2")).then_err(PlayerError::AlreadyQueued("t1".into()));
        given::<Player>(queued.clone()).when(queue("t1")).then([]);
        let mut locked = registered();
        locked.push(PlayerEvent::Locked(PlayerLocked { until_ms: 1_000, at_ms: 1 }));
        given::<Player>(locked.clone()).when(queue("t1")).then_err(PlayerError::LockedOut(1_000));
        given::<Player>(locked)
            .when(PlayerCommand::EnterMatch { match_id: "m1".into(), now_ms: 10 })
            .then_err(PlayerError::LockedOut(1_000));
        let mut in_match = queued.clone();
        in_match.push(PlayerEvent::EnteredMatch(PlayerEnteredMatch { match_id: "m1".into(), at_ms: 6 }));
        given::<Player>(in_match.clone())
            .when(PlayerCommand::EnterMatch { match_id: "m2".into(), now_ms: 10 })
            .then_err(PlayerError::InAMatch("m1".into()));
        given::<Player>(in_match.clone())
            .when(PlayerCommand::EnterMatch { match_id: "m1".into(), now_ms: 10 })
            .then([]);
        let mut in_game = registered();
        in_game.push(PlayerEvent::EnteredGame(PlayerEnteredGame { session_id: "g1".into(), at_ms: 6 }));
        given::<Player>(in_game).when(queue("t3")).then_err(PlayerError::InAGame("g1".into()));
        // Leaving a match that became a game puts the player in that game.
        let left = given::<Player>(in_match)
            .when(PlayerCommand::LeaveMatch {
                match_id: "m1".into(),
                reason: "ready".into(),
                session_id: Some("g9".into()),
                now_ms: 11,
            })
            .then_ok();
        assert_eq!(left.len(), 2);
    }

    #[test]
    fn a_game_is_recorded_once_with_its_rating_change_and_best_wave() {
        let mut h = registered();
        h.push(PlayerEvent::EnteredGame(PlayerEnteredGame { session_id: "g1".into(), at_ms: 6 }));
        let state = given::<Player>(h.clone())
            .when(PlayerCommand::RecordGame { result: result("g1", "victory", 20, 50) })
            .then_state();
        assert_eq!((state.rating, state.games_played, state.wins, state.session.clone()), (1520, 1, 1, None));
        assert_eq!(state.best["meadow/normal"], 20);
        // Leaving the finished game is an event of its own (read models see it).
        let events = given::<Player>(h.clone())
            .when(PlayerCommand::RecordGame { result: result("g1", "victory", 20, 50) })
            .then_ok();
        assert!(
            matches!(&events[..], [PlayerEvent::GameRecorded(_), PlayerEvent::LeftGame(l)] if l.session_id == "g1")
        );
        // The same game again changes nothing.
        let mut s = state.clone();
        assert!(s.decide(&PlayerCommand::RecordGame { result: result("g1", "victory", 20, 50) }).unwrap().is_empty());
        // A forfeit counts as a game but does not rate; a lobby abandoned before the start counts for nothing.
        for e in s.decide(&PlayerCommand::RecordGame { result: result("g2", "forfeit", 3, 60) }).unwrap() {
            s.evolve(&e);
        }
        assert_eq!((s.rating, s.games_played, s.best["meadow/normal"]), (1520, 2, 20));
        for e in s.decide(&PlayerCommand::RecordGame { result: result("g3", "abandoned", 0, 0) }).unwrap() {
            s.evolve(&e);
        }
        assert_eq!(s.games_played, 2);
    }
}
