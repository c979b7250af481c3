//! The service platform every service stands on.
//!
//! Owns configuration from the environment ([`config`]), structured logging
//! ([`telemetry`]), the gRPC server bootstrap with `grpc.health.v1`, server
//! reflection and bounded graceful shutdown ([`server`]), and the one mapping
//! from store errors to gRPC statuses ([`status`]).
//!
//! Must not know any bounded context's domain.

pub mod auth;
pub mod config;
pub mod cqrs;
pub mod server;
pub mod status;
pub mod telemetry;

use std::time::{Duration, Instant};

use allies_store::{EventStore, StoreError};

/// Connects the event store, retrying with backoff for up to 30 s so that a
/// service started together with Redis waits for it instead of failing.
pub async fn connect_store(config: &config::ServiceConfig) -> Result<EventStore, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut backoff = Duration::from_millis(100);
    loop {
        match EventStore::connect(&config.redis_url, config.partitions).await {
            Ok(store) => {
                return Ok(store
                    .with_format(config.event_format)
                    .with_snapshot_compression(config.snapshot_compression)
                    .with_snapshot_policy(config.cqrs.snapshots)
                    .with_storage(config.cqrs.storage.clone(), config.cqrs.default_storage));
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, redis = %config.redis_url, "Redis not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}
