//! The Ticket aggregate (`ticket`): one player, or a party, waiting for a
//! match. Searching → Claimed (by one match) → Completed (the match became a
//! game), or back to Searching (Released, keeping its waiting time) when the
//! match fell apart, or Cancelled / Expired. A ticket is claimed by at most
//! one match: the claim is a version-checked append on its stream.

use allies_contracts::timesquare::events::TicketEvent;
use allies_contracts::timesquare::events::v1::*;
use allies_core::{Aggregate, ErrorCode, RuleViolation, ServiceError};
use serde::{Deserialize, Serialize};

/// The aggregate type of tickets.
pub const TICKET_TYPE: &str = "ticket";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    None,
    Searching,
    Claimed,
    Completed,
    Cancelled,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Searching => "searching",
            Self::Claimed => "matched",
            Self::Completed => "ready",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Expired)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub owner: String,
    /// (user id, rating), the owner first.
    pub players: Vec<(String, i32)>,
    pub maps: Vec<String>,
    pub difficulty: String,
    pub min_players: u32,
    pub max_players: u32,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub status: Status,
    pub match_id: String,
    pub session_id: String,
    pub reason: String,
}

impl allies_core::Snapshot for Ticket {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

impl Ticket {
    /// The average rating of its players.
    pub fn rating(&self) -> i32 {
        if self.players.is_empty() {
            return 0;
        }
        (self.players.iter().map(|(_, r)| i64::from(*r)).sum::<i64>() / self.players.len() as i64) as i32
    }

    pub fn user_ids(&self) -> Vec<String> {
        self.players.iter().map(|(u, _)| u.clone()).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TicketCommand {
    Create(TicketCreated),
    Claim {
        match_id: String,
        now_ms: i64,
    },
    Release {
        match_id: String,
        reason: String,
        now_ms: i64,
    },
    Cancel {
        by: String,
        reason: String,
        now_ms: i64,
    },
    /// A match's compensation drops a culprit's ticket: cancelled only while
    /// this match holds it. A ticket another match claimed (a second
    /// matchmaker pass saw it before its claim was known) or one already
    /// gone is left alone — dropping it would break a match that did
    /// nothing wrong.
    Drop {
        match_id: String,
        reason: String,
        now_ms: i64,
    },
    Expire {
        now_ms: i64,
    },
    Complete {
        match_id: String,
        session_id: String,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("no such ticket")]
    NoSuchTicket,
    #[error("the ticket already exists")]
    Exists,
    #[error("the ticket is {0}, not searching")]
    Unavailable(&'static str),
    #[error("the ticket is claimed by another match ({0})")]
    ClaimedByAnother(String),
    #[error("the ticket's match is already a game")]
    AlreadyMatched,
}

impl ServiceError for TicketError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NoSuchTicket => ErrorCode::NotFound,
            Self::Exists => ErrorCode::AlreadyExists,
            _ => ErrorCode::FailedPrecondition,
        }
    }
    fn rule(&self) -> Option<RuleViolation> {
        let rule = match self {
            Self::NoSuchTicket => "NO_SUCH_TICKET",
            Self::Exists => "TICKET_EXISTS",
            Self::Unavailable(_) => "TICKET_UNAVAILABLE",
            Self::ClaimedByAnother(_) => "TICKET_CLAIMED",
            Self::AlreadyMatched => "ALREADY_MATCHED",
        };
        Some(RuleViolation { rule: rule.into(), subject: "ticket".into(), description: self.to_string() })
    }
}

impl Aggregate for Ticket {
    const TYPE: &'static str = TICKET_TYPE;
    type Command = TicketCommand;
    type Event = TicketEvent;
    type Error = TicketError;

