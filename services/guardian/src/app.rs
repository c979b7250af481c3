//! Guardian's use cases: register, log in, refresh, log out, change password,
//! change roles. Each loads an aggregate, runs its pure `decide`, and appends
//! the events in one atomic script (re-running on a version conflict).

use std::time::Duration;

use allies_core::{Aggregate, CommandContext, ExpectedVersion, Snapshot};
use allies_platform::auth::{AccessClaims, AuthSettings, Caller};
use allies_store::{AppendError, AppendOptions, AppendOutcome, CommandRecord, EventStore, StateWrite, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use password_hash::rand_core::{OsRng, RngCore};
use uuid::Uuid;

use crate::domain::{self, InvalidField, LockoutPolicy, RegisterUser, User, UserCommand, UserError};
use crate::keys::{KeyError, KeyRing};
use crate::password::{HashError, PasswordHasher};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::session::{Session, SessionCommand, SessionError, SessionStatus};
use allies_contracts::guardian::events::v1::SessionStarted;

/// How often a command is re-run after a version conflict before the caller
/// gets Aborted. Re-running is cheap (load + decide, no hashing), and a hot
/// aggregate — one account logging in from many devices at once — needs more
/// than a couple of tries; a jittered pause spreads the contenders out.
const MAX_ATTEMPTS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum GuardianError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Append(#[from] AppendError),
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

/// Policy knobs, from the environment (see `Settings::from_env`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: AuthSettings,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub lockout: LockoutPolicy,
    /// Usernames that register as admins (`GUARDIAN_BOOTSTRAP_ADMINS`).
    pub bootstrap_admins: Vec<String>,
    /// How long a command id is remembered (cqrs.yaml `event_sourcing.idempotency_ttl_secs`).
    pub idempotency_ttl: Duration,
}

fn env_num(key: &str, default: i64) -> Result<i64, InvalidField> {
    match std::env::var(key) {
        Ok(v) => v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| InvalidField {
            field: "environment",
            reason: format!("{key}={v:?} must be a positive integer"),
        }),
        Err(_) => Ok(default),
    }
}

