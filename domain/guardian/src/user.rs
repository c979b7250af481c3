//! The User aggregate: pure rules, no I/O.
//!
//! A user's id is derived from the lowercase username (UUIDv5), so the
//! username is unique by construction: two registrations of one name, in any
//! case, target the same aggregate stream, and the event store's atomic
//! "no stream yet" check lets exactly one of them win — no read model, no
//! second key, no race. Usernames are therefore immutable.

pub use allies_contracts::guardian::events::UserEvent;
use allies_contracts::guardian::events::v1::{
    AuthenticationFailed, DisplayNameChanged, PasswordChanged, UserAuthenticated, UserLockedOut, UserRegistered,
    UserRolesChanged, UserUnlocked,
};
use allies_core::{Aggregate, ErrorCode, FieldViolation, RuleViolation, ServiceError};
use uuid::Uuid;

/// Namespace of user ids (UUIDv5 over `user:<lowercase username>`).
const USER_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_3c4e_8a2b_4f7e_9c3d_2a1b_0e5f_7a91);

pub use allies_contracts::guardian::{ROLE_ADMIN, ROLE_PLAYER, ROLES};
pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const EMAIL_MAX: usize = 254;
pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 128;

/// The id of the user with this username, whatever its case.
pub fn user_id_for(username: &str) -> Uuid {
    Uuid::new_v5(&USER_NAMESPACE, format!("user:{}", username.to_ascii_lowercase()).as_bytes())
}

fn invalid(field: &str, reason: impl Into<String>) -> FieldViolation {
    FieldViolation::new(field, reason)
}

pub const DISPLAY_NAME_MAX: usize = 32;

/// Checks a display name: 1 to 32 characters, no control characters, not
/// only spaces.
pub fn validate_display_name(name: &str) -> Result<(), FieldViolation> {
    let n = name.chars().count();
    if name.trim().is_empty() {
        return Err(invalid("display_name", "must not be empty"));
    }
    if n > DISPLAY_NAME_MAX {
        return Err(invalid("display_name", format!("must be at most {DISPLAY_NAME_MAX} characters, got {n}")));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("display_name", "must not contain control characters"));
    }
    Ok(())
}

/// Checks a username: 3 to 32 characters of `A-Z a-z 0-9 _ - .`, starting
/// with a letter or digit.
pub fn validate_username(username: &str) -> Result<(), FieldViolation> {
    if username.is_empty() {
        return Err(invalid("username", "must not be empty"));
    }
    let n = username.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&n) {
        return Err(invalid("username", format!("must be {USERNAME_MIN} to {USERNAME_MAX} characters, got {n}")));
    }
    if !username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(invalid("username", "may contain only letters, digits, '_', '-' and '.'"));
    }
    if !username.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("username", "must start with a letter or digit"));
    }
    Ok(())
}

/// Checks an email address's shape: `local@domain.tld`, no spaces, sane lengths.
pub fn validate_email(email: &str) -> Result<(), FieldViolation> {
    let bad = || invalid("email", "is not a valid email address");
    if email.is_empty() {
        return Err(invalid("email", "must not be empty"));
    }
    if email.len() > EMAIL_MAX {
        return Err(invalid("email", format!("must be at most {EMAIL_MAX} bytes")));
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    if local_ok && domain_ok { Ok(()) } else { Err(bad()) }
}

const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password123",
    "1234567890",
    "qwertyuiop",
    "123456789a",
    "iloveyou12",
    "letmein123",
    "administrator",
    "welcome123",
    "defenseallies",
];

/// Checks password strength: 10 to 128 characters, letters and at least one
/// digit or symbol, not a well-known password, not containing the username.
pub fn validate_password(password: &str, username: &str) -> Result<(), FieldViolation> {
    let n = password.chars().count();
    if n < PASSWORD_MIN {
        return Err(invalid("password", format!("is too weak: use at least {PASSWORD_MIN} characters")));
    }
    if n > PASSWORD_MAX {
        return Err(invalid("password", format!("must be at most {PASSWORD_MAX} characters")));
    }
    let letters = password.chars().any(char::is_alphabetic);
    let others = password.chars().any(|c| !c.is_alphabetic());
    if !(letters && others) {
        return Err(invalid("password", "is too weak: mix letters with digits or symbols"));
    }
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS.contains(&lower.as_str()) {
        return Err(invalid("password", "is too weak: it is a well-known password"));
    }
    if !username.is_empty() && lower.contains(&username.to_lowercase()) {
        return Err(invalid("password", "is too weak: it contains the username"));
    }
    Ok(())
}

