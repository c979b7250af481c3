//! The GameSession aggregate: a lobby, then a co-op game of waves on one
//! map. Pure: time comes in as `now_ms` on each command, ids and seeds in
//! the commands, rules from the [`Book`](crate::book::Book) the service
//! gives the session (`GameSession::with_rules`), by the pinned version.
//!
//! Phases: `Lobby` → (StartGame) → `Building` ⇄ (StartWave / the wave's
//! end) `InWave` → `Ended`. Towers are placed, upgraded and sold in
//! `Building` and `InWave`. An input during a wave is decided against the
//! state simulated up to the tick it applies at, `k = max(tick(now) + LEAD,
//! last input's tick)`, and its event records `k`; the version check on the
//! session's stream orders inputs, and ticks never go backwards. Time is
//! settled first on every command: a wave whose end lies at or before `k`
//! completes (`WaveCompleted`, and `GameEnded` on the last wave or when lives
//! run out) before the command is decided on the state after it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use allies_contracts::timesquare::events::GameEvent;
use allies_contracts::timesquare::events::v1::*;
use allies_core::{Aggregate, ErrorCode, FieldViolation, RuleViolation, ServiceError};
use serde::{Deserialize, Serialize};

use crate::book::Book;
use crate::rules::{Rules, in_zone};
use crate::sim::{Battle, Path, Tower, WaveEnd, World, fnv, wave_seed};

/// Ticks between "now" and the tick an input during a wave applies at: the
/// room a command has to reach the store before its tick is simulated.
pub const LEAD_TICKS: u32 = 2;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    None,
    Lobby,
    Building,
    InWave,
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lobby => "lobby",
            Self::Building => "building",
            Self::InWave => "in_wave",
            Self::Ended => "ended",
        }
    }
}

/// Per-player statistics, from server state only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub kills: u32,
    pub gold_earned: i64,
    pub towers_built: u32,
    pub gold_spent: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub name: String,
    pub ready: bool,
    /// False once the player left (their towers stay on the board).
    pub present: bool,
    /// Seat and build zone, from the start of the game.
    pub seat: Option<usize>,
    pub stats: Stats,
}

/// The state of a game session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameSession {
    pub id: String,
    pub phase: Phase,
    pub host: String,
    pub map: String,
    pub difficulty: String,
    pub max_players: u32,
    pub private: bool,
    pub invite_hash: String,
    pub rules_version: u32,
    pub rules_hash: String,
    pub seed: u64,
    pub total_waves: u32,
    pub match_id: String,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    /// In join order.
    pub members: Vec<Member>,
    /// Gold per seat.
    pub gold: Vec<i64>,
    pub lives: i64,
    /// The last wave started (0 before the first).
    pub wave: u32,
    pub waves_cleared: u32,
    pub towers: BTreeMap<u32, Tower>,
    pub next_tower: u32,
    pub battle: Option<Battle>,
    pub wave_started_at_ms: i64,
    pub tick_ms: u32,
    pub score: i64,
    pub earned: i64,
    pub outcome: String,
    pub ended_at_ms: i64,
    pub built_by_type: BTreeMap<String, u32>,
    /// A match's session: the players whose seats are reserved.
    #[serde(default)]
    pub reserved: Vec<String>,
    /// The rules it is played with (given by the service: not state).
    #[serde(skip)]
    pub book: Book,
}

