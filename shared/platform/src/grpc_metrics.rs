//! gRPC server metrics, for every service through the service builder: a
//! tower layer on the tonic server counting each call by gRPC service,
//! method and status code, with a latency histogram.
//!
//! - `allies_grpc_server_requests_total{service, method, code}`
//! - `allies_grpc_server_request_duration_seconds{service, method}`
//!
//! The code is the response's `grpc-status` header when the call failed
//! (tonic answers an error as a trailers-only response); a call whose
//! headers carry no status succeeded (OK travels in the trailers). For a
//! server stream the duration is the time to its first response headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::codegen::http;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub service: String,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub service: String,
    pub method: String,
}

fn latency() -> Histogram {
    // 0.1 ms .. ~3.3 s
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

#[derive(Debug)]
pub struct GrpcMetrics {
    requests: Family<CallLabels, Counter>,
    seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl GrpcMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m =
            Self { requests: Family::default(), seconds: Family::new_with_constructor(latency as fn() -> Histogram) };
        let r = registry.sub_registry_with_prefix("allies_grpc_server");
        r.register("requests", "gRPC calls served, by service, method and status code", m.requests.clone());
        r.register("request_duration_seconds", "gRPC call latency (to the response headers)", m.seconds.clone());
        Arc::new(m)
    }

    fn observe(&self, service: &str, method: &str, code: &str, started: Instant) {
        let call = CallLabels { service: service.to_owned(), method: method.to_owned(), code: code.to_owned() };
        self.requests.get_or_create(&call).inc();
        let m = MethodLabels { service: service.to_owned(), method: method.to_owned() };
        self.seconds.get_or_create(&m).observe(started.elapsed().as_secs_f64());
    }
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`); anything else is one
/// "unknown" series, so a scanner cannot grow the label set without bound.
fn split(path: &str) -> (&str, &str) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((s, m)) if !s.is_empty() && !m.is_empty() && !m.contains('/') && s.len() + m.len() < 160 => (s, m),
        _ => ("unknown", "unknown"),
    }
}

/// The canonical name of a gRPC status code number.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[derive(Clone)]
pub struct MetricsLayer(pub Arc<GrpcMetrics>, pub Arc<Known>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner, metrics: self.0.clone(), known: self.1.clone() }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
    known: Arc<Known>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let path = request.uri().path().to_owned();
        request.extensions_mut().insert(crate::context::RpcPath(path.clone()));
        let started = Instant::now();
        // The server span (OpenTelemetry only; health and reflection are not
        // traced), a child of the caller's W3C traceparent when it sent one.
        let (service, method) = self.known.label(&path);
        let (service, method) = (service.to_owned(), method.to_owned());
        // Sampled or not is decided here, before any span is built (see
        // allies_store::trace): an unsampled call builds none.
        let parent = request.headers().get(crate::telemetry::TRACEPARENT).and_then(|v| v.to_str().ok());
        let decision = if service.starts_with("grpc.") { None } else { allies_store::trace::root(parent) };
        let span = if service.starts_with("grpc.") || !allies_store::trace::Decision::builds(decision) {
            tracing::Span::none()
        } else {
            tracing::trace_span!(target: allies_store::trace::TARGET, "rpc",
                otel.name = %format_args!("{service}/{method}"), otel.kind = "server",
                rpc.system = "grpc", rpc.service = %service, rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty)
        };
        if !span.is_disabled()
            && let Some(tp) = parent
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = span.set_parent(allies_store::trace::context_of(tp));
        }
        let decision = allies_store::trace::settle(decision, &span);
        // The client's deadline, to tell a call it ended from one the client reset.
        let deadline = request.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout);
        // The service that was polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Counted when the call ends — or when it is dropped unanswered: the
        // client's deadline passed (DEADLINE_EXCEEDED) or it reset the
        // stream (CANCELLED). Such calls were never counted.
        let mut call = Call { metrics: self.metrics.clone(), service, method, started, deadline, span, code: None };
        Box::pin(async move {
            let result = allies_store::trace::scoped(decision, inner.call(request).instrument(call.span.clone())).await;
            call.ended(match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0),
                Err(_) => 14,
            });
            result
        })
    }
}

/// One call being served; observed when dropped (see [`Metered::call`]).
struct Call {
    metrics: Arc<GrpcMetrics>,
    service: String,
    method: String,
    started: Instant,
    deadline: Option<std::time::Duration>,
    span: tracing::Span,
    code: Option<i32>,
}

impl Call {
    fn ended(&mut self, code: i32) {
        self.code = Some(code);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The client's deadline runs from its send, a little before this
        // call started here: a reset in the deadline's last fifth (at least
        // 50 ms) is the deadline, an earlier one the client giving up.
        let number = self.code.unwrap_or_else(|| match self.deadline {
            Some(d) if self.started.elapsed() + (d / 5).max(std::time::Duration::from_millis(50)) >= d => 4,
            _ => 1,
        });
        self.span.record("rpc.grpc.status_code", number);
        if server_error(number) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.metrics.observe(&self.service, &self.method, code_name(number), self.started);
    }
}

/// The codes the OpenTelemetry gRPC conventions count as a server span's
/// error: the server's fault or no answer — not the caller's mistakes.
pub fn server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// A `grpc-timeout` header's value (`<digits><unit>`).
fn grpc_timeout(v: &str) -> Option<std::time::Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        "M" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    })
}

/// The methods the service serves: anything else is one `unknown` series,
/// so a scanner cannot grow the label set without bound.
#[derive(Debug, Default)]
pub struct Known(std::collections::HashSet<String>);

impl Known {
    /// The contracts' methods, health and reflection.
    pub fn of_contracts() -> Self {
        use prost::Message;
        let mut known = std::collections::HashSet::new();
        for set in [allies_contracts::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
            for f in &set.file {
                for s in &f.service {
                    for m in &s.method {
                        known.insert(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
                    }
                }
            }
        }
        for v in ["v1", "v1alpha"] {
            known.insert(format!("/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo"));
        }
        Self(known)
    }

    /// (service, method) of a known path; ("unknown", "unknown") otherwise.
    pub fn label<'a>(&self, path: &'a str) -> (&'a str, &'a str) {
        match split(path) {
            pair if self.0.contains(path) => pair,
            _ => ("unknown", "unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method_and_junk_is_one_series() {
        assert_eq!(
            split("/defense_allies.guardian.v1.GuardianService/RegisterUser"),
            ("defense_allies.guardian.v1.GuardianService", "RegisterUser")
        );
        assert_eq!(split("/"), ("unknown", "unknown"));
        assert_eq!(split("/a/b/c"), ("unknown", "unknown"));
        assert_eq!(split("no-slash"), ("unknown", "unknown"));
        assert_eq!((code_name(3), code_name(16), code_name(99)), ("INVALID_ARGUMENT", "UNAUTHENTICATED", "UNKNOWN"));
    }

    #[test]
    fn only_the_served_methods_have_series_of_their_own() {
        let known = Known::of_contracts();
        assert_eq!(
            known.label("/defense_allies.timesquare.v1.GameService/PlaceTower"),
            ("defense_allies.timesquare.v1.GameService", "PlaceTower")
        );
        assert_eq!(known.label("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        assert_eq!(known.label("/defense_allies.timesquare.v1.GameService/Nope123"), ("unknown", "unknown"));
        assert_eq!(known.label("/scanner.Service/Method"), ("unknown", "unknown"));
    }

    #[test]
    fn grpc_timeouts_parse_and_server_errors_are_the_conventions_ones() {
        assert_eq!(grpc_timeout("200m"), Some(std::time::Duration::from_millis(200)));
        assert_eq!(grpc_timeout("3S"), Some(std::time::Duration::from_secs(3)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout(""), None);
        assert!(server_error(13) && server_error(14) && server_error(4));
        assert!(!server_error(3) && !server_error(5) && !server_error(9) && !server_error(16) && !server_error(0));
    }
}
