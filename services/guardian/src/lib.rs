//! Guardian: the authentication context.
//!
//! Owns the User and Session aggregates ([`domain`], [`session`]), the use
//! cases ([`app`]), password hashing ([`password`]), signing keys ([`keys`]),
//! login rate limits ([`ratelimit`]) and the gRPC API ([`grpc`]). Stands on
//! the core (deciders), the store (events) and the platform (server, config,
//! token verification). Must not know about read models: the projector
//! builds those from Guardian's events.

use std::future::Future;
use std::sync::Arc;

use allies_contracts::guardian::v1::guardian_service_server::GuardianServiceServer;
use allies_platform::auth::{Authenticator, KeySource};
use allies_platform::config::ServiceConfig;
use allies_platform::server::GrpcServer;
use tokio::net::TcpListener;
use tonic::server::NamedService;

pub mod app;
pub mod domain;
pub mod grpc;
pub mod keys;
pub mod password;
pub mod ratelimit;
pub mod session;

/// Runs Guardian on `listener` until `shutdown` resolves.
pub async fn serve(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut settings = app::Settings::from_env()?;
    settings.idempotency_ttl = config.cqrs.idempotency_ttl;
    let keys_dir = std::env::var("JWT_KEYS_DIR").map(Into::into).unwrap_or_else(|_| config.data_dir.join("keys"));
    let env_key = std::env::var("JWT_SIGNING_KEY")
        .ok()
        .map(|pem| (std::env::var("JWT_SIGNING_KID").unwrap_or_else(|_| "env".into()), pem));
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let keys = keys::KeyRing::load(
        &keys_dir,
        env_key,
        std::env::var("JWT_ACTIVE_KID").ok(),
        keys::Mode::from_env(),
        now_secs,
    )?;
    tracing::info!(active_kid = keys.active_kid(), keys = keys.jwks().len(), "signing keys loaded");

    let store = allies_platform::connect_store(&config).await?;
    let hasher = password::PasswordHasher::start(hash_threads());
    let auth = Authenticator::new(settings.auth.clone(), KeySource::Static(keys.jwks().to_vec()), store.clone());
    let guardian = app::Guardian::new(store, hasher, keys, settings).await?;

    let mut server = GrpcServer::new()?;
    let api = grpc::GuardianApi { guardian: Arc::new(guardian), auth: Arc::new(auth) };
    server.routes.add_service(GuardianServiceServer::new(api));
    server.report_health(GuardianServiceServer::<grpc::GuardianApi>::NAME);
    server.serve(listener, config.shutdown_grace, shutdown).await?;
    Ok(())
}

/// `ARGON2_THREADS`, default one per core.
fn hash_threads() -> usize {
    std::env::var("ARGON2_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
}
