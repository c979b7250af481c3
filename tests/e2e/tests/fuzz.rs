//! Every request type of every API through the real services' validation,
//! with random content: random bytes, and well-formed messages of the
//! method's own type with random values — long strings, odd numbers, too
//! many items. Whatever comes in, each call ends with a clear status (never
//! INTERNAL or UNKNOWN for what a client sent), an error's message stays
//! within 512 bytes, and every service is still serving at the end.
//! Seeded: a failure names its seed, method and payload size.

use std::time::Duration;

use allies_e2e::{Fleet, SERVICES, bearer};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Sends and receives raw message bytes.
#[derive(Default, Clone)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// SplitMix64: a seeded, reproducible stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Method {
    path: String,
    service: &'static str,
    input: String,
    streaming: bool,
}

fn owner(package: &str) -> Option<&'static str> {
    Some(match package {
        p if p.starts_with("defense_allies.guardian") => "guardian",
        p if p.starts_with("defense_allies.timesquare") => "timesquare",
        p if p.starts_with("defense_allies.command") => "command",
        p if p.starts_with("defense_allies.projector") => "projector",
        _ => return None,
    })
}

fn descriptors() -> prost_types::FileDescriptorSet {
    prost_types::FileDescriptorSet::decode(allies_contracts::FILE_DESCRIPTOR_SET).expect("descriptors")
}

fn methods(set: &prost_types::FileDescriptorSet) -> Vec<Method> {
    let mut out = Vec::new();
    for f in &set.file {
        let Some(service) = owner(f.package()) else { continue };
        for s in &f.service {
            for m in &s.method {
                out.push(Method {
                    path: format!("/{}.{}/{}", f.package(), s.name(), m.name()),
                    service,
                    input: m.input_type().trim_start_matches('.').to_owned(),
                    streaming: m.server_streaming(),
                });
            }
        }
    }
    out
}

fn message<'a>(set: &'a prost_types::FileDescriptorSet, full: &str) -> Option<&'a prost_types::DescriptorProto> {
    for f in &set.file {
        let prefix = format!("{}.", f.package());
        let Some(rest) = full.strip_prefix(&prefix) else { continue };
        let mut parts = rest.split('.');
        let mut current = f.message_type.iter().find(|m| m.name() == parts.next().unwrap_or_default())?;
        for p in parts {
            current = current.nested_type.iter().find(|m| m.name() == p)?;
        }
        return Some(current);
    }
    None
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A random string: often a plausible value (an id, a name, a number),
/// sometimes long or odd.
fn text(rng: &mut Rng, ids: &[String]) -> Vec<u8> {
    match rng.below(8) {
        0 => Vec::new(),
        1 => ids[rng.below(ids.len() as u64) as usize].clone().into_bytes(),
        2 => uuid::Uuid::from_u64_pair(rng.next(), rng.next()).to_string().into_bytes(),
        3 => (0..rng.below(400)).map(|_| b'a' + rng.below(26) as u8).collect(),
        4 => (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
        5 => ["meadow", "easy", "normal", "hard", "arrow", "csv", "rm.user", "user", "flag.x", "check_consistency"]
            [rng.below(10) as usize]
            .as_bytes()
            .to_vec(),
        6 => rng.next().to_string().into_bytes(),
        _ => "ünïcødé ✓ \u{0}\n".repeat(rng.below(30) as usize + 1).into_bytes(),
    }
}

/// A well-formed message of type `full` with random values.
fn random_message(
    set: &prost_types::FileDescriptorSet,
    full: &str,
    rng: &mut Rng,
    ids: &[String],
    depth: u32,
) -> Vec<u8> {
    use prost_types::field_descriptor_proto::{Label, Type};
    let mut out = Vec::new();
    let Some(m) = message(set, full) else { return out };
    for f in &m.field {
        let n = if f.label() == Label::Repeated {
            [0, 1, 2, 3, 5, 70][rng.below(6) as usize]
        } else {
            rng.below(3) as usize // absent, or once (twice: the last wins)
        };
        for _ in 0..n {
            let key = u64::from(f.number() as u32) << 3;
            match f.r#type() {
                Type::String | Type::Bytes => {
                    let v = text(rng, ids);
                    varint(&mut out, key | 2);
                    varint(&mut out, v.len() as u64);
                    out.extend(v);
                }
                Type::Message if depth < 4 => {
                    let v = random_message(set, f.type_name().trim_start_matches('.'), rng, ids, depth + 1);
                    varint(&mut out, key | 2);
                    varint(&mut out, v.len() as u64);
                    out.extend(v);
                }
                Type::Message => {}
                Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                    varint(&mut out, key | 1);
                    out.extend(rng.next().to_le_bytes());
                }
                Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                    varint(&mut out, key | 5);
                    out.extend((rng.next() as u32).to_le_bytes());
                }
                _ => {
                    varint(&mut out, key);
                    let v = match rng.below(4) {
                        0 => 0,
                        1 => rng.below(10),
                        2 => u64::MAX - rng.below(3),
                        _ => rng.next(),
                    };
                    varint(&mut out, v);
                }
            }
        }
    }
    out
}