/// Checks a role list: not empty, only known roles.
pub fn validate_roles(roles: &[String]) -> Result<(), FieldViolation> {
    if roles.is_empty() {
        return Err(invalid("roles", "must name at least one role"));
    }
    if let Some(r) = roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
        return Err(invalid("roles", format!("unknown role '{r}' (known: {})", ROLES.join(", "))));
    }
    Ok(())
}

/// When repeated failures lock an account, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub lock_ms: i64,
}

/// Commands of the User aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Register(RegisterUser),
    /// A login with the right password starts session `session_id`.
    RecordLogin {
        session_id: String,
        at_ms: i64,
    },
    /// A login with a wrong password.
    RecordFailedLogin {
        at_ms: i64,
        policy: LockoutPolicy,
    },
    /// The new password is already an Argon2id hash.
    ChangePassword {
        password_hash: String,
        at_ms: i64,
    },
    ChangeRoles {
        roles: Vec<String>,
        changed_by: String,
        at_ms: i64,
    },
    /// An admin lifts a lockout before it runs out.
    Unlock {
        by: String,
        at_ms: i64,
    },
    /// The user changes the name other players see (already validated).
    ChangeDisplayName {
        display_name: String,
        at_ms: i64,
    },
}

/// A validated registration: the password is already an Argon2id hash.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterUser {
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub registered_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("username '{0}' is already taken")]
    UsernameTaken(String),
    #[error("no such user")]
    UnknownUser,
    #[error("account locked until {until_ms} (unix ms)")]
    AccountLocked { until_ms: i64 },
    #[error("the account is not locked")]
    NotLocked,
}

impl ServiceError for UserError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::UsernameTaken(_) => ErrorCode::AlreadyExists,
            Self::UnknownUser => ErrorCode::NotFound,
            // Only ever seen by the login path, which answers "invalid
            // username or password" for it like for any failure.
            Self::AccountLocked { .. } => ErrorCode::Unauthenticated,
            Self::NotLocked => ErrorCode::FailedPrecondition,
        }
    }
    fn rule(&self) -> Option<RuleViolation> {
        match self {
            Self::NotLocked => Some(RuleViolation {
                rule: "ACCOUNT_NOT_LOCKED".into(),
                subject: "user".into(),
                description: self.to_string(),
            }),
            _ => None,
        }
    }
}

/// The User aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub profile: Option<UserRegistered>,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub consecutive_failures: u32,
    pub locked_until_ms: i64,
    pub last_login_ms: i64,
    #[serde(default)]
    pub display_name: String,
}

impl allies_core::Snapshot for User {
    /// 2: `display_name` (a schema-1 snapshot is rebuilt from events).
    const SNAPSHOT_SCHEMA: u32 = 2;
}

