//! The operations context's domain.

pub mod configuration;
pub mod flags;
pub mod job;
