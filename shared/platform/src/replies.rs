//! Safe retries for every command-side RPC (but the game's tower
//! commands, whose retries the append's command record answers: see
//! timesquare's `place_tower`): the reply of a call that
//! carried an `x-command-id` is recorded, and a retry of the same request
//! under the same id gets that very reply back — the same ids, version and
//! consistency token, tokens and invite codes included — with nothing run
//! or written again. The same id on a different request is refused
//! (FAILED_PRECONDITION, rule `COMMAND_ID_REUSED`).
//!
//! - The fingerprint is the request's content (method + canonical protobuf
//!   bytes, [`request_fingerprint`](crate::context::request_fingerprint)),
//!   never a clock; ids are scoped by the verified caller, and before
//!   login by whom the call is about (`RequestContext::about`: the
//!   username, the refresh token's session), so two users' ids never meet.
//! - A reply is sealed (ChaCha20-Poly1305) with a key derived from the whole
//!   request and never stored: what Redis holds opens only for the request
//!   that made it (a login's tokens cannot be read back without its password).
//! - Two copies of one request in flight at once: the first claims the id,
//!   the second waits for its reply (at most [`WAIT_FOR_FIRST`]).
//! - Only successes are recorded: a refused command changed nothing, and
//!   its retry is decided again.
//! - Retention: `idempotency_ttl_secs` (cqrs.yaml / `IDEMPOTENCY_TTL_SECS`,
//!   24 h by default), the same window as the store's command records,
//!   which answer a retry whose reply was never recorded (a crash between
//!   the append and the record) from the events the first call appended.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use allies_core::{ErrorCode, Failure, RuleViolation, ServiceError};
use allies_store::RedisConn;
use tonic::{Response, Status};

use crate::context::{RequestContext, Seal};
use crate::status::OrStatus;

/// How long a claimed id may stay without a reply before another copy of
/// the request may run it (the first one died mid-way: a replica killed
/// with -9). The claimant renews it every third of that while it works, so
/// a slow request keeps its claim and a dead one loses it within 3 s.
pub const CLAIM_TTL: Duration = Duration::from_secs(3);
/// How long a copy of a request waits for the first copy's reply.
pub const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);

enum Backend {
    Redis(RedisConn),
    /// For in-process tests: value and expiry.
    Memory(Mutex<HashMap<String, (Vec<u8>, Instant)>>),
}

/// The reply records of one service (see the module documentation).
pub struct Replies {
    backend: Backend,
    ttl: Duration,
}

/// What a command id's record says.
#[derive(Debug, PartialEq, Eq)]
enum Record {
    /// Nobody had it: this call runs the request.
    Claimed,
    /// Another copy is running it.
    Running { fingerprint: String },
    /// Done: the sealed reply.
    Done { fingerprint: String, sealed: Vec<u8> },
}

/// Why a command id cannot be used for this request.
#[derive(Debug, thiserror::Error)]
#[error(
    "command id '{command_id}' was already used for a different request; a command id names one request: use a new id for a new request"
)]
pub struct CommandIdReused {
    pub command_id: String,
}

impl ServiceError for CommandIdReused {
    fn code(&self) -> ErrorCode {
        ErrorCode::FailedPrecondition
    }
    fn rule(&self) -> Option<RuleViolation> {
        Some(RuleViolation {
            rule: "COMMAND_ID_REUSED".into(),
            subject: format!("x-command-id {}", self.command_id),
            description: "a retry must repeat the first request exactly; a new request needs a new command id".into(),
        })
    }
}

fn key(scope: &str, command_id: &str) -> String {
    format!("reply:{{{scope}}}:{command_id}")
}

fn parse(value: &[u8]) -> Option<Record> {
    let (kind, rest) = value.split_first()?;
    if rest.len() < 64 {
        return None;
    }
    let fingerprint = String::from_utf8(rest[..64].to_vec()).ok()?;
    match kind {
        b'P' => Some(Record::Running { fingerprint }),
        b'D' => Some(Record::Done { fingerprint, sealed: rest[64..].to_vec() }),
        _ => None,
    }
}

fn seal(key: &Seal, mut plain: Vec<u8>) -> Option<Vec<u8>> {
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key.0).ok()?);
    // Each key seals one record only (it is derived from the request and
    // the record is written once), so a fixed nonce is never reused.
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut plain).ok()?;
    Some(plain)
}

