//! Structured logs through `tracing`: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches to one JSON object per line. Colour codes only
//! when writing to a terminal (never into log files).
//!
//! Traces: OpenTelemetry over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_TRACES_EXPORTER`
//! is not `none`; no exporter otherwise. The SDK reads the standard
//! variables itself (`OTEL_SERVICE_NAME` — default: the service's name —,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_BSP_*`). Only spans of target `allies_trace` go to OpenTelemetry
//! (the gRPC server span, the append, each consumer's processing); the
//! W3C `traceparent` propagates through gRPC metadata and event metadata.

use std::sync::OnceLock;

use tonic::Request;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::ServiceConfig;

/// The W3C trace context's metadata key.
pub const TRACEPARENT: &str = "traceparent";

static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber for a service. Safe to call more than once
/// (tests start several services in one process): the first one wins. Call
/// it inside the Tokio runtime (the OTLP exporter's client needs it).
pub fn init(config: &ServiceConfig) {
    init_with(&config.name, &config.log_filter, config.log_json);
}

fn exporter_configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let off = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !off && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn tracer(service: &str) -> Option<opentelemetry_sdk::trace::Tracer> {
    use opentelemetry::trace::TracerProvider as _;
    if !exporter_configured() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OpenTelemetry: cannot build the OTLP exporter ({e}); traces are off");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    // Sampling is decided before spans are built (allies_store::trace);
    // the SDK keeps what that let through.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(allies_store::trace::sdk_sampler())
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let tracer = provider.tracer("defense-allies");
    let _ = PROVIDER.set(provider.clone());
    opentelemetry::global::set_tracer_provider(provider);
    Some(tracer)
}

/// As [`init`], for tools without a service configuration.
pub fn init_with(service: &str, filter: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let tracer = tracer(service);
    // With traces on, log lines also see the traced spans (their trace_id
    // and span_id fields); with traces off those spans stay disabled.
    let filter = {
        use tracing_subscriber::filter::FilterExt;
        if tracer.is_some() {
            let traced = tracing_subscriber::filter::Targets::new()
                .with_target(allies_store::trace::TARGET, tracing::Level::TRACE);
            FilterExt::boxed(filter.or(traced))
        } else {
            FilterExt::boxed(filter)
        }
    };
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi));
    let json = json.then(|| tracing_subscriber::fmt::layer().json().with_target(false));
    let logs = text.map(|l| l.boxed()).or(json.map(|l| l.boxed())).map(|l| l.with_filter(filter));
    // Only spans meant for OpenTelemetry reach it (and only when it is on).
    // Each span carries what the conventions name and nothing the layer
    // adds by default (source location, thread, target, busy and idle
    // times — eight attributes, and a clock read on every poll), nor
    // activates an OpenTelemetry context on every poll: nothing here reads
    // it (allies_store::trace reads a span's own context).
    let otel = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(allies_store::trace::TARGET, tracing::Level::TRACE),
            )
    });
    let _ = tracing_subscriber::registry().with(logs).with(otel).try_init();
    tracing::debug!(service, tracing = PROVIDER.get().is_some(), "telemetry initialised");
}

/// Exports what is buffered and stops the exporter (at the end of `main`).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown()
    {
        eprintln!("OpenTelemetry: shutdown: {e}");
    }
}

/// The W3C `traceparent` of a request, if it carries a well-formed one
/// (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn traceparent_of<T>(request: &Request<T>) -> Option<String> {
    let v = request.metadata().get(TRACEPARENT)?.to_str().ok()?;
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2))
        .then(|| v.to_owned())
}

/// A channel whose every call is a client span (OTel `rpc` conventions):
/// the call's traceparent is that span's, so the callee's server span is
/// its child. Wrap a service's outgoing channel with it.
pub fn traced(channel: tonic::transport::Channel) -> ClientTraced {
    ClientTraced { inner: channel }
}

#[derive(Clone, Debug)]
pub struct ClientTraced {
    inner: tonic::transport::Channel,
}

impl tower::Service<tonic::codegen::http::Request<tonic::body::Body>> for ClientTraced {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        use tracing::Instrument;
        let path = request.uri().path().to_owned();
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("unknown", "unknown"));
        // Inside an unsampled trace no span is built: the callee is told
        // so by a traceparent with flags 00, and decides the same.
        if let Some(allies_store::trace::Decision::Unsampled { .. }) = allies_store::trace::child() {
            if let Some(tp) = allies_store::trace::current().and_then(|t| t.parse().ok()) {
                request.headers_mut().insert(TRACEPARENT, tp);
            }
            return Box::pin(tower::Service::call(&mut self.inner, request));
        }
        let span = tracing::trace_span!(target: allies_store::trace::TARGET, "rpc client",
            otel.name = %format_args!("{service}/{method}"), otel.kind = "client",
            rpc.system = "grpc", rpc.service = %service, rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty, otel.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
        allies_store::trace::stamp(&span);
        if let Some(tp) = allies_store::trace::traceparent_of(&span).and_then(|t| t.parse().ok()) {
            request.headers_mut().insert(TRACEPARENT, tp);
        }
        let call = tower::Service::call(&mut self.inner, request);
        Box::pin(async move {
            let result = call.instrument(span.clone()).await;
            // An error is answered trailers-only (its status in the headers);
            // a success's OK comes in the trailers.
            let code = match &result {
                Ok(r) => r.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok()).unwrap_or(0),
                Err(_) => 14,
            };
            span.record("rpc.grpc.status_code", code);
            if code != 0 {
                span.record("otel.status_code", "ERROR");
            }
            result
        })
    }
}
