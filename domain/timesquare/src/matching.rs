//! The Match aggregate (`match`): the matchmaking saga, a process manager
//! persisted as an event-sourced aggregate. Every step and every
//! compensation is an event on its stream, so a saga interrupted anywhere
//! resumes from its events.
//!
//! Forward: formed → tickets claimed (and every player entered the match)
//! → game session created (seats reserved for exactly these players) → each
//! player joined → awaiting confirmation (deadline) → ready.
//! Compensation (a ticket or player unavailable, a player who left, a
//! missed deadline, a lockout): cancelled → session closed → the culprits'
//! tickets dropped, the others released back to the queue keeping their
//! waiting time → every player released → compensated.
//!
//! [`Match::next_steps`] says what the saga does after each event; the
//! service performs those steps (each an idempotent command on another
//! aggregate) and records their results here.

use std::collections::BTreeSet;

use allies_contracts::timesquare::events::MatchEvent;
use allies_contracts::timesquare::events::v1::*;
use allies_core::{Aggregate, ErrorCode, RuleViolation, ServiceError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    None,
    Forming,
    Claimed,
    SessionCreated,
    Awaiting,
    Ready,
    Cancelled,
    Compensated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Forming => "forming",
            Self::Claimed => "claimed",
            Self::SessionCreated => "session_created",
            Self::Awaiting => "awaiting_confirmation",
            Self::Ready => "ready",
            Self::Cancelled => "cancelled",
            Self::Compensated => "compensated",
        }
    }

    /// Forward steps are over.
    pub fn settled(self) -> bool {
        matches!(self, Self::Ready | Self::Cancelled | Self::Compensated)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchMember {
    pub user_id: String,
    pub rating: i32,
    pub ticket_id: String,
    pub joined: bool,
    pub confirmed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub id: String,
    pub status: Status,
    pub tickets: Vec<String>,
    pub members: Vec<MatchMember>,
    pub map: String,
    pub difficulty: String,
    pub window: i32,
    pub spread: i32,
    pub formed_at_ms: i64,
    pub confirm_within_ms: i64,
    pub deadline_ms: i64,
    pub session_id: String,
    pub reason: String,
    pub culprits: Vec<String>,
    pub session_closed: bool,
    pub tickets_done: BTreeSet<String>,
    pub players_released: BTreeSet<String>,
}

impl allies_core::Snapshot for Match {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatchCommand {
    Form(MatchFormed),
    RecordClaims {
        now_ms: i64,
    },
    RecordSession {
        session_id: String,
        now_ms: i64,
    },
    RecordJoin {
        user_id: String,
        now_ms: i64,
    },
    Confirm {
        user_id: String,
        now_ms: i64,
    },
    /// The deadline sweeper: cancels if the deadline passed unconfirmed.
    Timeout {
        now_ms: i64,
    },
    Cancel {
        reason: String,
        culprits: Vec<String>,
        detail: String,
        now_ms: i64,
    },
    RecordSessionClosed,
    RecordTicket {
        ticket_id: String,
        dropped: bool,
    },
    RecordPlayerReleased {
        user_id: String,
    },
    Finish {
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("no such match")]
    NoSuchMatch,
    #[error("the match exists already")]
    Exists,
    #[error("you are not in this match")]
    NotInMatch,
    #[error("the match was cancelled ({0})")]
    Cancelled(String),
}

impl ServiceError for MatchError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NoSuchMatch => ErrorCode::NotFound,
            Self::Exists => ErrorCode::AlreadyExists,
            Self::NotInMatch => ErrorCode::PermissionDenied,
            Self::Cancelled(_) => ErrorCode::FailedPrecondition,
        }
    }
    fn rule(&self) -> Option<RuleViolation> {
        let rule = match self {
            Self::NoSuchMatch => "NO_SUCH_MATCH",
            Self::Exists => "MATCH_EXISTS",
            Self::NotInMatch => "NOT_IN_MATCH",
            Self::Cancelled(_) => "MATCH_CANCELLED",
        };
        Some(RuleViolation { rule: rule.into(), subject: "match".into(), description: self.to_string() })
    }
}