fn open(key: &Seal, mut sealed: Vec<u8>) -> Option<Vec<u8>> {
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key.0).ok()?);
    let plain = key.open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut sealed).ok()?;
    Some(plain.to_vec())
}

impl Replies {
    /// Records in Redis, kept for `ttl`.
    pub fn redis(conn: RedisConn, ttl: Duration) -> Self {
        Self { backend: Backend::Redis(conn), ttl }
    }

    /// Records in this process only (application tests).
    pub fn memory(ttl: Duration) -> Self {
        Self { backend: Backend::Memory(Mutex::new(HashMap::new())), ttl }
    }

    /// The retention window.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Runs `work` once per command id: a retry of the same request gets
    /// the first reply; a call without a command id just runs.
    pub async fn once<R, F>(&self, ctx: &RequestContext, work: F) -> Result<Response<R>, Status>
    where
        R: prost::Message + Default,
        F: Future<Output = Result<Response<R>, Status>>,
    {
        let (Some(command_id), Some(fingerprint), Some(seal_key)) = (&ctx.command_id, &ctx.fingerprint, &ctx.seal)
        else {
            return work.await;
        };
        let key = key(&ctx.id_scope(), command_id);
        let reused = || CommandIdReused { command_id: command_id.clone() }.into_status_now();
        let started = Instant::now();
        loop {
            match self.claim(&key, fingerprint).await.or_status()? {
                Record::Claimed => {
                    let result = {
                        let renew = async {
                            loop {
                                tokio::time::sleep(CLAIM_TTL / 3).await;
                                if let Err(e) = self.renew(&key).await {
                                    tracing::debug!(error = %e, "claim of command {command_id} not renewed");
                                }
                            }
                        };
                        tokio::select! {
                            result = work => result,
                            _ = renew => unreachable!("renews until the work ends"),
                        }
                    };
                    match &result {
                        Ok(reply) => {
                            let sealed = seal(seal_key, reply.get_ref().encode_to_vec());
                            let stored = match sealed {
                                Some(sealed) => self.finish(&key, fingerprint, sealed).await,
                                None => Err(Failure::internal("reply not sealed")),
                            };
                            if let Err(e) = stored {
                                // The command happened; only its retry loses the shortcut
                                // (the store's command record still answers it).
                                tracing::warn!(error = %e, "reply of command {command_id} not recorded");
                            }
                        }
                        Err(_) => {
                            if let Err(e) = self.release(&key).await {
                                tracing::warn!(error = %e, "claim of command {command_id} not released");
                            }
                        }
                    }
                    return result;
                }
                Record::Running { fingerprint: f } | Record::Done { fingerprint: f, .. } if f != *fingerprint => {
                    return Err(reused());
                }
                Record::Done { sealed, .. } => {
                    let reply = open(seal_key, sealed).ok_or_else(reused)?;
                    let reply = R::decode(reply.as_slice())
                        .map_err(|_| Failure::internal("recorded reply does not decode").into_status_now())?;
                    return Ok(Response::new(reply));
                }
                Record::Running { .. } if started.elapsed() < WAIT_FOR_FIRST => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Record::Running { .. } => {
                    return Err(Failure::new(
                        ErrorCode::Aborted,
                        format!("the first request with command id '{command_id}' is still running; retry later"),
                    )
                    .with_retry_after(Duration::from_secs(1))
                    .into_status_now());
                }
            }
        }
    }

