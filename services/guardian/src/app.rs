//! Guardian's use cases: register, log in, refresh, log out, change
//! password, change roles, unlock, set the display name. Each validates its
//! input, then runs the aggregate's pure `decide` through the platform's
//! command executor (load, decide, append atomically, retry on conflict).

use allies_core::settings as table;
use std::time::Duration;

use allies_contracts::guardian::events::UserEvent;
use allies_contracts::guardian::events::v1::SessionStarted;
use allies_core::{CommandContext, ErrorCode, FieldViolation, Invalid, ServiceError};
use allies_platform::auth::{AccessClaims, AuthSettings, Caller};
use allies_platform::config::{ConfigError, Env};
use allies_store::{CommandExecutor, ExecuteError, Executed, Options, StateWrite, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use guardian_domain::user::{self, LockoutPolicy, RegisterUser};
use guardian_domain::{Session, SessionCommand, SessionError, SessionStatus, User, UserCommand, UserError};
use password_hash::rand_core::{OsRng, RngCore};
use uuid::Uuid;

use crate::keys::{KeyError, KeyRing};
use crate::password::{HashError, PasswordHasher};
use crate::ratelimit::{RateLimiter, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum GuardianError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    User(#[from] ExecuteError<UserError>),
    #[error(transparent)]
    Session(#[from] ExecuteError<SessionError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hashing(#[from] HashError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Every login failure, whatever the reason: same words, same time.
    #[error("invalid username or password")]
    BadCredentials,
    #[error("current password is wrong")]
    WrongCurrentPassword,
    #[error("too many attempts ({scope}); retry in {retry_after:?}")]
    RateLimited { scope: &'static str, retry_after: Duration },
    #[error("refresh token reuse detected: the session is revoked")]
    RefreshTokenReused,
    #[error("malformed refresh token")]
    MalformedRefreshToken,
}

impl From<FieldViolation> for GuardianError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(v.into())
    }
}

impl From<UserError> for GuardianError {
    fn from(e: UserError) -> Self {
        Self::User(ExecuteError::Domain(e))
    }
}

impl ServiceError for GuardianError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(e) => e.code(),
            Self::User(e) => e.code(),
            Self::Session(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Hashing(_) | Self::Keys(_) => ErrorCode::Internal,
            Self::BadCredentials
            | Self::WrongCurrentPassword
            | Self::RefreshTokenReused
            | Self::MalformedRefreshToken => ErrorCode::Unauthenticated,
            Self::RateLimited { .. } => ErrorCode::ResourceExhausted,
        }
    }
    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            Self::Invalid(e) => e.field_violations(),
            _ => Vec::new(),
        }
    }
    fn rule(&self) -> Option<allies_core::RuleViolation> {
        match self {
            Self::User(e) => e.rule(),
            _ => None,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::User(e) => e.retry_after(),
            Self::Session(e) => e.retry_after(),
            Self::Store(e) => e.retry_after(),
            _ => None,
        }
    }
    fn message(&self) -> String {
        match self {
            Self::Invalid(e) => e.message(),
            Self::User(e) => e.message(),
            Self::Session(e) => e.message(),
            Self::Store(e) => e.message(),
            Self::MalformedRefreshToken | Self::RefreshTokenReused => format!("refresh refused: {self}"),
            e if e.code() == ErrorCode::Internal => "internal error".to_owned(),
            e => e.to_string(),
        }
    }
}

/// Guardian's settings, parsed from the environment at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: AuthSettings,
    /// `ACCESS_TOKEN_TTL_SECS` (900).
    pub access_ttl_secs: i64,
    /// `REFRESH_TOKEN_TTL_SECS` (30 days).
    pub refresh_ttl_secs: i64,
    /// `LOCKOUT_MAX_FAILURES` (5), `LOCKOUT_SECS` (900).
    pub lockout: LockoutPolicy,
    /// Usernames that register as admins (`GUARDIAN_BOOTSTRAP_ADMINS`, comma-separated).
    pub bootstrap_admins: Vec<String>,
    /// `ARGON2_THREADS`: password-hashing threads (default one per core).
    pub argon2_threads: usize,
    /// `AUTH_RATE_WINDOW_SECS` (60), `AUTH_RATE_PER_USERNAME` (10), `AUTH_RATE_PER_CLIENT` (30).
    pub rate: crate::ratelimit::RateSettings,
    /// Signing keys (see [`keys`](crate::keys)).
    pub keys: crate::keys::KeySettings,
}

