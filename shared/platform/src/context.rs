//! One request context, built from gRPC metadata in one place: who calls
//! (the verified token), the correlation and causation ids, the W3C trace
//! context, the client's idempotency key, and the time of the request.

use std::sync::Arc;

use allies_core::{CommandContext, Failure, FieldViolation, Metadata};
use tonic::Request;
use uuid::Uuid;

use crate::caller::Caller;

/// Metadata keys a client may send.
pub const CORRELATION_ID: &str = "x-correlation-id";
pub const CAUSATION_ID: &str = "x-causation-id";
pub const COMMAND_ID: &str = "x-command-id";
pub use crate::telemetry::TRACEPARENT;

/// Everything a handler needs from a request besides its message.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// `x-correlation-id` when it is a UUID, else a new one.
    pub correlation_id: Uuid,
    /// `x-causation-id` when it is a UUID (the message that caused this
    /// request, e.g. a saga's event), else a new one (this command).
    pub causation_id: Uuid,
    /// The verified caller, when the request carried a valid token.
    pub caller: Option<Arc<Caller>>,
    /// W3C trace context of the request.
    pub traceparent: Option<String>,
    /// `x-command-id`: the client's idempotency key (1 to 128 printable ASCII).
    pub command_id: Option<String>,
    /// With a command id: what identifies the request's content — SHA-256
    /// of the gRPC method and the request's canonical protobuf bytes, never
    /// the time it arrived. A retry under the same id must match it.
    pub fingerprint: Option<String>,
    /// With a command id: the key that seals the recorded reply, derived
    /// from the whole request (secrets included) and never stored, so only
    /// the very same request opens it.
    pub seal: Option<Seal>,
    /// An anonymous call's subject (see [`about`](Self::about)): a
    /// digest, never the value.
    pub subject: Option<String>,
    /// The client's address, when known.
    pub client: Option<String>,
    /// When the request arrived, Unix epoch milliseconds.
    pub now_ms: i64,
    /// Built from a client's request (not a reaction or a timer).
    pub from_client: bool,
}

fn uuid_header<T>(request: &Request<T>, key: &str) -> Option<Uuid> {
    request.metadata().get(key).and_then(|v| v.to_str().ok()).and_then(|v| Uuid::parse_str(v).ok())
}

