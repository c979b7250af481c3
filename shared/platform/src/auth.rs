//! The auth layer every service uses to verify Guardian's access tokens.
//!
//! Verifies an EdDSA (Ed25519) JWT against an allow-list of one algorithm —
//! never the algorithm the token's header claims — then the signature with
//! the key its `kid` names, expiry, issuer and audience. Keys come from
//! Guardian's JWKS (cached; fetched again on an unknown `kid`, one fetch at a
//! time and at most once per [`REFETCH_INTERVAL`]). Finally the session must still be active: its
//! status is read from the session's state hash, which Guardian writes in the
//! same atomic script as the logout or revocation event, with a local cache of
//! at most [`SESSION_CACHE`] — so a logged-out session's tokens are refused
//! everywhere within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allies_contracts::guardian::v1::GetJwksRequest;
use allies_contracts::guardian::v1::Jwk;
use allies_contracts::guardian::v1::guardian_service_client::GuardianServiceClient;
use allies_core::{ErrorCode, ServiceError};
use allies_store::RedisEventStore;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tonic::Request;

pub use crate::config::AuthSettings;

/// Aggregate type of Guardian's sessions (their state hashes carry `status`).
pub const SESSION_TYPE: &str = "session";
/// The aggregate type of users, and the field of its state hash that holds
/// the roles in force (comma-separated), written by guardian with every append.
pub const USER_TYPE: &str = "user";
pub const ROLES_FIELD: &str = "roles";
pub use crate::caller::ROLE_ADMIN;
pub const ROLE_PLAYER: &str = "player";
/// Smallest interval between two JWKS fetches. A token with an unknown kid
/// waits (at most this long) for the next allowed fetch instead of failing,
/// so a key rotation never refuses fresh tokens; forged kids cannot make
/// this process ask Guardian more than once per interval.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long an "active" session status is trusted without asking Redis.
pub const SESSION_CACHE: Duration = Duration::from_millis(500);
/// Clock skew tolerated on `exp`.
pub const LEEWAY_SECS: u64 = 5;
/// Tokens whose signature was verified, kept so a client's next call with
/// the same token skips the Ed25519 check (a fifth of a game command's CPU).
pub const VERIFIED_TOKENS: usize = 50_000;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    pub roles: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The username, for records an operator reads (a token without it is
    /// still valid: the id stands in).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

pub use crate::caller::Caller;

/// Why a request is not authenticated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (authorization metadata)")]
    Missing,
    #[error("invalid access token: {0}")]
    Invalid(&'static str),
    /// The token could not be checked (Redis or Guardian unreachable).
    #[error("cannot verify the access token now: {0}")]
    Unavailable(String),
}

impl ServiceError for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Missing | Self::Invalid(_) => ErrorCode::Unauthenticated,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        matches!(self, Self::Unavailable(_)).then_some(Duration::from_secs(1))
    }
}

/// Where verification keys come from.
pub enum KeySource {
    /// A fixed set (Guardian verifying its own tokens).
    Static(Vec<Jwk>),
    /// Guardian's `GetJwks`, e.g. `http://127.0.0.1:50051` (`GUARDIAN_URL`).
    Guardian(String),
}

pub struct Authenticator {
    settings: AuthSettings,
    source: KeySource,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    store: RedisEventStore,
    sessions: Mutex<HashMap<String, Instant>>,
    /// Exact token text → its key id and claims: a byte-identical token
    /// carries the signature already checked. Expiry, the key still being
    /// in the key set and the session are checked again on every call.
    verified: Mutex<HashMap<String, Verified>>,
}

/// A token verified before: its key id and its caller, shared (a call
/// answered from here copies neither).
type Verified = (Arc<str>, Arc<Caller>);

fn unauthenticated(why: &'static str) -> AuthError {
    AuthError::Invalid(why)
}

fn decoding_keys(jwks: &[Jwk]) -> HashMap<String, DecodingKey> {
    jwks.iter()
        .filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && (k.alg.is_empty() || k.alg == "EdDSA"))
        .filter_map(|k| DecodingKey::from_ed_components(&k.x).ok().map(|d| (k.kid.clone(), d)))
        .collect()
}

