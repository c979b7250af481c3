//! The match saga's driver: a consumer group (`ts.matches`) on the match
//! logs. For each match event it asks the match what comes next
//! ([`Match::next_steps`]) and performs it — each step an idempotent command
//! on another aggregate with the command id `<event id>:<step>` — then
//! records the result on the match, which is the next event. A replica
//! killed at any step leaves the event pending; another replica claims it
//! and repeats the step, which repeats nothing that was done.
//!
//! The confirmation deadline lives in the sorted set `mm:deadlines` (member:
//! match id, score: deadline); every replica's sweeper claims due matches
//! and sends `Timeout`, which cancels a match still unconfirmed.

use std::sync::Arc;
use std::time::Duration;

use allies_contracts::timesquare::events::MatchEvent;
use allies_core::{EventEnvelope, Failure};
use allies_platform::RequestContext;
use allies_store::RecordedEvent;
use allies_store::subscriber::{Handler, HandlerError};
use timesquare_domain::matching::{Match, MatchCommand, Status, Step};
use timesquare_domain::player::PlayerCommand;
use timesquare_domain::ticket::TicketCommand;
use timesquare_domain::{GameCommand, Who};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Result, TimesquareError};
use crate::matchmaking::Matchmaking;

pub const DEADLINES: &str = "mm:deadlines";

/// The game session of a match: the same id however often it is created.
pub fn session_of(match_id: &str) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("defense-allies/match/{match_id}").as_bytes()).to_string()
}

/// Whether a refusal is the answer for good (a rule), not a passing failure.
fn refused(e: &TimesquareError) -> bool {
    use allies_core::{ErrorCode, ServiceError};
    matches!(
        e.code(),
        ErrorCode::FailedPrecondition | ErrorCode::PermissionDenied | ErrorCode::NotFound | ErrorCode::AlreadyExists
    )
}

pub struct Saga {
    pub mm: Arc<Matchmaking>,
}

/// A step's setting: the event it reacts to (its id, correlation and time
/// make every command of the step the same on a redelivery) and the match.
struct At<'a> {
    event: &'a EventEnvelope<MatchEvent>,
    m: &'a Match,
}

impl At<'_> {
    /// A step's time: the event's (see `RequestContext::reaction`).
    fn now(&self) -> i64 {
        self.event.recorded_at_ms
    }

    fn ctx(&self, step: &str) -> RequestContext {
        RequestContext::reaction(self.event, step)
    }
}

impl Saga {
    async fn record(&self, s: &At<'_>, step: &str, command: MatchCommand) -> Result<()> {
        self.mm.on_match(&s.m.id, command, &s.ctx(step)).await.map(|_| ())
    }

    async fn cancel(&self, s: &At<'_>, reason: &str, culprits: Vec<String>, detail: String) -> Result<()> {
        let command = MatchCommand::Cancel { reason: reason.into(), culprits, detail, now_ms: s.now() };
        self.record(s, "cancel", command).await
    }

    async fn claim_all(&self, s: &At<'_>) -> Result<()> {
        for t in &s.m.tickets {
            let command = TicketCommand::Claim { match_id: s.m.id.clone(), now_ms: s.now() };
            if let Err(e) = self.mm.on_ticket(t, command, &s.ctx(&format!("claim:{t}"))).await {
                if !refused(&e) {
                    return Err(e);
                }
                let culprits = s.m.members.iter().filter(|m| m.ticket_id == *t).map(|m| m.user_id.clone()).collect();
                return self.cancel(s, "ticket_unavailable", culprits, format!("ticket {t}: {e}")).await;
            }
        }
        for m in &s.m.members {
            let command = PlayerCommand::EnterMatch { match_id: s.m.id.clone(), now_ms: s.now() };
            if let Err(e) = self.mm.players.run(&m.user_id, command, &s.ctx(&format!("enter:{}", m.user_id))).await {
                if !refused(&e) {
                    return Err(e);
                }
                let reason =
                    if e.rule_name().as_deref() == Some("LOCKED_OUT") { "locked_out" } else { "player_unavailable" };
                return self.cancel(s, reason, vec![m.user_id.clone()], format!("{}: {e}", m.user_id)).await;
            }
        }
        self.record(s, "claimed", MatchCommand::RecordClaims { now_ms: s.now() }).await
    }

