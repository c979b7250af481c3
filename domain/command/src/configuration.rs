//! The Configuration aggregate (`configuration`, one aggregate `fleet`):
//! typed keys with a schema, updates validated key by key, rollback to an
//! earlier version as a new event, and the history that is the audit trail.
//! Each event carries every value in force after it, so followers (every
//! instance of every service) need only the last event.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use allies_contracts::command::events::v1::*;
use allies_contracts::command::events::{CONFIGURATION_TYPE, ConfigurationEvent};
use allies_core::{Aggregate, ErrorCode, FieldViolation, RuleViolation, ServiceError};
use serde::{Deserialize, Serialize};

/// One key of the schema: a live setting of the fleet's one settings table
/// (`allies_core::settings`), an integer in a range with a default.
pub use allies_core::settings::Setting as Key;

/// The schema: every key the fleet can be configured with live — the
/// table's live settings, so a key, its range and its default are declared
/// once for the deployment and the live configuration.
pub fn schema() -> impl Iterator<Item = &'static Key> {
    allies_core::settings::live()
}

pub fn key(name: &str) -> Option<&'static Key> {
    allies_core::settings::by_name(name).filter(|k| k.is_live())
}

/// Every key's default.
pub fn defaults() -> BTreeMap<String, String> {
    schema().map(|k| (k.name.to_owned(), k.default.to_owned())).collect()
}

/// The value of `key` in `values` (its default when absent or unusable).
pub fn int(values: &HashMap<String, String>, key: &Key) -> i64 {
    values
        .get(key.name)
        .filter(|v| key.check(v).is_ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| key.int_default())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    pub version: u64,
    /// The values in force (every key).
    pub values: BTreeMap<String, String>,
    /// The values after each version (index = version − 1), for rollbacks.
    pub history: Vec<BTreeMap<String, String>>,
    /// The keys an operator has set: only these override a deployment's value.
    #[serde(default)]
    pub set: BTreeSet<String>,
    /// The set keys after each version (index = version − 1), for rollbacks.
    #[serde(default)]
    pub history_set: Vec<BTreeSet<String>>,
}

impl allies_core::Snapshot for Configuration {
    const SNAPSHOT_SCHEMA: u32 = 2;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Who {
    pub user_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConfigurationCommand {
    Update { expected_version: u64, changes: BTreeMap<String, String>, reason: String, by: Who, now_ms: i64 },
    Rollback { expected_version: u64, to_version: u64, reason: String, by: Who, now_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigurationError {
    #[error("{}", .0.iter().map(|v| format!("{}: {}", v.field, v.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldViolation>),
    #[error("the configuration is at version {actual}, not {expected}: read it again and retry")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error("there is no version {0} to roll back to")]
    NoSuchVersion(u64),
    #[error("nothing would change")]
    NoChange,
}

impl ServiceError for ConfigurationError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::VersionMismatch { .. } => ErrorCode::Aborted,
            Self::NoSuchVersion(_) | Self::NoChange => ErrorCode::FailedPrecondition,
        }
    }
    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            Self::Invalid(v) => v.clone(),
            _ => Vec::new(),
        }
    }
    fn rule(&self) -> Option<RuleViolation> {
        let rule = match self {
            Self::Invalid(_) => return None,
            Self::VersionMismatch { .. } => "CONFIGURATION_VERSION",
            Self::NoSuchVersion(_) => "NO_SUCH_VERSION",
            Self::NoChange => "NO_CHANGE",
        };
        Some(RuleViolation { rule: rule.into(), subject: "configuration".into(), description: self.to_string() })
    }
}

/// Checks one change against the schema: the normalized value, or why not.
pub fn validate(name: &str, value: &str) -> Result<String, String> {
    if let Some(flag) = name.strip_prefix(crate::flags::PREFIX) {
        if !crate::flags::valid_name(flag) {
            return Err("a flag name is 1 to 64 of a-z, 0-9, '.', '_', '-'".into());
        }
        return crate::flags::validate(value);
    }
    let Some(k) = key(name) else {
        return Err("unknown key".into());
    };
    k.check(value).map_err(|reason| format!("{reason}, got '{}'", value.trim()))?;
    Ok(value.trim().parse::<i64>().map(|v| v.to_string()).unwrap_or_default())
}

fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<ConfigurationChange> {
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| ConfigurationChange {
            key: k.clone(),
            old_value: before.get(k).cloned().unwrap_or_default(),
            new_value: v.clone(),
        })
        .collect()
}

impl Configuration {
    fn in_force(&self) -> BTreeMap<String, String> {
        let mut v = defaults();
        v.extend(self.values.clone());
        v
    }

    fn check_version(&self, expected: u64) -> Result<(), ConfigurationError> {
        if expected != self.version {
            return Err(ConfigurationError::VersionMismatch { expected, actual: self.version });
        }
        Ok(())
    }
}