impl User {
    pub fn is_locked_at(&self, now_ms: i64) -> bool {
        now_ms < self.locked_until_ms
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, UserError> {
        if !matches!(command, UserCommand::Register(_)) && self.profile.is_none() {
            return Err(UserError::UnknownUser);
        }
        match command {
            UserCommand::Register(c) => {
                if self.profile.is_some() {
                    return Err(UserError::UsernameTaken(c.username.clone()));
                }
                Ok(vec![UserEvent::Registered(UserRegistered {
                    user_id: user_id_for(&c.username).to_string(),
                    username: c.username.clone(),
                    email: c.email.clone(),
                    password_hash: c.password_hash.clone(),
                    roles: c.roles.clone(),
                    registered_at_ms: c.registered_at_ms,
                    display_name: c.username.clone(),
                })])
            }
            UserCommand::RecordLogin { session_id, at_ms } => {
                if self.is_locked_at(*at_ms) {
                    return Err(UserError::AccountLocked { until_ms: self.locked_until_ms });
                }
                Ok(vec![UserEvent::Authenticated(UserAuthenticated {
                    session_id: session_id.clone(),
                    authenticated_at_ms: *at_ms,
                })])
            }
            UserCommand::RecordFailedLogin { at_ms, policy } => {
                if self.is_locked_at(*at_ms) {
                    // Attempts during a lockout are refused without counting.
                    return Err(UserError::AccountLocked { until_ms: self.locked_until_ms });
                }
                let n = self.consecutive_failures + 1;
                let mut events = vec![UserEvent::AuthenticationFailed(AuthenticationFailed {
                    consecutive_failures: n,
                    failed_at_ms: *at_ms,
                })];
                if n >= policy.max_failures {
                    events.push(UserEvent::LockedOut(UserLockedOut {
                        locked_until_ms: at_ms + policy.lock_ms,
                        consecutive_failures: n,
                    }));
                }
                Ok(events)
            }
            UserCommand::ChangePassword { password_hash, at_ms } => {
                Ok(vec![UserEvent::PasswordChanged(PasswordChanged {
                    password_hash: password_hash.clone(),
                    changed_at_ms: *at_ms,
                })])
            }
            UserCommand::ChangeRoles { roles, changed_by, at_ms } => {
                let mut wanted = roles.clone();
                wanted.sort();
                wanted.dedup();
                let mut current = self.roles.clone();
                current.sort();
                if wanted == current {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::RolesChanged(UserRolesChanged {
                    roles: wanted,
                    changed_by: changed_by.clone(),
                    changed_at_ms: *at_ms,
                })])
            }
            UserCommand::Unlock { by, at_ms } => {
                if !self.is_locked_at(*at_ms) {
                    return Err(UserError::NotLocked);
                }
                Ok(vec![UserEvent::Unlocked(UserUnlocked { unlocked_by: by.clone(), unlocked_at_ms: *at_ms })])
            }
            UserCommand::ChangeDisplayName { display_name, at_ms } => {
                if *display_name == self.display_name {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::DisplayNameChanged(DisplayNameChanged {
                    display_name: display_name.clone(),
                    changed_at_ms: *at_ms,
                })])
            }
        }
    }

    fn evolve(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Registered(e) => {
                self.password_hash = e.password_hash.clone();
                self.roles = e.roles.clone();
                self.display_name = if e.display_name.is_empty() { e.username.clone() } else { e.display_name.clone() };
                self.profile = Some(e.clone());
            }
            UserEvent::Authenticated(e) => {
                self.consecutive_failures = 0;
                self.last_login_ms = e.authenticated_at_ms;
            }
            UserEvent::AuthenticationFailed(e) => self.consecutive_failures = e.consecutive_failures,
            UserEvent::LockedOut(e) => {
                self.locked_until_ms = e.locked_until_ms;
                self.consecutive_failures = 0;
            }
            UserEvent::PasswordChanged(e) => self.password_hash = e.password_hash.clone(),
            UserEvent::RolesChanged(e) => self.roles = e.roles.clone(),
            UserEvent::Unlocked(_) => {
                self.locked_until_ms = 0;
                self.consecutive_failures = 0;
            }
            UserEvent::DisplayNameChanged(e) => self.display_name = e.display_name.clone(),
        }
    }
}

pub const USER_REGISTERED: &str = "UserRegistered";

#[cfg(test)]
mod tests {
    use super::*;
    use allies_core::DecodeError;
    use allies_core::DomainEvent;
    use allies_core::testing::given;

    fn register(username: &str) -> UserCommand {
        UserCommand::Register(RegisterUser {
            username: username.into(),
            email: format!("{}@example.com", username.to_lowercase()),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: vec!["player".into()],
            registered_at_ms: 1_700_000_000_000,
        })
    }

