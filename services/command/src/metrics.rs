//! SystemMetrics: every interval the command service samples the fleet —
//! each instance's `/metrics` (the instances register their operations
//! endpoint in `fleet:instances`) and Redis `INFO` — into retained time
//! series (one sorted set per series, `{sm}:<name>` — one hash tag, so one
//! pipeline stores a sample on Redis Cluster; score = time), trimmed to
//! the retention; `GetSystemMetrics(range, step)` reads them back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use allies_contracts::command::v1::system_metrics_service_server::SystemMetricsService;
use allies_contracts::command::v1::*;
use allies_core::Invalid;
use allies_platform::auth::Authenticator;
use allies_platform::live::INSTANCES;
use allies_platform::status::OrStatus;
use allies_store::{RedisConn, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Every series the sampler writes.
pub const SERIES: &[&str] = &[
    "fleet.instances",
    "fleet.instances_up",
    "fleet.grpc_requests_total",
    "fleet.grpc_errors_total",
    "fleet.commands_total",
    "fleet.redis_errors_total",
    "projection.lag",
    "projection.dead_letters",
    "events.stored",
    "redis.used_memory_bytes",
    "redis.ops_per_sec",
    "redis.connected_clients",
];

pub fn key(series: &str) -> String {
    format!("{{sm}}:{series}")
}

/// GET `/metrics` of one instance (HTTP/1.0, 2 s), None when unreachable.
async fn scrape(addr: &str) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        let (head, body) = body.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| body.to_owned())
            .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch).await.ok().flatten()
}

/// Sums every sample of `metric` (any labels) whose labels pass `keep`.
fn sum(text: &str, metric: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, labels) = name_labels.split_once('{').unwrap_or((name_labels, ""));
            (name == metric && keep(labels)).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

fn info_field(info: &str, field: &str) -> Option<f64> {
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).and_then(|v| v.trim().parse().ok())
}

/// One sample of every series.
pub async fn sample(conn: &mut RedisConn) -> Result<BTreeMap<&'static str, f64>, StoreError> {
    let instances: HashMap<String, String> = redis::cmd("HGETALL").arg(INSTANCES).query_async(conn).await?;
    let mut out = BTreeMap::new();
    let mut up = 0.0;
    let (mut requests, mut errors, mut commands, mut redis_errors) = (0.0, 0.0, 0.0, 0.0);
    let (mut lag, mut dead, mut stored) = (0.0, 0.0, 0.0);
    for addr in instances.values() {
        let Some(text) = scrape(addr).await else { continue };
        up += 1.0;
        requests += sum(&text, "allies_grpc_server_requests_total", |_| true);
        errors += sum(&text, "allies_grpc_server_requests_total", |l| !l.contains("code=\"OK\""));
        commands += sum(&text, "allies_commands_total", |_| true);
        redis_errors += sum(&text, "allies_redis_errors_total", |_| true);
        lag += sum(&text, "allies_consumer_lag", |_| true);
        dead += sum(&text, "allies_dead_letters", |_| true);
        stored += sum(&text, "allies_events_published", |_| true);
    }
    out.insert("fleet.instances", instances.len() as f64);
    out.insert("fleet.instances_up", up);
    out.insert("fleet.grpc_requests_total", requests);
    out.insert("fleet.grpc_errors_total", errors);
    out.insert("fleet.commands_total", commands);
    out.insert("fleet.redis_errors_total", redis_errors);
    out.insert("projection.lag", lag);
    out.insert("projection.dead_letters", dead);
    out.insert("events.stored", stored);
    // One INFO text from a single Redis; one per node from a cluster (summed).
    let info: redis::Value = redis::cmd("INFO").query_async(conn).await?;
    let texts = info_texts(info);
    for (series, field) in [
        ("redis.used_memory_bytes", "used_memory"),
        ("redis.ops_per_sec", "instantaneous_ops_per_sec"),
        ("redis.connected_clients", "connected_clients"),
    ] {
        let values: Vec<f64> = texts.iter().filter_map(|t| info_field(t, field)).collect();
        if !values.is_empty() {
            out.insert(series, values.iter().sum());
        }
    }
    Ok(out)
}

