//! Timesquare's use cases: every game command runs on a hot handle of its
//! session (the state stays in memory on this replica; another replica's
//! write is caught up on the conflict), through the platform's executor.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use allies_contracts::timesquare::events::GameEvent;
use allies_contracts::timesquare::v1::CreateGameSessionRequest;
use allies_core::{Aggregate, DomainEvent, Failure, FieldViolation, Invalid};
use allies_platform::RequestContext;
use allies_platform::auth::Caller;
use allies_store::{EventStore, Executed, Handles, NewEvent, Priority, Publication};
use timesquare_domain::replay::{Verification, verify};
use timesquare_domain::rules::{Rules, RulesError};
use timesquare_domain::{Book, GameCommand, GameError, GameSession, Phase, Who};
use uuid::Uuid;

pub use crate::error::{Result, TimesquareError};
use crate::schedule::Schedule;

/// What a command did, for the response.
pub struct Done {
    pub session_id: String,
    pub executed: Executed<GameSession>,
}

impl Done {
    pub fn event_types(&self) -> Vec<String> {
        self.executed.events.iter().map(|e| e.event_type().to_owned()).collect()
    }
}

pub struct Game {
    pub handles: Handles<GameSession>,
    pub store: Arc<dyn EventStore>,
    /// The running waves, for the sweeper.
    pub schedule: Arc<dyn Schedule>,
    /// Wall time of a tick for new waves.
    pub tick_ms: u32,
    /// The rules version new sessions use (the configuration can change it).
    pub rules_version: AtomicU32,
    /// The version of this instance's rules file: in force while no operator set `game.rules_version`.
    pub deployed_rules_version: u32,
    /// Where archived events are (a replay reads them too).
    pub archive_dir: std::path::PathBuf,
    /// The rules versions this replica has: its files', then uploads. Every
    /// session is loaded from a state that carries them.
    book: Arc<std::sync::RwLock<Book>>,
}

fn seed_of(book: &Arc<std::sync::RwLock<Book>>) -> allies_store::Seed<GameSession> {
    let book = book.clone();
    Arc::new(move || GameSession::with_rules(book.read().unwrap_or_else(|e| e.into_inner()).clone()))
}

/// A page of a session's events for a client's replay ([`Game::replay`]).
pub struct Replay {
    /// (version, event, recorded at, Unix ms).
    pub events: Vec<(u64, GameEvent, i64)>,
    pub version: u64,
    pub rules_json: Option<String>,
}

/// A session id from a request.
pub fn session_id(value: &str) -> Result<String, FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new("session_id", "must not be empty"));
    }
    Uuid::parse_str(value).map(|u| u.to_string()).map_err(|_| FieldViolation::new("session_id", "must be a UUID"))
}

fn display_name(caller: &Caller, given: &str) -> Result<String, FieldViolation> {
    let given = given.trim();
    if given.is_empty() {
        return Ok(format!("player-{}", caller.user_id.chars().take(8).collect::<String>()));
    }
    let n = given.chars().count();
    if n > 32 || given.chars().any(char::is_control) {
        return Err(FieldViolation::new("display_name", "must be 1 to 32 characters without control characters"));
    }
    Ok(given.to_owned())
}

/// Hex SHA-256 of an invite code: what the session stores.
pub fn invite_hash(code: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, code.trim().to_ascii_uppercase().as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh invite code: 8 characters of an unambiguous alphabet.
fn new_invite_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 8];
    // A failing system RNG leaves a code from the time-ordered id's random bits.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        bytes.copy_from_slice(&Uuid::now_v7().into_bytes()[8..]);
    }
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

impl Game {
    /// The game on `executor`, keeping up to `hot` sessions in memory,
    /// played with `book`'s rules (new sessions: `rules_version`).
    pub fn new(
        executor: allies_store::CommandExecutor,
        hot: usize,
        book: Book,
        schedule: Arc<dyn Schedule>,
        tick_ms: u32,
        rules_version: u32,
        archive_dir: std::path::PathBuf,
    ) -> Self {
        let book = Arc::new(std::sync::RwLock::new(book));
        let handles = Handles::seeded(executor, hot, seed_of(&book));
        Self {
            store: handles.executor().store().clone(),
            book,
            handles,
            schedule,
            tick_ms,
            rules_version: AtomicU32::new(rules_version),
            deployed_rules_version: rules_version,
            archive_dir,
        }
    }