impl Authenticator {
    pub fn new(settings: AuthSettings, source: KeySource, store: RedisEventStore) -> Self {
        let keys = match &source {
            KeySource::Static(jwks) => decoding_keys(jwks),
            KeySource::Guardian(_) => HashMap::new(),
        };
        Self {
            settings,
            source,
            keys: RwLock::new(keys),
            last_fetch: tokio::sync::Mutex::new(None),
            store,
            sessions: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The caller of a request with `authorization: Bearer <token>`.
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<Arc<Caller>, AuthError> {
        self.verify(bearer_token(request)?).await
    }

    /// The caller when the request carries a token (which must then be
    /// valid); None without one.
    /// The context of a call that needs a valid access token: the caller,
    /// the request's ids, command id and trace (the status to answer if not).
    pub async fn context<T: prost::Message>(
        &self,
        request: &Request<T>,
    ) -> Result<crate::RequestContext, tonic::Status> {
        use crate::status::OrStatus;
        let caller = self.authenticate(request).await.or_status()?;
        crate::RequestContext::from_request(request, Some(caller)).or_status()
    }

    /// [`context`](Self::context) of a call only admins may make.
    pub async fn admin_context<T: prost::Message>(
        &self,
        request: &Request<T>,
    ) -> Result<crate::RequestContext, tonic::Status> {
        use crate::status::OrStatus;
        let ctx = self.context(request).await?;
        ctx.caller().or_status()?.require_role(ROLE_ADMIN).or_status()?;
        Ok(ctx)
    }

    pub async fn authenticate_optional<T>(&self, request: &Request<T>) -> Result<Option<Arc<Caller>>, AuthError> {
        if request.metadata().get("authorization").is_none() {
            return Ok(None);
        }
        self.authenticate(request).await.map(Some)
    }

    /// Verifies a token and that its session is still active. A token
    /// verified before is answered from memory, as a shared [`Caller`]:
    /// nothing is copied per call.
    pub async fn verify(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        let known = self.verified.lock().ok().and_then(|v| v.get(token).cloned());
        if let Some((kid, caller)) = known {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(i64::MAX);
            if now > caller.expires_at + LEEWAY_SECS as i64 {
                return Err(unauthenticated("expired"));
            }
            if self.keys.read().await.contains_key(&*kid) {
                self.check_session(&caller).await?;
                return Ok(caller);
            }
        }
        let (kid, caller) = self.verify_signature(token).await?;
        self.check_session(&caller).await?;
        let caller = Arc::new(caller);
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
            verified.insert(token.to_owned(), (kid.into(), caller.clone()));
        }
        Ok(caller)
    }

    /// The context of a call whose token is genuine and unexpired, even if
    /// its session has since ended: only to find the recorded reply of a
    /// retried logout (the first one ended the session the retry names).
    pub async fn signed_context<T: prost::Message>(
        &self,
        request: &Request<T>,
    ) -> Result<crate::RequestContext, tonic::Status> {
        use crate::status::OrStatus;
        let (_, caller) = self.verify_signature(bearer_token(request).or_status()?).await.or_status()?;
        crate::RequestContext::from_request(request, Some(Arc::new(caller))).or_status()
    }

    /// Checks a token's signature, issuer, audience and expiry (not its session).
    async fn verify_signature(&self, token: &str) -> Result<(String, Caller), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(unauthenticated("algorithm not allowed"));
        }
        let kid = header.kid.ok_or_else(|| unauthenticated("no key id"))?;
        let key = self.key(&kid).await?.ok_or_else(|| unauthenticated("unknown key id"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => unauthenticated("expired"),
                ErrorKind::InvalidAudience => unauthenticated("wrong audience"),
                ErrorKind::InvalidIssuer => unauthenticated("wrong issuer"),
                ErrorKind::InvalidSignature => unauthenticated("bad signature"),
                _ => unauthenticated("rejected"),
            }
        })?;
        let claims = data.claims;
        let caller = Caller {
            user_id: claims.sub,
            session_id: claims.sid,
            roles: claims.roles,
            expires_at: claims.exp,
            name: claims.name,
        };
        Ok((kid, caller))
    }

    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, AuthError> {
        if let Some(k) = self.keys.read().await.get(kid) {
            return Ok(Some(k.clone()));
        }
        let KeySource::Guardian(endpoint) = &self.source else { return Ok(None) };
        // One fetch at a time; whoever waited may find the key already there.
        let mut last = self.last_fetch.lock().await;
        if let Some(k) = self.keys.read().await.get(kid) {
            return Ok(Some(k.clone()));
        }
        if let Some(t) = *last {
            tokio::time::sleep(REFETCH_INTERVAL.saturating_sub(t.elapsed())).await;
        }
        *last = Some(Instant::now());
        let jwks = fetch_jwks(endpoint).await?;
        let fresh = decoding_keys(&jwks);
        let found = fresh.get(kid).cloned();
        *self.keys.write().await = fresh;
        tracing::info!(keys = jwks.len(), "fetched JWKS from guardian");
        Ok(found)
    }

    /// A token's roles must all still be the user's: a removed role stops
    /// working as fast as a logout does. (A user written before the roles
    /// were kept in the state hash has none there: nothing to compare.)
    async fn check_roles(&self, caller: &Caller) -> Result<(), AuthError> {
        let roles = self
            .store
            .state_field(USER_TYPE, &caller.user_id, ROLES_FIELD)
            .await
            .map_err(|e| AuthError::Unavailable(format!("cannot check the roles: {e}")))?;
        if let Some(roles) = roles {
            let now: Vec<&str> = roles.split(',').collect();
            if caller.roles.iter().any(|r| !now.contains(&r.as_str())) {
                return Err(unauthenticated("a role of the token was removed: log in or refresh the token"));
            }
        }
        Ok(())
    }

    async fn check_session(&self, caller: &Caller) -> Result<(), AuthError> {
        let sid = caller.session_id.as_str();
        if let Ok(cache) = self.sessions.lock()
            && cache.get(sid).is_some_and(|t| t.elapsed() < SESSION_CACHE)
        {
            return Ok(());
        }
        let status = self
            .store
            .state_field(SESSION_TYPE, sid, "status")
            .await
            .map_err(|e| AuthError::Unavailable(format!("cannot check the session: {e}")))?;
        match status.as_deref() {
            Some("active") => {
                self.check_roles(caller).await?;
                if let Ok(mut cache) = self.sessions.lock() {
                    if cache.len() > 100_000 {
                        cache.retain(|_, t| t.elapsed() < SESSION_CACHE);
                    }
                    cache.insert(sid.to_owned(), Instant::now());
                }
                Ok(())
            }
            Some(_) => Err(unauthenticated("session has ended")),
            None => Err(unauthenticated("unknown session")),
        }
    }
}