/// A change must say why: 1 to 500 characters.
pub fn check_reason(reason: &str, invalid: &mut Vec<FieldViolation>) {
    if reason.trim().is_empty() || reason.len() > 500 {
        invalid.push(FieldViolation::new("reason", "say why (1 to 500 characters)"));
    }
}

impl Aggregate for Configuration {
    const TYPE: &'static str = CONFIGURATION_TYPE;
    type Command = ConfigurationCommand;
    type Event = ConfigurationEvent;
    type Error = ConfigurationError;

    fn decide(&self, command: &ConfigurationCommand) -> Result<Vec<ConfigurationEvent>, ConfigurationError> {
        match command {
            ConfigurationCommand::Update { expected_version, changes, reason, by, now_ms } => {
                let mut invalid = Vec::new();
                if changes.is_empty() {
                    invalid.push(FieldViolation::new("changes", "name at least one key"));
                }
                let before = self.in_force();
                let mut after = before.clone();
                for (k, v) in changes {
                    match validate(k, v) {
                        Ok(v) => {
                            after.insert(k.clone(), v);
                        }
                        Err(why) => invalid.push(FieldViolation::new(format!("changes.{k}"), why)),
                    }
                }
                check_reason(reason, &mut invalid);
                if !invalid.is_empty() {
                    return Err(ConfigurationError::Invalid(invalid));
                }
                self.check_version(*expected_version)?;
                let changes = diff(&before, &after);
                if changes.is_empty() {
                    return Err(ConfigurationError::NoChange);
                }
                let mut set = self.set.clone();
                set.extend(changes.iter().map(|c| c.key.clone()));
                Ok(vec![ConfigurationEvent::Updated(ConfigurationUpdated {
                    values: after.into_iter().collect(),
                    changes,
                    reason: reason.trim().to_owned(),
                    set_keys: set.into_iter().collect(),
                    set_keys_known: true,
                    by: by.user_id.clone(),
                    by_name: by.name.clone(),
                    at_ms: *now_ms,
                })])
            }
            ConfigurationCommand::Rollback { expected_version, to_version, reason, by, now_ms } => {
                let mut invalid = Vec::new();
                check_reason(reason, &mut invalid);
                if !invalid.is_empty() {
                    return Err(ConfigurationError::Invalid(invalid));
                }
                self.check_version(*expected_version)?;
                // Version 0 is the defaults.
                let (target, mut set) = match to_version {
                    0 => (defaults(), BTreeSet::new()),
                    v => (
                        self.history.get(*v as usize - 1).cloned().ok_or(ConfigurationError::NoSuchVersion(*v))?,
                        self.history_set.get(*v as usize - 1).cloned().unwrap_or_default(),
                    ),
                };
                let mut after = defaults();
                after.extend(target);
                // Maintenance mode is not rolled back: it changes only through
                // the recorded maintenance operation.
                let now = self.in_force();
                set.retain(|k| !k.starts_with("maintenance."));
                for (k, v) in now.iter().filter(|(k, _)| k.starts_with("maintenance.")) {
                    after.insert(k.clone(), v.clone());
                    if self.set.contains(k) {
                        set.insert(k.clone());
                    }
                }
                let changes = diff(&self.in_force(), &after);
                if changes.is_empty() {
                    return Err(ConfigurationError::NoChange);
                }
                Ok(vec![ConfigurationEvent::RolledBack(ConfigurationRolledBack {
                    values: after.into_iter().collect(),
                    changes,
                    set_keys: set.into_iter().collect(),
                    set_keys_known: true,
                    to_version: *to_version,
                    reason: reason.trim().to_owned(),
                    by: by.user_id.clone(),
                    by_name: by.name.clone(),
                    at_ms: *now_ms,
                })])
            }
        }
    }

    fn evolve(&mut self, event: &ConfigurationEvent) {
        let values: BTreeMap<String, String> = event.values().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.version += 1;
        self.history.push(values.clone());
        self.values = values;
        self.set = event.set_keys();
        self.history_set.push(self.set.clone());
    }
}

#[cfg(test)]
mod tests {
    use allies_core::testing::given;

    use super::*;

    fn admin() -> Who {
        Who { user_id: "a1".into(), name: "admin".into() }
    }

    fn update(expected: u64, changes: &[(&str, &str)], reason: &str) -> ConfigurationCommand {
        ConfigurationCommand::Update {
            expected_version: expected,
            changes: changes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            reason: reason.into(),
            by: admin(),
            now_ms: 100,
        }
    }

    fn updated(state: &Configuration, command: ConfigurationCommand) -> Configuration {
        let mut s = state.clone();
        for e in s.decide(&command).expect("accepted") {
            s.evolve(&e);
        }
        s
    }