    /// Runs a command on a session's handle.
    pub async fn run(&self, session_id: &str, command: GameCommand, ctx: &RequestContext) -> Result<Done> {
        let handle = self.handles.get(session_id);
        let format = self.store.format();
        let publish = move |state: &GameSession, events: &[GameEvent]| publications(state, events, format);
        let options = ctx.options().publish(&publish);
        let executed = handle.execute(&command, &ctx.command_context(), options).await?;
        if executed.state.phase == Phase::Ended {
            // Finished: nothing will run on it again here.
            self.handles.remove(session_id);
        }
        Ok(Done { session_id: session_id.to_owned(), executed })
    }

    /// Opens a lobby; answers it with the invite code of a private one
    /// (shown once: only its hash is stored).
    pub async fn create(
        &self,
        ctx: &RequestContext,
        request: &CreateGameSessionRequest,
        flags: BTreeSet<String>,
    ) -> Result<(Done, String)> {
        let CreateGameSessionRequest { map, difficulty, max_players, private, display_name: name } = request;
        let (max_players, private) = (*max_players, *private);
        let caller = ctx.caller()?;
        let mut invalid = Invalid::new();
        if map.is_empty() {
            invalid.push("map", "must not be empty");
        }
        if difficulty.is_empty() {
            invalid.push("difficulty", "must not be empty");
        }
        let name = display_name(caller, name);
        invalid.check(name.as_ref().map(|_| ()).map_err(Clone::clone));
        invalid.into_result()?;
        let session_id = Uuid::now_v7().to_string();
        let code = if private { new_invite_code() } else { String::new() };
        let command = GameCommand::Create {
            session_id: session_id.clone(),
            host: Who { user_id: caller.user_id.clone(), display_name: name.map_err(TimesquareError::from)? },
            map: map.to_owned(),
            difficulty: difficulty.to_owned(),
            max_players,
            private,
            invite_hash: if private { invite_hash(&code) } else { String::new() },
            match_id: String::new(),
            rules_version: self.rules_version.load(Ordering::Relaxed),
            flags,
            reserved: Vec::new(),
            now_ms: ctx.now_ms,
        };
        Ok((self.run(&session_id, command, ctx).await?, code))
    }

    pub async fn join(&self, ctx: &RequestContext, id: &str, code: &str, name: &str) -> Result<Done> {
        let caller = ctx.caller()?;
        let mut invalid = Invalid::new();
        let sid = session_id(id);
        let name = display_name(caller, name);
        invalid.check(sid.as_ref().map(|_| ()).map_err(Clone::clone));
        invalid.check(name.as_ref().map(|_| ()).map_err(Clone::clone));
        invalid.into_result()?;
        let (sid, name) = (sid?, name?);
        let command = GameCommand::Join {
            who: Who { user_id: caller.user_id.clone(), display_name: name },
            invite_hash: (!code.trim().is_empty()).then(|| invite_hash(code)),
            now_ms: ctx.now_ms,
        };
        self.run(&sid, command, ctx).await
    }

    /// A command that needs only the session and the caller.
    pub async fn act(
        &self,
        ctx: &RequestContext,
        id: &str,
        make: impl FnOnce(String, i64) -> GameCommand,
    ) -> Result<Done> {
        let caller = ctx.caller()?;
        let sid = session_id(id)?;
        self.run(&sid, make(caller.user_id.clone(), ctx.now_ms), ctx).await
    }

    pub async fn start_wave(&self, ctx: &RequestContext, id: &str) -> Result<Done> {
        let tick_ms = self.tick_ms;
        let done = self.act(ctx, id, |user_id, now_ms| GameCommand::StartWave { user_id, tick_ms, now_ms }).await?;
        // The sweeper's schedule learns of the wave from the event log (which
        // survives a crash right here); telling it now saves that hop.
        for e in &done.executed.events {
            if let GameEvent::WaveStarted(w) = e {
                let member = crate::schedule::member(&done.session_id, w.wave);
                if let Err(e) = self.schedule.add(&member, w.started_at_ms).await {
                    tracing::debug!(session_id = done.session_id, error = %e, "wave schedule left to the log consumer");
                }
            }
        }
        Ok(done)
    }

