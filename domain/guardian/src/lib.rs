//! The authentication context's domain: the [`user`] and [`session`]
//! aggregates as pure deciders (`decide` + `evolve`), the input rules, and
//! their given/when/then tests.
//!
//! Depends on the core and the contracts (the event types) only: no I/O, no
//! clock, no randomness — time, ids and hashes come in through commands.
//! Guardian (the service) runs these; the operator tool folds them for time
//! travel.

pub mod session;
pub mod user;

pub use session::{Session, SessionCommand, SessionError, SessionStatus};
pub use user::{User, UserCommand, UserError};
