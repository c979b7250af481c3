//! The projection trait and the registry every part of the projector
//! iterates over: the manager (one subscription per source per generation),
//! the admin API (dead letters, rebuild, check, list), readiness, metrics
//! and the consistency checker. A read model is one file implementing
//! [`Projection`] and one line in [`crate::projections::registry`].
//!
//! A projection is a pure function from an event to [`Change`]s: hash
//! fields of read models (applied once per aggregate version) and index
//! writes (idempotent). The runtime applies them in the projection's current
//! namespace; the checker folds them from the logs to compare.

use std::sync::Arc;

use allies_store::RecordedEvent;
use allies_store::subscriber::HandlerError;

/// What one event changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Fields of a read-model hash `<ns>:<key>`, applied only when `version`
    /// is newer than the version the hash reflects (a redelivery changes
    /// nothing). `id` names the model in drift reports.
    Model { key: String, id: String, version: u64, set: Vec<(String, String)>, del: Vec<String> },
    /// An index write (idempotent), made when the event's model changes
    /// applied or were already at exactly this version — so a crash between
    /// a model write and its index writes heals on the redelivery, and an
    /// older event redelivered never moves an index back.
    Index(IndexOp),
}

/// An idempotent write to an index key `<ns>:<key>`.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexOp {
    HSet { key: String, field: String, value: String },
    HDel { key: String, field: String },
    ZAdd { key: String, member: String, score: f64 },
    ZRem { key: String, member: String },
    SAdd { key: String, member: String },
    SRem { key: String, member: String },
}

impl IndexOp {
    /// The index key it writes (within a namespace).
    pub fn key(&self) -> &str {
        match self {
            Self::HSet { key, .. }
            | Self::HDel { key, .. }
            | Self::ZAdd { key, .. }
            | Self::ZRem { key, .. }
            | Self::SAdd { key, .. }
            | Self::SRem { key, .. } => key,
        }
    }

    /// The Redis command that makes it.
    pub fn command(&self) -> &'static str {
        match self {
            Self::HSet { .. } => "hset",
            Self::HDel { .. } => "hdel",
            Self::ZAdd { .. } => "zadd",
            Self::ZRem { .. } => "zrem",
            Self::SAdd { .. } => "sadd",
            Self::SRem { .. } => "srem",
        }
    }
}

impl Change {
    /// Sets fields of the model `<kind>:<id>` at `version`.
    pub fn model(kind: &str, id: &str, version: u64, set: Vec<(&str, String)>) -> Self {
        Self::Model {
            key: format!("{kind}:{id}"),
            id: id.to_owned(),
            version,
            set: set.into_iter().map(|(f, v)| (f.to_owned(), v)).collect(),
            del: Vec::new(),
        }
    }

    /// As [`model`](Self::model), also deleting fields.
    pub fn model_with_deletes(kind: &str, id: &str, version: u64, set: Vec<(&str, String)>, del: Vec<String>) -> Self {
        match Self::model(kind, id, version, set) {
            Self::Model { key, id, version, set, .. } => Self::Model { key, id, version, set, del },
            other => other,
        }
    }
}

/// A read model built from events.
pub trait Projection: Send + Sync + 'static {
    /// Its name, which is also the consumer group of its first generation
    /// (`rm.user`).
    fn name(&self) -> &'static str;

    /// The aggregate types whose partition logs it reads.
    fn sources(&self) -> &'static [&'static str];

    /// What one event changes. Pure: the runtime applies it, the consistency
    /// checker folds it. An event the projection does not read changes nothing.
    fn changes(&self, event: &RecordedEvent) -> Result<Vec<Change>, HandlerError>;
}

/// Every projection the projector runs.
#[derive(Clone, Default)]
pub struct Registry {
    projections: Vec<Arc<dyn Projection>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a projection (its name must be unique).
    pub fn register(mut self, projection: impl Projection) -> Self {
        assert!(self.get(projection.name()).is_none(), "projection {} registered twice", projection.name());
        self.projections.push(Arc::new(projection));
        self
    }

    pub fn all(&self) -> &[Arc<dyn Projection>] {
        &self.projections
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Projection>> {
        self.projections.iter().find(|p| p.name() == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    /// Every aggregate type some projection reads.
    pub fn sources(&self) -> Vec<&'static str> {
        let mut all: Vec<&'static str> = self.projections.iter().flat_map(|p| p.sources().iter().copied()).collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Decodes an event into a context's typed event enum (upcasting older
/// schemas), as a handler error when it cannot.
pub fn typed<E: allies_core::DomainEvent>(event: &RecordedEvent) -> Result<E, HandlerError> {
    let (t, v) = (&event.envelope.event_type, event.envelope.version);
    event.decode::<E>().map(|e| e.payload).map_err(|e| match e {
        allies_core::DecodeError::Malformed { reason, .. } => {
            HandlerError::new(format!("malformed {t} at version {v}: {reason}"))
        }
        other => HandlerError::new(format!("{t} at version {v}: {other}")),
    })
}