    pub async fn end(&self, ctx: &RequestContext, id: &str, reason: &str) -> Result<Done> {
        let admin = ctx.caller()?.is_admin();
        // Refused when too long, never cut (the API's limit, also for in-process callers).
        if reason.len() > crate::MAX_REASON_BYTES {
            let why = format!("at most {} bytes, got {}", crate::MAX_REASON_BYTES, reason.len());
            return Err(FieldViolation::new("reason", why).into());
        }
        let reason = if reason.is_empty() { "ended by request".to_owned() } else { reason.to_owned() };
        self.act(ctx, id, |user_id, now_ms| GameCommand::End { user_id, admin, reason, now_ms }).await
    }

    /// Completes the session's wave if its end has passed (the sweeper).
    pub async fn settle(&self, session_id: &str, ctx: &RequestContext) -> Result<Done> {
        let now_ms = ctx.now_ms;
        self.run(session_id, GameCommand::Settle { now_ms }, ctx).await
    }

    /// The session's current state, if the caller may see it: members and
    /// admins always, anyone signed in for a public session.
    pub async fn state(&self, caller: &Caller, id: &str) -> Result<(Arc<GameSession>, u64)> {
        let sid = session_id(id)?;
        let (state, version) = self.handles.get(&sid).current().await?;
        if state.phase == Phase::None {
            return Err(GameError::NoSuchSession.into());
        }
        may_see(caller, &state)?;
        Ok((state, version))
    }

    /// Re-runs a session from all its events (archived ones included) and
    /// checks every wave.
    pub async fn verify(&self, id: &str) -> Result<Verification> {
        let sid = session_id(id)?;
        let records = self.store.history(<GameSession as Aggregate>::TYPE, &sid, &self.archive_dir).await?;
        if records.is_empty() {
            return Err(GameError::NoSuchSession.into());
        }
        let mut events = Vec::with_capacity(records.len());
        for r in &records {
            let e = r.typed::<GameEvent>()?;
            events.push(e.payload);
        }
        Ok(verify(&events, &self.book()))
    }

    /// A page of a session's recorded events (archived ones included) after
    /// version `after`, at most `limit`, with the session's version now and,
    /// on the first page, the rules it was created with (their JSON, whose
    /// FNV-1a is the recorded rules hash). Seen by whoever may see the game.
    pub async fn replay(&self, caller: &Caller, id: &str, after: u64, limit: usize) -> Result<Replay> {
        let (state, version) = self.state(caller, id).await?;
        let sid = session_id(id)?;
        let records = self.store.history(<GameSession as Aggregate>::TYPE, &sid, &self.archive_dir).await?;
        let mut events = Vec::with_capacity(limit.min(records.len()));
        for r in records.iter().filter(|r| r.envelope.version > after).take(limit) {
            let e = r.typed::<GameEvent>()?;
            events.push((e.version, e.payload, e.recorded_at_ms));
        }
        let rules_json = match after {
            0 => Some(serde_json::to_string(&*self.rules(state.rules_version)?).unwrap_or_default()),
            _ => None,
        };
        // The history may run ahead of the handle's state (a write it has not
        // folded yet): the page's version is the later of the two.
        let last = records.last().map(|r| r.envelope.version).unwrap_or(0);
        Ok(Replay { events, version: version.max(last), rules_json })
    }

    /// The rules of a version (0: the current one).
    pub fn rules(&self, version: u32) -> Result<Arc<timesquare_domain::Rules>> {
        let v = if version == 0 { self.rules_version.load(Ordering::Relaxed) } else { version };
        self.book().get(v).ok_or_else(|| Failure::not_found(format!("no rules version {v}")).into())
    }

