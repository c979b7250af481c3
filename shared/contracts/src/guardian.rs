//! The authentication context's contracts: the gRPC API and the User and
//! Session events, typed, with their codec and upcasters — used by
//! Guardian, the projector and the tools alike.

pub mod v1 {
    tonic::include_proto!("defense_allies.guardian.v1");
}

/// The role every user has.
pub const ROLE_PLAYER: &str = "player";
/// The operators' role.
pub const ROLE_ADMIN: &str = "admin";
/// Every role a user can hold (access tokens carry them).
pub const ROLES: &[&str] = &[ROLE_PLAYER, ROLE_ADMIN];

pub mod events {
    pub mod v1 {
        tonic::include_proto!("defense_allies.guardian.events.v1");
    }

    use v1::*;

    /// Schema versions and upcasters of the authentication context's events.
    pub struct GuardianSchema;

    impl crate::codec::Schema for GuardianSchema {
        fn current(event_type: &str) -> u32 {
            schema::current(event_type)
        }
        fn upcast(event_type: &str, version: u32, payload: &mut serde_json::Value) -> Result<(), String> {
            schema::upcast(event_type, version, payload)
        }
    }

    /// Schema versions and upcasters, as functions (for readers without the typed enums).
    pub mod schema {
        use serde_json::Value;

        /// The schema version new events of this type are written with.
        pub fn current(event_type: &str) -> u32 {
            match event_type {
                "UserRegistered" => 2,
                _ => 1,
            }
        }

        /// Brings a stored payload from `version` up to [`current`], one
        /// step at a time. Errors name what could not be done.
        pub fn upcast(event_type: &str, version: u32, payload: &mut Value) -> Result<(), String> {
            let target = current(event_type);
            if version > target || version == 0 {
                return Err(format!("{event_type} has no schema version {version} (current {target})"));
            }
            let mut v = version;
            while v < target {
                let obj = payload.as_object_mut().ok_or("payload is not a JSON object")?;
                match (event_type, v) {
                    // v2 added displayName, which defaults to the username.
                    ("UserRegistered", 1) => {
                        let name = obj.get("username").cloned().unwrap_or(Value::String(String::new()));
                        // Absent in JSON, empty when read from v1 protobuf bytes.
                        if obj.get("displayName").and_then(Value::as_str).is_none_or(str::is_empty) {
                            obj.insert("displayName".into(), name);
                        }
                    }
                    _ => return Err(format!("no upcaster for {event_type} v{v}")),
                }
                v += 1;
            }
            Ok(())
        }
    }

    /// Events of the User aggregate (aggregate type `user`).
    #[derive(Debug, Clone, PartialEq)]
    pub enum UserEvent {
        Registered(UserRegistered),
        Authenticated(UserAuthenticated),
        AuthenticationFailed(AuthenticationFailed),
        LockedOut(UserLockedOut),
        PasswordChanged(PasswordChanged),
        RolesChanged(UserRolesChanged),
        Unlocked(UserUnlocked),
        DisplayNameChanged(DisplayNameChanged),
    }

    crate::proto_events!(UserEvent: GuardianSchema {
        Registered => "UserRegistered",
        Authenticated => "UserAuthenticated",
        AuthenticationFailed => "AuthenticationFailed",
        LockedOut => "UserLockedOut",
        PasswordChanged => "PasswordChanged",
        RolesChanged => "UserRolesChanged",
        Unlocked => "UserUnlocked",
        DisplayNameChanged => "DisplayNameChanged",
    });

    /// Events of the Session aggregate (aggregate type `session`).
    #[derive(Debug, Clone, PartialEq)]
    pub enum SessionEvent {
        Started(SessionStarted),
        Refreshed(TokenRefreshed),
        RefreshTokenReused(RefreshTokenReused),
        LoggedOut(UserLoggedOut),
    }

    crate::proto_events!(SessionEvent: GuardianSchema {
        Started => "SessionStarted",
        Refreshed => "TokenRefreshed",
        RefreshTokenReused => "RefreshTokenReused",
        LoggedOut => "UserLoggedOut",
    });

    /// What replaces a secret in an event shown outside its owner.
    pub const REDACTED: &str = "[redacted]";

    impl UserEvent {
        /// The event without its secrets: password hashes are replaced.
        pub fn redacted(mut self) -> Self {
            match &mut self {
                Self::Registered(e) => e.password_hash = REDACTED.into(),
                Self::PasswordChanged(e) => e.password_hash = REDACTED.into(),
                _ => {}
            }
            self
        }
    }

    impl SessionEvent {
        /// The event without its secrets: refresh-token hashes are replaced.
        pub fn redacted(mut self) -> Self {
            match &mut self {
                Self::Started(e) => e.refresh_token_hash = REDACTED.into(),
                Self::Refreshed(e) => e.refresh_token_hash = REDACTED.into(),
                Self::RefreshTokenReused(e) => e.refresh_token_hash = REDACTED.into(),
                Self::LoggedOut(_) => {}
            }
            self
        }
    }
}

/// The authentication context's integration events (topic [`integration::TOPIC`]).
pub mod integration {
    pub mod v1 {
        tonic::include_proto!("defense_allies.guardian.integration.v1");
    }

    use v1::*;

    use crate::codec::FirstVersion;

    /// The topic users are published on.
    pub const TOPIC: &str = "users";

    #[derive(Debug, Clone, PartialEq)]
    pub enum UserIntegrationEvent {
        Registered(UserRegistered),
        LockedOut(UserLockedOut),
        Unlocked(UserUnlocked),
        RolesChanged(UserRolesChanged),
        DisplayNameChanged(UserDisplayNameChanged),
    }

    crate::proto_events!(UserIntegrationEvent: FirstVersion {
        Registered => "UserRegistered",
        LockedOut => "UserLockedOut",
        Unlocked => "UserUnlocked",
        RolesChanged => "UserRolesChanged",
        DisplayNameChanged => "UserDisplayNameChanged",
    });
}