/// What the saga does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Claim every ticket for this match and enter every player into it;
    /// then `RecordClaims`, or `Cancel` naming who was unavailable.
    ClaimAll,
    /// Create the game session (host: the first player; seats reserved).
    CreateSession,
    /// Seat this player in the session; then `RecordJoin`.
    Join(String),
    /// Put the confirmation deadline in the schedule.
    ScheduleDeadline(i64),
    /// The match is a game: complete every ticket, move every player into it,
    /// take the deadline off the schedule.
    Conclude,
    /// Compensation, in order; each is recorded on the match.
    CloseSession(String),
    ReleaseTicket(String),
    DropTicket(String),
    ReleasePlayer(String),
    Finish,
}

impl Match {
    pub fn member(&self, user_id: &str) -> Option<&MatchMember> {
        self.members.iter().find(|m| m.user_id == user_id)
    }

    fn member_mut(&mut self, user_id: &str) -> Option<&mut MatchMember> {
        self.members.iter_mut().find(|m| m.user_id == user_id)
    }

    pub fn host(&self) -> &str {
        self.members.first().map(|m| m.user_id.as_str()).unwrap_or_default()
    }

    fn all_joined(&self) -> bool {
        self.members.iter().all(|m| m.joined)
    }

    fn all_confirmed(&self) -> bool {
        self.members.iter().all(|m| m.confirmed)
    }

    /// The tickets with a culprit among their players.
    fn dropped_tickets(&self) -> BTreeSet<String> {
        self.members.iter().filter(|m| self.culprits.contains(&m.user_id)).map(|m| m.ticket_id.clone()).collect()
    }

    /// Events of becoming ready, if every player joined and confirmed.
    fn ready_if_complete(&self, after: &Match, now_ms: i64) -> Vec<MatchEvent> {
        if after.status != Status::Ready && after.all_joined() && after.all_confirmed() && !after.session_id.is_empty()
        {
            vec![MatchEvent::Ready(MatchReady { session_id: self.session_id.clone(), at_ms: now_ms })]
        } else {
            Vec::new()
        }
    }

    /// The compensation still to do, in order: close the session, drop or
    /// release each ticket, release each player, finish.
    pub fn compensation(&self) -> Vec<Step> {
        if self.status != Status::Cancelled {
            return Vec::new();
        }
        let mut steps = Vec::new();
        if !self.session_id.is_empty() && !self.session_closed {
            steps.push(Step::CloseSession(self.session_id.clone()));
        }
        let dropped = self.dropped_tickets();
        for t in self.tickets.iter().filter(|t| !self.tickets_done.contains(*t)) {
            steps.push(if dropped.contains(t) { Step::DropTicket(t.clone()) } else { Step::ReleaseTicket(t.clone()) });
        }
        for m in self.members.iter().filter(|m| !self.players_released.contains(&m.user_id)) {
            steps.push(Step::ReleasePlayer(m.user_id.clone()));
        }
        steps.push(Step::Finish);
        steps
    }

    /// What the saga does after `event` (the state is the match after it).
    pub fn next_steps(&self, event: &MatchEvent) -> Vec<Step> {
        match event {
            MatchEvent::Formed(_) if self.status == Status::Forming => vec![Step::ClaimAll],
            MatchEvent::TicketsClaimed(_) if self.status == Status::Claimed => vec![Step::CreateSession],
            MatchEvent::SessionCreated(_) if self.status == Status::SessionCreated => {
                self.members.iter().filter(|m| !m.joined).map(|m| Step::Join(m.user_id.clone())).collect()
            }
            MatchEvent::AwaitingConfirmation(a) if self.status == Status::Awaiting => {
                vec![Step::ScheduleDeadline(a.deadline_ms)]
            }
            MatchEvent::Ready(_) => vec![Step::Conclude],
            MatchEvent::Cancelled(_)
            | MatchEvent::SessionClosed(_)
            | MatchEvent::TicketReleased(_)
            | MatchEvent::TicketDropped(_)
            | MatchEvent::PlayerReleased(_) => self.compensation().into_iter().take(1).collect(),
            _ => Vec::new(),
        }
    }
}

impl Aggregate for Match {
    const TYPE: &'static str = "match";
    type Command = MatchCommand;
    type Event = MatchEvent;
    type Error = MatchError;

