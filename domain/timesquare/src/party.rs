//! The Party aggregate (`party`, id = the host's user id): the players a
//! host may queue with. Nobody is put in a party without consent: the host
//! invites, the invited player accepts (or declines) before the invitation
//! expires; a member may leave at any time and the host may remove one.
//! FindMatch queues a party member only while they are a member.

use std::collections::BTreeMap;

use allies_contracts::timesquare::events::PartyEvent;
use allies_contracts::timesquare::events::v1::*;
use allies_core::{Aggregate, ErrorCode, RuleViolation, ServiceError};
use serde::{Deserialize, Serialize};

/// The aggregate type of parties.
pub const PARTY_TYPE: &str = "party";
/// How long an invitation stays open.
pub const INVITE_TTL_MS: i64 = 5 * 60 * 1000;
/// Members and open invitations besides the host (a game seats four).
pub const MAX_GUESTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seat {
    /// Invited, until the time given (Unix ms).
    Invited {
        until_ms: i64,
    },
    Member,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// The host (the aggregate id), known from the first event.
    pub host: String,
    /// Guests by user id: members and invitations (some perhaps expired).
    pub guests: BTreeMap<String, Seat>,
}

impl allies_core::Snapshot for Party {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

impl Party {
    /// The members, in user id order.
    pub fn members(&self) -> Vec<String> {
        self.guests.iter().filter(|(_, s)| **s == Seat::Member).map(|(u, _)| u.clone()).collect()
    }

    pub fn is_member(&self, user: &str) -> bool {
        self.guests.get(user) == Some(&Seat::Member)
    }

    /// An invitation of `user` still open at `now_ms`.
    pub fn invited(&self, user: &str, now_ms: i64) -> bool {
        matches!(self.guests.get(user), Some(Seat::Invited { until_ms }) if *until_ms > now_ms)
    }

    /// Members and open invitations at `now_ms`.
    fn taken(&self, now_ms: i64) -> usize {
        self.guests
            .values()
            .filter(|s| matches!(s, Seat::Member) || matches!(s, Seat::Invited { until_ms } if *until_ms > now_ms))
            .count()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PartyCommand {
    /// The host (the aggregate's id) invites `user`.
    Invite {
        host: String,
        user: String,
        now_ms: i64,
    },
    Accept {
        user: String,
        now_ms: i64,
    },
    Decline {
        user: String,
        now_ms: i64,
    },
    /// `user` leaves (`by` = `user`) or the host removes them (`by` = host).
    Leave {
        user: String,
        by: String,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartyError {
    #[error("you cannot invite yourself")]
    InviteSelf,
    #[error("{0} is already in the party")]
    AlreadyMember(String),
    #[error("{0} is already invited")]
    AlreadyInvited(String),
    #[error("the party is full: the host and at most {MAX_GUESTS} members or open invitations")]
    Full,
    #[error("you have no open invitation to this party")]
    NoInvitation,
    #[error("the invitation expired; ask the host for a new one")]
    InvitationExpired,
    #[error("{0} is not in the party")]
    NotAMember(String),
    #[error("only the member or the host may take a member out of a party")]
    NotAllowed,
}

impl ServiceError for PartyError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotAllowed => ErrorCode::PermissionDenied,
            Self::InviteSelf => ErrorCode::InvalidArgument,
            _ => ErrorCode::FailedPrecondition,
        }
    }
    fn field_violations(&self) -> Vec<allies_core::FieldViolation> {
        match self {
            Self::InviteSelf => vec![allies_core::FieldViolation::new("user_id", "is you")],
            _ => Vec::new(),
        }
    }
    fn rule(&self) -> Option<RuleViolation> {
        let rule = match self {
            Self::InviteSelf | Self::NotAllowed => return None,
            Self::AlreadyMember(_) => "ALREADY_IN_PARTY",
            Self::AlreadyInvited(_) => "ALREADY_INVITED",
            Self::Full => "PARTY_FULL",
            Self::NoInvitation => "NO_INVITATION",
            Self::InvitationExpired => "INVITATION_EXPIRED",
            Self::NotAMember(_) => "NOT_IN_PARTY",
        };
        Some(RuleViolation { rule: rule.into(), subject: "party".into(), description: self.to_string() })
    }
}

impl Aggregate for Party {
    const TYPE: &'static str = PARTY_TYPE;
    type Command = PartyCommand;
    type Event = PartyEvent;
    type Error = PartyError;

    fn decide(&self, command: &PartyCommand) -> Result<Vec<PartyEvent>, PartyError> {
        use PartyCommand::*;
        Ok(match command {
            Invite { host, user, now_ms } => {
                if user == host {
                    return Err(PartyError::InviteSelf);
                }
                if self.is_member(user) {
                    return Err(PartyError::AlreadyMember(user.clone()));
                }
                if self.invited(user, *now_ms) {
                    return Err(PartyError::AlreadyInvited(user.clone()));
                }
                if self.taken(*now_ms) >= MAX_GUESTS {
                    return Err(PartyError::Full);
                }
                vec![PartyEvent::InviteSent(PartyInviteSent {
                    user_id: user.clone(),
                    expires_at_ms: now_ms + INVITE_TTL_MS,
                    at_ms: *now_ms,
                    host_id: host.clone(),
                })]
            }
            Accept { user, now_ms } => match self.guests.get(user) {
                Some(Seat::Member) => Vec::new(),
                Some(Seat::Invited { until_ms }) if *until_ms > *now_ms => {
                    vec![PartyEvent::InviteAccepted(PartyInviteAccepted { user_id: user.clone(), at_ms: *now_ms })]
                }
                Some(Seat::Invited { .. }) => return Err(PartyError::InvitationExpired),
                None => return Err(PartyError::NoInvitation),
            },
            Decline { user, now_ms } => match self.guests.get(user) {
                Some(Seat::Invited { .. }) => {
                    vec![PartyEvent::InviteDeclined(PartyInviteDeclined { user_id: user.clone(), at_ms: *now_ms })]
                }
                _ => return Err(PartyError::NoInvitation),
            },
            Leave { user, by, now_ms } => {
                if by != user && *by != self.host {
                    return Err(PartyError::NotAllowed);
                }
                if !self.guests.contains_key(user) {
                    return Err(PartyError::NotAMember(user.clone()));
                }
                vec![PartyEvent::MemberLeft(PartyMemberLeft { user_id: user.clone(), by: by.clone(), at_ms: *now_ms })]
            }
        })
    }

