//! One request context, built from gRPC metadata in one place: who calls
//! (the verified token), the correlation and causation ids, the W3C trace
//! context, the client's idempotency key, and the time of the request.

use allies_core::{CommandContext, Failure, FieldViolation, Metadata};
use tonic::Request;
use uuid::Uuid;

use crate::auth::Caller;

/// Metadata keys a client may send.
pub const CORRELATION_ID: &str = "x-correlation-id";
pub const CAUSATION_ID: &str = "x-causation-id";
pub const COMMAND_ID: &str = "x-command-id";
pub const TRACEPARENT: &str = "traceparent";

/// Everything a handler needs from a request besides its message.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// `x-correlation-id` when it is a UUID, else a new one.
    pub correlation_id: Uuid,
    /// `x-causation-id` when it is a UUID (the message that caused this
    /// request, e.g. a saga's event), else a new one (this command).
    pub causation_id: Uuid,
    /// The verified caller, when the request carried a valid token.
    pub caller: Option<Caller>,
    /// W3C trace context of the request.
    pub traceparent: Option<String>,
    /// `x-command-id`: the client's idempotency key (1 to 128 printable ASCII).
    pub command_id: Option<String>,
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
    pub fn from_request<T>(request: &Request<T>, caller: Option<Caller>) -> Result<Self, FieldViolation> {
        let command_id = match request.metadata().get(COMMAND_ID) {
            None => None,
            Some(v) => match v.to_str() {
                Ok(s) if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) => {
                    Some(s.to_owned())
                }
                _ => return Err(FieldViolation::new(COMMAND_ID, "must be 1 to 128 printable ASCII characters")),
            },
        };
        // The server span's context when traced; else what the caller sent.
        let traceparent = allies_store::trace::current().or_else(|| crate::telemetry::traceparent_of(request));
        Ok(Self {
            correlation_id: uuid_header(request, CORRELATION_ID).unwrap_or_else(Uuid::now_v7),
            causation_id: uuid_header(request, CAUSATION_ID).unwrap_or_else(Uuid::now_v7),
            caller,
            traceparent,
            command_id,
            client: request.remote_addr().map(|a| a.ip().to_string()),
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
            client: None,
            now_ms: event.recorded_at_ms,
            from_client: false,
        }
    }

    /// The caller, or Unauthenticated.
    pub fn caller(&self) -> Result<&Caller, Failure> {
        self.caller.as_ref().ok_or_else(|| Failure::unauthenticated("missing bearer token (authorization metadata)"))
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
}