    /// The rules versions this replica has.
    pub fn book(&self) -> Book {
        self.book.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds a rules version (an upload); a different content under a
    /// version this replica has is refused.
    pub fn install_rules(&self, rules: Rules) -> std::result::Result<Arc<Rules>, RulesError> {
        let version = rules.rules_version;
        let mut book = self.book.write().unwrap_or_else(|e| e.into_inner());
        *book = book.with(rules)?;
        book.get(version).ok_or_else(|| RulesError { key: "rules_version".into(), reason: "not added".into() })
    }

    /// What every session is loaded from: an empty one with this replica's rules.
    pub fn seed(&self) -> allies_store::Seed<GameSession> {
        seed_of(&self.book)
    }
}

/// What a game command publishes with its events, in the same append: a
/// started wave on the internal `ts.waves` topic (the sweeper's schedule
/// reads it instead of every game event), every event a search document
/// shows on the internal `ts.search` topic (the projector's search index
/// of games reads it instead of every game event), and a game's start and
/// end on the `games` integration topic (`state` is the session after the
/// events).
pub fn publications(state: &GameSession, events: &[GameEvent], format: allies_core::EventFormat) -> Vec<Publication> {
    use allies_contracts::timesquare::integration::{GameIntegrationEvent as Out, SEARCH_TOPIC, SEARCHABLE, TOPIC, v1};
    let encode = |topic: &str, priority: Priority, event: Result<NewEvent, allies_core::DecodeError>| match event {
        Ok(event) => Some(Publication { topic: topic.into(), priority, event }),
        Err(err) => {
            tracing::error!(error = %err, "cannot encode a publication");
            None
        }
    };
    let searchable = events
        .iter()
        .filter(|e| SEARCHABLE.contains(&e.event_type()))
        .filter_map(|e| encode(SEARCH_TOPIC, Priority::Normal, NewEvent::encode_as(e, format)));
    events
        .iter()
        .filter_map(|e| match e {
            GameEvent::WaveStarted(_) => encode(crate::schedule::TOPIC, Priority::High, NewEvent::encode_as(e, format)),
            GameEvent::Started(g) => {
                let out = Out::Started(v1::GameStarted {
                    session_id: state.id.clone(),
                    match_id: state.match_id.clone(),
                    map: state.map.clone(),
                    difficulty: state.difficulty.clone(),
                    rules_version: state.rules_version,
                    players: g.players.iter().map(|p| p.user_id.clone()).collect(),
                    started_at_ms: g.started_at_ms,
                });
                encode(TOPIC, Priority::Normal, NewEvent::encode_as(&out, format))
            }
            GameEvent::PlayerLeft(l) => {
                let out = Out::PlayerLeft(v1::GamePlayerLeft {
                    session_id: state.id.clone(),
                    user_id: l.user_id.clone(),
                    in_lobby: l.in_lobby,
                    at_ms: l.left_at_ms,
                });
                encode(TOPIC, Priority::Normal, NewEvent::encode_as(&out, format))
            }
            GameEvent::Ended(end) => {
                let out = Out::Ended(v1::GameEnded {
                    session_id: state.id.clone(),
                    match_id: state.match_id.clone(),
                    map: state.map.clone(),
                    difficulty: state.difficulty.clone(),
                    rules_version: state.rules_version,
                    outcome: end.outcome.clone(),
                    score: end.score,
                    waves_cleared: end.waves_cleared,
                    total_waves: state.total_waves,
                    started_at_ms: state.started_at_ms,
                    ended_at_ms: end.ended_at_ms,
                    duration_ms: end.duration_ms,
                    players: state
                        .members
                        .iter()
                        .map(|m| v1::PlayerResult {
                            user_id: m.user_id.clone(),
                            display_name: m.name.clone(),
                            kills: m.stats.kills,
                            gold_earned: m.stats.gold_earned,
                            gold_spent: m.stats.gold_spent,
                            towers_built: m.stats.towers_built,
                            present: m.present,
                        })
                        .collect(),
                    towers: end
                        .towers_built
                        .iter()
                        .map(|t| v1::TowerUsage { tower_type: t.tower_type.clone(), count: t.count })
                        .collect(),
                });
                encode(TOPIC, Priority::Normal, NewEvent::encode_as(&out, format))
            }
            _ => None,
        })
        .chain(searchable)
        .collect()
}

/// Members and admins see any session; anyone signed in a public one.
pub fn may_see(caller: &Caller, state: &GameSession) -> Result<(), Failure> {
    if !state.private || caller.is_admin() || state.members.iter().any(|m| m.user_id == caller.user_id) {
        Ok(())
    } else {
        Err(Failure::permission_denied("a private session is seen by its players and admins only"))
    }
}
