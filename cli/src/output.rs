//! Output: readable text by default, JSON with `--json`; a failure prints
//! its gRPC code, message, every field violation, the broken rule and the
//! retry hint (as one JSON object with `--json`) and exits 1.

use serde::Serialize;
use tonic::Status;
use tonic_types::StatusExt;

/// The one field `--field` asks for (set once, at start).
static FIELD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `--field PATH`: every answer prints only that field, raw (for scripts:
/// `G=$(allies game create … --field sessionId)`).
pub fn select_field(path: String) {
    let _ = FIELD.set(path);
}

/// Prints `value` as pretty JSON, or the text `text` makes (or only the
/// field `--field` names).
pub fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if let Some(path) = FIELD.get() {
        print_field(path, value);
    } else if json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        println!("{}", text());
    }
}

/// One JSON line of a stream (a watch, a follow): compact, or only the
/// field `--field` names.
pub fn json_line<T: Serialize>(value: &T) {
    match FIELD.get() {
        Some(path) => print_field(path, value),
        None => println!("{}", serde_json::to_string(value).unwrap_or_default()),
    }
}

/// Prints the field at `path` (names joined by dots, as in the JSON output;
/// snake_case works too; a number indexes a list): a string without quotes,
/// a list one item a line, an object as JSON. A path the answer does not
/// have is an error naming the fields it does have (exit 1).
fn print_field<T: Serialize>(path: &str, value: &T) {
    let root = serde_json::to_value(value).unwrap_or_default();
    let mut at = &root;
    for part in path.split('.') {
        let next = match at {
            serde_json::Value::Object(m) => m.get(part).or_else(|| m.get(&camel(part))),
            serde_json::Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        let Some(next) = next else {
            let has = match at {
                serde_json::Value::Object(m) => m.keys().cloned().collect::<Vec<_>>().join(", "),
                serde_json::Value::Array(items) => format!("a list of {} (index it: 0, 1, …)", items.len()),
                _ => "no fields".into(),
            };
            Failure::local(format!("--field {path}: the answer has no `{part}` here (it has: {has})")).report(false);
            std::process::exit(1);
        };
        at = next;
    }
    let raw = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match at {
        serde_json::Value::Array(items) => items.iter().for_each(|v| println!("{}", raw(v))),
        other => println!("{}", raw(other)),
    }
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// A moment for people: the UTC date and time, and how long ago (or how
/// soon) it is — "2026-12-03 14:05:09 UTC (3 min ago)". 0 is "never".
pub fn when(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (ago, secs) = if now >= ms { (true, (now - ms) / 1000) } else { (false, (ms - now) / 1000) };
    let span = match secs {
        0..60 => format!("{secs} s"),
        60..3_600 => format!("{} min", secs / 60),
        3_600..86_400 => format!("{} h", secs / 3_600),
        _ => format!("{} days", secs / 86_400),
    };
    let relative = if ago { format!("{span} ago") } else { format!("in {span}") };
    format!("{} ({relative})", allies_core::calendar::utc_time(ms))
}

/// A failed command.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// gRPC code name (`InvalidArgument`, …), or `Local` for a failure
    /// before any call.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl Failure {
    pub fn local(message: impl Into<String>) -> Self {
        Self::new("Local", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new("Unavailable", message)
    }

    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), violations: vec![], rule: None, retry_after_secs: None }
    }

    /// Prints the failure to stderr.
    pub fn report(&self, json: bool) {
        if json {
            eprintln!("{}", serde_json::json!({ "error": self }));
            return;
        }
        let mut msg = format!("error: {}: {}", self.code, self.message);
        for v in &self.violations {
            msg.push_str(&format!("\n  field `{}`: {}", v.field, v.description));
        }
        if let Some(rule) = &self.rule {
            msg.push_str(&format!("\n  rule: {rule}"));
        }
        if let Some(after) = self.retry_after_secs {
            msg.push_str(&format!("\n  retry after {after:.1} s"));
        }
        eprintln!("{msg}");
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        let mut f = Failure::new(&format!("{:?}", s.code()), s.message());
        let details = s.get_error_details();
        if let Some(br) = details.bad_request() {
            f.violations = br
                .field_violations
                .iter()
                .map(|v| Violation { field: v.field.clone(), description: v.description.clone() })
                .collect();
        }
        if let Some(pf) = details.precondition_failure() {
            f.rule = pf.violations.first().map(|v| format!("{} ({})", v.r#type, v.subject));
        }
        f.retry_after_secs = details.retry_info().and_then(|r| r.retry_delay).map(|d| d.as_secs_f64());
        f
    }
}