async fn call(fleet: &Fleet, m: &Method, body: Vec<u8>, token: Option<&str>) -> Result<(), Status> {
    let channel = fleet.channel(m.service).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let request = match token {
        Some(t) => bearer(body, t),
        None => tonic::Request::new(body),
    };
    let path = m.path.parse().expect("a path");
    if m.streaming {
        let mut stream = grpc.server_streaming(request, path, Raw).await?.into_inner();
        // The first answer (or the end) tells whether the request was taken.
        match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Ok(()),
        }
    } else {
        grpc.unary(request, path, Raw).await.map(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_type_with_random_content_gets_a_clear_bounded_answer_and_no_service_falls() {
    // Random logins must not lock the test's own accounts out.
    let fleet = Fleet::start(&[
        ("AUTH_RATE_PER_USERNAME", "1000000"),
        ("AUTH_RATE_PER_CLIENT", "1000000"),
        ("LOCKOUT_MAX_FAILURES", "1000"),
    ]);
    let (player_id, _) = fleet.player("fuzzy").await;
    fleet.admin().await;
    let set = descriptors();
    let mut all = methods(&set);
    // A logout ends the round's sessions: it goes last.
    all.sort_by_key(|m| m.path.ends_with("/LogoutUser"));
    assert!(all.len() > 60, "{} methods", all.len());
    let ids = vec![player_id.clone(), "fuzzy".to_owned(), "fleet-admin".to_owned()];
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0001);
    let mut rng = Rng(seed);
    let mut calls = 0;
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    for round in 0..15 {
        // Fresh sessions every round (a random call may have ended them).
        let player = fleet.login("fuzzy").await.access_token;
        let admin = fleet.login(allies_e2e::FLEET_ADMIN).await.access_token;
        for m in &all {
            // Health and reflection are tonic's own.
            let body = if round % 3 == 0 {
                (0..rng.below(300)).map(|_| rng.next() as u8).collect()
            } else {
                random_message(&set, &m.input, &mut rng, &ids, 0)
            };
            let size = body.len();
            let token = match round % 3 {
                0 => None,
                1 => Some(player.as_str()),
                _ => Some(admin.as_str()),
            };
            calls += 1;
            let answer = call(&fleet, m, body, token).await;
            *codes.entry(format!("{:?}", answer.as_ref().map_or_else(|s| s.code(), |_| Code::Ok))).or_default() += 1;
            if let Err(s) = answer {
                assert!(
                    !matches!(s.code(), Code::Internal | Code::Unknown),
                    "seed {seed} round {round} {} ({size} bytes): {s:?}",
                    m.path
                );
                assert!(s.message().len() <= 512, "seed {seed} {}: a message of {} bytes", m.path, s.message().len());
            }
        }
    }
    // Every service is still up and serving.
    for name in SERVICES {
        let mut h = HealthClient::new(fleet.channel(name).await);
        let status = h.check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{name} after {calls} random calls");
    }
    println!(
        "{calls} random calls over {} methods (seed {seed}): every answer clear and bounded: {codes:?}",
        all.len()
    );
}