    fn decide(&self, command: &MatchCommand) -> Result<Vec<MatchEvent>, MatchError> {
        use MatchCommand::*;
        if let Form(f) = command {
            return if self.status == Status::None {
                Ok(vec![MatchEvent::Formed(f.clone())])
            } else {
                Err(MatchError::Exists)
            };
        }
        if self.status == Status::None {
            return Err(MatchError::NoSuchMatch);
        }
        let after = |events: &[MatchEvent]| {
            let mut s = self.clone();
            for e in events {
                s.evolve(e);
            }
            s
        };
        Ok(match command {
            Form(_) => unreachable!("decided above"),
            RecordClaims { now_ms } if self.status == Status::Forming => {
                vec![MatchEvent::TicketsClaimed(MatchTicketsClaimed { at_ms: *now_ms })]
            }
            RecordSession { session_id, now_ms } if self.status == Status::Claimed => {
                vec![MatchEvent::SessionCreated(MatchSessionCreated { session_id: session_id.clone(), at_ms: *now_ms })]
            }
            RecordJoin { user_id, now_ms } if self.status == Status::SessionCreated => {
                let m = self.member(user_id).ok_or(MatchError::NotInMatch)?;
                if m.joined {
                    return Ok(Vec::new());
                }
                let mut out =
                    vec![MatchEvent::PlayerJoined(MatchPlayerJoined { user_id: user_id.clone(), at_ms: *now_ms })];
                let next = after(&out);
                if next.all_joined() {
                    let ready = self.ready_if_complete(&next, *now_ms);
                    if ready.is_empty() {
                        out.push(MatchEvent::AwaitingConfirmation(MatchAwaitingConfirmation {
                            deadline_ms: now_ms + self.confirm_within_ms,
                        }));
                    }
                    out.extend(ready);
                }
                out
            }
            Confirm { user_id, now_ms } => {
                let m = self.member(user_id).ok_or(MatchError::NotInMatch)?;
                if matches!(self.status, Status::Cancelled | Status::Compensated) {
                    return Err(MatchError::Cancelled(self.reason.clone()));
                }
                if m.confirmed || self.status == Status::Ready {
                    return Ok(Vec::new());
                }
                let mut out = vec![MatchEvent::PlayerConfirmed(MatchPlayerConfirmed {
                    user_id: user_id.clone(),
                    at_ms: *now_ms,
                })];
                out.extend(self.ready_if_complete(&after(&out), *now_ms));
                out
            }
            Timeout { now_ms } if self.status == Status::Awaiting && *now_ms >= self.deadline_ms => {
                let missing: Vec<String> =
                    self.members.iter().filter(|m| !m.confirmed).map(|m| m.user_id.clone()).collect();
                vec![MatchEvent::Cancelled(MatchCancelled {
                    reason: "confirmation_timeout".into(),
                    culprits: missing,
                    at_ms: *now_ms,
                    detail: "not confirmed by the deadline".into(),
                })]
            }
            Cancel { reason, culprits, detail, now_ms } if !self.status.settled() => {
                vec![MatchEvent::Cancelled(MatchCancelled {
                    reason: reason.clone(),
                    culprits: culprits.iter().filter(|c| self.member(c).is_some()).cloned().collect(),
                    at_ms: *now_ms,
                    detail: detail.clone(),
                })]
            }
            RecordSessionClosed if self.status == Status::Cancelled && !self.session_closed => {
                vec![MatchEvent::SessionClosed(MatchSessionClosed { session_id: self.session_id.clone() })]
            }
            RecordTicket { ticket_id, dropped }
                if self.status == Status::Cancelled && !self.tickets_done.contains(ticket_id) =>
            {
                if *dropped {
                    vec![MatchEvent::TicketDropped(MatchTicketDropped { ticket_id: ticket_id.clone() })]
                } else {
                    vec![MatchEvent::TicketReleased(MatchTicketReleased { ticket_id: ticket_id.clone() })]
                }
            }
            RecordPlayerReleased { user_id }
                if self.status == Status::Cancelled && !self.players_released.contains(user_id) =>
            {
                vec![MatchEvent::PlayerReleased(MatchPlayerReleased { user_id: user_id.clone() })]
            }
            Finish { now_ms } if self.status == Status::Cancelled && self.compensation() == vec![Step::Finish] => {
                vec![MatchEvent::Compensated(MatchCompensated { at_ms: *now_ms })]
            }
            // A step already recorded, or one the match is past: nothing.
            _ => Vec::new(),
        })
    }