    async fn claim(&self, key: &str, fingerprint: &str) -> Result<Record, Failure> {
        let mut pending = b"P".to_vec();
        pending.extend_from_slice(fingerprint.as_bytes());
        let value = match &self.backend {
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(&pending)
                    .arg("NX")
                    .arg("PX")
                    .arg(CLAIM_TTL.as_millis() as u64)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if set.is_some() {
                    return Ok(Record::Claimed);
                }
                let value: Option<Vec<u8>> =
                    redis::cmd("GET").arg(key).query_async(&mut conn).await.map_err(unavailable)?;
                value
            }
            Backend::Memory(map) => {
                let mut map = map.lock().map_err(|_| Failure::internal("replies poisoned"))?;
                let now = Instant::now();
                match map.get(key) {
                    Some((v, until)) if *until > now => Some(v.clone()),
                    _ => {
                        map.insert(key.to_owned(), (pending, now + CLAIM_TTL));
                        return Ok(Record::Claimed);
                    }
                }
            }
        };
        match value {
            // Expired between the two commands: claim again.
            None => Ok(Record::Running { fingerprint: fingerprint.to_owned() }),
            Some(v) => parse(&v).ok_or_else(|| Failure::internal(format!("bad reply record {key}"))),
        }
    }

    async fn finish(&self, key: &str, fingerprint: &str, sealed: Vec<u8>) -> Result<(), Failure> {
        let mut value = b"D".to_vec();
        value.extend_from_slice(fingerprint.as_bytes());
        value.extend_from_slice(&sealed);
        match &self.backend {
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(self.ttl.as_millis().max(1) as u64)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(unavailable)
            }
            Backend::Memory(map) => {
                let mut map = map.lock().map_err(|_| Failure::internal("replies poisoned"))?;
                map.insert(key.to_owned(), (value, Instant::now() + self.ttl));
                Ok(())
            }
        }
    }

    /// Extends a running claim by [`CLAIM_TTL`] (GT: a recorded reply's
    /// longer expiry is never shortened; a gone key stays gone).
    async fn renew(&self, key: &str) -> Result<(), Failure> {
        match &self.backend {
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                redis::cmd("PEXPIRE")
                    .arg(key)
                    .arg(CLAIM_TTL.as_millis() as u64)
                    .arg("GT")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(unavailable)
            }
            Backend::Memory(map) => {
                let mut map = map.lock().map_err(|_| Failure::internal("replies poisoned"))?;
                if let Some((v, until)) = map.get_mut(key)
                    && v.first() == Some(&b'P')
                {
                    *until = (*until).max(Instant::now() + CLAIM_TTL);
                }
                Ok(())
            }
        }
    }

    async fn release(&self, key: &str) -> Result<(), Failure> {
        match &self.backend {
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                redis::cmd("DEL").arg(key).query_async::<()>(&mut conn).await.map_err(unavailable)
            }
            Backend::Memory(map) => {
                map.lock().map_err(|_| Failure::internal("replies poisoned"))?.remove(key);
                Ok(())
            }
        }
    }
}

fn unavailable(e: redis::RedisError) -> Failure {
    Failure::unavailable(format!("redis unavailable: {e}")).with_retry_after(Duration::from_secs(1))
}

/// `to_status` as a method, for the errors made here.
trait IntoStatusNow {
    fn into_status_now(self) -> Status;
}

impl<E: ServiceError> IntoStatusNow for E {
    fn into_status_now(self) -> Status {
        crate::status::to_status(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(id: Option<&str>, body: &str) -> RequestContext {
        let mut request = tonic::Request::new(body.to_owned());
        if let Some(id) = id {
            request.metadata_mut().insert(crate::context::COMMAND_ID, id.parse().unwrap());
        }
        RequestContext::from_request(&request, None).unwrap()
    }

    async fn call(replies: &Replies, ctx: &RequestContext, runs: &std::sync::atomic::AtomicU32) -> Result<u32, Status> {
        replies
            .once(ctx, async {
                let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Ok(Response::new(n))
            })
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn a_retry_gets_the_first_reply_and_another_request_under_the_id_is_refused() {
        let replies = Replies::memory(Duration::from_secs(60));
        let runs = std::sync::atomic::AtomicU32::new(0);
        let first = ctx(Some("c-1"), "place tower at 3,4");
        assert_eq!(call(&replies, &first, &runs).await.unwrap(), 1);
        // The retry arrives later: another time, the same content.
        let retry = ctx(Some("c-1"), "place tower at 3,4");
        assert_eq!(call(&replies, &retry, &runs).await.unwrap(), 1);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        let other = ctx(Some("c-1"), "place tower at 5,5");
        let refused = call(&replies, &other, &runs).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("already used for a different request"), "{}", refused.message());
        // Without an id every call runs.
        let plain = ctx(None, "place tower at 3,4");
        assert_eq!(call(&replies, &plain, &runs).await.unwrap(), 2);
        assert_eq!(call(&replies, &plain, &runs).await.unwrap(), 3);
    }

    /// Two anonymous calls about two subjects (two usernames logging in)
    /// under one id are two requests; about one subject, the id is one
    /// request's. Without a subject every anonymous caller shares a scope.
    #[tokio::test]
    async fn anonymous_ids_are_scoped_by_the_calls_subject() {
        let replies = Replies::memory(Duration::from_secs(60));
        let runs = std::sync::atomic::AtomicU32::new(0);
        let about = |subject: &str, body: &str| {
            let mut c = ctx(Some("1"), body);
            c.about(subject);
            c
        };
        assert_eq!(call(&replies, &about("username:ann", "login ann"), &runs).await.unwrap(), 1);
        assert_eq!(call(&replies, &about("username:bob", "login bob"), &runs).await.unwrap(), 2);
        assert_eq!(call(&replies, &about("username:bob", "login bob"), &runs).await.unwrap(), 2, "bob's retry");
        let refused = call(&replies, &about("username:ann", "register ann"), &runs).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "ann's id on another request of hers");
        assert_eq!(call(&replies, &ctx(Some("1"), "no subject"), &runs).await.unwrap(), 3);
        let refused = call(&replies, &ctx(Some("1"), "another, no subject"), &runs).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "no subject: one scope");
        let (a, b) = (about("username:ann", "x"), about("username:bob", "x"));
        assert_ne!(a.id_scope(), b.id_scope());
        assert!(!a.id_scope().contains("ann"), "a digest, not the name: {}", a.id_scope());
    }

