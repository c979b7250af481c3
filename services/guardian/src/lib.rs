//! Guardian: the authentication context.
//!
//! Owns the User aggregate ([`domain`]), registration ([`registration`]) and
//! the gRPC API ([`grpc`]). Stands on the core (deciders), the store (events)
//! and the platform (server, config). Must not know about read models: the
//! projector builds those from Guardian's events.

use std::future::Future;

use allies_contracts::guardian::v1::guardian_service_server::GuardianServiceServer;
use allies_platform::config::ServiceConfig;
use allies_platform::server::GrpcServer;
use tokio::net::TcpListener;
use tonic::server::NamedService;

pub mod domain;
pub mod grpc;
pub mod password;
pub mod registration;

/// Runs Guardian on `listener` until `shutdown` resolves.
pub async fn serve(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let store = allies_platform::connect_store(&config).await?;
    let mut server = GrpcServer::new()?;
    server
        .routes
        .add_service(GuardianServiceServer::new(grpc::GuardianApi {
            store,
            hasher: password::PasswordHasher::start(hash_threads()),
        }));
    server.report_health(GuardianServiceServer::<grpc::GuardianApi>::NAME);
    server
        .serve(listener, config.shutdown_grace, shutdown)
        .await?;
    Ok(())
}

/// `ARGON2_THREADS`, default one per core.
fn hash_threads() -> usize {
    std::env::var("ARGON2_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
}
