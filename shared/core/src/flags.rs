//! Feature flags, kept in the Configuration as keys `flag.<name>` whose value
//! is the flag's definition (JSON), and their evaluation — a pure function
//! every service runs on the configuration it follows (no network hop).
//!
//! ```json
//! {"enabled": true, "variants": ["off", "on"], "default": "off",
//!  "roles": {"admin": "on"}, "rollout": [["on", 25]]}
//! ```
//!
//! Evaluation, as OpenFeature reports it: a disabled flag (the kill switch)
//! gives its default with reason DISABLED; a user with a targeted role gets
//! that role's variant (TARGETING_MATCH); otherwise the user's stable bucket
//! (FNV-1a of `<flag>:<user id>`, 0..99) picks a rollout variant (SPLIT); else
//! the default (DEFAULT). A missing or unreadable flag gives the caller's
//! default with reason ERROR. A boolean flag is one whose variants are
//! `off` and `on`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub const PREFIX: &str = "flag.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    pub enabled: bool,
    pub variants: Vec<String>,
    pub default: String,
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// (variant, percent of users), in order.
    #[serde(default)]
    pub rollout: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Default,
    TargetingMatch,
    Split,
    Disabled,
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "DEFAULT",
            Self::TargetingMatch => "TARGETING_MATCH",
            Self::Split => "SPLIT",
            Self::Disabled => "DISABLED",
            Self::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub value: String,
    pub reason: Reason,
    /// FLAG_NOT_FOUND or PARSE_ERROR when the reason is ERROR.
    pub error: Option<&'static str>,
}

/// Whether `name` (after `flag.`) is a flag name: 1 to 64 of `a-z 0-9 . _ -`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// Parses and checks a definition: the normalized JSON, or why not.
pub fn validate(json: &str) -> Result<String, String> {
    let f: Flag = serde_json::from_str(json).map_err(|e| format!("not a flag definition: {e}"))?;
    if f.variants.is_empty() || f.variants.len() > 16 {
        return Err("variants: 1 to 16".into());
    }
    let known = |v: &str| f.variants.iter().any(|x| x == v);
    if !known(&f.default) {
        return Err(format!("default '{}' is not one of the variants", f.default));
    }
    for (role, v) in &f.roles {
        if !known(v) {
            return Err(format!("roles.{role}: '{v}' is not one of the variants"));
        }
    }
    let mut total = 0;
    for (v, pct) in &f.rollout {
        if !known(v) {
            return Err(format!("rollout: '{v}' is not one of the variants"));
        }
        total += pct;
    }
    if total > 100 {
        return Err(format!("rollout: the percentages add up to {total}, more than 100"));
    }
    serde_json::to_string(&f).map_err(|e| e.to_string())
}

/// The user's stable bucket for a flag, 0..99.
pub fn bucket(flag: &str, user_id: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in flag.bytes().chain(std::iter::once(b':')).chain(user_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 100) as u32
}

/// Evaluates flag `name` for a user in `values` (the configuration in force).
pub fn evaluate(
    values: &HashMap<String, String>,
    name: &str,
    user_id: &str,
    roles: &[String],
    default: &str,
) -> Evaluation {
    let error = |e| Evaluation { value: default.to_owned(), reason: Reason::Error, error: Some(e) };
    let Some(json) = values.get(&format!("{PREFIX}{name}")) else { return error("FLAG_NOT_FOUND") };
    let Ok(f) = serde_json::from_str::<Flag>(json) else { return error("PARSE_ERROR") };
    let at = |value: &str, reason| Evaluation { value: value.to_owned(), reason, error: None };
    if !f.enabled {
        return at(&f.default, Reason::Disabled);
    }
    if let Some(v) = roles.iter().find_map(|r| f.roles.get(r)) {
        return at(v, Reason::TargetingMatch);
    }
    let b = bucket(name, user_id);
    let mut upto = 0;
    for (v, pct) in &f.rollout {
        upto += pct;
        if b < upto {
            return at(v, Reason::Split);
        }
    }
    at(&f.default, Reason::Default)
}

/// The boolean flags that are on for a user.
pub fn on_for(values: &HashMap<String, String>, user_id: &str, roles: &[String]) -> std::collections::BTreeSet<String> {
    values
        .keys()
        .filter_map(|k| k.strip_prefix(PREFIX))
        .filter(|name| evaluate(values, name, user_id, roles, "off").value == "on")
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flag: &str, json: &str) -> HashMap<String, String> {
        HashMap::from([(format!("{PREFIX}{flag}"), validate(json).expect("valid"))])
    }

    #[test]
    fn definitions_are_checked_naming_what_is_wrong() {
        assert!(validate(r#"{"enabled":true,"variants":["off","on"],"default":"off"}"#).is_ok());
        assert!(
            validate(r#"{"enabled":true,"variants":["off","on"],"default":"maybe"}"#).unwrap_err().contains("default")
        );
        let over = r#"{"enabled":true,"variants":["off","on"],"default":"off","rollout":[["on",80],["off",30]]}"#;
        assert!(validate(over).unwrap_err().contains("110"));
        assert!(
            validate(r#"{"enabled":true,"variants":["off","on"],"default":"off","roles":{"admin":"yes"}}"#).is_err()
        );
        assert!(validate(r#"{"enabled":true,"variants":["off"],"default":"off","colour":1}"#).is_err());
        assert!(validate("on").is_err());
        assert!(valid_name("towers.tesla") && !valid_name("Towers") && !valid_name(""));
    }

    #[test]
    fn kill_switch_targeting_split_default_and_error_each_say_why() {
        let admin = vec!["admin".to_owned()];
        let t =
            r#"{"enabled":true,"variants":["off","on"],"default":"off","roles":{"admin":"on"},"rollout":[["on",30]]}"#;
        let c = config("towers.tesla", t);
        let e = evaluate(&c, "towers.tesla", "u1", &admin, "off");
        assert_eq!((e.value.as_str(), e.reason), ("on", Reason::TargetingMatch));
        // 30% of users, by a stable hash: the same user always gets the same answer.
        let on =
            (0..1000).filter(|i| evaluate(&c, "towers.tesla", &format!("user-{i}"), &[], "off").value == "on").count();
        assert!((250..=350).contains(&on), "{on} of 1000");
        let someone = (0..100).map(|i| format!("user-{i}")).find(|u| bucket("towers.tesla", u) < 30).unwrap();
        assert_eq!(evaluate(&c, "towers.tesla", &someone, &[], "off").reason, Reason::Split);
        let other = (0..100).map(|i| format!("user-{i}")).find(|u| bucket("towers.tesla", u) >= 30).unwrap();
        let e = evaluate(&c, "towers.tesla", &other, &[], "off");
        assert_eq!((e.value.as_str(), e.reason), ("off", Reason::Default));
        // The kill switch wins over everything.
        let killed = config("towers.tesla", &t.replace("\"enabled\":true", "\"enabled\":false"));
        let e = evaluate(&killed, "towers.tesla", "u1", &admin, "off");
        assert_eq!((e.value.as_str(), e.reason), ("off", Reason::Disabled));
        let e = evaluate(&c, "nope", "u1", &admin, "off");
        assert_eq!((e.value.as_str(), e.reason, e.error), ("off", Reason::Error, Some("FLAG_NOT_FOUND")));
        assert_eq!(on_for(&c, "u1", &admin).into_iter().collect::<Vec<_>>(), vec!["towers.tesla".to_owned()]);
    }
}