impl Settings {
    /// `ACCESS_TOKEN_TTL_SECS` (900), `REFRESH_TOKEN_TTL_SECS` (30 days),
    /// `LOCKOUT_MAX_FAILURES` (5), `LOCKOUT_SECS` (900),
    /// `GUARDIAN_BOOTSTRAP_ADMINS` (comma-separated usernames, none).
    pub fn from_env() -> Result<Self, InvalidField> {
        Ok(Self {
            auth: AuthSettings::from_env(),
            access_ttl_secs: env_num("ACCESS_TOKEN_TTL_SECS", 900)?,
            refresh_ttl_secs: env_num("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
            lockout: LockoutPolicy {
                max_failures: env_num("LOCKOUT_MAX_FAILURES", 5)? as u32,
                lock_ms: env_num("LOCKOUT_SECS", 900)? * 1000,
            },
            idempotency_ttl: Duration::from_secs(86_400),
            bootstrap_admins: std::env::var("GUARDIAN_BOOTSTRAP_ADMINS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
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
    pub store: EventStore,
    pub hasher: PasswordHasher,
    pub keys: KeyRing,
    pub settings: Settings,
    pub limiter: RateLimiter,
    /// A real hash of a random password: verified against when the user is
    /// unknown or locked, so those failures cost what a wrong password costs.
    dummy_hash: String,
}

/// Runs `command` on aggregate `id`: load, decide, append (with the state
/// hash `state` derives from the new state, if any), re-running on conflict.
/// Returns the new state, its version and where the events went (None when
/// the command produced no event).
pub async fn execute<A: Snapshot>(
    store: &EventStore,
    id: &str,
    command: &A::Command,
    ctx: &CommandContext,
    state: impl Fn(&A) -> Option<StateWrite>,
    record: Option<&CommandRecord>,
) -> Result<(A, u64, Option<AppendOutcome>), GuardianError>
where
    GuardianError: From<A::Error>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let loaded = store.load_aggregate::<A>(id).await?;
        let (mut aggregate, version) = (loaded.state, loaded.version);
        let events = aggregate.decide(command)?;
        if events.is_empty() {
            return Ok((aggregate, version, None));
        }
        for e in &events {
            aggregate.evolve(e);
        }
        let expected = ExpectedVersion::after_load(version);
        let options = AppendOptions { state: state(&aggregate), command: record.cloned(), ..Default::default() };
        let written =
            store.save_aggregate::<A>(id, expected, &ctx.metadata, ctx.now_ms, &events, &aggregate, options).await;
        match written {
            Ok(outcome) => {
                let event_sourced = store.storage_of(A::TYPE) == allies_store::Storage::EventSourced;
                if event_sourced
                    && !outcome.duplicate
                    && store.snapshot_policy().due(outcome.version, loaded.snapshot, ctx.now_ms)
                {
                    // Off the command's path: the reply does not wait for it.
                    let (store, id, state, v, at) =
                        (store.clone(), id.to_owned(), aggregate.clone(), outcome.version, ctx.now_ms);
                    tokio::spawn(async move {
                        if let Err(e) = store.save_snapshot(&id, &state, v, at).await {
                            tracing::warn!(aggregate_id = id, error = %e, "snapshot not written");
                        }
                    });
                }
                return Ok((aggregate, outcome.version, Some(outcome)));
            }
            Err(AppendError::Conflict { .. }) if attempt < MAX_ATTEMPTS => {
                let jitter_us = u64::from(OsRng.next_u32() % (500 * attempt));
                tokio::time::sleep(Duration::from_micros(jitter_us)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn no_state<A>(_: &A) -> Option<StateWrite> {
    None
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

impl Guardian {
    pub async fn new(
        store: EventStore,
        hasher: PasswordHasher,
        keys: KeyRing,
        settings: Settings,
    ) -> Result<Self, GuardianError> {
        let mut secret = [0u8; 24];
        OsRng.fill_bytes(&mut secret);
        let dummy_hash = hasher.hash(&URL_SAFE_NO_PAD.encode(secret)).await?;
        let limiter = RateLimiter::from_env(store.connection());
        Ok(Self { store, hasher, keys, settings, limiter, dummy_hash })
    }

    fn session_state(&self, s: &Session) -> Option<StateWrite> {
        Some(StateWrite {
            fields: vec![("status".into(), s.status.as_str().into()), ("user_id".into(), s.user_id.clone())],
            // Keep the status a little past the refresh expiry (then tokens are dead anyway).
            expire_at_ms: Some(s.expires_at_ms + self.settings.access_ttl_secs * 1000),
        })
    }

    /// Registers a user. With `command_id`, a retry of the same registration
    /// returns the first result instead of AlreadyExists.
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: &str,
        command_id: Option<&str>,
        ctx: &CommandContext,
    ) -> Result<(String, AppendOutcome), GuardianError> {
        domain::validate_username(username)?;
        domain::validate_email(email)?;
        domain::validate_password(password, username)?;
        let user_id = domain::user_id_for(username).to_string();
        let record = command_id.map(|id| CommandRecord {
            id: id.to_owned(),
            // The password is not part of it: its hash differs on every try.
            fingerprint: token_hash(&format!("RegisterUser\n{}\n{email}", username.to_ascii_lowercase())),
            ttl: self.settings.idempotency_ttl,
        });
        if let Some(r) = &record
            && let Some(first) = self.store.command_outcome(User::TYPE, &user_id, r).await?
        {
            return Ok((user_id, first));
        }
        // Cheap refusal before the expensive hash; the append's "no stream"
        // check is what guarantees uniqueness.
        let user = self.store.load_aggregate::<User>(&user_id).await?.state;
        if user.profile.is_some() {
            return Err(UserError::UsernameTaken(username.to_owned()).into());
        }
        let password_hash = self.hasher.hash(password).await?;
        let mut roles = vec![domain::ROLE_PLAYER.to_owned()];
        if self.settings.bootstrap_admins.contains(&username.to_ascii_lowercase()) {
            roles.push(domain::ROLE_ADMIN.to_owned());
        }
        let command = UserCommand::Register(RegisterUser {
            username: username.to_owned(),
            email: email.to_owned(),
            password_hash,
            roles,
            registered_at_ms: ctx.now_ms,
        });
        let (_, _, outcome) = execute::<User>(&self.store, &user_id, &command, ctx, no_state, record.as_ref()).await?;
        let outcome = outcome.ok_or(UserError::UsernameTaken(username.to_owned()))?;
        Ok((user_id, outcome))
    }

    /// Logs in. Every failure is `BadCredentials` after one Argon2 verification.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
        client: &str,
        ctx: &CommandContext,
    ) -> Result<Tokens, GuardianError> {
        if username.is_empty() || username.len() > 64 {
            return Err(InvalidField { field: "username", reason: "must be 1 to 64 characters".into() }.into());
        }
        if password.is_empty() || password.len() > 1024 {
            return Err(InvalidField { field: "password", reason: "must be 1 to 1024 bytes".into() }.into());
        }
        for (scope, key) in [("username", username.to_ascii_lowercase()), ("client", client.to_owned())] {
            if let Verdict::Limited { retry_after } = self.limiter.check(scope, &key).await? {
                return Err(GuardianError::RateLimited { scope, retry_after });
            }
        }
        let user_id = domain::user_id_for(username).to_string();
        let user = self.store.load_aggregate::<User>(&user_id).await?.state;
        let usable = user.profile.is_some() && !user.is_locked_at(ctx.now_ms);
        let hash = if usable { &user.password_hash } else { &self.dummy_hash };
        let matches = self.hasher.verify(password, hash).await?;
        if !usable {
            return Err(GuardianError::BadCredentials);
        }
        if !matches {
            let failed = UserCommand::RecordFailedLogin { at_ms: ctx.now_ms, policy: self.settings.lockout };
            match execute::<User>(&self.store, &user_id, &failed, ctx, no_state, None).await {
                Ok((after, _, _)) if after.is_locked_at(ctx.now_ms) => {
                    tracing::warn!(user_id, until_ms = after.locked_until_ms, "account locked after repeated failures");
                }
                Ok(_) | Err(GuardianError::User(UserError::AccountLocked { .. })) => {}
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
        execute::<Session>(&self.store, &session_id, &start, ctx, |s| self.session_state(s), None).await?;
        let login = UserCommand::RecordLogin { session_id: session_id.clone(), at_ms: ctx.now_ms };
        match execute::<User>(&self.store, &user_id, &login, ctx, no_state, None).await {
            Ok(_) => {}
            // Locked between the check and now by concurrent failures: refuse, end the session.
            Err(GuardianError::User(UserError::AccountLocked { .. })) => {
                let end = SessionCommand::Logout { at_ms: ctx.now_ms };
                execute::<Session>(&self.store, &session_id, &end, ctx, |s| self.session_state(s), None).await?;
                return Err(GuardianError::BadCredentials);
            }
            Err(e) => return Err(e),
        }
        self.issue(&user_id, &session_id, user.roles, refresh_token, ctx.now_ms)
    }

    fn issue(
        &self,
        user_id: &str,
        session_id: &str,
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
        let (sid, _) = refresh_token.split_once('.').ok_or(GuardianError::MalformedRefreshToken)?;
        let sid = Uuid::parse_str(sid).map_err(|_| GuardianError::MalformedRefreshToken)?.to_string();
        let new_token = new_refresh_token(&sid);
        let command = SessionCommand::Refresh {
            presented_hash: token_hash(refresh_token),
            new_hash: token_hash(&new_token),
            at_ms: ctx.now_ms,
            expires_at_ms: ctx.now_ms + self.settings.refresh_ttl_secs * 1000,
        };
        let (session, _, _) =
            execute::<Session>(&self.store, &sid, &command, ctx, |s| self.session_state(s), None).await?;
        if session.status == SessionStatus::Revoked {
            tracing::warn!(session_id = sid, user_id = session.user_id, "refresh token reuse: session revoked");
            return Err(GuardianError::RefreshTokenReused);
        }
        let user = self.store.load_aggregate::<User>(&session.user_id).await?.state;
        self.issue(&session.user_id, &sid, user.roles, new_token, ctx.now_ms)
    }

    pub async fn logout(&self, caller: &Caller, ctx: &CommandContext) -> Result<(), GuardianError> {
        let command = SessionCommand::Logout { at_ms: ctx.now_ms };
        execute::<Session>(&self.store, &caller.session_id, &command, ctx, |s| self.session_state(s), None).await?;
        Ok(())
    }

    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &str,
        new: &str,
        ctx: &CommandContext,
    ) -> Result<u64, GuardianError> {
        let user = self.store.load_aggregate::<User>(&caller.user_id).await?.state;
        let profile = user.profile.as_ref().ok_or(UserError::UnknownUser)?;
        domain::validate_password(new, &profile.username).map_err(|e| InvalidField { field: "new_password", ..e })?;
        if !self.hasher.verify(current, &user.password_hash).await? {
            return Err(GuardianError::WrongCurrentPassword);
        }
        let password_hash = self.hasher.hash(new).await?;
        let command = UserCommand::ChangePassword { password_hash, at_ms: ctx.now_ms };
        let (_, version, _) = execute::<User>(&self.store, &caller.user_id, &command, ctx, no_state, None).await?;
        Ok(version)
    }

    pub async fn change_roles(
        &self,
        caller: &Caller,
        user_id: &str,
        roles: Vec<String>,
        ctx: &CommandContext,
    ) -> Result<(Vec<String>, u64), GuardianError> {
        let id = Uuid::parse_str(user_id)
            .map_err(|_| InvalidField { field: "user_id", reason: "must be a UUID".into() })?
            .to_string();
        domain::validate_roles(&roles)?;
        let command = UserCommand::ChangeRoles { roles, changed_by: caller.user_id.clone(), at_ms: ctx.now_ms };
        let (user, version, _) = execute::<User>(&self.store, &id, &command, ctx, no_state, None).await?;
        Ok((user.roles, version))
    }
}
