//! The projector's operations endpoint (HTTP, `PROJECTOR_HTTP_ADDR`,
//! default 127.0.0.1:9464): `/healthz` (the process is up), `/readyz` (Redis
//! answers and the projections run) and `/metrics` (Prometheus: processed,
//! failed, dead-lettered and claimed entries, handler latency, and — read from
//! Redis at scrape time — published events, consumer lag, pending entries and
//! dead-letter depth per projection).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use allies_store::{RedisConn, keys};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use redis::Value;

pub use crate::manager::PROJECTIONS;

pub struct Ops {
    pub registry: Registry,
    pub conn: RedisConn,
    pub partitions: u32,
    /// False once the projections stopped.
    pub running: Arc<AtomicBool>,
    /// Each projection's circuit breaker.
    pub breakers: Vec<(&'static str, Arc<allies_store::breaker::CircuitBreaker>)>,
    /// Which generation (consumer group) of each projection is live.
    pub manager: Arc<crate::manager::Manager>,
}

impl Ops {
    /// Whether Redis answers PING within a second.
    pub async fn redis_ok(&self) -> bool {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(_)))
    }

    pub async fn ready(&self) -> Result<(), String> {
        if !self.running.load(Ordering::SeqCst) {
            return Err("projections are not running".into());
        }
        if !self.redis_ok().await {
            return Err("redis is not reachable".into());
        }
        for (group, b) in &self.breakers {
            if b.state() == allies_store::breaker::BreakerState::Open {
                return Err(format!("the circuit breaker of {group} is open"));
            }
        }
        Ok(())
    }
}

fn int_field(fields: &[Value], name: &str) -> Option<i64> {
    fields.chunks(2).find(|kv| k_is(&kv[0], name)).and_then(|kv| match kv.get(1)? {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    })
}

fn k_is(v: &Value, name: &str) -> bool {
    match v {
        Value::BulkString(b) => b == name.as_bytes(),
        Value::SimpleString(s) => s == name,
        _ => false,
    }
}

/// Lag, pending and last delivered id of `group` on one log (XINFO GROUPS; lag needs Redis 7).
pub async fn group_position(conn: &mut RedisConn, log: &str, group: &str) -> (i64, i64, String) {
    let Ok(Value::Array(groups)) = redis::cmd("XINFO").arg("GROUPS").arg(log).query_async::<Value>(conn).await else {
        return (0, 0, "0-0".into());
    };
    for g in groups {
        let fields = match g {
            Value::Array(f) => f,
            Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => continue,
        };
        let is_group = fields.chunks(2).any(|kv| k_is(&kv[0], "name") && kv.get(1).is_some_and(|v| k_is(v, group)));
        if is_group {
            let last = fields
                .chunks(2)
                .find(|kv| k_is(&kv[0], "last-delivered-id"))
                .and_then(|kv| match kv.get(1)? {
                    Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
                    Value::SimpleString(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "0-0".into());
            return (int_field(&fields, "lag").unwrap_or(0), int_field(&fields, "pending").unwrap_or(0), last);
        }
    }
    (0, 0, "0-0".into())
}

/// Lag and pending of `group` on one log (XINFO GROUPS; lag needs Redis 7).
async fn group_info(conn: &mut RedisConn, log: &str, group: &str) -> (i64, i64) {
    let Ok(Value::Array(groups)) = redis::cmd("XINFO").arg("GROUPS").arg(log).query_async::<Value>(conn).await else {
        return (0, 0);
    };
    for g in groups {
        let fields = match g {
            Value::Array(f) => f,
            Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => continue,
        };
        let is_group = fields.chunks(2).any(|kv| k_is(&kv[0], "name") && kv.get(1).is_some_and(|v| k_is(v, group)));
        if is_group {
            return (int_field(&fields, "lag").unwrap_or(0), int_field(&fields, "pending").unwrap_or(0));
        }
    }
    (0, 0)
}

async fn scrape_gauges(ops: &Ops) -> String {
    let mut conn = ops.conn.clone();
    let mut out = String::new();
    out.push_str("# HELP allies_consumer_lag Entries in the partition logs the projection has not read yet.\n");
    out.push_str("# TYPE allies_consumer_lag gauge\n");
    let mut pending_lines = String::new();
    let mut dlq_lines = String::new();
    let mut published_lines = String::new();
    for (name, aggregate_type) in PROJECTIONS {
        let live_group = ops.manager.generation(name).group;
        let group = live_group.as_str();
        let (mut lag, mut pending, mut dead, mut published) = (0i64, 0i64, 0i64, 0i64);
        for p in 0..ops.partitions {
            let log = keys::log_key(aggregate_type, p);
            let (l, pe) = group_info(&mut conn, &log, group).await;
            lag += l;
            pending += pe;
            let dlq = keys::dead_letter_key(aggregate_type, p, group);
            dead += redis::cmd("XLEN").arg(&dlq).query_async::<i64>(&mut conn).await.unwrap_or(0);
            published += redis::cmd("XLEN").arg(&log).query_async::<i64>(&mut conn).await.unwrap_or(0);
        }
        out.push_str(&format!("allies_consumer_lag{{group=\"{group}\"}} {lag}\n"));
        pending_lines.push_str(&format!("allies_consumer_pending{{group=\"{group}\"}} {pending}\n"));
        dlq_lines.push_str(&format!("allies_dead_letters{{group=\"{group}\"}} {dead}\n"));
        published_lines
            .push_str(&format!("allies_events_published{{aggregate_type=\"{aggregate_type}\"}} {published}\n"));
    }
    out.push_str("# HELP allies_consumer_pending Entries delivered to the projection and not yet acknowledged.\n");
    out.push_str("# TYPE allies_consumer_pending gauge\n");
    out.push_str(&pending_lines);
    out.push_str("# HELP allies_dead_letters Entries in the projection's dead-letter streams.\n");
    out.push_str("# TYPE allies_dead_letters gauge\n");
    out.push_str(&dlq_lines);
    out.push_str("# HELP allies_events_published Entries in the partition logs of an aggregate type.\n");
    out.push_str("# TYPE allies_events_published gauge\n");
    out.push_str(&published_lines);
    out.push_str("# HELP allies_breaker_state Circuit breaker per projection: 0 closed, 1 half-open, 2 open.\n");
    out.push_str("# TYPE allies_breaker_state gauge\n");
    for (group, b) in &ops.breakers {
        let v = match b.state() {
            allies_store::breaker::BreakerState::Closed => 0,
            allies_store::breaker::BreakerState::HalfOpen => 1,
            allies_store::breaker::BreakerState::Open => 2,
        };
        out.push_str(&format!("allies_breaker_state{{group=\"{group}\"}} {v}\n"));
    }
    out
}

async fn metrics(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut text, &ops.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("encode: {e}"));
    }
    text.push_str(&scrape_gauges(&ops).await);
    text.push_str("# EOF\n");
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

async fn readyz(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    match ops.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

pub fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}