    fn registered(username: &str) -> UserEvent {
        UserEvent::Registered(UserRegistered {
            user_id: user_id_for(username).to_string(),
            username: username.into(),
            email: format!("{}@example.com", username.to_lowercase()),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: vec!["player".into()],
            registered_at_ms: 1_700_000_000_000,
            display_name: username.into(),
        })
    }

    #[test]
    fn a_new_username_registers_as_a_player() {
        let state = given::<User>([]).when(register("Alice")).then([registered("Alice")]);
        assert_eq!(state.profile.unwrap().roles, vec!["player"]);
    }

    #[test]
    fn a_taken_username_is_refused() {
        given::<User>([registered("alice")]).when(register("alice")).then_err(UserError::UsernameTaken("alice".into()));
    }

    #[test]
    fn usernames_differing_only_in_case_are_the_same_user() {
        assert_eq!(user_id_for("Alice"), user_id_for("aLICE"));
        assert_ne!(user_id_for("alice"), user_id_for("alice2"));
        // The same aggregate: a registered "alice" refuses "ALICE".
        given::<User>([registered("alice")]).when(register("ALICE")).then_err(UserError::UsernameTaken("ALICE".into()));
    }

    #[test]
    fn user_ids_are_stable() {
        // Changing the namespace would orphan every stored user.
        assert_eq!(user_id_for("alice").to_string(), user_id_for("ALICE").to_string());
        assert_eq!(user_id_for("alice").get_version_num(), 5);
    }

    #[test]
    fn usernames_are_checked() {
        assert!(validate_username("player_1").is_ok());
        assert!(validate_username("a.b-c").is_ok());
        for (u, why) in [
            ("", "must not be empty"),
            ("ab", "3 to 32"),
            (&"x".repeat(33), "3 to 32"),
            ("has space", "only letters"),
            ("émile", "only letters"),
            ("_lead", "start with"),
        ] {
            let e = validate_username(u).unwrap_err();
            assert_eq!(e.field, "username");
            assert!(e.reason.contains(why), "{u:?}: {e}");
        }
    }

