//! The running waves' schedule, as keys: what the game writes when a wave
//! starts and the sweeper reads to complete it (a room below both, so
//! neither imports the other for it).

/// Running waves: member `<session id>:<wave>`, score: when to look next.
pub const DUE: &str = "ts:waves:due";
/// The consumer group that keeps [`DUE`] from the wave starts.
pub const GROUP: &str = "ts.waves";
/// The topic started waves are published on.
pub const TOPIC: &str = "ts.waves";

/// A running wave's member in [`DUE`].
pub fn member(session_id: &str, wave: u32) -> String {
    format!("{session_id}:{wave}")
}