impl Settings {
    pub fn from_env(env: &Env, auth: AuthSettings, data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(Self {
            auth,
            access_ttl_secs: env.value(&table::ACCESS_TOKEN_TTL)?,
            refresh_ttl_secs: env.value(&table::REFRESH_TOKEN_TTL)?,
            lockout: LockoutPolicy {
                max_failures: env.value(&table::LOCKOUT_MAX_FAILURES)?,
                lock_ms: env.value::<i64>(&table::LOCKOUT)? * 1000,
            },
            bootstrap_admins: env
                .list(table::BOOTSTRAP_ADMINS.env.unwrap_or_default())
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            argon2_threads: env.value_opt(&table::ARGON2_THREADS)?.unwrap_or(cores),
            rate: crate::ratelimit::RateSettings::from_env(env)?,
            keys: crate::keys::KeySettings::from_env(env, data_dir)?,
        })
    }
}

/// A login or refresh result.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub user_id: String,
    pub session_id: String,
    pub roles: Vec<String>,
}

pub struct Guardian {
    pub executor: CommandExecutor,
    pub hasher: PasswordHasher,
    pub keys: KeyRing,
    pub settings: Settings,
    pub limiter: RateLimiter,
    /// The lockout policy in force (live configuration; `settings.lockout` until a version exists).
    pub lockout: allies_store::Tunable<LockoutPolicy>,
    /// A real hash of a random password: verified against when the user is
    /// unknown or locked, so those failures cost what a wrong password costs.
    dummy_hash: String,
}

