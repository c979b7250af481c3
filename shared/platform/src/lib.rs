//! The service platform every service stands on.
//!
//! Owns configuration ([`env`]: the environment read once; [`config`]: a
//! service's typed settings; [`cqrs`]: `configs/cqrs.yaml`), the request
//! context built from gRPC metadata ([`context`]), the one conversion from
//! errors to gRPC statuses ([`status`]), access-token verification
//! ([`auth`]), structured logs ([`telemetry`]), and the service builder
//! ([`service`]: store, executor, auth, gRPC with health and reflection,
//! the HTTP operations endpoint ([`ops`]), background tasks, bounded
//! graceful shutdown).
//!
//! Must not know any bounded context's domain.

pub mod auth;
pub mod caller;
pub mod config;
pub mod context;
pub mod cqrs;
pub mod drain;
pub mod env;
pub mod grpc_metrics;
pub mod limits;
pub mod live;
pub mod ops;
pub mod proxies;
pub mod rate;
pub mod replies;
pub mod server;
pub mod service;
pub mod status;
pub mod telemetry;

pub use config::ServiceConfig;
pub use context::RequestContext;
pub use replies::Replies;
pub use service::{Service, ServiceBuilder, connect_store};
pub use status::{IntoStatus, OrStatus};

/// The services' global allocator (mimalloc): every binary declares
/// `#[global_allocator] static ALLOC: allies_platform::Allocator = allies_platform::Allocator;`.
/// glibc's malloc and free were a tenth of a projector worker's time in a
/// profile of `projection_bench`; the figures before and after are in the README.
pub use mimalloc::MiMalloc as Allocator;
