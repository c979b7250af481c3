//! Structured logs through `tracing`: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches to one JSON object per line. Colour codes only
//! when writing to a terminal (never into log files).
//!
//! Traces: OpenTelemetry over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_TRACES_EXPORTER`
//! is not `none`; no exporter otherwise. The SDK reads the standard
//! variables itself (`OTEL_SERVICE_NAME` — default: the service's name —,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_BSP_*`). The spans (the gRPC server and client spans, the append,
//! each consumer's processing) are built with the OpenTelemetry API by
//! `allies_store::trace`, not as `tracing` spans; the W3C `traceparent`
//! propagates through gRPC metadata and event metadata. A log line written
//! inside one ends with its `trace_id` and `span_id` (two more keys in JSON).

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
    if let Some(tracer) = tracer(service) {
        allies_store::trace::install(tracer);
    }
    let _ = subscriber(filter, json, ansi, std::io::stdout).try_init();
    tracing::debug!(service, tracing = PROVIDER.get().is_some(), "telemetry initialised");
}

/// The logs (to `writer`).
fn subscriber<W>(filter: EnvFilter, json: bool, ansi: bool, writer: W) -> tracing::Dispatch
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // A log line written inside a traced span ends with its ids (the spans
    // themselves are OpenTelemetry's, not the log layer's).
    let format = tracing_subscriber::fmt::format().with_target(false);
    let logs = if json {
        let format = TraceIds { json, format: format.json() };
        tracing_subscriber::fmt::layer().json().event_format(format).with_writer(writer).boxed()
    } else {
        // The colours are the format's own: it renders into a buffer first.
        let format = TraceIds { json, format: format.with_ansi(ansi) };
        tracing_subscriber::fmt::layer().with_ansi(ansi).event_format(format).with_writer(writer).boxed()
    };
    tracing::Dispatch::new(tracing_subscriber::registry().with(logs.with_filter(filter)))
}

/// A log line's format, ending a line written inside a traced span with
/// the span's `trace_id` and `span_id` (` trace_id=… span_id=…`, or two more
/// keys of the JSON object).
struct TraceIds<F> {
    json: bool,
    format: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for TraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(ids) = allies_store::trace::current_ids() else {
            return self.format.format_event(ctx, writer, event);
        };
        let (trace_id, span_id) = (ids.trace_id, ids.span_id);
        let mut line = String::new();
        self.format.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        match line.strip_suffix('}') {
            Some(object) if self.json => {
                writeln!(writer, r#"{object},"trace_id":"{trace_id}","span_id":"{span_id}"}}"#)
            }
            _ => writeln!(writer, "{line} trace_id={trace_id} span_id={span_id}"),
        }
    }
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
        if !allies_store::trace::on() {
            return Box::pin(tower::Service::call(&mut self.inner, request));
        }
        let mut span = allies_store::trace::Span::start(
            format!("{service}/{method}"),
            opentelemetry::trace::SpanKind::Client,
            allies_store::trace::Parent::Current,
            vec![
                opentelemetry::KeyValue::new("rpc.system", "grpc"),
                opentelemetry::KeyValue::new("rpc.service", service.to_owned()),
                opentelemetry::KeyValue::new("rpc.method", method.to_owned()),
            ],
            Vec::new(),
        );
        if let Some(tp) = span.traceparent().and_then(|t| t.parse().ok()) {
            request.headers_mut().insert(TRACEPARENT, tp);
        }
        let call = tower::Service::call(&mut self.inner, request);
        Box::pin(async move {
            let result = call.await;
            // An error is answered trailers-only (its status in the headers);
            // a success's OK comes in the trailers.
            let code = match &result {
                Ok(r) => r.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok()).unwrap_or(0),
                Err(_) => 14,
            };
            span.set(opentelemetry::KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            if code != 0 {
                span.failed();
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{Tracer, TracerProvider};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_inside_a_traced_span_ends_with_its_ids_as_text_and_as_json_and_the_span_stays_out_of_the_logs() {
        for json in [false, true] {
            let lines = Lines::default();
            let writer = lines.clone();
            let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("test");
            let dispatch = subscriber(EnvFilter::new("info"), json, false, move || writer.clone());
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (trace_id, span_id) = tracing::dispatcher::with_default(&dispatch, || {
                tracing::info!("outside");
                let span = allies_store::trace::Span::of(tracer.start("Secret/Method"));
                let ids = span.ids().expect("a span");
                runtime.block_on(span.scope(async { tracing::info!(user = "ann", "inside") }));
                tracing::info!("after");
                (ids.trace_id.to_string(), ids.span_id.to_string())
            });
            let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 3, "{out}");
            assert_eq!(trace_id.len(), 32);
            assert!(!lines[0].contains("trace_id"), "outside any span: {out}");
            assert!(!lines[2].contains("trace_id"), "after the span's work: {out}");
            assert!(!out.contains("Secret"), "the span's own fields stay out of the logs: {out}");
            if json {
                let v: serde_json::Value = serde_json::from_str(lines[1]).expect("one JSON object");
                assert_eq!((v["trace_id"].as_str(), v["span_id"].as_str()), (Some(&*trace_id), Some(&*span_id)));
                assert_eq!(
                    (v["fields"]["message"].as_str(), v["fields"]["user"].as_str()),
                    (Some("inside"), Some("ann"))
                );
            } else {
                assert!(
                    lines[1].ends_with(&format!("inside user=\"ann\" trace_id={trace_id} span_id={span_id}")),
                    "{out}"
                );
            }
        }
    }
}
