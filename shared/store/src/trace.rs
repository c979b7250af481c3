//! W3C trace context across the event bus (OpenTelemetry messaging
//! conventions): an append is a `producer` span whose context is written into
//! every appended event's metadata (`traceparent`); a consumer's processing
//! of an entry is a `consumer` span that *links* to that creation context.
//!
//! The spans are `tracing` spans of target [`TARGET`] at TRACE level: only
//! the OpenTelemetry layer (installed by the platform when an OTLP endpoint
//! is configured) enables them, so with tracing off a span is one cached
//! callsite check and no field is even evaluated.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span meant for OpenTelemetry.
pub const TARGET: &str = "allies_trace";

/// The context a `traceparent` names (an empty context when malformed).
pub fn context_of(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The `traceparent` of a span, when it is recorded by OpenTelemetry.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The `traceparent` of the current span (None with tracing off).
pub fn current() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Links `span` to the context an event was created in.
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(tp) = traceparent {
        let cx = context_of(tp);
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.add_link(sc);
        }
    }
}

/// Records the span's OpenTelemetry trace and span ids in its `trace_id`
/// and `span_id` fields, so every log line inside it carries them.
pub fn stamp(span: &tracing::Span) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// The producer span of an append to `log` (OTel messaging conventions:
/// "{operation} {destination}", the real stream), and the metadata its
/// events carry: the command's, with this span as their `traceparent`
/// when OpenTelemetry records it.
pub(crate) fn append_span(
    log: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    metadata: &allies_core::Metadata,
) -> (tracing::Span, Option<allies_core::Metadata>) {
    let span = tracing::trace_span!(target: TARGET, "append",
        otel.name = %format_args!("send {log}"), otel.kind = "producer",
        messaging.system = "redis", messaging.operation.type = "send", messaging.operation.name = "send",
        messaging.destination.name = %log,
        aggregate.type = aggregate_type, aggregate.id = %aggregate_id,
        trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
    stamp(&span);
    let traced = traceparent_of(&span).map(|tp| allies_core::Metadata { traceparent: Some(tp), ..metadata.clone() });
    (span, traced)
}
