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

struct Job {
    password: String,
    reply: oneshot::Sender<Result<String, HashError>>,
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
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
                    let mut memory = vec![Block::default(); params().block_count()];
                    loop {
                        let job = match rx.lock() {
                            Ok(mut guard) => guard.blocking_recv(),
                            Err(_) => None,
                        };
                        let Some(job) = job else { return };
                        let _ = job
                            .reply
                            .send(hash_with(&argon, &job.password, &mut memory));
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
        self.jobs
            .send(Job {
                password: password.to_owned(),
                reply,
            })
            .await
            .map_err(|_| HashError::Stopped)?;
        answer.await.map_err(|_| HashError::Stopped)?
    }
}

fn hash_with(
    argon: &Argon2<'_>,
    password: &str,
    memory: &mut [Block],
) -> Result<String, HashError> {
    let err = |e: &dyn std::fmt::Display| HashError::Argon2(e.to_string());
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut *memory)
        .map_err(|e| err(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| err(&e))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: (&params())
            .try_into()
            .map_err(|e: password_hash::Error| err(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| err(&e))?),
    };
    Ok(hash.to_string())
}

/// Checks a password against a stored PHC string (any Argon2 variant and
/// parameters the string names).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
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
    async fn a_burst_is_served_by_the_fixed_threads() {
        let hasher = PasswordHasher::start(2);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let h = hasher.clone();
            tasks.push(tokio::spawn(async move {
                h.hash(&format!("password-{i}")).await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let phc = t.await.unwrap().unwrap();
            assert!(verify(&format!("password-{i}"), &phc));
        }
    }
}
