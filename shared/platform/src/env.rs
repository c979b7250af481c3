//! The environment, read once: a snapshot of the variables taken at start
//! and typed getters that refuse a value that cannot be used, naming the
//! variable — never a silent fallback to the default.
//!
//! This is the only place in the fleet that reads the process environment
//! (architecture invariant). A service reads its own settings through the
//! [`Env`] its `ServiceConfig` carries.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use allies_core::settings::{Kind, Setting};

/// A configuration value that cannot be used. Names the variable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration {key}={value:?}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, value: impl ToString, reason: impl ToString) -> Self {
        Self { key: key.into(), value: value.to_string(), reason: reason.to_string() }
    }
}

/// A snapshot of the environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment, now.
    pub fn from_process() -> Self {
        Self { vars: std::env::vars().collect() }
    }

    /// The process environment, with defaults from a `KEY=VALUE` file (for
    /// tools: `.data/fleet.env`, written by `dev/up`, names the local
    /// fleet's Redis and endpoints). The environment wins; a missing file is
    /// no defaults. Returns the snapshot and whether the file was used.
    pub fn from_process_with_defaults(file: &std::path::Path) -> (Self, bool) {
        let mut env = Self::from_process();
        let Ok(text) = std::fs::read_to_string(file) else { return (env, false) };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if let Some((k, v)) = line.split_once('=') {
                env.vars.entry(k.trim().to_owned()).or_insert_with(|| v.trim().to_owned());
            }
        }
        (env, true)
    }

    /// Given variables only (tests, in-process services).
    pub fn from_pairs<K: ToString, V: ToString>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    /// This environment with `key` set.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.vars.insert(key.to_owned(), value.to_string());
        self
    }

    /// The raw value, if set (empty counts as unset).
    pub fn get(&self, key: &str) -> Option<String> {
        self.vars.get(key).filter(|v| !v.is_empty()).cloned()
    }

    /// A string with a default.
    pub fn text(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or_else(|| default.to_owned())
    }

    /// A parsed value: the default when unset, an error naming `key` when it
    /// does not parse.
    pub fn parse<T: FromStr>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse::<T>().map_err(|e| ConfigError::new(key, &v, e)),
        }
    }

    /// An integer in `range`.
    pub fn int<T>(&self, key: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let v = self.parse(key, default)?;
        if !range.contains(&v) {
            return Err(ConfigError::new(
                key,
                v,
                format!("must be an integer from {} to {}", range.start(), range.end()),
            ));
        }
        Ok(v)
    }

    /// Whole seconds in `range`.
    pub fn secs(&self, key: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<Duration, ConfigError> {
        self.int(key, default, range).map(Duration::from_secs)
    }

    /// Whole milliseconds in `range`.
    pub fn millis(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.int(key, default, range).map(Duration::from_millis)
    }

    /// `true/false/1/0/yes/no`.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::new(key, v, "must be true or false")),
        }
    }

    /// A setting of the table ([`allies_core::settings`]): the environment
    /// variable, else `file` (its value in a YAML file), else its default —
    /// checked against its type and range; an error names where the value
    /// came from. None: unset with no default.
    pub fn setting_from(&self, s: &Setting, file: Option<String>) -> Result<Option<String>, ConfigError> {
        let (from, raw) = match (s.env.and_then(|e| self.get(e)), file) {
            (Some(v), _) => (s.env.unwrap_or(s.name), v),
            (None, Some(v)) => (s.yaml.unwrap_or(s.name), v),
            (None, None) if s.default.is_empty() => return Ok(None),
            (None, None) => (s.name, s.default.to_owned()),
        };
        s.check(&raw).map_err(|reason| ConfigError::new(from, &raw, reason))?;
        let raw = raw.trim();
        // A choice is one of its words, whatever the case it was written in.
        Ok(Some(if matches!(s.kind, Kind::Choice(_)) { raw.to_ascii_lowercase() } else { raw.to_owned() }))
    }

    /// A setting parsed as `T` (None: unset with no default).
    pub fn value_opt<T: FromStr>(&self, s: &Setting) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.setting_from(s, None)? {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|e| ConfigError::new(s.env.unwrap_or(s.name), &v, e)),
        }
    }

    /// A setting parsed as `T`; a setting without a default must be set.
    pub fn value<T: FromStr>(&self, s: &Setting) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.value_opt(s)?.ok_or_else(|| ConfigError::new(s.env.unwrap_or(s.name), "", "must be set"))
    }

    /// A setting in milliseconds.
    pub fn value_ms(&self, s: &Setting) -> Result<Duration, ConfigError> {
        self.value::<u64>(s).map(Duration::from_millis)
    }

    /// A setting in seconds.
    pub fn value_secs(&self, s: &Setting) -> Result<Duration, ConfigError> {
        self.value::<u64>(s).map(Duration::from_secs)
    }

    /// A comma-separated list (empty entries dropped).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_default_parse_and_refuse_naming_the_variable() {
        let env = Env::from_pairs([("A", "7"), ("B", "x"), ("C", "0"), ("D", "yes"), ("E", ""), ("L", "a, b,,c")]);
        assert_eq!(env.int("A", 1u32, 1..=10).unwrap(), 7);
        assert_eq!(env.int("Z", 3u32, 1..=10).unwrap(), 3, "unset: the default");
        assert_eq!(env.int("E", 3u32, 1..=10).unwrap(), 3, "empty: the default");
        let e = env.int("B", 1u32, 1..=10).unwrap_err();
        assert_eq!((e.key.as_str(), e.value.as_str()), ("B", "x"));
        let e = env.int("C", 1u32, 1..=10).unwrap_err();
        assert!(e.to_string().contains("C=\"0\"") && e.reason.contains("1 to 10"), "{e}");
        assert!(env.flag("D", false).unwrap());
        assert_eq!(env.flag("B", false).unwrap_err().key, "B");
        assert_eq!(env.list("L"), ["a", "b", "c"]);
    }
}