impl allies_core::Snapshot for GameSession {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub user_id: String,
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameCommand {
    Create {
        session_id: String,
        host: Who,
        map: String,
        difficulty: String,
        max_players: u32,
        private: bool,
        /// Hex SHA-256 of the invite code (private sessions).
        invite_hash: String,
        match_id: String,
        /// The rules version new sessions use.
        rules_version: u32,
        /// Feature flags on for the creator.
        flags: BTreeSet<String>,
        /// A match's session: only these players may join (no invite code).
        reserved: Vec<String>,
        now_ms: i64,
    },
    Join {
        who: Who,
        invite_hash: Option<String>,
        now_ms: i64,
    },
    Leave {
        user_id: String,
        reason: String,
        now_ms: i64,
    },
    SetReady {
        user_id: String,
        ready: bool,
        now_ms: i64,
    },
    Start {
        user_id: String,
        now_ms: i64,
    },
    Place {
        user_id: String,
        tower_type: String,
        x: i32,
        y: i32,
        flags: BTreeSet<String>,
        now_ms: i64,
    },
    Upgrade {
        user_id: String,
        tower_id: u32,
        now_ms: i64,
    },
    Sell {
        user_id: String,
        tower_id: u32,
        now_ms: i64,
    },
    StartWave {
        user_id: String,
        tick_ms: u32,
        now_ms: i64,
    },
    /// The host forfeits; an admin terminates.
    End {
        user_id: String,
        admin: bool,
        reason: String,
        now_ms: i64,
    },
    /// Completes a wave whose end has passed (the sweeper's command).
    Settle {
        now_ms: i64,
    },
}

impl GameCommand {
    pub fn now_ms(&self) -> i64 {
        match self {
            Self::Create { now_ms, .. }
            | Self::Join { now_ms, .. }
            | Self::Leave { now_ms, .. }
            | Self::SetReady { now_ms, .. }
            | Self::Start { now_ms, .. }
            | Self::Place { now_ms, .. }
            | Self::Upgrade { now_ms, .. }
            | Self::Sell { now_ms, .. }
            | Self::StartWave { now_ms, .. }
            | Self::End { now_ms, .. }
            | Self::Settle { now_ms } => *now_ms,
        }
    }
}

/// Why a command was refused. Every variant names its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameError {
    #[error("no such game session")]
    NoSuchSession,
    #[error("the game session already exists")]
    AlreadyExists,
    #[error("rules version {0} is not loaded here")]
    RulesUnavailable(u32),
    #[error("unknown map '{0}'")]
    UnknownMap(String),
    #[error("unknown difficulty '{0}'")]
    UnknownDifficulty(String),
    #[error("unknown tower type '{0}'")]
    UnknownTowerType(String),
    #[error("'{0}' is not available to you (feature flag {1} is off)")]
    FeatureDisabled(String, String),
    #[error("a session has 1 to 4 players, got {0}")]
    BadPlayerCount(u32),
    #[error("a private session needs an invite code")]
    MissingInviteCode,
    #[error("only members of the session may do this")]
    NotAMember,
    #[error("only the host may do this")]
    NotHost,
    #[error("you are already in this session")]
    AlreadyMember,
    #[error("the session is full ({0} players)")]
    SessionFull(u32),
    #[error("wrong invite code")]
    WrongInviteCode,
    #[error("the seats of this session are reserved for a match")]
    SeatReserved,
    #[error("not allowed while the session is {actual} (needs {expected})")]
    WrongPhase { expected: &'static str, actual: &'static str },
    #[error("every player must be ready ({0} is not)")]
    NotAllReady(String),
    #[error("cell ({x}, {y}) is outside the map")]
    OutsideMap { x: i32, y: i32 },
    #[error("cell ({x}, {y}) is not buildable (path or rock)")]
    NotBuildable { x: i32, y: i32 },
    #[error("cell ({x}, {y}) is taken by tower {tower}")]
    CellOccupied { x: i32, y: i32, tower: u32 },
    #[error("cell ({x}, {y}) is outside your build zone")]
    OutsideZone { x: i32, y: i32 },
    #[error("not enough gold: {need} needed, {have} left")]
    NotEnoughGold { need: i64, have: i64 },
    #[error("no tower {0}")]
    NoSuchTower(u32),
    #[error("tower {0} is not yours")]
    NotYourTower(u32),
    #[error("tower {0} is at its highest level")]
    MaxLevel(u32),
    #[error("all {0} waves have been played")]
    NoMoreWaves(u32),
    #[error("the game has ended")]
    GameEnded,
}

impl GameError {
    fn rule_name(&self) -> &'static str {
        match self {
            Self::NoSuchSession => "NO_SUCH_SESSION",
            Self::AlreadyExists => "SESSION_EXISTS",
            Self::RulesUnavailable(_) => "RULES_UNAVAILABLE",
            Self::UnknownMap(_) => "UNKNOWN_MAP",
            Self::UnknownDifficulty(_) => "UNKNOWN_DIFFICULTY",
            Self::UnknownTowerType(_) => "UNKNOWN_TOWER_TYPE",
            Self::FeatureDisabled(..) => "FEATURE_DISABLED",
            Self::BadPlayerCount(_) => "PLAYER_COUNT",
            Self::MissingInviteCode => "INVITE_CODE_REQUIRED",
            Self::NotAMember => "MEMBERS_ONLY",
            Self::NotHost => "HOST_ONLY",
            Self::AlreadyMember => "ALREADY_A_MEMBER",
            Self::SessionFull(_) => "SESSION_FULL",
            Self::WrongInviteCode => "INVITE_CODE",
            Self::SeatReserved => "SEAT_RESERVED",
            Self::WrongPhase { .. } => "WRONG_PHASE",
            Self::NotAllReady(_) => "ALL_READY",
            Self::OutsideMap { .. } => "CELL_OUTSIDE_MAP",
            Self::NotBuildable { .. } => "CELL_NOT_BUILDABLE",
            Self::CellOccupied { .. } => "CELL_OCCUPIED",
            Self::OutsideZone { .. } => "OUTSIDE_YOUR_ZONE",
            Self::NotEnoughGold { .. } => "NOT_ENOUGH_GOLD",
            Self::NoSuchTower(_) => "NO_SUCH_TOWER",
            Self::NotYourTower(_) => "NOT_YOUR_TOWER",
            Self::MaxLevel(_) => "MAX_LEVEL",
            Self::NoMoreWaves(_) => "NO_MORE_WAVES",
            Self::GameEnded => "GAME_ENDED",
        }
    }
}

