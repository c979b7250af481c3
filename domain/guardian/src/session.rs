//! The Session aggregate: one login, its rotating refresh token, its end.
//! Pure rules, no I/O.
//!
//! A refresh token is single use. Presenting the current one rotates it;
//! presenting one that was already rotated means two parties hold the token
//! family, so the session is revoked (and the reuse recorded) — the OAuth 2.0
//! refresh-token-rotation reuse rule.

use std::collections::HashSet;

pub use allies_contracts::guardian::events::SessionEvent;
use allies_contracts::guardian::events::v1::{RefreshTokenReused, SessionStarted, TokenRefreshed, UserLoggedOut};
use allies_core::{Aggregate, ErrorCode, ServiceError};

#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Start(SessionStarted),
    /// Hashes of the presented token and of its replacement.
    Refresh {
        presented_hash: String,
        new_hash: String,
        at_ms: i64,
        expires_at_ms: i64,
    },
    Logout {
        at_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session already exists")]
    AlreadyStarted,
    #[error("no such session")]
    UnknownSession,
    #[error("session has ended ({0})")]
    Ended(SessionStatus),
    #[error("refresh token expired")]
    RefreshTokenExpired,
    #[error("refresh token is not valid for this session")]
    InvalidRefreshToken,
}

impl ServiceError for SessionError {
    fn code(&self) -> ErrorCode {
        match self {
            // Two starts of one fresh session id: a retry of the login, not the caller's fault.
            Self::AlreadyStarted => ErrorCode::Aborted,
            _ => ErrorCode::Unauthenticated,
        }
    }
    fn message(&self) -> String {
        match self {
            Self::AlreadyStarted => self.to_string(),
            _ => format!("refresh refused: {self}"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SessionStatus {
    #[default]
    None,
    Active,
    LoggedOut,
    /// Ended because a rotated refresh token was reused.
    Revoked,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Active => "active",
            Self::LoggedOut => "logged_out",
            Self::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub user_id: String,
    pub status: SessionStatus,
    pub current_hash: String,
    pub rotated_hashes: HashSet<String>,
    pub expires_at_ms: i64,
}

impl allies_core::Snapshot for Session {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

impl Aggregate for Session {
    const TYPE: &'static str = "session";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;

    fn decide(&self, command: &SessionCommand) -> Result<Vec<SessionEvent>, SessionError> {
        match (command, self.status) {
            (SessionCommand::Start(s), SessionStatus::None) => Ok(vec![SessionEvent::Started(s.clone())]),
            (SessionCommand::Start(_), _) => Err(SessionError::AlreadyStarted),
            (_, SessionStatus::None) => Err(SessionError::UnknownSession),
            (SessionCommand::Logout { .. }, SessionStatus::LoggedOut | SessionStatus::Revoked) => Ok(vec![]),
            (SessionCommand::Logout { at_ms }, SessionStatus::Active) => {
                Ok(vec![SessionEvent::LoggedOut(UserLoggedOut { logged_out_at_ms: *at_ms })])
            }
            (SessionCommand::Refresh { .. }, status @ (SessionStatus::LoggedOut | SessionStatus::Revoked)) => {
                Err(SessionError::Ended(status))
            }
            (SessionCommand::Refresh { presented_hash, new_hash, at_ms, expires_at_ms }, SessionStatus::Active) => {
                if *presented_hash == self.current_hash {
                    if *at_ms >= self.expires_at_ms {
                        return Err(SessionError::RefreshTokenExpired);
                    }
                    Ok(vec![SessionEvent::Refreshed(TokenRefreshed {
                        refresh_token_hash: new_hash.clone(),
                        refreshed_at_ms: *at_ms,
                        expires_at_ms: *expires_at_ms,
                    })])
                } else if self.rotated_hashes.contains(presented_hash) {
                    Ok(vec![SessionEvent::RefreshTokenReused(RefreshTokenReused {
                        refresh_token_hash: presented_hash.clone(),
                        detected_at_ms: *at_ms,
                    })])
                } else {
                    Err(SessionError::InvalidRefreshToken)
                }
            }
        }
    }

    fn evolve(&mut self, event: &SessionEvent) {
        match event {
            SessionEvent::Started(e) => {
                self.user_id = e.user_id.clone();
                self.status = SessionStatus::Active;
                self.current_hash = e.refresh_token_hash.clone();
                self.expires_at_ms = e.expires_at_ms;
            }
            SessionEvent::Refreshed(e) => {
                let old = std::mem::replace(&mut self.current_hash, e.refresh_token_hash.clone());
                self.rotated_hashes.insert(old);
                self.expires_at_ms = e.expires_at_ms;
            }
            SessionEvent::RefreshTokenReused(_) => self.status = SessionStatus::Revoked,
            SessionEvent::LoggedOut(_) => self.status = SessionStatus::LoggedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allies_core::DomainEvent;
    use allies_core::testing::given;

    fn started() -> SessionEvent {
        SessionEvent::Started(SessionStarted {
            session_id: "s1".into(),
            user_id: "u1".into(),
            roles: vec!["player".into()],
            refresh_token_hash: "h1".into(),
            started_at_ms: 0,
            expires_at_ms: 1_000,
        })
    }

    fn refreshed(hash: &str, at: i64) -> SessionEvent {
        SessionEvent::Refreshed(TokenRefreshed {
            refresh_token_hash: hash.into(),
            refreshed_at_ms: at,
            expires_at_ms: 2_000,
        })
    }

    fn refresh(presented: &str, new: &str, at: i64) -> SessionCommand {
        SessionCommand::Refresh {
            presented_hash: presented.into(),
            new_hash: new.into(),
            at_ms: at,
            expires_at_ms: 2_000,
        }
    }

    #[test]
    fn a_session_starts_once() {
        let SessionEvent::Started(s) = started() else { unreachable!() };
        let state = given::<Session>([]).when(SessionCommand::Start(s.clone())).then([started()]);
        assert_eq!(state.status, SessionStatus::Active);
        given::<Session>([started()]).when(SessionCommand::Start(s)).then_err(SessionError::AlreadyStarted);
    }

    #[test]
    fn the_current_refresh_token_rotates() {
        let state = given::<Session>([started()]).when(refresh("h1", "h2", 10)).then([refreshed("h2", 10)]);
        assert_eq!(state.current_hash, "h2");
        assert!(state.rotated_hashes.contains("h1"));
        assert_eq!(state.expires_at_ms, 2_000, "refreshing extends the session");
    }

    #[test]
    fn reusing_a_rotated_token_revokes_the_session() {
        let state = given::<Session>([started(), refreshed("h2", 10)]).when(refresh("h1", "h3", 20)).then([
            SessionEvent::RefreshTokenReused(RefreshTokenReused {
                refresh_token_hash: "h1".into(),
                detected_at_ms: 20,
            }),
        ]);
        assert_eq!(state.status, SessionStatus::Revoked);
        // After that even the current token is dead.
        given::<Session>([
            started(),
            refreshed("h2", 10),
            SessionEvent::RefreshTokenReused(RefreshTokenReused {
                refresh_token_hash: "h1".into(),
                detected_at_ms: 20,
            }),
        ])
        .when(refresh("h2", "h3", 30))
        .then_err(SessionError::Ended(SessionStatus::Revoked));
    }

    #[test]
    fn an_unknown_or_expired_token_is_refused() {
        given::<Session>([started()]).when(refresh("zz", "h2", 10)).then_err(SessionError::InvalidRefreshToken);
        given::<Session>([started()]).when(refresh("h1", "h2", 1_000)).then_err(SessionError::RefreshTokenExpired);
        given::<Session>([]).when(refresh("h1", "h2", 10)).then_err(SessionError::UnknownSession);
    }

    #[test]
    fn logout_ends_the_session_once() {
        let out = SessionEvent::LoggedOut(UserLoggedOut { logged_out_at_ms: 5 });
        let state = given::<Session>([started()]).when(SessionCommand::Logout { at_ms: 5 }).then([out.clone()]);
        assert_eq!(state.status, SessionStatus::LoggedOut);
        given::<Session>([started(), out.clone()]).when(SessionCommand::Logout { at_ms: 6 }).then([]);
        given::<Session>([started(), out])
            .when(refresh("h1", "h2", 7))
            .then_err(SessionError::Ended(SessionStatus::LoggedOut));
        given::<Session>([]).when(SessionCommand::Logout { at_ms: 1 }).then_err(SessionError::UnknownSession);
    }

    #[test]
    fn session_events_round_trip() {
        for e in [started(), refreshed("h2", 1)] {
            assert_eq!(SessionEvent::decode_json(e.event_type(), 1, &e.encode_json().unwrap()).unwrap(), e);
        }
    }
}
