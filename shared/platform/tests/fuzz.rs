//! Property tests of what a client controls before any handler runs: the
//! bearer token (any text, any JSON in a correctly signed token), every
//! request of every API through the input limits, and the size of the
//! error a caller gets back. Never a panic, never an unbounded answer.

use std::sync::Arc;

use allies_contracts::guardian::v1::Jwk;
use allies_core::{ErrorCode, Failure, FieldViolation, Invalid};
use allies_platform::auth::{Authenticator, KeySource};
use allies_platform::config::AuthSettings;
use allies_platform::limits::Limits;
use allies_store::RedisEventStore;
use allies_testkit::RedisServer;
use base64::Engine;
use proptest::prelude::*;
use ring::signature::{Ed25519KeyPair, KeyPair};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Verifier {
    _redis: RedisServer,
    auth: Authenticator,
    key: Ed25519KeyPair,
    runtime: tokio::runtime::Runtime,
}

fn new_verifier() -> Verifier {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis = RedisServer::start();
    let store = runtime.block_on(RedisEventStore::connect(&redis.url(), 16)).unwrap();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwk = Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: b64(key.public_key().as_ref()),
        kid: "k1".into(),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    };
    let settings = AuthSettings {
        issuer: "defense-allies-guardian".into(),
        audience: "defense-allies".into(),
        guardian_url: String::new(),
    };
    let auth = Authenticator::new(settings, KeySource::Static(vec![jwk]), store);
    Verifier { _redis: redis, auth, key, runtime }
}

/// A token signed with the verifier's key over any header and claims.
fn signed(v: &Verifier, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = v.key.sign(input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

fn claims() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        (any::<i64>(), any::<i64>(), ".{0,20}", prop::collection::vec(".{0,10}", 0..4)).prop_map(
            |(iat, exp, sub, roles)| {
                serde_json::json!({
                    "iss": "defense-allies-guardian", "aud": "defense-allies", "sub": sub, "sid": sub,
                    "roles": roles, "iat": iat, "exp": exp, "jti": "j"
                })
                .to_string()
            }
        ),
        Just(r#"{"iss":"defense-allies-guardian","aud":"defense-allies","exp":99999999999}"#.to_owned()),
    ]
}

fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"alg":"EdDSA","kid":"k1","typ":"JWT"}"#.to_owned()),
        Just(r#"{"alg":"none","kid":"k1"}"#.to_owned()),
        Just(r#"{"alg":"HS256","kid":"k1"}"#.to_owned()),
        Just(r#"{"alg":"EdDSA"}"#.to_owned()),
        ".{0,40}",
    ]
}

fn cases() -> ProptestConfig {
    ProptestConfig { cases: 500, ..ProptestConfig::default() }
}

// One verifier (and one redis-server) for every case of a test, stopped
// with it: a static one was never dropped, and its redis-server outlived
// every test run.

#[test]
fn any_token_text_is_refused_as_unauthenticated() {
    let v = new_verifier();
    proptest!(cases(), |(text in ".{0,300}", dots in "[a-zA-Z0-9_-]{0,30}\\.[a-zA-Z0-9_-]{0,60}\\.[a-zA-Z0-9_-]{0,90}")| {
        for token in [text.as_str(), dots.as_str()] {
            let e = v.runtime.block_on(v.auth.verify(token)).unwrap_err();
            let status = allies_platform::status::to_status(&e);
            prop_assert_eq!(status.code(), tonic::Code::Unauthenticated, "{:?}", status);
            prop_assert!(status.message().len() < 256);
        }
    });
}

#[test]
fn a_correctly_signed_token_with_any_claims_is_verified_or_refused() {
    let v = new_verifier();
    proptest!(cases(), |(header in header(), claims in claims())| {
        let token = signed(&v, &header, &claims);
        // A genuine signature over claims the verifier does not accept (or a
        // session that does not exist) is refused, never a panic.
        if let Err(e) = v.runtime.block_on(v.auth.verify(&token)) {
            let status = allies_platform::status::to_status(&e);
            prop_assert!(matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::Unavailable), "{:?}", status);
        }
    });
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn every_request_of_every_api_with_any_bytes_is_checked_without_panic(
        method in 0usize..200,
        bytes in prop::collection::vec(any::<u8>(), 0..2_000),
    ) {
        let limits = limits();
        let methods: Vec<String> = limits.table().into_iter().map(|(f, _)| f).collect();
        prop_assert!(!methods.is_empty());
        let paths = paths();
        let path = &paths[method % paths.len()];
        if let Err(v) = limits.check(path, &bytes) {
            prop_assert!(!v.is_empty() && v.len() <= 16);
        }
    }

    #[test]
    fn an_error_is_bounded_whatever_it_quotes(
        message in ".{0,5000}",
        fields in prop::collection::vec((".{0,300}", ".{0,3000}"), 0..60),
    ) {
        let mut invalid = Invalid::new();
        for (f, r) in &fields {
            invalid.check(Err(FieldViolation::new(f.clone(), r.clone())));
        }
        for status in [
            allies_platform::status::to_status(&invalid),
            allies_platform::status::to_status(&Failure::new(ErrorCode::FailedPrecondition, message.clone())),
        ] {
            prop_assert!(status.message().len() <= allies_platform::status::MAX_MESSAGE);
            prop_assert!(status.message().len() + status.details().len() < 8 * 1024, "{} bytes", status.details().len());
        }
    }
}

fn limits() -> Arc<Limits> {
    static LIMITS: std::sync::OnceLock<Arc<Limits>> = std::sync::OnceLock::new();
    LIMITS.get_or_init(|| Arc::new(Limits::of_contracts())).clone()
}

/// Every method path of the contracts' services.
fn paths() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(allies_contracts::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for f in &set.file {
        for s in &f.service {
            for m in &s.method {
                out.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
            }
        }
    }
    out
}