    #[test]
    fn an_update_names_every_rejected_key_and_why_and_changes_nothing() {
        let e = Configuration::default()
            .decide(&update(0, &[("auth.rate_per_username", "0"), ("nope", "1"), ("auth.rate_window_secs", "x")], " "))
            .unwrap_err();
        let ConfigurationError::Invalid(v) = e else { panic!("{e:?}") };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["changes.auth.rate_per_username", "changes.auth.rate_window_secs", "changes.nope", "reason"]
        );
        assert!(v[0].reason.contains("1 to 1000000"), "{v:?}");
        assert_eq!(v[2].reason, "unknown key");
    }

    #[test]
    fn an_update_records_the_diff_and_every_value_and_checks_the_version() {
        given::<Configuration>([])
            .when(update(3, &[("auth.rate_per_username", "3")], "tests"))
            .then_err(ConfigurationError::VersionMismatch { expected: 3, actual: 0 });
        let s = updated(&Configuration::default(), update(0, &[("auth.rate_per_username", " 3 ")], "brute force"));
        assert_eq!((s.version, s.values["auth.rate_per_username"].as_str()), (1, "3"));
        assert_eq!(s.values.len(), schema().count(), "every key is in force");
        let events = Configuration::default().decide(&update(0, &[("auth.rate_per_username", "3")], "x")).unwrap();
        let ConfigurationEvent::Updated(u) = &events[0] else { panic!() };
        assert_eq!(
            u.changes,
            vec![ConfigurationChange {
                key: "auth.rate_per_username".into(),
                old_value: "10".into(),
                new_value: "3".into()
            }]
        );
        assert_eq!((u.by.as_str(), u.reason.as_str()), ("a1", "x"));
        // The same value again changes nothing.
        assert_eq!(
            s.decide(&update(1, &[("auth.rate_per_username", "3")], "again")),
            Err(ConfigurationError::NoChange)
        );
    }

    #[test]
    fn a_rollback_puts_an_earlier_version_back_as_a_new_version() {
        let v1 = updated(&Configuration::default(), update(0, &[("auth.rate_per_username", "3")], "one"));
        let v2 = updated(&v1, update(1, &[("auth.rate_per_username", "7"), ("matchmaking.window", "250")], "two"));
        let back = ConfigurationCommand::Rollback {
            expected_version: 2,
            to_version: 1,
            reason: "too loose".into(),
            by: admin(),
            now_ms: 5,
        };
        let v3 = updated(&v2, back);
        assert_eq!(v3.version, 3);
        assert_eq!(
            (v3.values["auth.rate_per_username"].as_str(), v3.values["matchmaking.window"].as_str()),
            ("3", "100")
        );
        let to_defaults = ConfigurationCommand::Rollback {
            expected_version: 3,
            to_version: 0,
            reason: "reset".into(),
            by: admin(),
            now_ms: 6,
        };
        assert_eq!(updated(&v3, to_defaults.clone()).values, defaults());
        // Only the keys an operator set override a deployment; a rollback
        // takes the set keys of its version back too.
        assert_eq!(v1.set, BTreeSet::from(["auth.rate_per_username".to_owned()]));
        assert_eq!(v2.set.len(), 2);
        assert_eq!(v3.set, v1.set);
        assert!(updated(&v3, to_defaults).set.is_empty());
        let missing = ConfigurationCommand::Rollback {
            expected_version: 3,
            to_version: 9,
            reason: "x".into(),
            by: admin(),
            now_ms: 6,
        };
        assert_eq!(v3.decide(&missing), Err(ConfigurationError::NoSuchVersion(9)));
    }

    #[test]
    fn maintenance_mode_is_not_rolled_back() {
        let v1 = updated(&Configuration::default(), update(0, &[("matchmaking.window", "250")], "one"));
        let paused = updated(&v1, update(1, &[("maintenance.writes_paused", "1")], "maintenance job"));
        let paused = updated(&paused, update(2, &[("matchmaking.window", "400")], "wider"));
        let back = ConfigurationCommand::Rollback {
            expected_version: 3,
            to_version: 1,
            reason: "undo the window".into(),
            by: admin(),
            now_ms: 5,
        };
        let v3 = updated(&paused, back);
        assert_eq!(v3.values["matchmaking.window"], "250");
        assert_eq!(v3.values["maintenance.writes_paused"], "1", "still in maintenance");
        assert!(v3.set.contains("maintenance.writes_paused"));
    }

    #[test]
    fn a_value_read_back_is_the_default_when_missing_or_unusable() {
        let mut values = HashMap::new();
        assert_eq!(int(&values, &allies_core::settings::RATE_PER_USERNAME), 10);
        values.insert("auth.rate_per_username".to_owned(), "4".to_owned());
        assert_eq!(int(&values, &allies_core::settings::RATE_PER_USERNAME), 4);
        values.insert("auth.rate_per_username".to_owned(), "0".to_owned());
        assert_eq!(int(&values, &allies_core::settings::RATE_PER_USERNAME), 10);
    }
}
