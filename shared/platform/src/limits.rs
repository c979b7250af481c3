//! Bounded input on every API, in one place: every string and bytes field
//! of every request message has a maximum size and every repeated field
//! (maps included) a maximum count. A request over a limit is answered
//! INVALID_ARGUMENT naming the field and its limit before any handler runs;
//! nothing is truncated.
//!
//! The limits are a default per kind ([`DEFAULT_BYTES`], [`DEFAULT_ITEMS`])
//! and the exceptions in [`OVERRIDES`], read against the contracts' own
//! descriptors — so a field added to a proto is bounded the day it exists.
//! `allies limits` prints the table (see [`Limits::table`]).
//!
//! It runs as a tower layer on the raw request: the gRPC frame's message is
//! walked in its wire format with the method's input descriptor (no decode,
//! no copy), so the check costs a pass over the bytes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use allies_core::FieldViolation;
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use tonic::codegen::http;

/// The most a string or bytes field may carry, in bytes, unless overridden.
pub const DEFAULT_BYTES: usize = 256;
/// The most items a repeated field (or map) may carry, unless overridden.
pub const DEFAULT_ITEMS: usize = 64;
/// The most a whole request body may be (one gRPC frame), in bytes.
pub const MAX_BODY: usize = 512 * 1024;

/// Fields with a limit of their own: `package.Message.field` → bytes for a
/// string or bytes field, items for a repeated one.
pub const OVERRIDES: &[(&str, usize)] = &[
    // A rules file is a whole YAML document.
    ("defense_allies.command.v1.UploadRulesRequest.yaml", 256 * 1024),
    // A feature flag's definition is JSON.
    ("defense_allies.command.v1.UpdateConfigurationRequest.ChangesEntry.value", 4096),
    ("defense_allies.command.v1.UpdateConfigurationRequest.changes", 64),
    // The caller plus three friends fill a game of four.
    ("defense_allies.timesquare.v1.FindMatchRequest.party", 3),
    ("defense_allies.timesquare.v1.FindMatchRequest.maps", 16),
    ("defense_allies.guardian.v1.ChangeUserRolesRequest.roles", 8),
    // An operator's reason is the record: the configuration takes 500.
    ("defense_allies.command.v1.UpdateConfigurationRequest.reason", 500),
    ("defense_allies.command.v1.RollbackConfigurationRequest.reason", 500),
    ("defense_allies.command.v1.UploadRulesRequest.reason", 500),
    ("defense_allies.command.v1.GenerateReportRequest.reason", 500),
    ("defense_allies.command.v1.PerformMaintenanceRequest.reason", 500),
    // Tokens, ids and names are short.
    ("defense_allies.guardian.v1.RegisterUserRequest.username", 64),
    ("defense_allies.guardian.v1.AuthenticateUserRequest.username", 64),
    ("defense_allies.guardian.v1.RegisterUserRequest.password", 128),
    ("defense_allies.guardian.v1.AuthenticateUserRequest.password", 128),
    ("defense_allies.guardian.v1.ChangePasswordRequest.current_password", 128),
    ("defense_allies.guardian.v1.ChangePasswordRequest.new_password", 128),
    ("defense_allies.timesquare.v1.CreateGameSessionRequest.display_name", 64),
    ("defense_allies.timesquare.v1.JoinGameSessionRequest.display_name", 64),
    ("defense_allies.guardian.v1.SetDisplayNameRequest.display_name", 64),
    ("defense_allies.timesquare.v1.CreateGameSessionRequest.map", 64),
    ("defense_allies.timesquare.v1.CreateGameSessionRequest.difficulty", 32),
    ("defense_allies.timesquare.v1.PlaceTowerRequest.tower_type", 64),
];

#[derive(Debug, Clone)]
enum Kind {
    Text,
    Bytes,
    Message(String),
    /// Numbers and enums, with their wire type (0 varint, 1 64-bit, 5 32-bit):
    /// bounded by their wire size already.
    Scalar(u64),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    kind: Kind,
    repeated: bool,
    /// Bytes of one string/bytes value.
    max_bytes: usize,
    /// Values of a repeated field.
    max_items: usize,
}

/// The limits of every request of the contracts (see the module documentation).
#[derive(Debug, Default)]
pub struct Limits {
    /// `/pkg.Service/Method` → input message's full name.
    methods: HashMap<String, String>,
    /// Full message name → its fields by number.
    messages: HashMap<String, HashMap<u32, Field>>,
}

