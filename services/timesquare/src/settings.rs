//! Timesquare's settings, parsed from the environment at start.

use std::path::PathBuf;
use std::time::Duration;

use allies_core::settings as table;
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
            rules_file: PathBuf::from(env.value::<String>(&table::RULES_FILE)?),
            rules_dir: PathBuf::from(env.value::<String>(&table::RULES_DIR)?),
            tick_ms: env.value_opt(&table::TICK)?,
            frame: env.value_ms(&table::FRAME)?,
            settle: env.value_ms(&table::SETTLE)?,
            handles: env.value(&table::HANDLES)?,
            watch_buffer: env.value(&table::WATCH_BUFFER)?,
            game_rate: allies_platform::rate::Rate {
                per_second: env.value::<u32>(&table::COMMANDS_PER_SECOND)? as f64,
                burst: env.value(&table::COMMANDS_BURST)?,
            },
            matchmaking_rate: allies_platform::rate::Rate {
                per_second: env.value::<u32>(&table::MM_REQUESTS_PER_MINUTE)? as f64 / 60.0,
                burst: env.value(&table::MM_REQUESTS_BURST)?,
            },
            matchmaking: Matchmaking {
                interval: env.value_ms(&table::MM_INTERVAL)?,
                ticket_ttl: env.value_secs(&table::MM_TICKET_TTL)?,
                confirm_within: env.value_secs(&table::MM_CONFIRM)?,
                pass: timesquare_domain::matchmaker::Settings {
                    base_window: env.value(&table::MM_WINDOW)?,
                    widen_per_second: env.value(&table::MM_WIDEN)?,
                    max_window: env.value(&table::MM_MAX_WINDOW)?,
                    fill_after_ms: env.value(&table::MM_FILL_AFTER)?,
                },
            },
        })
    }
}

/// Reads the current rules file and every older version into a rules book.
/// A file that cannot be used stops timesquare naming the file, the key and
/// the reason. Returns the book and the current version.
pub fn load_rules(settings: &Settings) -> Result<(timesquare_domain::Book, u32), ConfigError> {
    let what = table::RULES_FILE.env.unwrap_or(table::RULES_FILE.name);
    let (current, older) = allies_platform::config::read_file_and_dir(what, &settings.rules_file, &settings.rules_dir)?;
    timesquare_domain::Book::of_texts((&current.0, &current.1), &older)
        .map_err(|(file, e)| ConfigError::new(what, file, format!("at {}: {}", e.key, e.reason)))
}
