//! The game context's domain: the rules as data ([`rules`]), the
//! deterministic wave simulation ([`sim`]), the GameSession aggregate
//! ([`session`]) and replay verification ([`replay`]); matchmaking — the
//! Player ([`player`], with [`rating`]), Ticket ([`ticket`]) and Match
//! ([`matching`], the saga) aggregates and the matchmaker's pass
//! ([`matchmaker`]).
//!
//! Depends on the core and the contracts only: no I/O, no clock, no
//! randomness but the seeded PRNG. Timesquare (the service) runs these; the
//! operator tool and the benchmarks use them too.

pub mod book;
pub mod matching;
pub mod matchmaker;
pub mod party;
pub mod player;
pub mod prng;
pub mod rating;
pub mod replay;
pub mod rules;
pub mod session;
pub mod sim;
pub mod ticket;

pub use book::Book;
pub use rules::{Rules, RulesError};
pub use session::{GameCommand, GameError, GameSession, Phase, TowerAct, Who};