    fn evolve(&mut self, event: &MatchEvent) {
        match event {
            MatchEvent::Formed(e) => {
                self.id = e.match_id.clone();
                self.status = Status::Forming;
                self.tickets = e.tickets.clone();
                self.members = e
                    .players
                    .iter()
                    .map(|p| MatchMember {
                        user_id: p.user_id.clone(),
                        rating: p.rating,
                        ticket_id: p.ticket_id.clone(),
                        joined: false,
                        confirmed: false,
                    })
                    .collect();
                self.map = e.map.clone();
                self.difficulty = e.difficulty.clone();
                self.window = e.window;
                self.spread = e.spread;
                self.formed_at_ms = e.formed_at_ms;
                self.confirm_within_ms = e.confirm_within_ms;
            }
            MatchEvent::TicketsClaimed(_) => self.status = Status::Claimed,
            MatchEvent::SessionCreated(e) => {
                self.status = Status::SessionCreated;
                self.session_id = e.session_id.clone();
            }
            MatchEvent::PlayerJoined(e) => {
                if let Some(m) = self.member_mut(&e.user_id) {
                    m.joined = true;
                }
            }
            MatchEvent::AwaitingConfirmation(e) => {
                self.status = Status::Awaiting;
                self.deadline_ms = e.deadline_ms;
            }
            MatchEvent::PlayerConfirmed(e) => {
                if let Some(m) = self.member_mut(&e.user_id) {
                    m.confirmed = true;
                }
            }
            MatchEvent::Ready(_) => self.status = Status::Ready,
            MatchEvent::Cancelled(e) => {
                self.status = Status::Cancelled;
                self.reason = e.reason.clone();
                self.culprits = e.culprits.clone();
            }
            MatchEvent::SessionClosed(_) => self.session_closed = true,
            MatchEvent::TicketReleased(e) => {
                self.tickets_done.insert(e.ticket_id.clone());
            }
            MatchEvent::TicketDropped(e) => {
                self.tickets_done.insert(e.ticket_id.clone());
            }
            MatchEvent::PlayerReleased(e) => {
                self.players_released.insert(e.user_id.clone());
            }
            MatchEvent::Compensated(_) => self.status = Status::Compensated,
        }
    }
}

#[cfg(test)]
mod tests {
    use allies_core::testing::given;

    use super::*;

    fn formed() -> Vec<MatchEvent> {
        vec![MatchEvent::Formed(MatchFormed {
            match_id: "m1".into(),
            tickets: vec!["t1".into(), "t2".into()],
            players: vec![
                MatchPlayer { user_id: "a".into(), rating: 1500, ticket_id: "t1".into() },
                MatchPlayer { user_id: "b".into(), rating: 1510, ticket_id: "t2".into() },
            ],
            map: "meadow".into(),
            difficulty: "normal".into(),
            window: 100,
            spread: 10,
            formed_at_ms: 0,
            confirm_within_ms: 1_000,
        })]
    }