fn type_name(t: &str) -> String {
    t.trim_start_matches('.').to_owned()
}

impl Limits {
    /// The limits of the contracts' APIs.
    pub fn of_contracts() -> Self {
        Self::from_descriptors(allies_contracts::FILE_DESCRIPTOR_SET)
    }

    /// The limits of the APIs an encoded `FileDescriptorSet` describes.
    pub fn from_descriptors(encoded: &[u8]) -> Self {
        let mut limits = Self::default();
        let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else { return limits };
        let overrides: HashMap<&str, usize> = OVERRIDES.iter().copied().collect();
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    limits.methods.insert(
                        format!("/{package}.{}/{}", service.name(), method.name()),
                        type_name(method.input_type()),
                    );
                }
            }
            let mut stack: Vec<(String, &prost_types::DescriptorProto)> =
                file.message_type.iter().map(|m| (format!("{package}.{}", m.name()), m)).collect();
            while let Some((full, message)) = stack.pop() {
                let mut fields = HashMap::new();
                for f in &message.field {
                    let qualified = format!("{full}.{}", f.name());
                    let kind = match f.r#type() {
                        Type::String => Kind::Text,
                        Type::Bytes => Kind::Bytes,
                        Type::Message => Kind::Message(type_name(f.type_name())),
                        Type::Double | Type::Fixed64 | Type::Sfixed64 => Kind::Scalar(1),
                        Type::Float | Type::Fixed32 | Type::Sfixed32 => Kind::Scalar(5),
                        _ => Kind::Scalar(0),
                    };
                    let repeated = f.label() == Label::Repeated;
                    let own = overrides.get(qualified.as_str()).copied();
                    fields.insert(
                        f.number() as u32,
                        Field {
                            name: f.name().to_owned(),
                            kind,
                            repeated,
                            max_bytes: if repeated { DEFAULT_BYTES } else { own.unwrap_or(DEFAULT_BYTES) },
                            max_items: if repeated { own.unwrap_or(DEFAULT_ITEMS) } else { 1 },
                        },
                    );
                }
                stack.extend(message.nested_type.iter().map(|n| (format!("{full}.{}", n.name()), n)));
                limits.messages.insert(full, fields);
            }
        }
        // A repeated string field's values: a map entry's value takes the
        // override named after the entry type's field (handled above).
        limits
    }

    /// Every limited request field: (`package.Message.field`, its limit).
    pub fn table(&self) -> Vec<(String, String)> {
        let inputs: std::collections::BTreeSet<&String> = self.methods.values().collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<String> = inputs.into_iter().cloned().collect();
        let mut rows = Vec::new();
        while let Some(message) = stack.pop() {
            if !seen.insert(message.clone()) {
                continue;
            }
            let Some(fields) = self.messages.get(&message) else { continue };
            let mut numbers: Vec<&u32> = fields.keys().collect();
            numbers.sort();
            for n in numbers {
                let f = &fields[n];
                let mut limit = Vec::new();
                if f.repeated {
                    limit.push(format!("{} items", f.max_items));
                }
                match &f.kind {
                    Kind::Text | Kind::Bytes => limit.push(format!("{} bytes", f.max_bytes)),
                    Kind::Message(t) => stack.push(t.clone()),
                    Kind::Scalar(_) => {}
                }
                if !limit.is_empty() {
                    rows.push((format!("{message}.{}", f.name), limit.join(", each ")));
                }
            }
        }
        rows.sort();
        rows
    }

    /// Checks the message of a call to `path` (unknown paths pass: the
    /// server answers them UNIMPLEMENTED).
    pub fn check(&self, path: &str, message: &[u8]) -> Result<(), Vec<FieldViolation>> {
        let Some(input) = self.methods.get(path) else { return Ok(()) };
        let mut out = Vec::new();
        self.walk(input, message, "", 0, &mut out);
        out.truncate(16);
        if out.is_empty() { Ok(()) } else { Err(out) }
    }

    fn walk(&self, message: &str, mut buf: &[u8], prefix: &str, depth: u32, out: &mut Vec<FieldViolation>) {
        let Some(fields) = self.messages.get(message) else { return };
        // Names are made only for a violation: a valid request (nearly
        // every one) is walked without allocating.
        let at = || if prefix.is_empty() { "request".to_owned() } else { prefix.trim_end_matches('.').to_owned() };
        // What the decoder would refuse, said as the caller's mistake (tonic
        // answers a message that does not decode with INTERNAL).
        let malformed = |out: &mut Vec<FieldViolation>, why: &str| {
            out.push(FieldViolation::new(at(), format!("is not a valid {message} message: {why}")));
        };
        if depth > 16 {
            out.push(FieldViolation::new(at(), "nested too deeply"));
            return;
        }
        // Items seen per repeated field (a singular one needs no count).
        let mut counts: HashMap<u32, usize> = HashMap::new();
        while !buf.is_empty() && out.len() < 16 {
            let Some(key) = varint(&mut buf) else { return malformed(out, "a truncated field key") };
            // Field numbers are 1 to 2^29 - 1.
            if key >> 3 == 0 || key >> 3 > 536_870_911 {
                return malformed(out, "a field number out of range");
            }
            let (number, wire) = ((key >> 3) as u32, key & 7);
            let data = match wire {
                0 => {
                    if varint(&mut buf).is_none() {
                        return malformed(out, "a truncated number");
                    }
                    None
                }
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    if buf.len() < n {
                        return malformed(out, "a truncated number");
                    }
                    buf = &buf[n..];
                    None
                }
                2 => {
                    let Some(len) = varint(&mut buf) else { return malformed(out, "a truncated length") };
                    let Ok(len) = usize::try_from(len) else { return malformed(out, "a length past the end") };
                    if buf.len() < len {
                        return malformed(out, "a length past the end");
                    }
                    let (data, rest) = buf.split_at(len);
                    buf = rest;
                    Some(data)
                }
                // Groups are not proto3; 6 and 7 are no wire type at all.
                _ => return malformed(out, "a wire type proto3 does not have"),
            };
            let Some(f) = fields.get(&number) else { continue };
            let expected = match f.kind {
                Kind::Scalar(w) => w,
                _ => 2,
            };
            // A repeated number may come packed (length-delimited).
            if wire != expected && !(f.repeated && wire == 2 && matches!(f.kind, Kind::Scalar(_))) {
                return malformed(out, &format!("field {} has the wrong wire type", f.name));
            }
            let index = if f.repeated {
                let seen = counts.entry(number).or_default();
                *seen += 1;
                if *seen == f.max_items + 1 {
                    out.push(FieldViolation::new(
                        format!("{prefix}{}", f.name),
                        format!("at most {} items", f.max_items),
                    ));
                }
                *seen - 1
            } else {
                0
            };
            let name =
                || if f.repeated { format!("{prefix}{}[{index}]", f.name) } else { format!("{prefix}{}", f.name) };
            let Some(data) = data else { continue };
            match &f.kind {
                Kind::Text | Kind::Bytes if data.len() > f.max_bytes => {
                    out.push(FieldViolation::new(name(), format!("at most {} bytes, got {}", f.max_bytes, data.len())))
                }
                Kind::Text if std::str::from_utf8(data).is_err() => {
                    out.push(FieldViolation::new(name(), "is not valid UTF-8"))
                }
                Kind::Message(t) => self.walk(t, data, &format!("{}.", name()), depth + 1, out),
                Kind::Scalar(w) => {
                    // Packed: a run of numbers of the field's wire type.
                    let mut packed = data;
                    while !packed.is_empty() {
                        let ok = match w {
                            0 => varint(&mut packed).is_some(),
                            1 | 5 => {
                                let n = if *w == 1 { 8 } else { 4 };
                                let ok = packed.len() >= n;
                                packed = &packed[n.min(packed.len())..];
                                ok
                            }
                            _ => false,
                        };
                        if !ok {
                            return malformed(out, &format!("field {} is not a packed run of numbers", f.name));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

/// The layer that applies [`Limits`] to every call.
#[derive(Clone)]
pub struct LimitsLayer(pub Arc<Limits>);

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = Bounded<S>;
    fn layer(&self, inner: S) -> Bounded<S> {
        Bounded { inner, limits: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    limits: Arc<Limits>,
}

fn refuse<RB: Default>(violations: Vec<FieldViolation>) -> http::Response<RB> {
    let mut invalid = allies_core::Invalid::new();
    for v in violations {
        invalid.push(v.field, v.reason);
    }
    crate::status::to_status(&invalid).into_http()
}

impl<S, RB> tower::Service<http::Request<tonic::body::Body>> for Bounded<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<RB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<RB>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        if !limits.methods.contains_key(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        Box::pin(async move {
            use http_body_util::BodyExt;
            let (parts, body) = request.into_parts();
            let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    let v = FieldViolation::new("request", format!("the request is at most {MAX_BODY} bytes"));
                    return Ok(refuse(vec![v]));
                }
            };
            // One uncompressed gRPC frame: flag, length, message.
            if bytes.len() >= 5 && bytes[0] == 0 {
                let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
                if let Some(message) = bytes.get(5..5 + len)
                    && let Err(violations) = limits.check(parts.uri.path(), message)
                {
                    return Ok(refuse(violations));
                }
            }
            let request = http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(bytes)));
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allies_contracts::timesquare::v1::{EndGameRequest, FindMatchRequest};

    fn limits() -> Limits {
        Limits::of_contracts()
    }

    #[test]
    fn every_method_of_the_contracts_is_known_and_its_strings_are_bounded() {
        let l = limits();
        assert!(l.methods.contains_key("/defense_allies.timesquare.v1.GameService/EndGame"));
        let table = l.table();
        let reason = table.iter().find(|(f, _)| f == "defense_allies.timesquare.v1.EndGameRequest.reason");
        assert_eq!(reason.map(|(_, l)| l.as_str()), Some("256 bytes"));
        let party = table.iter().find(|(f, _)| f == "defense_allies.timesquare.v1.FindMatchRequest.party");
        assert_eq!(party.map(|(_, l)| l.as_str()), Some("3 items, each 256 bytes"));
        // Every string field of every request appears with a limit.
        assert!(table.len() > 60, "{}", table.len());
    }

    #[test]
    fn a_field_over_its_limit_is_named_with_the_limit_and_one_within_passes() {
        let l = limits();
        let path = "/defense_allies.timesquare.v1.GameService/EndGame";
        let ok = EndGameRequest { session_id: "s".into(), reason: "x".repeat(256) };
        assert!(l.check(path, &ok.encode_to_vec()).is_ok());
        let long = EndGameRequest { session_id: "s".into(), reason: "x".repeat(6000) };
        let v = l.check(path, &long.encode_to_vec()).unwrap_err();
        assert_eq!(v[0].field, "reason");
        assert_eq!(v[0].reason, "at most 256 bytes, got 6000");
        let party = FindMatchRequest { party: vec!["a".into(); 5], ..Default::default() };
        let v = l.check("/defense_allies.timesquare.v1.MatchmakingService/FindMatch", &party.encode_to_vec());
        assert_eq!(v.unwrap_err()[0].to_string(), "party: at most 3 items");
        // An item of a repeated field is named with its index; a nested
        // message's field with its path.
        let party = FindMatchRequest { party: vec!["a".into(), "x".repeat(300)], ..Default::default() };
        let v = l.check("/defense_allies.timesquare.v1.MatchmakingService/FindMatch", &party.encode_to_vec());
        assert_eq!(v.unwrap_err()[0].to_string(), "party[1]: at most 256 bytes, got 300");
    }

    #[test]
    fn every_override_names_a_real_field() {
        let l = limits();
        for (name, _) in OVERRIDES {
            let (message, field) = name.rsplit_once('.').unwrap();
            let fields = l.messages.get(message).unwrap_or_else(|| panic!("no message {message}"));
            assert!(fields.values().any(|f| f.name == field), "no field {name}");
        }
    }

    #[test]
    fn a_message_that_would_not_decode_is_the_callers_mistake() {
        let l = limits();
        let path = "/defense_allies.timesquare.v1.GameService/EndGame";
        // An end-group tag, a huge field number, a string as a number, bad UTF-8.
        for bytes in [&b"\x0c"[..], b"\x80\x80\x80\x80\x80\x01", b"\x10\x05", b"\x12\x02\xff\xfe"] {
            let v = l.check(path, bytes).unwrap_err();
            assert!(v[0].reason.contains("not a valid") || v[0].reason.contains("UTF-8"), "{bytes:?}: {v:?}");
        }
    }

    #[test]
    fn malformed_bytes_never_panic_and_unknown_paths_pass() {
        let l = limits();
        for bytes in [&b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..], b"\x12\x80", b"\x0b", b"\x12\x05ab"] {
            let _ = l.check("/defense_allies.timesquare.v1.GameService/EndGame", bytes);
        }
        assert!(l.check("/nope.Service/Method", &[0xff; 10]).is_ok());
    }
}