impl ServiceError for GameError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NoSuchSession | Self::NoSuchTower(_) => ErrorCode::NotFound,
            Self::AlreadyExists => ErrorCode::AlreadyExists,
            Self::RulesUnavailable(_) => ErrorCode::Unavailable,
            Self::UnknownMap(_)
            | Self::UnknownDifficulty(_)
            | Self::UnknownTowerType(_)
            | Self::BadPlayerCount(_)
            | Self::MissingInviteCode
            | Self::OutsideMap { .. } => ErrorCode::InvalidArgument,
            Self::NotAMember | Self::NotHost | Self::WrongInviteCode | Self::SeatReserved | Self::NotYourTower(_) => {
                ErrorCode::PermissionDenied
            }
            _ => ErrorCode::FailedPrecondition,
        }
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        let cell = |x: &i32, y: &i32, why: &str| {
            vec![FieldViolation::new("x", format!("{x}: {why}")), FieldViolation::new("y", format!("{y}: {why}"))]
        };
        match self {
            Self::UnknownMap(_) => vec![FieldViolation::new("map", self.to_string())],
            Self::UnknownDifficulty(_) => vec![FieldViolation::new("difficulty", self.to_string())],
            Self::UnknownTowerType(_) | Self::FeatureDisabled(..) => {
                vec![FieldViolation::new("tower_type", self.to_string())]
            }
            Self::BadPlayerCount(_) => vec![FieldViolation::new("max_players", self.to_string())],
            Self::MissingInviteCode | Self::WrongInviteCode => {
                vec![FieldViolation::new("invite_code", self.to_string())]
            }
            Self::OutsideMap { x, y } => cell(x, y, "outside the map"),
            Self::NotBuildable { x, y } => cell(x, y, "not buildable"),
            Self::CellOccupied { x, y, .. } => cell(x, y, "taken"),
            Self::OutsideZone { x, y } => cell(x, y, "outside your zone"),
            Self::NoSuchTower(_) | Self::NotYourTower(_) | Self::MaxLevel(_) => {
                vec![FieldViolation::new("tower_id", self.to_string())]
            }
            _ => Vec::new(),
        }
    }

    fn rule(&self) -> Option<RuleViolation> {
        Some(RuleViolation {
            rule: self.rule_name().into(),
            subject: "game_session".into(),
            description: self.to_string(),
        })
    }
}

fn wrong_phase(expected: &'static str, actual: Phase) -> GameError {
    if actual == Phase::Ended {
        GameError::GameEnded
    } else {
        GameError::WrongPhase { expected, actual: actual.as_str() }
    }
}

/// The seed of a session: derived from its id.
pub fn session_seed(session_id: &str) -> u64 {
    fnv(session_id.as_bytes())
}

impl GameSession {
    /// An empty session played with `book`'s rules: what the service loads
    /// every session from.
    pub fn with_rules(book: Book) -> Self {
        Self { book, ..Self::default() }
    }

    pub fn rules(&self) -> Result<Arc<Rules>, GameError> {
        self.book.get(self.rules_version).ok_or(GameError::RulesUnavailable(self.rules_version))
    }

    pub fn path(&self) -> Result<Arc<Path>, GameError> {
        self.rules()?;
        self.book.path(self.rules_version, &self.map).ok_or_else(|| GameError::UnknownMap(self.map.clone()))
    }