/// The INFO texts in a reply: one string, or a cluster's per-node map.
fn info_texts(v: redis::Value) -> Vec<String> {
    use redis::Value;
    match v {
        Value::BulkString(b) => vec![String::from_utf8_lossy(&b).into_owned()],
        Value::SimpleString(s) => vec![s],
        Value::VerbatimString { text, .. } => vec![text],
        Value::Array(items) | Value::Set(items) => items.into_iter().flat_map(info_texts).collect(),
        Value::Map(pairs) => pairs.into_iter().flat_map(|(_, v)| info_texts(v)).collect(),
        _ => Vec::new(),
    }
}

/// Samples every `every` until `stop`, keeping `retention`.
pub async fn run(conn: RedisConn, every: Duration, retention: Duration, mut stop: watch::Receiver<bool>) {
    let mut conn = conn;
    loop {
        let now = allies_platform::context::now_ms();
        match sample(&mut conn).await {
            Ok(values) => {
                let mut pipe = redis::pipe();
                for (series, v) in values {
                    pipe.cmd("ZADD").arg(key(series)).arg(now).arg(format!("{now}:{v}")).ignore();
                    pipe.cmd("ZREMRANGEBYSCORE")
                        .arg(key(series))
                        .arg("-inf")
                        .arg(now - retention.as_millis() as i64)
                        .ignore();
                }
                if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                    tracing::debug!(error = %e, "cannot store the metrics sample");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot sample the fleet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

pub struct MetricsApi {
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
    pub interval: Duration,
}

#[tonic::async_trait]
impl SystemMetricsService for MetricsApi {
    async fn get_system_metrics(
        &self,
        request: Request<GetSystemMetricsRequest>,
    ) -> Result<Response<GetSystemMetricsResponse>, Status> {
        self.auth.admin_context(&request).await?;
        let r = request.into_inner();
        let now = allies_platform::context::now_ms();
        let to = if r.to_ms == 0 { now } else { r.to_ms };
        let from = if r.from_ms == 0 { to - 3_600_000 } else { r.from_ms };
        let step = if r.step_ms == 0 { 60_000 } else { r.step_ms };
        let mut invalid = Invalid::new();
        if from > to {
            invalid.push("from_ms", "must not be after to_ms");
        }
        if step < 100 {
            invalid.push("step_ms", "must be at least 100");
        } else if (to - from) / step > 10_000 {
            invalid.push("step_ms", "gives more than 10,000 points: take a larger step");
        }
        for s in &r.series {
            if !SERIES.contains(&s.as_str()) {
                invalid.push("series", format!("unknown series '{s}' (known: {})", SERIES.join(", ")));
            }
        }
        invalid.into_result().or_status()?;
        let names: Vec<&str> =
            if r.series.is_empty() { SERIES.to_vec() } else { r.series.iter().map(String::as_str).collect() };
        let mut conn = self.conn.clone();
        // Every series key carries the one hash tag `{sm}`: one pipeline,
        // on a Cluster too.
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("ZRANGEBYSCORE").arg(key(name)).arg(from).arg(to);
        }
        let samples: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(StoreError::from).or_status()?;
        let mut series = Vec::new();
        for (name, raw) in names.into_iter().zip(samples) {
            // The last sample of each step.
            let mut buckets: BTreeMap<i64, Point> = BTreeMap::new();
            for m in raw {
                let Some((at, v)) = m.split_once(':') else { continue };
                let (Ok(at), Ok(value)) = (at.parse::<i64>(), v.parse::<f64>()) else { continue };
                buckets.insert((at - from) / step, Point { at_ms: at, value });
            }
            series.push(Series { name: name.to_owned(), points: buckets.into_values().collect() });
        }
        Ok(Response::new(GetSystemMetricsResponse { series, interval_ms: self.interval.as_millis() as i64 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_over_labels() {
        let text = "# HELP x\nallies_grpc_server_requests_total{service=\"a\",code=\"OK\"} 3\nallies_grpc_server_requests_total{service=\"a\",code=\"INTERNAL\"} 2\nallies_consumer_lag{group=\"rm.user\"} 4\nallies_redis_errors_total 1\n";
        assert_eq!(sum(text, "allies_grpc_server_requests_total", |_| true), 5.0);
        assert_eq!(sum(text, "allies_grpc_server_requests_total", |l| !l.contains("code=\"OK\"")), 2.0);
        assert_eq!(sum(text, "allies_redis_errors_total", |_| true), 1.0);
        assert_eq!(sum(text, "allies_consumer_lag", |_| true), 4.0);
    }
}