    fn decide(&self, command: &TicketCommand) -> Result<Vec<TicketEvent>, TicketError> {
        use TicketCommand::*;
        if let Create(c) = command {
            return if self.status == Status::None {
                Ok(vec![TicketEvent::Created(c.clone())])
            } else {
                Err(TicketError::Exists)
            };
        }
        if self.status == Status::None {
            return Err(TicketError::NoSuchTicket);
        }
        Ok(match command {
            Create(_) => unreachable!("decided above"),
            Claim { match_id, now_ms } => match self.status {
                Status::Searching => {
                    vec![TicketEvent::Claimed(TicketClaimed { match_id: match_id.clone(), at_ms: *now_ms })]
                }
                Status::Claimed | Status::Completed if self.match_id == *match_id => Vec::new(),
                Status::Claimed => return Err(TicketError::ClaimedByAnother(self.match_id.clone())),
                s => return Err(TicketError::Unavailable(s.as_str())),
            },
            Release { match_id, reason, now_ms } if self.status == Status::Claimed && self.match_id == *match_id => {
                vec![TicketEvent::Released(TicketReleased {
                    match_id: match_id.clone(),
                    reason: reason.clone(),
                    at_ms: *now_ms,
                })]
            }
            Release { .. } => Vec::new(),
            Cancel { by, reason, now_ms } => match self.status {
                Status::Searching | Status::Claimed => vec![TicketEvent::Cancelled(TicketCancelled {
                    by: by.clone(),
                    reason: reason.clone(),
                    at_ms: *now_ms,
                    match_id: if self.status == Status::Claimed { self.match_id.clone() } else { String::new() },
                })],
                Status::Completed => return Err(TicketError::AlreadyMatched),
                _ => Vec::new(),
            },
            Drop { match_id, reason, now_ms } if self.status == Status::Claimed && self.match_id == *match_id => {
                vec![TicketEvent::Cancelled(TicketCancelled {
                    by: "matchmaker".into(),
                    reason: reason.clone(),
                    at_ms: *now_ms,
                    match_id: match_id.clone(),
                })]
            }
            Drop { .. } => Vec::new(),
            Expire { now_ms } if self.status == Status::Searching && *now_ms >= self.expires_at_ms => {
                vec![TicketEvent::Expired(TicketExpired { at_ms: *now_ms })]
            }
            Expire { .. } => Vec::new(),
            Complete { match_id, session_id, now_ms } => match self.status {
                Status::Claimed if self.match_id == *match_id => vec![TicketEvent::Completed(TicketCompleted {
                    match_id: match_id.clone(),
                    session_id: session_id.clone(),
                    at_ms: *now_ms,
                })],
                Status::Completed if self.match_id == *match_id => Vec::new(),
                Status::Claimed => return Err(TicketError::ClaimedByAnother(self.match_id.clone())),
                s => return Err(TicketError::Unavailable(s.as_str())),
            },
        })
    }