    pub fn member(&self, user_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.user_id == user_id && m.present)
    }

    fn member_mut(&mut self, user_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.user_id == user_id)
    }

    pub fn present(&self) -> usize {
        self.members.iter().filter(|m| m.present).count()
    }

    /// The tick of wall time `now_ms` in the running wave.
    pub fn tick_at(&self, now_ms: i64) -> u32 {
        if self.tick_ms == 0 {
            return 0;
        }
        ((now_ms - self.wave_started_at_ms).max(0) / i64::from(self.tick_ms)).min(i64::from(u32::MAX)) as u32
    }

    /// The tick an input at `now_ms` applies at.
    pub fn input_tick(&self, now_ms: i64) -> u32 {
        let last = self.battle.as_ref().map(|b| b.tick).unwrap_or(0);
        self.tick_at(now_ms).saturating_add(LEAD_TICKS).max(last)
    }

    /// Runs the battle up to `tick` (no-op outside a wave).
    pub fn advance(&mut self, tick: u32) {
        let (Ok(rules), Ok(path)) = (self.rules(), self.path()) else { return };
        let Some(mut battle) = self.battle.take() else { return };
        let mut world = World { gold: &mut self.gold, lives: &mut self.lives, towers: &mut self.towers };
        battle.advance_to(tick, &rules, &path, &mut world);
        self.battle = Some(battle);
    }

    /// The fingerprint of the running wave's state (see [`Battle::hash`]).
    pub fn state_hash(&mut self) -> String {
        let Some(battle) = self.battle.take() else { return String::new() };
        let world = World { gold: &mut self.gold, lives: &mut self.lives, towers: &mut self.towers };
        let h = battle.hash(&world);
        self.battle = Some(battle);
        h
    }

    /// The score so far: waves cleared and bounty earned; lives count at a victory.
    fn score_with(&self, rules: &Rules, earned: i64, cleared: u32) -> i64 {
        i64::from(cleared) * rules.economy.score_per_wave + earned
    }

    /// The events time brings by the tick an input at `now_ms` applies at:
    /// the running wave's completion (and the game's end), if due.
    fn due(&self, now_ms: i64) -> Result<Vec<GameEvent>, GameError> {
        if self.phase != Phase::InWave {
            return Ok(Vec::new());
        }
        let rules = self.rules()?;
        let mut probe = self.clone();
        probe.advance(self.input_tick(now_ms));
        let Some((end_tick, how)) = probe.battle.as_ref().and_then(|b| b.ended) else { return Ok(Vec::new()) };
        let battle = probe.battle.clone().unwrap_or_else(|| unreachable!("ended implies a battle"));
        let hash = probe.state_hash();
        let cleared = self.waves_cleared + u32::from(how == WaveEnd::Cleared);
        let earned = self.earned + battle.earned.iter().sum::<i64>();
        let bonus = if how == WaveEnd::Cleared { rules.economy.wave_clear_bonus } else { 0 };
        let gold = self
            .members
            .iter()
            .filter_map(|m| m.seat.map(|s| (m, s)))
            .map(|(m, s)| SeatGold {
                user_id: m.user_id.clone(),
                gold: probe.gold.get(s).copied().unwrap_or(0) + if m.present { bonus } else { 0 },
            })
            .collect();
        let completed_at_ms = self.wave_started_at_ms + i64::from(end_tick) * i64::from(self.tick_ms);
        let mut events = vec![GameEvent::WaveCompleted(WaveCompleted {
            wave: self.wave,
            outcome: how.as_str().into(),
            end_tick,
            lives: probe.lives,
            gold,
            kills: battle.kills,
            leaks: battle.leaks,
            score: self.score_with(&rules, earned, cleared),
            state_hash: hash,
            completed_at_ms,
            waves_cleared: cleared,
        })];
        let last = how == WaveEnd::Cleared && self.wave >= self.total_waves;
        if how == WaveEnd::Overrun || last {
            let mut after = self.clone();
            for e in &events {
                after.evolve(e);
            }
            let (outcome, reason) =
                if last { ("victory", "every wave cleared") } else { ("defeat", "the enemies broke through") };
            events.push(after.ended(outcome, "", reason, completed_at_ms));
        }
        Ok(events)
    }

    /// A `GameEnded` event from this state.
    fn ended(&self, outcome: &str, by: &str, reason: &str, at_ms: i64) -> GameEvent {
        let rules = self.rules().ok();
        let life_bonus = if outcome == "victory" {
            rules.as_ref().map(|r| self.lives * r.economy.score_per_life).unwrap_or(0)
        } else {
            0
        };
        GameEvent::Ended(GameEnded {
            outcome: outcome.into(),
            ended_by: by.into(),
            reason: reason.into(),
            score: self.score + life_bonus,
            waves_cleared: self.waves_cleared,
            players: self
                .members
                .iter()
                .filter(|m| m.seat.is_some())
                .map(|m| PlayerStats {
                    user_id: m.user_id.clone(),
                    kills: m.stats.kills,
                    gold_earned: m.stats.gold_earned,
                    towers_built: m.stats.towers_built,
                    gold_spent: m.stats.gold_spent,
                })
                .collect(),
            ended_at_ms: at_ms,
            map: self.map.clone(),
            difficulty: self.difficulty.clone(),
            duration_ms: if self.started_at_ms > 0 { (at_ms - self.started_at_ms).max(0) } else { 0 },
            towers_built: self
                .built_by_type
                .iter()
                .map(|(t, n)| TowerCount { tower_type: t.clone(), count: *n })
                .collect(),
        })
    }

    fn create(&self, command: &GameCommand) -> Result<Vec<GameEvent>, GameError> {
        let GameCommand::Create {
            session_id,
            host,
            map,
            difficulty,
            max_players,
            private,
            invite_hash,
            match_id,
            rules_version,
            flags,
            reserved,
            now_ms,
        } = command
        else {
            unreachable!("create is only called with Create")
        };
        if self.phase != Phase::None {
            return Err(GameError::AlreadyExists);
        }
        let rules = self.book.get(*rules_version).ok_or(GameError::RulesUnavailable(*rules_version))?;
        let m = rules.maps.get(map).ok_or_else(|| GameError::UnknownMap(map.clone()))?;
        if let Some(flag) = m.flag.as_ref().filter(|f| !flags.contains(*f)) {
            return Err(GameError::FeatureDisabled(format!("map {map}"), flag.clone()));
        }
        if !rules.difficulties.contains_key(difficulty) {
            return Err(GameError::UnknownDifficulty(difficulty.clone()));
        }
        if !(1..=4).contains(max_players) {
            return Err(GameError::BadPlayerCount(*max_players));
        }
        if *private && invite_hash.is_empty() && reserved.is_empty() {
            return Err(GameError::MissingInviteCode);
        }
        Ok(vec![
            GameEvent::Created(GameSessionCreated {
                session_id: session_id.clone(),
                host_id: host.user_id.clone(),
                map: map.clone(),
                difficulty: difficulty.clone(),
                max_players: *max_players,
                private: *private,
                invite_code_hash: if *private { invite_hash.clone() } else { String::new() },
                rules_version: *rules_version,
                rules_hash: rules.content_hash(),
                seed: session_seed(session_id),
                total_waves: m.waves,
                created_at_ms: *now_ms,
                match_id: match_id.clone(),
                reserved: reserved.clone(),
            }),
            GameEvent::PlayerJoined(PlayerJoined {
                user_id: host.user_id.clone(),
                display_name: host.display_name.clone(),
                seat: 0,
                players: 1,
                joined_at_ms: *now_ms,
            }),
        ])
    }

    /// Decides a command on a state whose time is settled.
    fn decide_settled(&self, command: &GameCommand) -> Result<Vec<GameEvent>, GameError> {
        use GameCommand::*;
        match command {
            Create { .. } => Err(GameError::AlreadyExists),
            Settle { .. } => Ok(Vec::new()),
            Join { who, invite_hash, now_ms } => {
                if self.phase != Phase::Lobby {
                    return Err(wrong_phase("lobby", self.phase));
                }
                if self.member(&who.user_id).is_some() {
                    return Err(GameError::AlreadyMember);
                }
                if !self.reserved.is_empty() {
                    if !self.reserved.contains(&who.user_id) {
                        return Err(GameError::SeatReserved);
                    }
                } else if self.private {
                    match invite_hash.as_deref() {
                        None => return Err(GameError::MissingInviteCode),
                        Some(h) if h != self.invite_hash => return Err(GameError::WrongInviteCode),
                        Some(_) => {}
                    }
                }
                let players = self.present() as u32;
                if players >= self.max_players {
                    return Err(GameError::SessionFull(self.max_players));
                }
                Ok(vec![GameEvent::PlayerJoined(PlayerJoined {
                    user_id: who.user_id.clone(),
                    display_name: who.display_name.clone(),
                    seat: players,
                    players: players + 1,
                    joined_at_ms: *now_ms,
                })])
            }
            Leave { user_id, reason, now_ms } => {
                if self.phase == Phase::Ended {
                    return Err(GameError::GameEnded);
                }
                if self.member(user_id).is_none() {
                    return Err(GameError::NotAMember);
                }
                let remaining: Vec<&Member> =
                    self.members.iter().filter(|m| m.present && m.user_id != *user_id).collect();
                let host = if self.host == *user_id {
                    remaining.first().map(|m| m.user_id.clone()).unwrap_or_default()
                } else {
                    self.host.clone()
                };
                let mut events = vec![GameEvent::PlayerLeft(PlayerLeft {
                    user_id: user_id.clone(),
                    host_id: host,
                    players: remaining.len() as u32,
                    left_at_ms: *now_ms,
                    reason: reason.clone(),
                    in_lobby: self.phase == Phase::Lobby,
                })];
                if remaining.is_empty() {
                    let mut after = self.clone();
                    after.evolve(&events[0]);
                    events.push(after.ended("abandoned", user_id, "every player left", *now_ms));
                }
                Ok(events)
            }
            SetReady { user_id, ready, .. } => {
                if self.phase != Phase::Lobby {
                    return Err(wrong_phase("lobby", self.phase));
                }
                let m = self.member(user_id).ok_or(GameError::NotAMember)?;
                if m.ready == *ready {
                    return Ok(Vec::new());
                }
                Ok(vec![GameEvent::PlayerReady(PlayerReady { user_id: user_id.clone(), ready: *ready })])
            }
            Start { user_id, now_ms } => {
                self.member(user_id).ok_or(GameError::NotAMember)?;
                if self.host != *user_id {
                    return Err(GameError::NotHost);
                }
                if self.phase != Phase::Lobby {
                    return Err(wrong_phase("lobby", self.phase));
                }
                if let Some(m) = self.members.iter().find(|m| m.present && !m.ready) {
                    return Err(GameError::NotAllReady(m.name.clone()));
                }
                let rules = self.rules()?;
                let d = rules
                    .difficulties
                    .get(&self.difficulty)
                    .ok_or_else(|| GameError::UnknownDifficulty(self.difficulty.clone()))?;
                let gold = rules.economy.start_gold * d.start_gold_pct / 100;
                Ok(vec![GameEvent::Started(GameStarted {
                    players: self
                        .members
                        .iter()
                        .filter(|m| m.present)
                        .enumerate()
                        .map(|(seat, m)| StartedPlayer { user_id: m.user_id.clone(), seat: seat as u32, gold })
                        .collect(),
                    lives: d.lives,
                    started_at_ms: *now_ms,
                })])
            }
            Place { user_id, tower_type, x, y, flags, now_ms } => {
                let (seat, tick) = self.acting(user_id, *now_ms)?;
                let rules = self.rules()?;
                let kind =
                    rules.towers.get(tower_type).ok_or_else(|| GameError::UnknownTowerType(tower_type.clone()))?;
                if let Some(flag) = kind.flag.as_ref().filter(|f| !flags.contains(*f)) {
                    return Err(GameError::FeatureDisabled(format!("tower {tower_type}"), flag.clone()));
                }
                let map = rules.maps.get(&self.map).ok_or_else(|| GameError::UnknownMap(self.map.clone()))?;
                let (x, y) = (*x, *y);
                if !map.in_grid(x, y) {
                    return Err(GameError::OutsideMap { x, y });
                }
                // The zone first: a refusal must not tell what stands
                // outside the player's own zone.
                if !in_zone(map.zone(self.seats(), seat), x, y) {
                    return Err(GameError::OutsideZone { x, y });
                }
                if !map.buildable(x, y) {
                    return Err(GameError::NotBuildable { x, y });
                }
                if let Some(t) = self.towers.values().find(|t| t.x == x && t.y == y) {
                    return Err(GameError::CellOccupied { x, y, tower: t.id });
                }
                let have = self.gold_at(seat, tick);
                if have < kind.cost {
                    return Err(GameError::NotEnoughGold { need: kind.cost, have });
                }
                Ok(vec![GameEvent::TowerPlaced(TowerPlaced {
                    tower_id: self.next_tower,
                    player_id: user_id.clone(),
                    tower_type: tower_type.clone(),
                    x,
                    y,
                    cost: kind.cost,
                    gold_after: have - kind.cost,
                    wave: self.wave,
                    tick,
                })])
            }
            Upgrade { user_id, tower_id, now_ms } => {
                let (seat, tick) = self.acting(user_id, *now_ms)?;
                let t = self.towers.get(tower_id).ok_or(GameError::NoSuchTower(*tower_id))?;
                if t.owner != *user_id {
                    return Err(GameError::NotYourTower(*tower_id));
                }
                let rules = self.rules()?;
                let next = rules
                    .towers
                    .get(&t.kind)
                    .and_then(|k| k.levels.get(t.level + 1))
                    .ok_or(GameError::MaxLevel(*tower_id))?;
                let have = self.gold_at(seat, tick);
                if have < next.upgrade_cost {
                    return Err(GameError::NotEnoughGold { need: next.upgrade_cost, have });
                }
                Ok(vec![GameEvent::TowerUpgraded(TowerUpgraded {
                    tower_id: *tower_id,
                    player_id: user_id.clone(),
                    tower_type: t.kind.clone(),
                    x: t.x,
                    y: t.y,
                    level: (t.level + 1) as u32,
                    cost: next.upgrade_cost,
                    gold_after: have - next.upgrade_cost,
                    wave: self.wave,
                    tick,
                })])
            }
            Sell { user_id, tower_id, now_ms } => {
                let (seat, tick) = self.acting(user_id, *now_ms)?;
                let t = self.towers.get(tower_id).ok_or(GameError::NoSuchTower(*tower_id))?;
                if t.owner != *user_id {
                    return Err(GameError::NotYourTower(*tower_id));
                }
                let rules = self.rules()?;
                let pct = rules.towers.get(&t.kind).map(|k| k.sell_refund_pct).unwrap_or(0);
                let refund = t.invested * pct / 100;
                Ok(vec![GameEvent::TowerSold(TowerSold {
                    tower_id: *tower_id,
                    player_id: user_id.clone(),
                    refund,
                    gold_after: self.gold_at(seat, tick) + refund,
                    wave: self.wave,
                    tick,
                })])
            }
            StartWave { user_id, tick_ms, now_ms } => {
                self.member(user_id).ok_or(GameError::NotAMember)?;
                if self.phase != Phase::Building {
                    return Err(wrong_phase("building", self.phase));
                }
                if self.wave >= self.total_waves {
                    return Err(GameError::NoMoreWaves(self.total_waves));
                }
                let rules = self.rules()?;
                let wave = self.wave + 1;
                let seed = wave_seed(self.seed, wave);
                let map = rules.maps.get(&self.map).ok_or_else(|| GameError::UnknownMap(self.map.clone()))?;
                let enemies = crate::sim::spawn_schedule(&rules, map, wave, &self.difficulty, seed).len() as u32;
                Ok(vec![GameEvent::WaveStarted(WaveStarted {
                    wave,
                    started_at_ms: *now_ms,
                    tick_ms: (*tick_ms).max(1),
                    seed,
                    enemies,
                    started_by: user_id.clone(),
                })])
            }
            End { user_id, admin, reason, now_ms } => {
                if self.phase == Phase::Ended {
                    return Err(GameError::GameEnded);
                }
                let member = self.member(user_id).is_some();
                let outcome = match (member && self.host == *user_id, *admin, member) {
                    (true, _, _) => "forfeit",
                    (false, true, _) => "terminated",
                    (false, false, false) => return Err(GameError::NotAMember),
                    (false, false, true) => return Err(GameError::NotHost),
                };
                let mut state = self.clone();
                if state.phase == Phase::InWave {
                    state.advance(self.input_tick(*now_ms));
                }
                Ok(vec![state.ended(outcome, user_id, reason, *now_ms)])
            }
        }
    }

    /// Number of seats (players at the start).
    pub fn seats(&self) -> usize {
        self.gold.len()
    }

    /// A member's seat and the tick their action applies at; refuses
    /// outside the building and wave phases.
    fn acting(&self, user_id: &str, now_ms: i64) -> Result<(usize, u32), GameError> {
        let m = self.member(user_id).ok_or(GameError::NotAMember)?;
        match self.phase {
            Phase::Building => Ok((m.seat.unwrap_or(0), 0)),
            Phase::InWave => Ok((m.seat.unwrap_or(0), self.input_tick(now_ms))),
            other => Err(wrong_phase("building or in_wave", other)),
        }
    }

    /// A seat's gold at `tick` of the running wave (now outside a wave).
    fn gold_at(&self, seat: usize, tick: u32) -> i64 {
        if self.phase != Phase::InWave {
            return self.gold.get(seat).copied().unwrap_or(0);
        }
        let mut probe = self.clone();
        probe.advance(tick);
        probe.gold.get(seat).copied().unwrap_or(0)
    }
}