    fn run(history: &[MatchEvent], commands: &[MatchCommand]) -> (Match, Vec<MatchEvent>) {
        let mut s = Match::replay(history.iter());
        let mut all = Vec::new();
        for c in commands {
            let events = s.decide(c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            for e in &events {
                s.evolve(e);
            }
            all.extend(events);
        }
        (s, all)
    }

    fn to_session() -> Vec<MatchCommand> {
        vec![
            MatchCommand::RecordClaims { now_ms: 1 },
            MatchCommand::RecordSession { session_id: "g1".into(), now_ms: 2 },
            MatchCommand::RecordJoin { user_id: "a".into(), now_ms: 3 },
            MatchCommand::RecordJoin { user_id: "b".into(), now_ms: 4 },
        ]
    }

    #[test]
    fn the_forward_path_ends_ready_when_everyone_joined_and_confirmed() {
        let (s, events) = run(&formed(), &to_session());
        assert_eq!((s.status, s.deadline_ms), (Status::Awaiting, 1_004));
        assert_eq!(s.next_steps(events.last().unwrap()), vec![Step::ScheduleDeadline(1_004)]);
        let (s, events) = run(
            &[formed(), events].concat(),
            &[
                MatchCommand::Confirm { user_id: "a".into(), now_ms: 5 },
                MatchCommand::Confirm { user_id: "b".into(), now_ms: 6 },
            ],
        );
        assert_eq!(s.status, Status::Ready);
        assert_eq!(s.next_steps(events.last().unwrap()), vec![Step::Conclude]);
        // Steps are idempotent: a redelivered step records nothing.
        given::<Match>([formed(), events].concat())
            .when(MatchCommand::Confirm { user_id: "a".into(), now_ms: 7 })
            .then([]);
    }

    #[test]
    fn players_may_confirm_early() {
        let mut cmds = vec![
            MatchCommand::Confirm { user_id: "a".into(), now_ms: 0 },
            MatchCommand::Confirm { user_id: "b".into(), now_ms: 0 },
        ];
        cmds.extend(to_session());
        let (s, events) = run(&formed(), &cmds);
        assert_eq!(s.status, Status::Ready);
        assert!(!events.iter().any(|e| matches!(e, MatchEvent::AwaitingConfirmation(_))));
    }

    #[test]
    fn a_missed_deadline_cancels_and_the_compensation_drops_the_culprits_and_requeues_the_rest() {
        let mut cmds = to_session();
        cmds.push(MatchCommand::Confirm { user_id: "a".into(), now_ms: 5 });
        let (s, events) = run(&formed(), &cmds);
        let history = [formed(), events].concat();
        given::<Match>(history.clone()).when(MatchCommand::Timeout { now_ms: 1_003 }).then([]);
        let (s2, cancel) = run(&history, &[MatchCommand::Timeout { now_ms: 1_004 }]);
        assert_eq!((s2.status, s2.culprits.clone()), (Status::Cancelled, vec!["b".to_owned()]));
        let _ = s;
        assert_eq!(
            s2.compensation(),
            vec![
                Step::CloseSession("g1".into()),
                Step::ReleaseTicket("t1".into()),
                Step::DropTicket("t2".into()),
                Step::ReleasePlayer("a".into()),
                Step::ReleasePlayer("b".into()),
                Step::Finish
            ]
        );
        assert_eq!(s2.next_steps(cancel.last().unwrap()), vec![Step::CloseSession("g1".into())]);
        let (done, _) = run(
            &[history, cancel].concat(),
            &[
                MatchCommand::RecordSessionClosed,
                MatchCommand::RecordTicket { ticket_id: "t1".into(), dropped: false },
                MatchCommand::RecordTicket { ticket_id: "t2".into(), dropped: true },
                MatchCommand::RecordPlayerReleased { user_id: "a".into() },
                MatchCommand::RecordPlayerReleased { user_id: "b".into() },
                MatchCommand::Finish { now_ms: 2_000 },
            ],
        );
        assert_eq!(done.status, Status::Compensated);
        // Confirming a cancelled match says so; cancelling a ready one does nothing.
        given::<Match>(formed())
            .when(MatchCommand::Cancel {
                reason: "r".into(),
                culprits: vec!["zed".into()],
                detail: String::new(),
                now_ms: 1,
            })
            .then([MatchEvent::Cancelled(MatchCancelled {
                reason: "r".into(),
                culprits: vec![],
                at_ms: 1,
                detail: String::new(),
            })]);
    }

    #[test]
    fn a_cancel_before_the_session_has_nothing_to_close() {
        let (s, _) = run(
            &formed(),
            &[MatchCommand::Cancel {
                reason: "ticket_unavailable".into(),
                culprits: vec!["b".into()],
                detail: String::new(),
                now_ms: 1,
            }],
        );
        assert_eq!(s.compensation()[0], Step::ReleaseTicket("t1".into()));
        given::<Match>(formed())
            .when(MatchCommand::Confirm { user_id: "zed".into(), now_ms: 1 })
            .then_err(MatchError::NotInMatch);
    }
}