    async fn who(&self, user: &str) -> Who {
        let name = match self.mm.players.get(user).await {
            Ok((p, _)) if !p.display_name.is_empty() => p.display_name.clone(),
            Ok((p, _)) if !p.username.is_empty() => p.username.clone(),
            _ => format!("player-{}", user.chars().take(8).collect::<String>()),
        };
        Who { user_id: user.to_owned(), display_name: name }
    }

    async fn create_session(&self, s: &At<'_>) -> Result<()> {
        let session_id = session_of(&s.m.id);
        let command = GameCommand::Create {
            session_id: session_id.clone(),
            host: self.who(s.m.host()).await,
            map: s.m.map.clone(),
            difficulty: s.m.difficulty.clone(),
            max_players: s.m.members.len() as u32,
            private: true,
            invite_hash: String::new(),
            match_id: s.m.id.clone(),
            rules_version: self.mm.game.rules_version.load(std::sync::atomic::Ordering::Relaxed),
            flags: Default::default(),
            reserved: s.m.members.iter().map(|m| m.user_id.clone()).collect(),
            now_ms: s.now(),
        };
        match self.mm.game.run(&session_id, command, &s.ctx("session")).await {
            Ok(_) => {}
            Err(e) if e.rule_name().as_deref() == Some("SESSION_EXISTS") => {}
            Err(e) if refused(&e) => {
                return self.cancel(s, "session_failed", Vec::new(), e.to_string()).await;
            }
            Err(e) => return Err(e),
        }
        self.record(s, "session", MatchCommand::RecordSession { session_id, now_ms: s.now() }).await
    }