/// What a tower command (place, upgrade, sell) did: the tower and the tick,
/// as the answer to the player needs them — the tower id of a placement is
/// only known once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TowerAct {
    pub tower_id: u32,
    pub tick: u32,
}

impl TowerAct {
    /// The tower act among a command's events (the last one: the events
    /// before it settle the game up to the command's tick).
    pub fn of(events: &[GameEvent]) -> Option<Self> {
        events.iter().rev().find_map(|e| match e {
            GameEvent::TowerPlaced(t) => Some(Self { tower_id: t.tower_id, tick: t.tick }),
            GameEvent::TowerUpgraded(t) => Some(Self { tower_id: t.tower_id, tick: t.tick }),
            GameEvent::TowerSold(t) => Some(Self { tower_id: t.tower_id, tick: t.tick }),
            _ => None,
        })
    }
}

impl Aggregate for GameSession {
    const TYPE: &'static str = "game_session";
    type Command = GameCommand;
    type Event = GameEvent;
    type Error = GameError;

    fn decide(&self, command: &GameCommand) -> Result<Vec<GameEvent>, GameError> {
        if let GameCommand::Create { .. } = command {
            return self.create(command);
        }
        if self.phase == Phase::None {
            return Err(GameError::NoSuchSession);
        }
        // Time first: a wave whose end has passed completes before the command.
        let mut events = self.due(command.now_ms())?;
        if events.is_empty() {
            return self.decide_settled(command);
        }
        let mut after = self.clone();
        for e in &events {
            after.evolve(e);
        }
        match after.decide_settled(command) {
            Ok(more) => events.extend(more),
            // The wave ended first; the command is refused on what followed.
            Err(e) if !matches!(command, GameCommand::Settle { .. }) => return Err(e),
            Err(_) => {}
        }
        Ok(events)
    }