    fn evolve(&mut self, event: &PartyEvent) {
        match event {
            PartyEvent::InviteSent(e) => {
                self.host = e.host_id.clone();
                self.guests.insert(e.user_id.clone(), Seat::Invited { until_ms: e.expires_at_ms });
            }
            PartyEvent::InviteAccepted(e) => {
                self.guests.insert(e.user_id.clone(), Seat::Member);
            }
            PartyEvent::InviteDeclined(PartyInviteDeclined { user_id, .. })
            | PartyEvent::MemberLeft(PartyMemberLeft { user_id, .. }) => {
                self.guests.remove(user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allies_core::testing::given;

    fn invite(user: &str, now_ms: i64) -> PartyCommand {
        PartyCommand::Invite { host: "host".into(), user: user.into(), now_ms }
    }

    fn invited(user: &str) -> PartyEvent {
        PartyEvent::InviteSent(PartyInviteSent {
            user_id: user.into(),
            expires_at_ms: 1_000 + INVITE_TTL_MS,
            at_ms: 1_000,
            host_id: "host".into(),
        })
    }

    fn accepted(user: &str) -> PartyEvent {
        PartyEvent::InviteAccepted(PartyInviteAccepted { user_id: user.into(), at_ms: 2_000 })
    }

    #[test]
    fn a_player_joins_a_party_only_by_accepting_an_open_invitation() {
        given::<Party>([]).when(invite("bo", 1_000)).then([invited("bo")]);
        given::<Party>([])
            .when(PartyCommand::Accept { user: "bo".into(), now_ms: 2_000 })
            .then_err(PartyError::NoInvitation);
        let state = given::<Party>([invited("bo")])
            .when(PartyCommand::Accept { user: "bo".into(), now_ms: 2_000 })
            .then_state();
        assert_eq!(state.members(), vec!["bo".to_owned()]);
        given::<Party>([invited("bo")])
            .when(PartyCommand::Accept { user: "bo".into(), now_ms: 1_000 + INVITE_TTL_MS })
            .then_err(PartyError::InvitationExpired);
        // Accepting twice changes nothing.
        given::<Party>([invited("bo"), accepted("bo")])
            .when(PartyCommand::Accept { user: "bo".into(), now_ms: 3_000 })
            .then([]);
        // Declined: gone; accepting afterwards finds nothing.
        let events =
            given::<Party>([invited("bo")]).when(PartyCommand::Decline { user: "bo".into(), now_ms: 2_000 }).then_ok();
        let mut history = vec![invited("bo")];
        history.extend(events);
        given::<Party>(history)
            .when(PartyCommand::Accept { user: "bo".into(), now_ms: 2_500 })
            .then_err(PartyError::NoInvitation);
    }

    #[test]
    fn invitations_are_not_repeated_the_host_is_not_a_guest_and_a_party_seats_four() {
        given::<Party>([]).when(invite("host", 1_000)).then_err(PartyError::InviteSelf);
        given::<Party>([invited("bo")]).when(invite("bo", 2_000)).then_err(PartyError::AlreadyInvited("bo".into()));
        given::<Party>([invited("bo"), accepted("bo")])
            .when(invite("bo", 2_000))
            .then_err(PartyError::AlreadyMember("bo".into()));
        // An expired invitation may be sent again.
        given::<Party>([invited("bo")]).when(invite("bo", 1_000 + INVITE_TTL_MS)).then_ok();
        let full = [invited("a"), invited("b"), accepted("b"), invited("c")];
        given::<Party>(full.clone()).when(invite("d", 2_000)).then_err(PartyError::Full);
        // Expired invitations free their seat.
        given::<Party>(full).when(invite("d", 1_000 + INVITE_TTL_MS)).then_ok();
    }

    #[test]
    fn a_member_leaves_the_host_removes_and_nobody_else_does() {
        let party = [invited("bo"), accepted("bo")];
        let leave = |user: &str, by: &str| PartyCommand::Leave { user: user.into(), by: by.into(), now_ms: 3_000 };
        let left = PartyEvent::MemberLeft(PartyMemberLeft { user_id: "bo".into(), by: "bo".into(), at_ms: 3_000 });
        let state = given::<Party>(party.clone()).when(leave("bo", "bo")).then([left]);
        assert!(state.members().is_empty());
        given::<Party>(party.clone()).when(leave("bo", "host")).then_ok();
        given::<Party>(party.clone()).when(leave("bo", "cy")).then_err(PartyError::NotAllowed);
        given::<Party>(party).when(leave("cy", "cy")).then_err(PartyError::NotAMember("cy".into()));
    }
}
