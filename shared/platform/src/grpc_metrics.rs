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
//!
//! Each served method's series are made the first time it is called and
//! then held by its [`Method`]: a call builds no label set and copies no
//! string (its path, its service and method names are the method's own,
//! shared), and `/metrics` lists only the methods that were called.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
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
    known: Known,
}

impl GrpcMetrics {
    /// The families, registered, for the methods of the contracts.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        Self::register_for(registry, Known::of_contracts())
    }

    /// The same for the methods `known` names.
    pub fn register_for(registry: &mut Registry, known: Known) -> Arc<Self> {
        let m = Self {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            known,
        };
        let r = registry.sub_registry_with_prefix("allies_grpc_server");
        r.register("requests", "gRPC calls served, by service, method and status code", m.requests.clone());
        r.register("request_duration_seconds", "gRPC call latency (to the response headers)", m.seconds.clone());
        Arc::new(m)
    }

    /// Counts one call of `m` that ended with status `code`.
    fn observe(&self, m: &Method, code: i32, started: Instant) {
        // Codes past 16 are counted as UNKNOWN (as `code_name` names them).
        let slot = usize::try_from(code).ok().filter(|c| *c < m.codes.len()).unwrap_or(2);
        m.codes[slot]
            .get_or_init(|| {
                self.requests.get_or_create_owned(&CallLabels {
                    service: m.service.to_string(),
                    method: m.method.to_string(),
                    code: code_name(code).to_owned(),
                })
            })
            .inc();
        m.seconds
            .get_or_init(|| {
                self.seconds
                    .get_or_create_owned(&MethodLabels { service: m.service.to_string(), method: m.method.to_string() })
            })
            .observe(started.elapsed().as_secs_f64());
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
pub struct MetricsLayer(pub Arc<GrpcMetrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
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
        let method = self.metrics.known.method(request.uri().path());
        // The handlers' copy of the path (tonic hands them no URI): the
        // method's own for a served one.
        let path = if method.served { method.path.clone() } else { Arc::from(request.uri().path()) };
        request.extensions_mut().insert(crate::context::RpcPath(path));
        let started = Instant::now();
        // The server span (OpenTelemetry only; health and reflection are not
        // traced), a child of the caller's W3C traceparent when it sent one.
        // Sampled or not is decided here, before any span is built (see
        // allies_store::trace): an unsampled call builds none.
        let parent = request.headers().get(crate::telemetry::TRACEPARENT).and_then(|v| v.to_str().ok());
        let decision = if method.traced { allies_store::trace::root(parent) } else { None };
        let span = if !method.traced || !allies_store::trace::on() || !allies_store::trace::Decision::builds(decision) {
            allies_store::trace::Span::none()
        } else {
            allies_store::trace::Span::start(
                method.span_name.clone(),
                opentelemetry::trace::SpanKind::Server,
                allies_store::trace::Parent::Remote(parent),
                method.span_attributes.to_vec(),
                Vec::new(),
            )
        };
        let decision = allies_store::trace::settle(decision, &span);
        // The client's deadline, to tell a call it ended from one the client reset.
        let deadline = request.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout);
        // The service that was polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Counted when the call ends — or when it is dropped unanswered: the
        // client's deadline passed (DEADLINE_EXCEEDED) or it reset the
        // stream (CANCELLED). Such calls were never counted.
        let mut call = Call { metrics: self.metrics.clone(), method, started, deadline, span, code: None };
        Box::pin(async move {
            let result = call.span.scope_with(decision, inner.call(request)).await;
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
    method: Arc<Method>,
    started: Instant,
    deadline: Option<std::time::Duration>,
    span: allies_store::trace::Span,
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
        self.span.set(opentelemetry::KeyValue::new("rpc.grpc.status_code", i64::from(number)));
        if server_error(number) {
            self.span.failed();
        }
        self.metrics.observe(&self.method, number, self.started);
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

/// One method as the metrics and the handlers see it: its labels, and its
/// series once it has been called (each made on first use).
#[derive(Debug)]
pub struct Method {
    path: Arc<str>,
    service: Box<str>,
    method: Box<str>,
    /// One of the served methods (not the shared `unknown` entry).
    served: bool,
    /// Health and reflection calls get no span.
    traced: bool,
    /// Its server span's name (`{service}/{method}`) and attributes.
    span_name: String,
    span_attributes: [opentelemetry::KeyValue; 3],
    seconds: OnceLock<Histogram>,
    /// By status code number (0..=16).
    codes: [OnceLock<Counter>; 17],
}

impl Method {
    fn new(path: &str, service: &str, method: &str, served: bool) -> Self {
        Self {
            path: Arc::from(path),
            service: service.into(),
            method: method.into(),
            served,
            traced: !service.starts_with("grpc."),
            span_name: format!("{service}/{method}"),
            span_attributes: [
                opentelemetry::KeyValue::new("rpc.system", "grpc"),
                opentelemetry::KeyValue::new("rpc.service", Arc::<str>::from(service)),
                opentelemetry::KeyValue::new("rpc.method", Arc::<str>::from(method)),
            ],
            seconds: OnceLock::new(),
            codes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// (service, method): its labels.
    pub fn labels(&self) -> (&str, &str) {
        (&self.service, &self.method)
    }
}

/// The methods the service serves: anything else is one `unknown` series,
/// so a scanner cannot grow the label set without bound.
#[derive(Debug)]
pub struct Known {
    methods: std::collections::HashMap<Box<str>, Arc<Method>>,
    unknown: Arc<Method>,
}

impl Known {
    /// Served methods by their paths (`/pkg.Service/Method`).
    pub fn of_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut methods = std::collections::HashMap::new();
        for path in paths {
            let (service, method) = split(path);
            if (service, method) != ("unknown", "unknown") {
                methods.insert(path.into(), Arc::new(Method::new(path, service, method, true)));
            }
        }
        Self { methods, unknown: Arc::new(Method::new("", "unknown", "unknown", false)) }
    }

    /// The contracts' methods, health and reflection.
    pub fn of_contracts() -> Self {
        use prost::Message;
        let mut paths = Vec::new();
        for set in [allies_contracts::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
            for f in &set.file {
                for s in &f.service {
                    for m in &s.method {
                        paths.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
                    }
                }
            }
        }
        for v in ["v1", "v1alpha"] {
            paths.push(format!("/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo"));
        }
        Self::of_paths(paths.iter().map(String::as_str))
    }

    /// The method at `path`; the shared `unknown` entry for any other path.
    pub fn method(&self, path: &str) -> Arc<Method> {
        self.methods.get(path).unwrap_or(&self.unknown).clone()
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
        let label = |path: &str| {
            let m = known.method(path);
            let (service, method) = m.labels();
            (service.to_owned(), method.to_owned())
        };
        let pair = |s: &str, m: &str| (s.to_owned(), m.to_owned());
        assert_eq!(
            label("/defense_allies.timesquare.v1.GameService/PlaceTower"),
            pair("defense_allies.timesquare.v1.GameService", "PlaceTower")
        );
        assert_eq!(label("/grpc.health.v1.Health/Check"), pair("grpc.health.v1.Health", "Check"));
        assert_eq!(label("/defense_allies.timesquare.v1.GameService/Nope123"), pair("unknown", "unknown"));
        assert_eq!(label("/scanner.Service/Method"), pair("unknown", "unknown"));
        assert!(!known.method("/grpc.health.v1.Health/Check").traced);
        assert!(known.method("/defense_allies.timesquare.v1.GameService/PlaceTower").traced);
    }

    #[test]
    fn a_method_s_series_are_made_once_and_count_every_call() {
        let mut registry = Registry::default();
        let metrics = GrpcMetrics::register_for(
            &mut registry,
            Known::of_paths(["/pkg.Game/Place", "/pkg.Game/Upgrade", "/grpc.health.v1.Health/Check"]),
        );
        let place = metrics.known.method("/pkg.Game/Place");
        let started = Instant::now();
        for code in [0, 0, 9, 99] {
            metrics.observe(&place, code, started);
        }
        // Two paths no one serves share one series.
        for path in ["/scanner.A/B", "/pkg.Game/Nope"] {
            metrics.observe(&metrics.known.method(path), 12, started);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = |labels: &str| {
            let prefix = format!("allies_grpc_server_requests_total{{{labels}}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
        };
        assert_eq!(line(r#"service="pkg.Game",method="Place",code="OK""#).as_deref(), Some("2"));
        assert_eq!(line(r#"service="pkg.Game",method="Place",code="FAILED_PRECONDITION""#).as_deref(), Some("1"));
        assert_eq!(line(r#"service="pkg.Game",method="Place",code="UNKNOWN""#).as_deref(), Some("1"));
        assert_eq!(line(r#"service="unknown",method="unknown",code="UNIMPLEMENTED""#).as_deref(), Some("2"));
        assert!(
            text.contains(r#"allies_grpc_server_request_duration_seconds_count{service="pkg.Game",method="Place"} 4"#),
            "{text}"
        );
        // A method never called has no series.
        assert!(!text.contains("Upgrade") && !text.contains("Health"), "{text}");
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