    fn evolve(&mut self, event: &TicketEvent) {
        match event {
            TicketEvent::Created(e) => {
                self.id = e.ticket_id.clone();
                self.owner = e.owner.clone();
                self.players = e.players.iter().map(|p| (p.user_id.clone(), p.rating)).collect();
                self.maps = e.maps.clone();
                self.difficulty = e.difficulty.clone();
                self.min_players = e.min_players;
                self.max_players = e.max_players;
                self.created_at_ms = e.created_at_ms;
                self.expires_at_ms = e.expires_at_ms;
                self.status = Status::Searching;
            }
            TicketEvent::Claimed(e) => {
                self.status = Status::Claimed;
                self.match_id = e.match_id.clone();
            }
            TicketEvent::Released(e) => {
                self.status = Status::Searching;
                self.match_id.clear();
                self.reason = e.reason.clone();
            }
            TicketEvent::Cancelled(e) => {
                self.status = Status::Cancelled;
                self.reason = e.reason.clone();
            }
            TicketEvent::Expired(_) => {
                self.status = Status::Expired;
                self.reason = "expired".into();
            }
            TicketEvent::Completed(e) => {
                self.status = Status::Completed;
                self.session_id = e.session_id.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use allies_core::testing::given;

    use super::*;

    fn created() -> Vec<TicketEvent> {
        vec![TicketEvent::Created(TicketCreated {
            ticket_id: "t1".into(),
            owner: "u1".into(),
            players: vec![TicketPlayer { user_id: "u1".into(), rating: 1500 }],
            maps: vec![],
            difficulty: "normal".into(),
            min_players: 2,
            max_players: 4,
            created_at_ms: 100,
            expires_at_ms: 1_000,
        })]
    }

    fn claimed(m: &str) -> Vec<TicketEvent> {
        let mut h = created();
        h.push(TicketEvent::Claimed(TicketClaimed { match_id: m.into(), at_ms: 200 }));
        h
    }

    #[test]
    fn one_match_claims_a_ticket() {
        given::<Ticket>(claimed("m1"))
            .when(TicketCommand::Claim { match_id: "m2".into(), now_ms: 300 })
            .then_err(TicketError::ClaimedByAnother("m1".into()));
        given::<Ticket>(claimed("m1")).when(TicketCommand::Claim { match_id: "m1".into(), now_ms: 300 }).then([]);
        let mut cancelled = created();
        cancelled.push(TicketEvent::Cancelled(TicketCancelled {
            by: "u1".into(),
            reason: "cancelled".into(),
            at_ms: 150,
            match_id: String::new(),
        }));
        given::<Ticket>(cancelled)
            .when(TicketCommand::Claim { match_id: "m1".into(), now_ms: 300 })
            .then_err(TicketError::Unavailable("cancelled"));
    }

    #[test]
    fn a_released_ticket_keeps_its_waiting_time_and_only_a_searching_one_expires() {
        let back = given::<Ticket>(claimed("m1"))
            .when(TicketCommand::Release { match_id: "m1".into(), reason: "confirmation_timeout".into(), now_ms: 500 })
            .then_state();
        assert_eq!((back.status, back.created_at_ms), (Status::Searching, 100));
        given::<Ticket>(claimed("m1")).when(TicketCommand::Expire { now_ms: 5_000 }).then([]);
        given::<Ticket>(created()).when(TicketCommand::Expire { now_ms: 999 }).then([]);
        given::<Ticket>(created())
            .when(TicketCommand::Expire { now_ms: 1_000 })
            .then([TicketEvent::Expired(TicketExpired { at_ms: 1_000 })]);
    }

    #[test]
    fn cancelling_a_claimed_ticket_names_its_match_and_a_completed_one_cannot_be_cancelled() {
        let events = given::<Ticket>(claimed("m1"))
            .when(TicketCommand::Cancel { by: "u1".into(), reason: "cancelled".into(), now_ms: 300 })
            .then_ok();
        assert!(matches!(&events[..], [TicketEvent::Cancelled(c)] if c.match_id == "m1"));
        let mut done = claimed("m1");
        done.push(TicketEvent::Completed(TicketCompleted {
            match_id: "m1".into(),
            session_id: "g".into(),
            at_ms: 400,
        }));
        given::<Ticket>(done)
            .when(TicketCommand::Cancel { by: "u1".into(), reason: "cancelled".into(), now_ms: 500 })
            .then_err(TicketError::AlreadyMatched);
    }

    #[test]
    fn a_match_drops_only_a_ticket_it_holds() {
        let drop = |m: &str| TicketCommand::Drop { match_id: m.into(), reason: "dropped".into(), now_ms: 300 };
        let events = given::<Ticket>(claimed("m1")).when(drop("m1")).then_ok();
        assert!(matches!(&events[..], [TicketEvent::Cancelled(c)] if c.match_id == "m1" && c.by == "matchmaker"));
        // Claimed by another match, still searching, or done: left alone.
        given::<Ticket>(claimed("m1")).when(drop("m2")).then([]);
        given::<Ticket>(created()).when(drop("m2")).then([]);
        let mut done = claimed("m1");
        done.push(TicketEvent::Completed(TicketCompleted {
            match_id: "m1".into(),
            session_id: "g".into(),
            at_ms: 400,
        }));
        given::<Ticket>(done).when(drop("m1")).then([]);
    }
}
