//! Guardian's signing keys: Ed25519, one active (signs), all listed in the
//! JWKS (verify) — so a rotation is "add the new key and make it active;
//! remove the old one after the access-token lifetime".
//!
//! Keys are PKCS#8 PEM files `<kid>.pem` in `JWT_KEYS_DIR` (a mounted
//! Kubernetes secret, say), plus optionally one key in the environment
//! (`JWT_SIGNING_KEY` PEM with `JWT_SIGNING_KID`). The active key is
//! `JWT_ACTIVE_KID`, else the env key, else the last kid in sort order.
//! In development (`ALLIES_ENV` unset or `development`) a missing key is
//! generated once into the directory (default `.data/keys`); in production
//! Guardian refuses to start without keys.

use allies_core::settings as table;
use std::path::{Path, PathBuf};

use allies_contracts::guardian::v1::Jwk;
use allies_platform::auth::AccessClaims;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no signing key: production mode needs JWT_KEYS_DIR with <kid>.pem files or JWT_SIGNING_KEY")]
    Missing,
    #[error("key {kid}: {reason}")]
    Invalid { kid: String, reason: String },
    #[error("JWT_ACTIVE_KID={0} names no loaded key")]
    UnknownActive(String),
    #[error("key directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing failed: {0}")]
    Sign(String),
}

struct LoadedKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

pub struct KeyRing {
    active_kid: String,
    encoding: EncodingKey,
    jwks: Vec<Jwk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Development,
    Production,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "production" | "prod" => Ok(Self::Production),
            "development" | "dev" => Ok(Self::Development),
            other => Err(format!("unknown environment '{other}' (development or production)")),
        }
    }
}

/// Where the signing keys come from (see the module documentation).
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// `JWT_KEYS_DIR`, default `<ALLIES_DATA_DIR>/keys`.
    pub dir: PathBuf,
    /// `JWT_SIGNING_KEY` (PEM) with `JWT_SIGNING_KID` (default `env`).
    pub env_key: Option<(String, String)>,
    /// `JWT_ACTIVE_KID`.
    pub active: Option<String>,
    /// `ALLIES_ENV`: `development` (default) or `production`.
    pub mode: Mode,
}

impl KeySettings {
    pub fn from_env(
        env: &allies_platform::config::Env,
        data_dir: &Path,
    ) -> Result<Self, allies_platform::config::ConfigError> {
        Ok(Self {
            dir: env
                .value_opt::<String>(&table::JWT_KEYS_DIR)?
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("keys")),
            env_key: env
                .value_opt::<String>(&table::JWT_SIGNING_KEY)?
                .map(|pem| (env.value(&table::JWT_SIGNING_KID).unwrap_or_else(|_| "env".into()), pem)),
            active: env.value_opt(&table::JWT_ACTIVE_KID)?,
            mode: env.value(&table::ENVIRONMENT)?,
        })
    }
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= 64 && kid.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn parse_pem(kid: &str, pem: &str) -> Result<LoadedKey, KeyError> {
    let invalid = |reason: &str| KeyError::Invalid { kid: kid.to_owned(), reason: reason.to_owned() };
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err(invalid("not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----)"));
    }
    let der = STANDARD.decode(body).map_err(|_| invalid("bad base64 in PEM"))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| invalid("not an Ed25519 key"))?;
    Ok(LoadedKey { kid: kid.to_owned(), public: pair.public_key().as_ref().to_vec(), pkcs8: der })
}

fn to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
}

/// Generates a new Ed25519 key as PKCS#8 PEM.
pub fn generate_pem() -> Result<String, KeyError> {
    let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| KeyError::Sign("key generation failed".into()))?;
    Ok(to_pem(doc.as_ref()))
}

fn read_dir(dir: &Path) -> Result<Vec<LoadedKey>, KeyError> {
    let io = |source| KeyError::Io { path: dir.to_owned(), source };
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let (Some(stem), Some("pem")) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
        else {
            continue;
        };
        if !valid_kid(stem) {
            return Err(KeyError::Invalid { kid: stem.to_owned(), reason: "kid must be [A-Za-z0-9._-]{1,64}".into() });
        }
        let pem = std::fs::read_to_string(&path).map_err(io)?;
        keys.push(parse_pem(stem, &pem)?);
    }
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    Ok(keys)
}

impl KeyRing {
    /// Loads the keys the settings name.
    pub fn from_settings(settings: &KeySettings, now_secs: i64) -> Result<Self, KeyError> {
        Self::load(&settings.dir, settings.env_key.clone(), settings.active.clone(), settings.mode, now_secs)
    }

