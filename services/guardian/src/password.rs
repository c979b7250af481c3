//! Argon2id password hashing on a fixed pool of threads.
//!
//! Argon2id is deliberately expensive: 19 MiB and ~2 passes over it per hash
//! (OWASP's recommended m = 19456 KiB, t = 2, p = 1). Hashing on Tokio's
//! blocking pool let a burst of registrations start a thread and a fresh
//! 19 MiB allocation per request; glibc kept those arenas, and Guardian's RSS
//! reached 4.7 GiB after 10,000 registrations. Here a fixed number of worker
//! threads (default: one per core) each own one reused memory buffer, so
//! memory is bounded by `threads × 19 MiB` and CPU by `threads`; requests
//! beyond that queue (bounded) and give up with their deadline.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use password_hash::rand_core::{OsRng, RngCore};
use password_hash::{Output, PasswordHash, PasswordVerifier, SaltString};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hasher is shut down")]
    Stopped,
    #[error("argon2: {0}")]
    Argon2(String),
}

enum Job {
    Hash { password: String, reply: oneshot::Sender<Result<String, HashError>> },
    Verify { password: String, phc: String, reply: oneshot::Sender<bool> },
}

/// Handle to the hashing threads. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: mpsc::Sender<Job>,
}

/// The parameters every new hash uses.
pub fn params() -> Params {
    Params::DEFAULT
}

impl PasswordHasher {
    /// Starts `threads` hashing threads (at least one).
    pub fn start(threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>(threads * 64);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
                let mut memory = vec![Block::default(); params().block_count()];
                loop {
                    let job = match rx.lock() {
                        Ok(mut guard) => guard.blocking_recv(),
                        Err(_) => None,
                    };
                    match job {
                        Some(Job::Hash { password, reply }) => {
                            let _ = reply.send(hash_with(&argon, &password, &mut memory));
                        }
                        Some(Job::Verify { password, phc, reply }) => {
                            let _ = reply.send(verify_with(&argon, &password, &phc, &mut memory));
                        }
                        None => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self { jobs: tx }
    }

    /// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Hash { password: password.to_owned(), reply };
        self.jobs.send(job).await.map_err(|_| HashError::Stopped)?;
        answer.await.map_err(|_| HashError::Stopped)?
    }

    /// Checks a password against a stored PHC string, on the pool. False for
    /// a wrong password or an unreadable hash.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, HashError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Verify { password: password.to_owned(), phc: phc.to_owned(), reply };
        self.jobs.send(job).await.map_err(|_| HashError::Stopped)?;
        answer.await.map_err(|_| HashError::Stopped)
    }
}

fn hash_with(argon: &Argon2<'_>, password: &str, memory: &mut [Block]) -> Result<String, HashError> {
    let err = |e: &dyn std::fmt::Display| HashError::Argon2(e.to_string());
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut *memory).map_err(|e| err(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| err(&e))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: (&params()).try_into().map_err(|e: password_hash::Error| err(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| err(&e))?),
    };
    Ok(hash.to_string())
}

/// Verifies with the thread's reused memory when the hash uses the current
/// parameters (the common case), else with a one-off allocation.
fn verify_with(argon: &Argon2<'_>, password: &str, phc: &str, memory: &mut [Block]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let current = parsed.algorithm == argon2::ARGON2ID_IDENT
        && parsed.version == Some(Version::V0x13.into())
        && Params::try_from(&parsed).is_ok_and(|p| p == params());
    let (Some(salt), Some(expected), true) = (parsed.salt, parsed.hash, current) else {
        return verify(password, phc);
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    if expected.len() != out.len()
        || argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory).is_err()
    {
        return false;
    }
    // Constant time: password_hash's Output compares in constant time.
    Output::new(&out).is_ok_and(|o| o == expected)
}

/// Checks a password against a stored PHC string (any Argon2 variant and
/// parameters the string names).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_that_verify() {
        let hasher = PasswordHasher::start(2);
        let a = hasher.hash("correct-horse-9").await.unwrap();
        let b = hasher.hash("correct-horse-9").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "every hash has its own salt");
        assert!(verify("correct-horse-9", &a));
        assert!(verify("correct-horse-9", &b));
        assert!(!verify("correct-horse-8", &a));
        assert!(!verify("correct-horse-9", "not a hash"));
    }

    #[tokio::test]
    async fn the_pool_verifies_its_own_and_foreign_parameter_hashes() {
        let hasher = PasswordHasher::start(1);
        let phc = hasher.hash("correct-horse-9").await.unwrap();
        assert!(hasher.verify("correct-horse-9", &phc).await.unwrap());
        assert!(!hasher.verify("correct-horse-8", &phc).await.unwrap());
        assert!(!hasher.verify("correct-horse-9", "garbage").await.unwrap());
        // A hash made with other parameters (an older policy) still verifies.
        use password_hash::PasswordHasher as _;
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8192, 1, 1, None).unwrap())
            .hash_password(b"old-secret-1", &SaltString::encode_b64(b"0123456789abcdef").unwrap())
            .unwrap()
            .to_string();
        assert!(hasher.verify("old-secret-1", &old).await.unwrap());
        assert!(!hasher.verify("old-secret-2", &old).await.unwrap());
    }

    #[tokio::test]
    async fn a_burst_is_served_by_the_fixed_threads() {
        let hasher = PasswordHasher::start(2);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let h = hasher.clone();
            tasks.push(tokio::spawn(async move { h.hash(&format!("password-{i}")).await }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let phc = t.await.unwrap().unwrap();
            assert!(verify(&format!("password-{i}"), &phc));
        }
    }
}