async fn fetch_jwks(endpoint: &str) -> Result<Vec<Jwk>, AuthError> {
    let unavailable = |e: &dyn std::fmt::Display| AuthError::Unavailable(format!("cannot fetch guardian's keys: {e}"));
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| unavailable(&e))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| unavailable(&e))?;
    let mut client = GuardianServiceClient::new(crate::telemetry::traced(channel));
    Ok(client
        .get_jwks(tonic::Request::new(GetJwksRequest {}))
        .await
        .map_err(|e| unavailable(&e.message()))?
        .into_inner()
        .keys)
}

/// The access token of a request's `authorization: Bearer <token>` (not
/// verified: [`Authenticator::authenticate`] does that).
pub fn bearer_token<T>(request: &Request<T>) -> Result<&str, AuthError> {
    let header = request.metadata().get("authorization").ok_or(AuthError::Missing)?;
    let value = header.to_str().map_err(|_| unauthenticated("not ASCII"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| unauthenticated("expected 'Bearer <token>'"))?;
    Ok(token.trim())
}

/// A request to another service carrying the current trace context (the
/// W3C `traceparent` of the span this call is made in, when traced).
pub fn outgoing<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(tp) = allies_store::trace::current()
        && let Ok(v) = tp.parse()
    {
        request.metadata_mut().insert(crate::telemetry::TRACEPARENT, v);
    }
    request
}
