//! Guardian: the authentication context's service.
//!
//! The domain (User, Session) lives in `guardian-domain`; this crate is the
//! use cases ([`app`]), password hashing ([`password`]), signing keys
//! ([`keys`]), login rate limits ([`ratelimit`]) and the thin gRPC layer
//! ([`grpc`]), on the platform's service builder. Must not know about read
//! models: the projector builds those from Guardian's events.

use allies_core::settings as table;
use std::sync::Arc;

use allies_contracts::guardian::v1::guardian_service_server::GuardianServiceServer;
use allies_platform::auth::KeySource;
use allies_platform::{Service, ServiceBuilder, ServiceConfig};

pub mod app;
pub mod grpc;
pub mod integration;
pub mod keys;
pub mod password;
pub mod ratelimit;

/// Builds Guardian on `config` (binds its ports; run it with `run_until`).
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let settings = app::Settings::from_env(&config.env, config.auth.clone(), &config.data_dir)?;
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let keys = keys::KeyRing::from_settings(&settings.keys, now_secs)?;
    tracing::info!(active_kid = keys.active_kid(), keys = keys.jwks().len(), "signing keys loaded");

    let mut builder = ServiceBuilder::new(config).await?;
    // Guardian verifies its own tokens with its own keys.
    builder.set_key_source(KeySource::Static(keys.jwks().to_vec()));
    let hasher = password::PasswordHasher::start(settings.argon2_threads);
    // The login rate limits and the lockout follow the live configuration:
    // a key an operator set wins, every other keeps the environment's value.
    let deployed = settings.rate;
    let rate = builder.live_setting("live rate limits", deployed, move |c| ratelimit::RateSettings::live(c, deployed));
    let deployed = settings.lockout;
    let lockout = builder.live_setting("live lockout", deployed, move |c| guardian_domain::user::LockoutPolicy {
        max_failures: c.int(&table::LOCKOUT_MAX_FAILURES, deployed.max_failures.into()) as u32,
        lock_ms: c.int(&table::LOCKOUT, deployed.lock_ms / 1000) * 1000,
    });
    let limiter = ratelimit::RateLimiter::new(builder.store().connection(), rate);
    let guardian = Arc::new(app::Guardian::new(builder.executor(), hasher, keys, settings, limiter, lockout).await?);
    let api = grpc::GuardianApi { guardian, auth: builder.auth(), replies: builder.replies() };
    builder.add_service(GuardianServiceServer::new(api));
    Ok(builder.bind().await?)
}