/// Wall-clock time, Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl RequestContext {
    /// Reads the context of `request`; `caller` is who the auth layer verified.
    pub fn from_request<T: prost::Message>(
        request: &Request<T>,
        caller: Option<Arc<Caller>>,
    ) -> Result<Self, FieldViolation> {
        let command_id = match request.metadata().get(COMMAND_ID) {
            None => None,
            Some(v) => match v.to_str() {
                Ok(s) if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) => {
                    Some(s.to_owned())
                }
                _ => return Err(FieldViolation::new(COMMAND_ID, "must be 1 to 128 printable ASCII characters")),
            },
        };
        let (fingerprint, seal) = match &command_id {
            Some(_) => {
                let (f, s) = request_fingerprint(request);
                (Some(f), Some(s))
            }
            None => (None, None),
        };
        // The server span's context when traced; else what the caller sent.
        let traceparent = allies_store::trace::current().or_else(|| crate::telemetry::traceparent_of(request));
        Ok(Self {
            correlation_id: uuid_header(request, CORRELATION_ID).unwrap_or_else(Uuid::now_v7),
            causation_id: uuid_header(request, CAUSATION_ID).unwrap_or_else(Uuid::now_v7),
            caller,
            traceparent,
            command_id,
            fingerprint,
            seal,
            subject: None,
            client: crate::proxies::client_address(request),
            now_ms: now_ms(),
            from_client: true,
        })
    }

    /// The context of work the service does by itself (a timer, a saga
    /// step): no caller, fresh ids, the time given.
    pub fn system(now_ms: i64) -> Self {
        Self {
            correlation_id: Uuid::now_v7(),
            causation_id: Uuid::now_v7(),
            caller: None,
            traceparent: None,
            command_id: None,
            fingerprint: None,
            seal: None,
            subject: None,
            client: None,
            now_ms,
            from_client: false,
        }
    }

    /// The context of a reaction to a stored event (a subscriber, a saga
    /// step): it carries on the event's correlation id, is caused by the
    /// event, its command id is `<event id>:<step>`, and its time is the
    /// time the event was recorded — so a redelivered event (another
    /// replica, after a crash) sends the very same command, and the store
    /// answers the first result instead of refusing a "different command"
    /// under a used id. A reaction is a function of its event, not of when
    /// it runs.
    pub fn reaction<E>(event: &allies_core::EventEnvelope<E>, step: &str) -> Self {
        Self {
            correlation_id: event.metadata.correlation_id,
            causation_id: event.event_id,
            caller: None,
            // The consumer span's context when traced (it links to the event's).
            traceparent: allies_store::trace::current().or_else(|| event.metadata.traceparent.clone()),
            command_id: Some(format!("{}:{step}", event.event_id)),
            fingerprint: None,
            seal: None,
            subject: None,
            client: None,
            now_ms: event.recorded_at_ms,
            from_client: false,
        }
    }

    /// The caller, or Unauthenticated.
    pub fn caller(&self) -> Result<&Caller, Failure> {
        self.caller.as_deref().ok_or_else(|| Failure::unauthenticated("missing bearer token (authorization metadata)"))
    }

    /// The metadata every event of this request carries.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            user_id: self.caller.as_ref().map(|c| c.user_id.clone()),
            traceparent: self.traceparent.clone(),
        }
    }

    /// What the domain gets: metadata and time.
    pub fn command_context(&self) -> CommandContext {
        CommandContext { metadata: self.metadata(), now_ms: self.now_ms, from_client: self.from_client }
    }

    pub fn command_id(&self) -> Option<&str> {
        self.command_id.as_deref()
    }

    /// Says whom an anonymous call is about (the username a registration
    /// or a login names, the session a refresh token opens): its command
    /// id is then scoped by that, as a signed call's is by its caller, so
    /// two anonymous clients' equal ids never meet — without it every
    /// anonymous caller shares one scope, and a client counting its ids
    /// from 1 would find its login refused as "id already used" by
    /// another's. Only a digest of `subject` is kept.
    pub fn about(&mut self, subject: &str) {
        self.subject = Some(hex(&digest(&[b"subject", subject.as_bytes()]))[..32].to_owned());
    }

    /// The scope of this call's command id: its caller (a user id), else
    /// its subject (`anon.<digest>`), else every anonymous caller (`anon`).
    pub fn id_scope(&self) -> std::borrow::Cow<'_, str> {
        match (&self.caller, &self.subject) {
            (Some(caller), _) => caller.user_id.as_str().into(),
            (None, Some(subject)) => format!("anon.{subject}").into(),
            (None, None) => "anon".into(),
        }
    }

    /// The request's content fingerprint (with a command id only).
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// The executor's options for this request: its command id and the
    /// fingerprint of its content, so a retry is recognised as one.
    ///
    /// A client's id is scoped by the verified caller, as its recorded
    /// reply is: the store keeps one record per id and aggregate, and two
    /// players of one game (or two members confirming one match) may send
    /// the same id — a client counting its calls from 1 — for what are two
    /// commands; unscoped, the second would get the first one's result and
    /// never run. Without a caller (a login, a reaction) the id is shared.
    pub fn options<A: allies_core::Aggregate>(&self) -> allies_store::Options<'_, A> {
        let scope = self.caller.as_ref().filter(|_| self.from_client).map(|c| c.user_id.as_str());
        let options = allies_store::Options::default().command_id(self.command_id()).command_scope(scope);
        match &self.fingerprint {
            Some(f) => options.fingerprint(f.clone()),
            None => options,
        }
    }
}

/// The gRPC path of a call, put into the request's extensions by the
/// server layer (tonic hands handlers no URI); a served method's is shared.
#[derive(Debug, Clone)]
pub struct RpcPath(pub std::sync::Arc<str>);

/// The key that seals a recorded reply (its `Debug` shows nothing).
#[derive(Clone, PartialEq, Eq)]
pub struct Seal(pub [u8; 32]);

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
        ctx.update(b"\n");
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn path_of<T>(request: &Request<T>) -> &str {
    match request.extensions().get::<RpcPath>() {
        Some(p) => &p.0,
        None => std::any::type_name::<T>(),
    }
}

/// The fingerprint (hex SHA-256 of the call's method and its message's
/// canonical protobuf encoding: the same request gives the same
/// fingerprint, whenever and however often it is sent) and the seal key
/// (another digest of the same bytes).
pub fn request_fingerprint<T: prost::Message>(request: &Request<T>) -> (String, Seal) {
    let path = path_of(request);
    let bytes = request.get_ref().encode_to_vec();
    (hex(&digest(&[b"fingerprint", path.as_bytes(), &bytes])), Seal(digest(&[b"seal", path.as_bytes(), &bytes])))
}

impl RequestContext {
    /// Fingerprints the request by `public`, a copy of its message with its
    /// secrets (passwords) cleared: the fingerprint is stored, and a stored
    /// unsalted digest of a password could be guessed offline. The seal
    /// still covers the whole request, so a retry with another password
    /// under the same id opens nothing.
    pub fn fingerprint_public<T: prost::Message>(&mut self, request: &Request<T>, public: &T) {
        if self.command_id.is_some() {
            let path = path_of(request);
            self.fingerprint = Some(hex(&digest(&[b"fingerprint", path.as_bytes(), &public.encode_to_vec()])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hex;

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(hex(&[]), "");
    }
}
