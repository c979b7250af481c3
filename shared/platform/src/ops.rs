//! The operations endpoint every service serves over HTTP (`<NAME>_HTTP_ADDR`):
//! `/healthz` (the process is up), `/readyz` (Redis answers and every
//! readiness check of the service passes; 503 with the reason otherwise)
//! and `/metrics` (Prometheus text: the registry, then what the service
//! reads at scrape time).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::future::BoxFuture;
use prometheus_client::registry::Registry;

/// A readiness check: Ok, or why the service is not ready.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;
/// Text appended to `/metrics`, read at scrape time.
pub type Scrape = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

pub(crate) struct Ops {
    pub registry: Registry,
    pub readiness: Readiness,
    pub scrapes: Vec<Scrape>,
}

/// How long readiness waits for Redis's PONG.
pub const PING_TIMEOUT: Duration = Duration::from_millis(400);
/// How often gRPC health re-evaluates readiness: with [`PING_TIMEOUT`], a
/// stalled Redis turns every service NOT_SERVING within 650 ms.
pub const HEALTH_EVERY: Duration = Duration::from_millis(250);

/// Redis and the service's own checks.
#[derive(Clone)]
pub struct Readiness {
    pub(crate) redis: allies_store::RedisConn,
    pub(crate) checks: Vec<(&'static str, ReadinessCheck)>,
}

impl Readiness {
    /// Whether Redis answers PING within [`PING_TIMEOUT`].
    pub async fn redis_ok(&self) -> bool {
        let mut conn = self.redis.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    /// Ok when ready, else the first reason it is not.
    pub async fn check(&self) -> Result<(), String> {
        if !self.redis_ok().await {
            return Err("redis is not reachable".into());
        }
        for (name, check) in &self.checks {
            check().await.map_err(|why| format!("{name}: {why}"))?;
        }
        Ok(())
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut text, &ops.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("encode: {e}"));
    }
    for scrape in &ops.scrapes {
        text.push_str(&scrape().await);
    }
    text.push_str(&format!(
        "# HELP allies_redis_errors Redis errors the store met (connection, timeout, script).\n# TYPE allies_redis_errors counter\nallies_redis_errors_total {}\n",
        allies_store::redis_errors()
    ));
    text.push_str("# EOF\n");
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

async fn readyz(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    match ops.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

pub(crate) fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}
