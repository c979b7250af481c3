//! Timesquare's settings, parsed from the environment at start.

use std::path::PathBuf;
use std::time::Duration;

use allies_platform::config::{ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Settings {
    /// `TIMESQUARE_RULES`: the current rules file (default `configs/game-rules.yaml`).
    pub rules_file: PathBuf,
    /// `TIMESQUARE_RULES_DIR`: older rules versions, one file each (default
    /// `configs/game-rules.d`; a missing directory is none).
    pub rules_dir: PathBuf,
    /// `TIMESQUARE_TICK_MS`: wall time of one game tick (default: 1000 /
    /// ticks_per_second of the rules). Tests run games fast with 1 or 2.
    pub tick_ms: Option<u32>,
    /// `TIMESQUARE_FRAME_MS`: frames to watchers during a wave (default 200 ms: 5 per second).
    pub frame: Duration,
    /// `TIMESQUARE_SETTLE_MS`: how often a running wave is checked for its end (default 250 ms).
    pub settle: Duration,
    /// `TIMESQUARE_HANDLES`: sessions kept hot in memory (default 10000).
    pub handles: usize,
    /// `TIMESQUARE_WATCH_BUFFER`: updates buffered per session for its watchers (default 256).
    pub watch_buffer: usize,
    pub matchmaking: Matchmaking,
    /// `TIMESQUARE_COMMANDS_PER_SEC` (20, 0: no limit) and
    /// `TIMESQUARE_COMMANDS_BURST` (40): a player's game command rate.
    pub game_rate: allies_platform::rate::Rate,
    /// `TIMESQUARE_MM_REQUESTS_PER_MIN` (60, 0: no limit) and
    /// `TIMESQUARE_MM_REQUESTS_BURST` (10): a player's matchmaking request rate.
    pub matchmaking_rate: allies_platform::rate::Rate,
}

/// Matchmaking's settings.
#[derive(Debug, Clone, Copy)]
pub struct Matchmaking {
    /// `TIMESQUARE_MM_INTERVAL_MS`: time between two matchmaker passes (default 250).
    pub interval: Duration,
    /// `TIMESQUARE_MM_TICKET_TTL_SECS`: a ticket not matched by then expires (default 120).
    pub ticket_ttl: Duration,
    /// `TIMESQUARE_MM_CONFIRM_SECS`: the time players have to confirm a match (default 20).
    pub confirm_within: Duration,
    /// `TIMESQUARE_MM_WINDOW`, `TIMESQUARE_MM_WIDEN_PER_SEC`, `TIMESQUARE_MM_MAX_WINDOW`:
    /// the rating window (default 100, +20 per second waited, at most 1000);
    /// `TIMESQUARE_MM_FILL_AFTER_MS`: when a group smaller than its maximum
    /// may form (default 10000).
    pub pass: timesquare_domain::matchmaker::Settings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            rules_file: PathBuf::from(env.text("TIMESQUARE_RULES", "configs/game-rules.yaml")),
            rules_dir: PathBuf::from(env.text("TIMESQUARE_RULES_DIR", "configs/game-rules.d")),
            tick_ms: match env.get("TIMESQUARE_TICK_MS") {
                None => None,
                Some(_) => Some(env.int("TIMESQUARE_TICK_MS", 50u32, 1..=10_000)?),
            },
            frame: env.millis("TIMESQUARE_FRAME_MS", 200, 10..=60_000)?,
            settle: env.millis("TIMESQUARE_SETTLE_MS", 250, 5..=60_000)?,
            handles: env.int("TIMESQUARE_HANDLES", 10_000, 1..=10_000_000)?,
            watch_buffer: env.int("TIMESQUARE_WATCH_BUFFER", 256, 8..=1_000_000)?,
            game_rate: allies_platform::rate::Rate {
                per_second: env.int("TIMESQUARE_COMMANDS_PER_SEC", 20u32, 0..=10_000)? as f64,
                burst: env.int("TIMESQUARE_COMMANDS_BURST", 40u32, 1..=10_000)?,
            },
            matchmaking_rate: allies_platform::rate::Rate {
                per_second: env.int("TIMESQUARE_MM_REQUESTS_PER_MIN", 60u32, 0..=60_000)? as f64 / 60.0,
                burst: env.int("TIMESQUARE_MM_REQUESTS_BURST", 10u32, 1..=10_000)?,
            },
            matchmaking: Matchmaking {
                interval: env.millis("TIMESQUARE_MM_INTERVAL_MS", 250, 10..=60_000)?,
                ticket_ttl: Duration::from_secs(env.int("TIMESQUARE_MM_TICKET_TTL_SECS", 120u64, 1..=86_400)?),
                confirm_within: Duration::from_secs(env.int("TIMESQUARE_MM_CONFIRM_SECS", 20u64, 1..=3_600)?),
                pass: timesquare_domain::matchmaker::Settings {
                    base_window: env.int("TIMESQUARE_MM_WINDOW", 100i32, 0..=5_000)?,
                    widen_per_second: env.int("TIMESQUARE_MM_WIDEN_PER_SEC", 20i32, 0..=5_000)?,
                    max_window: env.int("TIMESQUARE_MM_MAX_WINDOW", 1_000i32, 0..=5_000)?,
                    fill_after_ms: env.int("TIMESQUARE_MM_FILL_AFTER_MS", 10_000i64, 0..=3_600_000)?,
                },
            },
        })
    }
}

/// Loads the current rules file and every older version into the rules
/// book. A file that cannot be used stops timesquare naming the file, the key
/// and the reason. Returns the current version.
pub fn load_rules(settings: &Settings) -> Result<u32, ConfigError> {
    timesquare_domain::rules::load_files(&settings.rules_file, &settings.rules_dir)
        .map_err(|(file, e)| ConfigError::new("TIMESQUARE_RULES", file, format!("at {}: {}", e.key, e.reason)))
}
