//! One module per command group, each owning its arguments and its `run`
//! (model: mise's `src/cli/mod.rs`).

pub mod admin;
pub mod auth;
pub mod board;
pub mod config;
pub mod game;
pub mod health;
pub mod keys;
pub mod matchmaking;
pub mod ops;
pub mod players;
pub mod search;
pub mod stats;
pub mod user;
