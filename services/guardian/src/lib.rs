//! Guardian: the authentication context's service.
//!
//! The domain (User, Session) lives in `guardian-domain`; this crate is the
//! use cases ([`app`]), password hashing ([`password`]), signing keys
//! ([`keys`]), login rate limits ([`ratelimit`]) and the thin gRPC layer
//! ([`grpc`]), on the platform's service builder. Must not know about read
//! models: the projector builds those from Guardian's events.

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
    // The login rate limits follow the live configuration (once one was
    // ever written; until then the environment's values hold).
    let from_env = settings.rate;
    let now = ratelimit::RateSettings::live(&builder.live_config().borrow(), from_env);
    let limiter = ratelimit::RateLimiter::new(builder.store().connection(), now);
    let guardian = Arc::new(app::Guardian::new(builder.executor(), hasher, keys, settings, limiter).await?);
    let g = guardian.clone();
    builder.on_live_config("live rate limits", move |c| {
        g.limiter.set(ratelimit::RateSettings::live(&c, from_env));
        std::future::ready(())
    });
    let api = grpc::GuardianApi { guardian, auth: builder.auth() };
    builder.add_service(GuardianServiceServer::new(api));
    Ok(builder.bind().await?)
}
