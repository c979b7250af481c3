//! The operations context's domain.

pub mod configuration;
pub use allies_core::flags;
pub mod job;