    /// Loads keys as the module documentation describes.
    pub fn load(
        dir: &Path,
        env_key: Option<(String, String)>,
        active: Option<String>,
        mode: Mode,
        now_secs: i64,
    ) -> Result<Self, KeyError> {
        let mut keys = read_dir(dir)?;
        let mut default_active = keys.last().map(|k| k.kid.clone());
        if let Some((kid, pem)) = env_key {
            if !valid_kid(&kid) {
                return Err(KeyError::Invalid { kid, reason: "kid must be [A-Za-z0-9._-]{1,64}".into() });
            }
            default_active = Some(kid.clone());
            keys.retain(|k| k.kid != kid);
            keys.push(parse_pem(&kid, &pem)?);
        }
        if keys.is_empty() {
            if mode == Mode::Production {
                return Err(KeyError::Missing);
            }
            let kid = format!("dev-{now_secs}");
            let pem = generate_pem()?;
            write_private(&dir.join(format!("{kid}.pem")), &pem)?;
            tracing::warn!(kid, dir = %dir.display(), "development mode: generated a signing key");
            keys.push(parse_pem(&kid, &pem)?);
            default_active = Some(kid);
        }
        let active_kid = match active.filter(|a| !a.is_empty()) {
            Some(a) if keys.iter().any(|k| k.kid == a) => a,
            Some(a) => return Err(KeyError::UnknownActive(a)),
            None => default_active.ok_or(KeyError::Missing)?,
        };
        let signing = keys.iter().find(|k| k.kid == active_kid).ok_or(KeyError::Missing)?;
        let jwks = keys
            .iter()
            .map(|k| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(&k.public),
                kid: k.kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Ok(Self { encoding: EncodingKey::from_ed_der(&signing.pkcs8), active_kid, jwks })
    }

    pub fn active_kid(&self) -> &str {
        &self.active_kid
    }

    /// Public keys of every loaded key.
    pub fn jwks(&self) -> &[Jwk] {
        &self.jwks
    }

    /// Signs access-token claims with the active key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.active_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| KeyError::Sign(e.to_string()))
    }
}

fn write_private(path: &Path, pem: &str) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_mode_generates_a_key_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeyRing::load(dir.path(), None, None, Mode::Development, 100).unwrap();
        assert_eq!(a.active_kid(), "dev-100");
        let b = KeyRing::load(dir.path(), None, None, Mode::Development, 200).unwrap();
        assert_eq!(b.active_kid(), "dev-100", "the generated key is reused");
        assert_eq!(a.jwks(), b.jwks());
        let mode = std::fs::metadata(dir.path().join("dev-100.pem")).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn production_mode_refuses_to_start_without_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(KeyRing::load(dir.path(), None, None, Mode::Production, 1), Err(KeyError::Missing)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing generated");
    }

    #[test]
    fn rotation_signs_with_the_new_key_and_lists_both() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("2026-01.pem"), generate_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join("2026-02.pem"), generate_pem().unwrap()).unwrap();
        let ring = KeyRing::load(dir.path(), None, None, Mode::Production, 1).unwrap();
        assert_eq!(ring.active_kid(), "2026-02", "the newest kid signs");
        let kids: Vec<&str> = ring.jwks().iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["2026-01", "2026-02"]);
        let pinned = KeyRing::load(dir.path(), None, Some("2026-01".into()), Mode::Production, 1).unwrap();
        assert_eq!(pinned.active_kid(), "2026-01");
        assert!(matches!(
            KeyRing::load(dir.path(), None, Some("nope".into()), Mode::Production, 1),
            Err(KeyError::UnknownActive(_))
        ));
    }

    #[test]
    fn a_key_from_the_environment_signs() {
        let dir = tempfile::tempdir().unwrap();
        let env = Some(("k8s-1".to_owned(), generate_pem().unwrap()));
        let ring = KeyRing::load(dir.path(), env, None, Mode::Production, 1).unwrap();
        assert_eq!(ring.active_kid(), "k8s-1");
        let bad = Some(("k8s-1".to_owned(), "garbage".to_owned()));
        assert!(matches!(KeyRing::load(dir.path(), bad, None, Mode::Production, 1), Err(KeyError::Invalid { .. })));
    }

    /// A key as `openssl genpkey -algorithm ed25519` writes it (PKCS#8 v1,
    /// no public key inside) — the documented way to make production keys.
    const OPENSSL_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINgTHr5Nzit2uQ9bre8vWFOvGm/SeJBYQrHpGUT4r/xT\n-----END PRIVATE KEY-----\n";

    #[test]
    fn openssl_generated_keys_load_and_sign_verifiable_tokens() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ops-1.pem"), OPENSSL_KEY).unwrap();
        let ring = KeyRing::load(dir.path(), None, None, Mode::Production, 1).unwrap();
        let claims = AccessClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "u".into(),
            sid: "s".into(),
            roles: vec!["player".into()],
            iat: 1,
            exp: i64::MAX / 2,
            jti: "j".into(),
            name: String::new(),
        };
        let token = ring.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::EdDSA, Some("ops-1")));
        let key = jsonwebtoken::DecodingKey::from_ed_components(&ring.jwks()[0].x).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        v.set_audience(&["a"]);
        let back = jsonwebtoken::decode::<AccessClaims>(&token, &key, &v).unwrap();
        assert_eq!(back.claims, claims);
    }
}
