//! What the projector adds to the platform's operations endpoint: its
//! readiness (projections running, no breaker open) and the gauges read
//! from Redis at scrape time — consumer lag, pending entries and dead-letter
//! depth per projection, published events per aggregate type, breaker state.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use allies_store::breaker::BreakerState;
use allies_store::subscriber::group_position;
use allies_store::{RedisConn, keys};

use crate::manager::Manager;

/// Ok when the projections run and no breaker is open.
pub async fn ready(manager: &Manager, running: &AtomicBool) -> Result<(), String> {
    if !running.load(Ordering::SeqCst) {
        return Err("projections are not running".into());
    }
    for name in manager.registry().names() {
        if manager.breaker(name).is_some_and(|b| b.state() == BreakerState::Open) {
            return Err(format!("the circuit breaker of {name} is open"));
        }
    }
    Ok(())
}

/// The scrape-time gauges, as Prometheus exposition text.
pub async fn gauges(manager: Arc<Manager>, conn: RedisConn) -> String {
    let mut conn = conn;
    let (mut lag_lines, mut pending_lines, mut dlq_lines, mut breaker_lines) =
        (String::new(), String::new(), String::new(), String::new());
    for projection in manager.registry().all() {
        let group = manager.generation(projection.name()).group;
        let (mut lag, mut pending, mut dead) = (0u64, 0u64, 0u64);
        for source in projection.sources() {
            for p in 0..manager.partitions() {
                let log = keys::log_key(source, p);
                if let Ok(Some(pos)) = group_position(&mut conn, &log, &group).await {
                    lag += pos.lag;
                    pending += pos.pending;
                }
                let dlq = keys::dead_letter_key(source, p, &group);
                dead += redis::cmd("XLEN").arg(&dlq).query_async::<u64>(&mut conn).await.unwrap_or(0);
            }
        }
        let _ = writeln!(lag_lines, "allies_consumer_lag{{group=\"{group}\"}} {lag}");
        let _ = writeln!(pending_lines, "allies_consumer_pending{{group=\"{group}\"}} {pending}");
        let _ = writeln!(dlq_lines, "allies_dead_letters{{group=\"{group}\"}} {dead}");
        let state = match manager.breaker(projection.name()).map(|b| b.state()) {
            Some(BreakerState::Open) => 2,
            Some(BreakerState::HalfOpen) => 1,
            _ => 0,
        };
        let _ = writeln!(breaker_lines, "allies_breaker_state{{group=\"{}\"}} {state}", projection.name());
    }
    let mut published = String::new();
    for source in manager.registry().sources() {
        let mut n = 0u64;
        for p in 0..manager.partitions() {
            n += redis::cmd("XLEN").arg(keys::log_key(source, p)).query_async::<u64>(&mut conn).await.unwrap_or(0);
        }
        let _ = writeln!(published, "allies_events_published{{aggregate_type=\"{source}\"}} {n}");
    }
    // Redis's own memory, for the dashboard (one scrape of INFO memory).
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap_or_default();
    let memory = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .map(|v| format!("allies_redis_used_memory_bytes {}\n", v.trim()))
        .unwrap_or_default();
    let mut out = String::new();
    for (name, kind, help, lines) in [
        ("allies_consumer_lag", "gauge", "Entries in the partition logs the projection has not read yet.", lag_lines),
        (
            "allies_consumer_pending",
            "gauge",
            "Entries delivered to the projection and not yet acknowledged.",
            pending_lines,
        ),
        ("allies_dead_letters", "gauge", "Entries in the projection's dead-letter streams.", dlq_lines),
        ("allies_events_published", "gauge", "Entries in the partition logs of an aggregate type.", published),
        (
            "allies_breaker_state",
            "gauge",
            "Circuit breaker per projection: 0 closed, 1 half-open, 2 open.",
            breaker_lines,
        ),
        ("allies_redis_used_memory_bytes", "gauge", "Memory Redis uses (INFO used_memory).", memory),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        out.push_str(&lines);
    }
    out
}