    /// A replica killed mid-request leaves its claim behind: a retry runs
    /// once the claim lapses (within CLAIM_TTL), not after minutes; a slow
    /// first copy renews its claim, so a concurrent copy waits for its
    /// reply instead of running twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_claimant_releases_its_id_within_the_claim_ttl_and_a_slow_one_keeps_it() {
        let replies = std::sync::Arc::new(Replies::memory(Duration::from_secs(60)));
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        // The first copy dies mid-way (its task is dropped: no reply, no release).
        let dying = {
            let replies = replies.clone();
            tokio::spawn(async move {
                let c = ctx(Some("c-dead"), "x");
                replies.once(&c, std::future::pending::<Result<Response<u32>, Status>>()).await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        dying.abort();
        let began = Instant::now();
        assert_eq!(call(&replies, &ctx(Some("c-dead"), "x"), &runs).await.unwrap(), 1);
        assert!(began.elapsed() <= CLAIM_TTL + Duration::from_millis(500), "ran after {:?}", began.elapsed());

        // A slow first copy (twice the claim's TTL) and a copy sent meanwhile.
        let slow = {
            let (replies, runs) = (replies.clone(), runs.clone());
            tokio::spawn(async move {
                let c = ctx(Some("c-slow"), "y");
                replies
                    .once(&c, async {
                        tokio::time::sleep(CLAIM_TTL * 2).await;
                        Ok(Response::new(runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1))
                    })
                    .await
                    .map(Response::into_inner)
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let copy = call(&replies, &ctx(Some("c-slow"), "y"), &runs).await.unwrap();
        assert_eq!(copy, slow.await.unwrap().unwrap(), "the copy got the slow first's reply");
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2, "run once each");
    }

    #[tokio::test]
    async fn a_refusal_is_not_recorded_so_the_retry_is_decided_again() {
        let replies = Replies::memory(Duration::from_secs(60));
        let c = ctx(Some("c-2"), "x");
        let refused: Result<Response<u32>, Status> =
            replies.once(&c, async { Err(Status::failed_precondition("not your turn")) }).await;
        assert!(refused.is_err());
        let ok = replies.once(&c, async { Ok(Response::new(7u32)) }).await.unwrap();
        assert_eq!(ok.into_inner(), 7);
    }

    #[test]
    fn a_sealed_reply_opens_only_with_its_request_key() {
        let (_, k1) = crate::context::request_fingerprint(&tonic::Request::new("login alice pw1".to_owned()));
        let (_, k2) = crate::context::request_fingerprint(&tonic::Request::new("login alice pw2".to_owned()));
        let sealed = seal(&k1, b"tokens".to_vec()).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"tokens"));
        assert_eq!(open(&k1, sealed.clone()).unwrap(), b"tokens");
        assert!(open(&k2, sealed).is_none());
    }
}