    #[test]
    fn emails_are_checked() {
        for ok in ["a@b.io", "first.last+tag@mail.example.com", "x_y@sub-domain.org"] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "plain", "a@b", "a@.com", "@b.com", "a b@c.com", "a@b..com", "a..b@c.com", "a@b.c0m", "a@-b.com"]
        {
            assert_eq!(validate_email(bad).unwrap_err().field, "email", "{bad:?}");
        }
        assert!(validate_email(&format!("{}@b.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert!(validate_password("correct-horse-9", "alice").is_ok());
        for (p, why) in [
            ("short1", "at least 10"),
            ("onlyletterslong", "mix letters"),
            ("12345678901", "mix letters"),
            ("Password123", "well-known"),
            ("xxAlice-2024", "contains the username"),
        ] {
            let e = validate_password(p, "alice").unwrap_err();
            assert_eq!(e.field, "password");
            assert!(e.reason.contains(why), "{p}: {e}");
        }
        assert!(validate_password(&"a1".repeat(65), "alice").unwrap_err().reason.contains("at most"));
    }

    #[test]
    fn events_round_trip_through_proto3_json() {
        let e = registered("alice");
        let json = e.encode_json().unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"userId\"") && text.contains("\"registeredAtMs\""), "{text}");
        assert_eq!(UserEvent::decode_json(USER_REGISTERED, 1, &json).unwrap(), e);
        assert_eq!(e.schema_version(), 2);
        assert!(matches!(
            UserEvent::decode_json(USER_REGISTERED, 9, &json),
            Err(DecodeError::UnsupportedSchemaVersion { schema_version: 9, .. })
        ));
        assert!(matches!(UserEvent::decode_json("Nope", 1, &json), Err(DecodeError::UnknownEventType(_))));
        assert!(matches!(UserEvent::decode_json(USER_REGISTERED, 1, b"{"), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn every_user_event_round_trips_under_its_type_name() {
        for e in [
            login("s1", 5),
            failed(1, 5),
            UserEvent::LockedOut(UserLockedOut { locked_until_ms: 9, consecutive_failures: 5 }),
            UserEvent::PasswordChanged(PasswordChanged { password_hash: "h".into(), changed_at_ms: 1 }),
            UserEvent::RolesChanged(UserRolesChanged {
                roles: vec!["admin".into()],
                changed_by: "u".into(),
                changed_at_ms: 1,
            }),
        ] {
            let back = UserEvent::decode_json(e.event_type(), 1, &e.encode_json().unwrap()).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn a_stored_v1_user_registered_is_upcast_to_v2() {
        // Exactly as schema version 1 wrote it: no displayName.
        let v1 = br#"{"userId":"u1","username":"OldTimer","email":"o@example.com","passwordHash":"$argon2id$x","roles":["player"],"registeredAtMs":1600000000000}"#;
        let Ok(UserEvent::Registered(e)) = UserEvent::decode_json(USER_REGISTERED, 1, v1) else {
            panic!("v1 did not decode")
        };
        assert_eq!((e.username.as_str(), e.display_name.as_str()), ("OldTimer", "OldTimer"));
        assert!(matches!(
            UserEvent::decode_json(USER_REGISTERED, 0, v1),
            Err(DecodeError::UnsupportedSchemaVersion { schema_version: 0, .. })
        ));
    }

    const POLICY: LockoutPolicy = LockoutPolicy { max_failures: 3, lock_ms: 60_000 };

    fn login(session: &str, at_ms: i64) -> UserEvent {
        UserEvent::Authenticated(UserAuthenticated { session_id: session.into(), authenticated_at_ms: at_ms })
    }

    fn failed(n: u32, at_ms: i64) -> UserEvent {
        UserEvent::AuthenticationFailed(AuthenticationFailed { consecutive_failures: n, failed_at_ms: at_ms })
    }

    #[test]
    fn a_login_is_recorded_and_resets_failures() {
        let state = given::<User>([registered("alice"), failed(1, 10), failed(2, 20)])
            .when(UserCommand::RecordLogin { session_id: "s1".into(), at_ms: 30 })
            .then([login("s1", 30)]);
        assert_eq!((state.consecutive_failures, state.last_login_ms), (0, 30));
    }

    #[test]
    fn commands_on_an_unknown_user_are_refused() {
        given::<User>([])
            .when(UserCommand::RecordLogin { session_id: "s".into(), at_ms: 1 })
            .then_err(UserError::UnknownUser);
        given::<User>([])
            .when(UserCommand::RecordFailedLogin { at_ms: 1, policy: POLICY })
            .then_err(UserError::UnknownUser);
        given::<User>([])
            .when(UserCommand::ChangePassword { password_hash: "h".into(), at_ms: 1 })
            .then_err(UserError::UnknownUser);
        given::<User>([])
            .when(UserCommand::ChangeRoles { roles: vec!["admin".into()], changed_by: "x".into(), at_ms: 1 })
            .then_err(UserError::UnknownUser);
    }

    #[test]
    fn failures_count_up_and_the_last_allowed_one_locks_the_account() {
        let state = given::<User>([registered("alice"), failed(1, 10)])
            .when(UserCommand::RecordFailedLogin { at_ms: 20, policy: POLICY })
            .then([failed(2, 20)]);
        assert_eq!(state.consecutive_failures, 2);
        let state = given::<User>([registered("alice"), failed(1, 10), failed(2, 20)])
            .when(UserCommand::RecordFailedLogin { at_ms: 30, policy: POLICY })
            .then([
                failed(3, 30),
                UserEvent::LockedOut(UserLockedOut { locked_until_ms: 60_030, consecutive_failures: 3 }),
            ]);
        assert!(state.is_locked_at(60_029));
        assert!(!state.is_locked_at(60_030));
    }

    #[test]
    fn a_locked_account_refuses_logins_and_does_not_count_attempts_until_the_lock_ends() {
        let locked = || {
            given::<User>([
                registered("alice"),
                UserEvent::LockedOut(UserLockedOut { locked_until_ms: 1_000, consecutive_failures: 3 }),
            ])
        };
        locked()
            .when(UserCommand::RecordLogin { session_id: "s".into(), at_ms: 999 })
            .then_err(UserError::AccountLocked { until_ms: 1_000 });
        locked()
            .when(UserCommand::RecordFailedLogin { at_ms: 999, policy: POLICY })
            .then_err(UserError::AccountLocked { until_ms: 1_000 });
        // After the lock the count starts again from zero.
        locked().when(UserCommand::RecordLogin { session_id: "s".into(), at_ms: 1_000 }).then([login("s", 1_000)]);
        locked().when(UserCommand::RecordFailedLogin { at_ms: 1_001, policy: POLICY }).then([failed(1, 1_001)]);
    }

    #[test]
    fn a_password_change_replaces_the_hash() {
        let state = given::<User>([registered("alice")])
            .when(UserCommand::ChangePassword { password_hash: "$argon2id$new".into(), at_ms: 5 })
            .then([UserEvent::PasswordChanged(PasswordChanged {
                password_hash: "$argon2id$new".into(),
                changed_at_ms: 5,
            })]);
        assert_eq!(state.password_hash, "$argon2id$new");
    }

    #[test]
    fn roles_change_only_when_different() {
        let state = given::<User>([registered("alice")])
            .when(UserCommand::ChangeRoles {
                roles: vec!["player".into(), "admin".into(), "admin".into()],
                changed_by: "root".into(),
                at_ms: 5,
            })
            .then([UserEvent::RolesChanged(UserRolesChanged {
                roles: vec!["admin".into(), "player".into()],
                changed_by: "root".into(),
                changed_at_ms: 5,
            })]);
        assert_eq!(state.roles, vec!["admin", "player"]);
        given::<User>([registered("alice")])
            .when(UserCommand::ChangeRoles { roles: vec!["player".into()], changed_by: "root".into(), at_ms: 5 })
            .then([]);
    }

    #[test]
    fn an_admin_unlocks_a_locked_account_and_only_a_locked_one() {
        let locked = UserEvent::LockedOut(UserLockedOut { locked_until_ms: 1_000, consecutive_failures: 3 });
        let unlocked = UserEvent::Unlocked(UserUnlocked { unlocked_by: "root".into(), unlocked_at_ms: 10 });
        let state = given::<User>([registered("alice"), locked.clone()])
            .when(UserCommand::Unlock { by: "root".into(), at_ms: 10 })
            .then([unlocked.clone()]);
        assert!(!state.is_locked_at(11), "logins work again at once");
        given::<User>([registered("alice")])
            .when(UserCommand::Unlock { by: "root".into(), at_ms: 10 })
            .then_err(UserError::NotLocked);
        given::<User>([registered("alice"), locked])
            .when(UserCommand::Unlock { by: "root".into(), at_ms: 1_000 })
            .then_err(UserError::NotLocked);
        given::<User>([]).when(UserCommand::Unlock { by: "root".into(), at_ms: 1 }).then_err(UserError::UnknownUser);
    }

    #[test]
    fn the_display_name_changes_only_when_different() {
        let state = given::<User>([registered("alice")])
            .when(UserCommand::ChangeDisplayName { display_name: "Queen A".into(), at_ms: 3 })
            .then([UserEvent::DisplayNameChanged(DisplayNameChanged {
                display_name: "Queen A".into(),
                changed_at_ms: 3,
            })]);
        assert_eq!(state.display_name, "Queen A");
        given::<User>([registered("alice")])
            .when(UserCommand::ChangeDisplayName { display_name: "alice".into(), at_ms: 3 })
            .then([]);
        assert!(validate_display_name("Queen A").is_ok());
        for bad in ["", "   ", &"x".repeat(33), "a\u{7}b"] {
            assert_eq!(validate_display_name(bad).unwrap_err().field, "display_name", "{bad:?}");
        }
    }

    #[test]
    fn roles_are_validated() {
        assert!(validate_roles(&["player".into(), "admin".into()]).is_ok());
        assert_eq!(validate_roles(&[]).unwrap_err().field, "roles");
        assert!(validate_roles(&["root".into()]).unwrap_err().reason.contains("unknown role 'root'"));
    }
}