    /// A session read back from a snapshot is played with the seed's rules.
    fn adopt(&mut self, seed: &Self) {
        self.book = seed.book.clone();
    }

    fn evolve(&mut self, event: &GameEvent) {
        match event {
            GameEvent::Created(e) => {
                self.id = e.session_id.clone();
                self.phase = Phase::Lobby;
                self.host = e.host_id.clone();
                self.map = e.map.clone();
                self.difficulty = e.difficulty.clone();
                self.max_players = e.max_players;
                self.private = e.private;
                self.invite_hash = e.invite_code_hash.clone();
                self.rules_version = e.rules_version;
                self.rules_hash = e.rules_hash.clone();
                self.seed = e.seed;
                self.total_waves = e.total_waves;
                self.created_at_ms = e.created_at_ms;
                self.match_id = e.match_id.clone();
                self.reserved = e.reserved.clone();
            }
            GameEvent::PlayerJoined(e) => {
                self.members.retain(|m| m.user_id != e.user_id);
                self.members.push(Member {
                    user_id: e.user_id.clone(),
                    name: e.display_name.clone(),
                    ready: false,
                    present: true,
                    seat: None,
                    stats: Stats::default(),
                });
            }
            GameEvent::PlayerLeft(e) => {
                if self.phase == Phase::Lobby {
                    self.members.retain(|m| m.user_id != e.user_id);
                } else if let Some(m) = self.member_mut(&e.user_id) {
                    m.present = false;
                }
                self.host = e.host_id.clone();
            }
            GameEvent::PlayerReady(e) => {
                if let Some(m) = self.member_mut(&e.user_id) {
                    m.ready = e.ready;
                }
            }
            GameEvent::Started(e) => {
                self.phase = Phase::Building;
                self.started_at_ms = e.started_at_ms;
                self.lives = e.lives;
                self.gold = vec![0; e.players.len()];
                for p in &e.players {
                    if let Some(g) = self.gold.get_mut(p.seat as usize) {
                        *g = p.gold;
                    }
                    if let Some(m) = self.member_mut(&p.user_id) {
                        m.seat = Some(p.seat as usize);
                    }
                }
            }
            GameEvent::TowerPlaced(e) => {
                self.advance(e.tick);
                let seat = self.member(&e.player_id).and_then(|m| m.seat).unwrap_or(0);
                let mut tower = Tower {
                    id: e.tower_id,
                    owner: e.player_id.clone(),
                    seat,
                    kind: e.tower_type.clone(),
                    level: 0,
                    x: e.x,
                    y: e.y,
                    invested: e.cost,
                    kills: 0,
                    reach: Vec::new(),
                    ready_at: e.tick + 1,
                };
                if let (Ok(rules), Ok(path)) = (self.rules(), self.path()) {
                    tower.aim(&rules, &path);
                }
                self.towers.insert(e.tower_id, tower);
                self.next_tower = self.next_tower.max(e.tower_id + 1);
                if let Some(g) = self.gold.get_mut(seat) {
                    *g = e.gold_after;
                }
                *self.built_by_type.entry(e.tower_type.clone()).or_default() += 1;
                if let Some(m) = self.member_mut(&e.player_id) {
                    m.stats.towers_built += 1;
                    m.stats.gold_spent += e.cost;
                }
            }
            GameEvent::TowerUpgraded(e) => {
                self.advance(e.tick);
                let (rules, path) = (self.rules().ok(), self.path().ok());
                if let Some(t) = self.towers.get_mut(&e.tower_id) {
                    t.level = e.level as usize;
                    t.invested += e.cost;
                    if let (Some(rules), Some(path)) = (rules, path) {
                        t.aim(&rules, &path);
                    }
                    if let Some(g) = self.gold.get_mut(t.seat) {
                        *g = e.gold_after;
                    }
                }
                if let Some(m) = self.member_mut(&e.player_id) {
                    m.stats.gold_spent += e.cost;
                }
            }
            GameEvent::TowerSold(e) => {
                self.advance(e.tick);
                if let Some(t) = self.towers.remove(&e.tower_id)
                    && let Some(g) = self.gold.get_mut(t.seat)
                {
                    *g = e.gold_after;
                }
            }
            GameEvent::WaveStarted(e) => {
                self.phase = Phase::InWave;
                self.wave = e.wave;
                self.wave_started_at_ms = e.started_at_ms;
                self.tick_ms = e.tick_ms;
                for t in self.towers.values_mut() {
                    t.ready_at = 1;
                }
                self.battle = self.rules().ok().and_then(|rules| {
                    let map = rules.maps.get(&self.map)?;
                    Some(Battle::new(&rules, map, e.wave, &self.difficulty, e.seed, self.seats()))
                });
            }
            GameEvent::WaveCompleted(e) => {
                self.advance(e.end_tick);
                if let Some(b) = self.battle.take() {
                    self.earned += b.earned.iter().sum::<i64>();
                    for m in self.members.iter_mut() {
                        if let Some(s) = m.seat {
                            m.stats.gold_earned += b.earned.get(s).copied().unwrap_or(0);
                            m.stats.kills += b.kills_by_seat.get(s).copied().unwrap_or(0);
                        }
                    }
                }
                if e.outcome == "cleared" {
                    self.waves_cleared += 1;
                }
                self.lives = e.lives;
                for g in &e.gold {
                    let seat = self.members.iter().find(|m| m.user_id == g.user_id).and_then(|m| m.seat);
                    if let Some(slot) = seat.and_then(|s| self.gold.get_mut(s)) {
                        *slot = g.gold;
                    }
                }
                self.score = e.score;
                self.phase = Phase::Building;
            }
            GameEvent::Ended(e) => {
                self.phase = Phase::Ended;
                self.outcome = e.outcome.clone();
                self.ended_at_ms = e.ended_at_ms;
                self.score = e.score;
                self.battle = None;
            }
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