    async fn join(&self, s: &At<'_>, user: &str) -> Result<bool> {
        let command = GameCommand::Join { who: self.who(user).await, invite_hash: None, now_ms: s.now() };
        match self.mm.game.run(&s.m.session_id, command, &s.ctx(&format!("join:{user}"))).await {
            Ok(_) => {}
            Err(e) if e.rule_name().as_deref() == Some("ALREADY_A_MEMBER") => {}
            Err(e) if refused(&e) => {
                self.cancel(s, "player_unavailable", vec![user.to_owned()], format!("{user}: {e}")).await?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        let command = MatchCommand::RecordJoin { user_id: user.to_owned(), now_ms: s.now() };
        self.record(s, &format!("joined:{user}"), command).await?;
        Ok(true)
    }

    async fn deadline(&self, match_id: &str, at: Option<i64>) -> Result<()> {
        let r = match at {
            Some(ms) => self.mm.deadlines.put(match_id, ms).await,
            None => self.mm.deadlines.remove(match_id).await,
        };
        r.map_err(|e| Failure::unavailable(format!("the match deadlines: {e}")).into())
    }

    async fn conclude(&self, s: &At<'_>) -> Result<()> {
        let session = s.m.session_id.clone();
        for t in &s.m.tickets {
            let command =
                TicketCommand::Complete { match_id: s.m.id.clone(), session_id: session.clone(), now_ms: s.now() };
            self.mm.on_ticket(t, command, &s.ctx(&format!("complete:{t}"))).await?;
        }
        for m in &s.m.members {
            let command = PlayerCommand::LeaveMatch {
                match_id: s.m.id.clone(),
                reason: "ready".into(),
                session_id: Some(session.clone()),
                now_ms: s.now(),
            };
            self.mm.players.run(&m.user_id, command, &s.ctx(&format!("ready:{}", m.user_id))).await?;
        }
        self.deadline(&s.m.id, None).await
    }

    async fn compensate(&self, s: &At<'_>, step: &Step) -> Result<()> {
        let m = s.m;
        match step {
            Step::CloseSession(session) => {
                let command = GameCommand::End {
                    user_id: "matchmaker".into(),
                    admin: true,
                    reason: format!("match cancelled: {}", m.reason),
                    now_ms: s.now(),
                };
                match self.mm.game.run(session, command, &s.ctx("close")).await {
                    Ok(_) => {}
                    Err(e) if matches!(e.rule_name().as_deref(), Some("GAME_ENDED" | "NO_SUCH_SESSION")) => {}
                    Err(e) => return Err(e),
                }
                self.record(s, "closed", MatchCommand::RecordSessionClosed).await
            }
            Step::ReleaseTicket(t) => {
                let command =
                    TicketCommand::Release { match_id: m.id.clone(), reason: m.reason.clone(), now_ms: s.now() };
                self.mm.on_ticket(t, command, &s.ctx(&format!("release:{t}"))).await?;
                self.record(
                    s,
                    &format!("released:{t}"),
                    MatchCommand::RecordTicket { ticket_id: t.clone(), dropped: false },
                )
                .await
            }
            Step::DropTicket(t) => {
                let command = TicketCommand::Drop {
                    match_id: m.id.clone(),
                    reason: format!("dropped: {}", m.reason),
                    now_ms: s.now(),
                };
                self.mm.on_ticket(t, command, &s.ctx(&format!("drop:{t}"))).await?;
                self.record(
                    s,
                    &format!("dropped:{t}"),
                    MatchCommand::RecordTicket { ticket_id: t.clone(), dropped: true },
                )
                .await
            }
            Step::ReleasePlayer(u) => {
                let command = PlayerCommand::LeaveMatch {
                    match_id: m.id.clone(),
                    reason: "cancelled".into(),
                    session_id: None,
                    now_ms: s.now(),
                };
                self.mm.players.run(u, command, &s.ctx(&format!("leave:{u}"))).await?;
                self.record(s, &format!("released:{u}"), MatchCommand::RecordPlayerReleased { user_id: u.clone() })
                    .await
            }
            Step::Finish => {
                self.deadline(&m.id, None).await?;
                self.record(s, "finish", MatchCommand::Finish { now_ms: s.now() }).await
            }
            _ => Ok(()),
        }
    }

    /// Performs what comes after `event`.
    pub async fn react(&self, record: &RecordedEvent) -> Result<()> {
        let e = record.typed::<MatchEvent>()?;
        let (m, _) = self.mm.matches.get(&record.envelope.aggregate_id).current().await?;
        let s = At { event: &e, m: &m };
        let steps = match &e.payload {
            // The whole compensation at once from the cancellation (each part
            // recorded; a redelivery resumes with what is left).
            MatchEvent::Cancelled(_) => m.compensation(),
            MatchEvent::SessionClosed(_)
            | MatchEvent::TicketReleased(_)
            | MatchEvent::TicketDropped(_)
            | MatchEvent::PlayerReleased(_) => Vec::new(),
            other => m.next_steps(other),
        };
        for step in steps {
            match &step {
                Step::ClaimAll => self.claim_all(&s).await?,
                Step::CreateSession => self.create_session(&s).await?,
                Step::Join(u) => {
                    if !self.join(&s, u).await? {
                        break;
                    }
                }
                Step::ScheduleDeadline(at) => self.deadline(&m.id, Some(*at)).await?,
                Step::Conclude => self.conclude(&s).await?,
                other => self.compensate(&s, other).await?,
            }
        }
        Ok(())
    }
}

impl Handler for Saga {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.react(event).await.map_err(HandlerError::of_service)
    }
}

/// Claims matches whose confirmation deadline passed and times them out,
/// until shutdown.
pub async fn sweep_deadlines(mm: Arc<Matchmaking>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        sweep_deadlines_once(&mm, allies_platform::context::now_ms()).await;
    }
}

/// One pass at `now`: each match whose deadline passed is timed out (a
/// match no longer awaiting leaves the schedule; one that cannot be timed
/// out now is looked at again in 5 s). Returns how many were claimed.
pub async fn sweep_deadlines_once(mm: &Matchmaking, now: i64) -> usize {
    let due = match mm.deadlines.claim_due(now, now + 5_000, 50).await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "deadline sweeper cannot reach the schedule");
            return 0;
        }
    };
    let claimed = due.len();
    for id in due {
        let ctx = RequestContext::system(now);
        let over = match mm.on_match(&id, MatchCommand::Timeout { now_ms: now }, &ctx).await {
            Ok(done) => {
                if !done.events.is_empty() {
                    tracing::info!(match_id = id, "match cancelled: not confirmed in time");
                }
                done.state.status != Status::Awaiting
            }
            Err(e) if refused(&e) => true,
            Err(e) => {
                tracing::warn!(match_id = id, error = %e, "cannot time a match out; retried later");
                false
            }
        };
        if over && let Err(e) = mm.deadlines.remove(&id).await {
            tracing::debug!(match_id = id, error = %e, "a finished match stays scheduled; dropped on a later pass");
        }
    }
    claimed
}
