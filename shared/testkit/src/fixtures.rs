//! Shared test fixtures: one test aggregate ([`Counter`] with its event
//! [`Added`]), event metadata ([`meta`]) and polling helpers
//! ([`wait_until`], [`wait_for`]) — instead of a copy in every test file.

use std::future::Future;
use std::time::{Duration, Instant};

use allies_core::{Aggregate, DecodeError, DomainEvent, Metadata, Snapshot};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A running total: the smallest real aggregate. Its snapshot is the bare
/// number (so a test can read it with redis-cli).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counter {
    pub total: i64,
}

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.total)
    }
}

impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Counter { total: i64::deserialize(d)? })
    }
}

/// `n` was added by `writer`; `note` pads the payload where a test wants a
/// realistic size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    pub n: i64,
    pub writer: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Added {
    pub fn new(n: i64, writer: u32) -> Self {
        Self { n, writer, note: String::new() }
    }
}

impl DomainEvent for Added {
    fn event_type(&self) -> &'static str {
        "Added"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn encode_json(&self) -> Result<Vec<u8>, DecodeError> {
        serde_json::to_vec(self).map_err(|e| DecodeError::malformed("Added", e))
    }
    fn decode_json(event_type: &str, _v: u32, data: &[u8]) -> Result<Self, DecodeError> {
        if event_type != "Added" {
            return Err(DecodeError::UnknownEventType(event_type.into()));
        }
        serde_json::from_slice(data).map_err(|e| DecodeError::malformed(event_type, e))
    }
}

/// The counter's one rule: it never goes below zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("adding {n} to {total} would go below zero")]
pub struct BelowZero {
    pub total: i64,
    pub n: i64,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    /// How much to add; 0 changes nothing (no event).
    type Command = i64;
    type Event = Added;
    type Error = BelowZero;
    fn decide(&self, n: &i64) -> Result<Vec<Added>, BelowZero> {
        match *n {
            0 => Ok(vec![]),
            n if self.total + n < 0 => Err(BelowZero { total: self.total, n }),
            n => Ok(vec![Added::new(n, 0)]),
        }
    }
    fn evolve(&mut self, e: &Added) {
        self.total += e.n;
    }
}

impl Snapshot for Counter {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

impl allies_core::ServiceError for BelowZero {
    fn code(&self) -> allies_core::ErrorCode {
        allies_core::ErrorCode::FailedPrecondition
    }
    fn rule(&self) -> Option<allies_core::RuleViolation> {
        Some(allies_core::RuleViolation {
            rule: "NOT_BELOW_ZERO".into(),
            subject: "counter".into(),
            description: self.to_string(),
        })
    }
}

/// Fresh metadata: new correlation and causation ids, no user.
pub fn meta() -> Metadata {
    Metadata { correlation_id: Uuid::now_v7(), causation_id: Uuid::now_v7(), user_id: None, traceparent: None }
}

/// A command context at `now_ms` with fresh metadata.
pub fn context(now_ms: i64) -> allies_core::CommandContext {
    allies_core::CommandContext { metadata: meta(), now_ms, from_client: true }
}

/// Polls `check` every 20 ms until it is true; panics naming `what` after
/// `within`.
pub async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not reached within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As [`wait_until`] with an async check.
pub async fn wait_for<F: Future<Output = bool>>(what: &str, within: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not reached within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
