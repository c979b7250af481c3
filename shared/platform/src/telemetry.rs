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
//! The log layer does not see those spans (copying their fields cost ~6 % of
//! a service's CPU with every span sampled): a log line written inside one
//! ends with its `trace_id` and `span_id` instead (two more keys in JSON).

use std::sync::{Arc, OnceLock};

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
    let _ = subscriber(filter, json, ansi, tracer(service), std::io::stdout).try_init();
    tracing::debug!(service, tracing = PROVIDER.get().is_some(), "telemetry initialised");
}

/// The logs (to `writer`) and, with a tracer, the traces.
fn subscriber<W>(
    filter: EnvFilter,
    json: bool,
    ansi: bool,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
    writer: W,
) -> tracing::Dispatch
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // The log layer never sees the traced spans (their fields would be
    // formatted into its copy of every span: ~6 % of a service's CPU with
    // every span sampled); a log line inside one ends with its ids instead,
    // read from the dispatch it lives in.
    let dispatch = Arc::new(OnceLock::new());
    let format = tracing_subscriber::fmt::format().with_target(false);
    use tracing_subscriber::filter::FilterExt;
    let logs = if json {
        let format = TraceIds { json, format: format.json(), dispatch: dispatch.clone() };
        tracing_subscriber::fmt::layer()
            .json()
            .event_format(format)
            .with_writer(writer)
            .boxed()
            .with_filter(FilterExt::boxed(filter))
    } else {
        // The colours are the format's own: it renders into a buffer first.
        let format = TraceIds { json, format: format.with_ansi(ansi), dispatch: dispatch.clone() };
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .event_format(format)
            .with_writer(writer)
            .boxed()
            .with_filter(FilterExt::boxed(filter))
    };
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
    let built = tracing::Dispatch::new(tracing_subscriber::registry().with(logs).with(otel));
    let _ = dispatch.set(built.downgrade());
    built
}

/// A log line's format, ending a line written inside a traced span with
/// the span's `trace_id` and `span_id` (` trace_id=… span_id=…`, or two more
/// keys of the JSON object).
struct TraceIds<F> {
    json: bool,
    format: F,
    /// The dispatch the format is part of (set once it is built).
    dispatch: Arc<OnceLock<tracing::dispatcher::WeakDispatch>>,
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
        let span = if event.is_contextual() { ctx.current_span().id().cloned() } else { event.parent().cloned() };
        let dispatch = self.dispatch.get().and_then(|d| d.upgrade());
        let ids = span.zip(dispatch).and_then(|(id, dispatch)| trace_ids(&id, &dispatch));
        let Some((trace_id, span_id)) = ids else {
            return self.format.format_event(ctx, writer, event);
        };
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

/// The OpenTelemetry ids of span `id`, when it is recorded.
fn trace_ids(
    id: &tracing::span::Id,
    dispatch: &tracing::Dispatch,
) -> Option<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)> {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
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
            rpc.grpc.status_code = tracing::field::Empty, otel.status_code = tracing::field::Empty);
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{TraceContextExt, TracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

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
    fn a_log_line_inside_a_traced_span_ends_with_its_ids_as_text_and_as_json_and_no_span_field_is_logged() {
        for json in [false, true] {
            let lines = Lines::default();
            let writer = lines.clone();
            let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("test");
            let dispatch = subscriber(EnvFilter::new("info"), json, false, Some(tracer), move || writer.clone());
            let (trace_id, span_id) = tracing::dispatcher::with_default(&dispatch, || {
                tracing::info!("outside");
                let span = tracing::trace_span!(target: allies_store::trace::TARGET, "rpc",
                    otel.name = "Secret/Method", rpc.method = "Method");
                let sc = span.context().span().span_context().clone();
                span.in_scope(|| tracing::info!(user = "ann", "inside"));
                (sc.trace_id().to_string(), sc.span_id().to_string())
            });
            let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 2, "{out}");
            assert_eq!(trace_id.len(), 32);
            assert!(!lines[0].contains("trace_id"), "outside any span: {out}");
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
