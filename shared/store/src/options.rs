//! The optional parts of a command's execution: its idempotency key and
//! fingerprint, extra state-hash fields, integration events to publish.

use allies_core::Aggregate;

use crate::store::{Publication, StateWrite};

/// Derives extra state-hash fields from the new state.
pub type StateFields<'a, A> = &'a (dyn Fn(&A) -> Option<StateWrite> + Send + Sync);
/// Derives the integration events a command publishes from its events.
pub type Publish<'a, A> = &'a (dyn Fn(&A, &[<A as Aggregate>::Event]) -> Vec<Publication> + Send + Sync);

/// Optional parts of a command's execution.
pub struct Options<'a, A: Aggregate> {
    /// The idempotency key (a client's `x-command-id`, a reaction's
    /// `<event id>:<step>`).
    pub command_id: Option<&'a str>,
    /// Whose key it is (a client's user id): one key names one command of
    /// one caller, so two callers' equal keys never meet on an aggregate.
    pub command_scope: Option<&'a str>,
    /// What identifies the command's content for that key; default: its
    /// `Debug` form. A retry with the same id and another fingerprint is refused.
    pub fingerprint: Option<String>,
    pub state_fields: Option<StateFields<'a, A>>,
    pub publish: Option<Publish<'a, A>>,
}

impl<A: Aggregate> Default for Options<'_, A> {
    fn default() -> Self {
        Self { command_id: None, command_scope: None, fingerprint: None, state_fields: None, publish: None }
    }
}

impl<'a, A: Aggregate> Options<'a, A> {
    pub fn command_id(mut self, id: Option<&'a str>) -> Self {
        self.command_id = id;
        self
    }
    pub fn command_scope(mut self, scope: Option<&'a str>) -> Self {
        self.command_scope = scope;
        self
    }
    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }
    pub fn state_fields(mut self, f: StateFields<'a, A>) -> Self {
        self.state_fields = Some(f);
        self
    }
    pub fn publish(mut self, f: Publish<'a, A>) -> Self {
        self.publish = Some(f);
        self
    }
}

/// SHA-free content fingerprint: FNV-1a 64 of the text, hex.
pub fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