/// SHA-256 (hex) of a refresh token: what the Session stores instead of it.
pub fn token_hash(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn new_refresh_token(session_id: &str) -> String {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    format!("{session_id}.{}", URL_SAFE_NO_PAD.encode(secret))
}

fn uuid_field(field: &str, value: &str) -> Result<String, FieldViolation> {
    Uuid::parse_str(value).map(|u| u.to_string()).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

impl Guardian {
    pub async fn new(
        executor: CommandExecutor,
        hasher: PasswordHasher,
        keys: KeyRing,
        settings: Settings,
        limiter: RateLimiter,
        lockout: allies_store::Tunable<LockoutPolicy>,
    ) -> Result<Self, GuardianError> {
        let mut secret = [0u8; 24];
        OsRng.fill_bytes(&mut secret);
        let dummy_hash = hasher.hash(&URL_SAFE_NO_PAD.encode(secret)).await?;
        Ok(Self { executor, hasher, keys, settings, limiter, lockout, dummy_hash })
    }

    async fn load_user(&self, user_id: &str) -> Result<User, StoreError> {
        Ok(allies_store::load::<User>(&**self.executor.store(), user_id).await?.state)
    }

    async fn on_user(
        &self,
        id: &str,
        command: UserCommand,
        ctx: &CommandContext,
    ) -> Result<Executed<User>, GuardianError> {
        let format = self.executor.store().format();
        let publish = |u: &User, e: &[UserEvent]| crate::integration::publications(u, e, ctx.now_ms, format);
        let options = Options::default().publish(&publish).state_fields(&user_state);
        Ok(self.executor.execute_with::<User>(id, &command, ctx, options).await?)
    }

    async fn on_session(
        &self,
        id: &str,
        command: SessionCommand,
        ctx: &CommandContext,
    ) -> Result<Executed<Session>, GuardianError> {
        let state = |s: &Session| self.session_state(s);
        Ok(self.executor.execute_with::<Session>(id, &command, ctx, Options::default().state_fields(&state)).await?)
    }

    fn session_state(&self, s: &Session) -> Option<StateWrite> {
        Some(StateWrite {
            fields: vec![("status".into(), s.status.as_str().into()), ("user_id".into(), s.user_id.clone())],
            // Keep the status a little past the refresh expiry (then tokens are dead anyway).
            expire_at_ms: Some(s.expires_at_ms + self.settings.access_ttl_secs * 1000),
        })
    }

    /// Registers a user. With `command_id`, a retry of the same registration
    /// returns the first result instead of AlreadyExists. Every bad field is
    /// reported at once.
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: &str,
        command_id: Option<&str>,
        ctx: &CommandContext,
    ) -> Result<(String, Executed<User>), GuardianError> {
        let mut invalid = Invalid::new();
        invalid
            .check(user::validate_username(username))
            .check(user::validate_email(email))
            .check(user::validate_password(password, username));
        invalid.into_result()?;
        let user_id = user::user_id_for(username).to_string();
        // The password is not part of the fingerprint: its hash differs on every try.
        let fingerprint = token_hash(&format!("RegisterUser\n{}\n{email}", username.to_ascii_lowercase()));
        let format = self.executor.store().format();
        let publish = |u: &User, e: &[UserEvent]| crate::integration::publications(u, e, ctx.now_ms, format);
        let options = || {
            Options::<User>::default()
                .command_id(command_id)
                .fingerprint(fingerprint.clone())
                .publish(&publish)
                .state_fields(&user_state)
        };
        // A retried command id answers its first result before anything is
        // hashed; then a cheap refusal of a taken name before the expensive
        // hash. The append's "no stream" check is what guarantees uniqueness.
        if let Some(first) = self.executor.first_result_of::<User>(&user_id, &options()).await? {
            return Ok((user_id, first));
        }
        if self.load_user(&user_id).await?.profile.is_some() {
            return Err(UserError::UsernameTaken(username.to_owned()).into());
        }
        let password_hash = self.hasher.hash(password).await?;
        let mut roles = vec![user::ROLE_PLAYER.to_owned()];
        if self.settings.bootstrap_admins.contains(&username.to_ascii_lowercase()) {
            roles.push(user::ROLE_ADMIN.to_owned());
        }
        let command = UserCommand::Register(RegisterUser {
            username: username.to_owned(),
            email: email.to_owned(),
            password_hash,
            roles,
            registered_at_ms: ctx.now_ms,
        });
        let done = self.executor.execute_with::<User>(&user_id, &command, ctx, options()).await?;
        Ok((user_id, done))
    }

    /// Logs in. Every failure is `BadCredentials` after one Argon2 verification.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
        client: &str,
        ctx: &CommandContext,
    ) -> Result<Tokens, GuardianError> {
        let mut invalid = Invalid::new();
        if username.is_empty() || username.len() > 64 {
            invalid.push("username", "must be 1 to 64 characters");
        }
        if password.is_empty() || password.len() > 1024 {
            invalid.push("password", "must be 1 to 1024 bytes");
        }
        invalid.into_result()?;
        for (scope, key) in [("username", username.to_ascii_lowercase()), ("client", client.to_owned())] {
            if let Verdict::Limited { retry_after } = self.limiter.check(scope, &key).await? {
                return Err(GuardianError::RateLimited { scope, retry_after });
            }
        }
        let user_id = user::user_id_for(username).to_string();
        let user = self.load_user(&user_id).await?;
        let usable = user.profile.is_some() && !user.is_locked_at(ctx.now_ms);
        let hash = if usable { &user.password_hash } else { &self.dummy_hash };
        let matches = self.hasher.verify(password, hash).await?;
        if !usable {
            return Err(GuardianError::BadCredentials);
        }
        if !matches {
            let failed = UserCommand::RecordFailedLogin { at_ms: ctx.now_ms, policy: self.lockout.get() };
            match self.on_user(&user_id, failed, ctx).await {
                Ok(after) if after.state.is_locked_at(ctx.now_ms) => {
                    tracing::warn!(
                        user_id,
                        until_ms = after.state.locked_until_ms,
                        "account locked after repeated failures"
                    );
                }
                Ok(_) => {}
                Err(GuardianError::User(ExecuteError::Domain(UserError::AccountLocked { .. }))) => {}
                Err(e) => return Err(e),
            }
            return Err(GuardianError::BadCredentials);
        }

        let session_id = Uuid::now_v7().to_string();
        let refresh_token = new_refresh_token(&session_id);
        let expires_at_ms = ctx.now_ms + self.settings.refresh_ttl_secs * 1000;
        let start = SessionCommand::Start(SessionStarted {
            session_id: session_id.clone(),
            user_id: user_id.clone(),
            roles: user.roles.clone(),
            refresh_token_hash: token_hash(&refresh_token),
            started_at_ms: ctx.now_ms,
            expires_at_ms,
        });
        self.on_session(&session_id, start, ctx).await?;
        let login = UserCommand::RecordLogin { session_id: session_id.clone(), at_ms: ctx.now_ms };
        match self.on_user(&user_id, login, ctx).await {
            Ok(_) => {}
            // Locked between the check and now by concurrent failures: refuse, end the session.
            Err(GuardianError::User(ExecuteError::Domain(UserError::AccountLocked { .. }))) => {
                self.on_session(&session_id, SessionCommand::Logout { at_ms: ctx.now_ms }, ctx).await?;
                return Err(GuardianError::BadCredentials);
            }
            Err(e) => return Err(e),
        }
        let name = user.profile.as_ref().map(|p| p.username.clone()).unwrap_or_default();
        self.issue(&user_id, &session_id, &name, user.roles, refresh_token, ctx.now_ms)
    }

    fn issue(
        &self,
        user_id: &str,
        session_id: &str,
        name: &str,
        roles: Vec<String>,
        refresh_token: String,
        now_ms: i64,
    ) -> Result<Tokens, GuardianError> {
        let now = now_ms / 1000;
        let claims = AccessClaims {
            iss: self.settings.auth.issuer.clone(),
            aud: self.settings.auth.audience.clone(),
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            roles: roles.clone(),
            iat: now,
            exp: now + self.settings.access_ttl_secs,
            jti: Uuid::now_v7().to_string(),
            name: name.to_owned(),
        };
        Ok(Tokens {
            access_token: self.keys.sign(&claims)?,
            expires_in: self.settings.access_ttl_secs as u64,
            refresh_token,
            refresh_expires_in: self.settings.refresh_ttl_secs as u64,
            user_id: user_id.to_owned(),
            session_id: session_id.to_owned(),
            roles,
        })
    }

    /// Rotates a refresh token. Reusing a rotated one revokes the session.
    pub async fn refresh(&self, refresh_token: &str, ctx: &CommandContext) -> Result<Tokens, GuardianError> {
        if refresh_token.is_empty() {
            return Err(FieldViolation::new("refresh_token", "must not be empty").into());
        }
        let (sid, _) = refresh_token.split_once('.').ok_or(GuardianError::MalformedRefreshToken)?;
        let sid = Uuid::parse_str(sid).map_err(|_| GuardianError::MalformedRefreshToken)?.to_string();
        let new_token = new_refresh_token(&sid);
        let command = SessionCommand::Refresh {
            presented_hash: token_hash(refresh_token),
            new_hash: token_hash(&new_token),
            at_ms: ctx.now_ms,
            expires_at_ms: ctx.now_ms + self.settings.refresh_ttl_secs * 1000,
        };
        let session = self.on_session(&sid, command, ctx).await?.state;
        if session.status == SessionStatus::Revoked {
            tracing::warn!(session_id = sid, user_id = session.user_id, "refresh token reuse: session revoked");
            return Err(GuardianError::RefreshTokenReused);
        }
        let user = self.load_user(&session.user_id).await?;
        let name = user.profile.as_ref().map(|p| p.username.clone()).unwrap_or_default();
        self.issue(&session.user_id, &sid, &name, user.roles, new_token, ctx.now_ms)
    }

    pub async fn logout(&self, caller: &Caller, ctx: &CommandContext) -> Result<(), GuardianError> {
        self.on_session(&caller.session_id, SessionCommand::Logout { at_ms: ctx.now_ms }, ctx).await?;
        Ok(())
    }

    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &str,
        new: &str,
        ctx: &CommandContext,
    ) -> Result<u64, GuardianError> {
        let user = self.load_user(&caller.user_id).await?;
        let profile = user.profile.as_ref().ok_or(UserError::UnknownUser)?;
        user::validate_password(new, &profile.username).map_err(|e| FieldViolation::new("new_password", e.reason))?;
        if !self.hasher.verify(current, &user.password_hash).await? {
            return Err(GuardianError::WrongCurrentPassword);
        }
        let password_hash = self.hasher.hash(new).await?;
        let command = UserCommand::ChangePassword { password_hash, at_ms: ctx.now_ms };
        Ok(self.on_user(&caller.user_id, command, ctx).await?.version)
    }

    pub async fn change_roles(
        &self,
        caller: &Caller,
        user_id: &str,
        roles: Vec<String>,
        ctx: &CommandContext,
    ) -> Result<(Vec<String>, u64), GuardianError> {
        let mut invalid = Invalid::new();
        let id = uuid_field("user_id", user_id);
        invalid.check(id.as_ref().map(|_| ()).map_err(Clone::clone)).check(user::validate_roles(&roles));
        invalid.into_result()?;
        let id = id.map_err(GuardianError::from)?;
        let command = UserCommand::ChangeRoles { roles, changed_by: caller.user_id.clone(), at_ms: ctx.now_ms };
        let done = self.on_user(&id, command, ctx).await?;
        Ok((done.state.roles.clone(), done.version))
    }

    /// An admin lifts a user's lockout (recorded as `UserUnlocked`).
    pub async fn unlock(&self, caller: &Caller, user_id: &str, ctx: &CommandContext) -> Result<u64, GuardianError> {
        let id = uuid_field("user_id", user_id)?;
        let command = UserCommand::Unlock { by: caller.user_id.clone(), at_ms: ctx.now_ms };
        Ok(self.on_user(&id, command, ctx).await?.version)
    }

    /// The caller sets the name other players see.
    pub async fn set_display_name(
        &self,
        caller: &Caller,
        display_name: &str,
        ctx: &CommandContext,
    ) -> Result<Executed<User>, GuardianError> {
        user::validate_display_name(display_name)?;
        let command =
            UserCommand::ChangeDisplayName { display_name: display_name.trim().to_owned(), at_ms: ctx.now_ms };
        self.on_user(&caller.user_id, command, ctx).await
    }
}

/// The user's roles in force, in the User's state hash with every append:
/// every service's token check reads them, so a removed role stops working
/// within the session cache's half second, not when the token expires.
fn user_state(u: &User) -> Option<StateWrite> {
    Some(StateWrite {
        fields: vec![(allies_platform::auth::ROLES_FIELD.to_owned(), u.roles.join(","))],
        expire_at_ms: None,
    })
}
