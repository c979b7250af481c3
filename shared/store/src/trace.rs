//! W3C trace context across the event bus (OpenTelemetry messaging
//! conventions): an append is a `producer` span whose context is written into
//! every appended event's metadata (`traceparent`); a consumer's processing
//! of an entry is a `consumer` span that *links* to that creation context.
//!
//! **Spans are built with the OpenTelemetry API directly** ([`Span`]), not
//! as `tracing` spans bridged by a layer: `tracing` carries the logs only.
//! The bridge cost a span its registry slot, a copy of every field through
//! a visitor, a per-poll enter and exit, and a `Context` built to read its
//! ids back — per span, about half of what the SDK itself costs. With
//! tracing off ([`install`] never called) nothing is built at all.
//!
//! **The span a piece of work runs in** is held by the work's future
//! ([`Scoped`]) while it is polled, with its trace's [`Decision`]: a span
//! started inside is that span's child ([`Parent::Current`]), a log line
//! written inside ends with its ids, and [`current`] is the `traceparent`
//! to carry on (to an outgoing call, into appended events).
//!
//! **Sampling is decided before a span is built.** The configured sampler
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`) is applied here, where
//! a trace enters the service — the gRPC server span, a consumer's
//! processing, a background root — as a [`Decision`] held by the work's
//! future; the spans inside follow it: an unsampled trace builds no span at
//! all, and only carries its `traceparent` (flags `00`) on, so the next
//! service and every consumer of its events decide the same way. The SDK
//! is then given a sampler that keeps what gets this far ([`sdk_sampler`]).

use std::borrow::Cow;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context as TaskContext, Poll};

pub use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
pub use opentelemetry::trace::{Link, SpanKind};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

static TRACER: OnceLock<opentelemetry_sdk::trace::SdkTracer> = OnceLock::new();

/// Turns spans on, built by `tracer` (the platform calls it when an OTLP
/// exporter is configured), and the sampling decisions with them.
pub fn install(tracer: opentelemetry_sdk::trace::SdkTracer) -> Sampler {
    let _ = TRACER.set(tracer);
    enable()
}

/// Whether spans are built (an exporter is configured).
pub fn on() -> bool {
    TRACER.get().is_some()
}

/// The context a `traceparent` names (an empty context when malformed):
/// the W3C propagator's reading, from the one header (no map built).
pub fn context_of(traceparent: &str) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&OneHeader(traceparent))
}

/// A carrier holding only a `traceparent`.
struct OneHeader<'a>(&'a str);

impl opentelemetry::propagation::Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// A span's ids, as the work it covers holds them while polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    flags: TraceFlags,
}

impl Ids {
    fn of(sc: &SpanContext) -> Option<Ids> {
        sc.is_valid().then(|| Ids { trace_id: sc.trace_id(), span_id: sc.span_id(), flags: sc.trace_flags() })
    }

    /// What the W3C propagator injects as `traceparent` (version 00, the
    /// sampled flag only), written directly: its map and its lookups were
    /// ~2.6 % of timesquare's CPU with every span sampled.
    pub fn traceparent(&self) -> String {
        let flags = self.flags & TraceFlags::SAMPLED;
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, flags.to_u8())
    }

    fn context(&self) -> opentelemetry::Context {
        let sc = SpanContext::new(self.trace_id, self.span_id, self.flags, false, TraceState::NONE);
        opentelemetry::Context::new().with_remote_span_context(sc)
    }
}

/// Where a new span hangs.
#[derive(Clone, Copy, Debug)]
pub enum Parent<'a> {
    /// Under the span of the work being polled (a root when none).
    Current,
    /// Under the caller's `traceparent` (a root when absent or malformed).
    Remote(Option<&'a str>),
    /// A new trace (a consumer's processing: its causes are links).
    Root,
}

/// An OpenTelemetry span, or nothing (tracing off, or a trace not
/// recorded). It ends when dropped.
#[derive(Debug, Default)]
pub struct Span {
    inner: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// No span: everything on it does nothing.
    pub fn none() -> Span {
        Span { inner: None }
    }

    /// Starts a span of `kind` (nothing with tracing off). Its attributes
    /// and links are given now: the sampler sees them, and nothing is
    /// locked to add them later.
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: Parent<'_>,
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> Span {
        let Some(tracer) = TRACER.get() else { return Span::none() };
        let parent = match parent {
            Parent::Current => CURRENT.get().span.map(|ids| ids.context()),
            Parent::Remote(tp) => tp.map(context_of),
            Parent::Root => None,
        };
        let mut builder = tracer.span_builder(name).with_kind(kind).with_attributes(attributes);
        if !links.is_empty() {
            builder = builder.with_links(links);
        }
        let span = match parent {
            Some(cx) => tracer.build_with_context(builder, &cx),
            None => tracer.build_with_context(builder, &opentelemetry::Context::new()),
        };
        Span { inner: Some(span) }
    }

    /// A span built with the SDK elsewhere.
    pub fn of(span: opentelemetry_sdk::trace::Span) -> Span {
        Span { inner: Some(span) }
    }

    /// Whether it exists (a span the SDK did not sample exists too).
    pub fn is_none(&self) -> bool {
        self.inner.is_none()
    }

    /// Its ids, when it exists.
    pub fn ids(&self) -> Option<Ids> {
        Ids::of(self.inner.as_ref()?.span_context())
    }

    /// Its `traceparent`, when it exists.
    pub fn traceparent(&self) -> Option<String> {
        self.ids().map(|ids| ids.traceparent())
    }

    /// Sets an attribute.
    pub fn set(&mut self, attribute: KeyValue) {
        if let Some(span) = &mut self.inner {
            span.set_attribute(attribute);
        }
    }

    /// Marks it failed (`otel.status_code` ERROR, no description).
    pub fn failed(&mut self) {
        if let Some(span) = &mut self.inner {
            span.set_status(Status::error(""));
        }
    }

    /// `work`, polled in this span (the trace's decision unchanged).
    pub fn scope<F: Future>(&self, work: F) -> Scoped<F> {
        let outer = CURRENT.get();
        self.scope_with(outer.decision, work)
    }

    /// `work`, polled in this span and holding `decision`.
    pub fn scope_with<F: Future>(&self, decision: Option<Decision>, work: F) -> Scoped<F> {
        let span = match self.ids() {
            Some(ids) => Some(ids),
            None => CURRENT.get().span,
        };
        Scoped { scope: Scope { decision, span }, inner: work }
    }
}

/// A link to the context an event was created in (None when its
/// `traceparent` is absent or malformed).
pub fn link(traceparent: Option<&str>) -> Option<Link> {
    link_with(traceparent, Vec::new)
}

/// A link of a batch to the context one of its messages was created in,
/// naming the message (`messaging.message.id`, the entry's id): the
/// OpenTelemetry messaging conventions' batch processing, where what
/// belongs to one message goes on its link, not on the span.
pub fn link_message(traceparent: Option<&str>, message_id: &str) -> Option<Link> {
    link_with(traceparent, || vec![KeyValue::new("messaging.message.id", message_id.to_owned())])
}

fn link_with(traceparent: Option<&str>, attributes: impl FnOnce() -> Vec<KeyValue>) -> Option<Link> {
    let cx = context_of(traceparent?);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| Link::new(sc, attributes(), 0))
}

/// The `traceparent` to carry on from the current work: its span's when
/// sampled, a fresh unsampled one (flags `00`, the trace's id) when the
/// work's trace is not sampled, None with tracing off.
pub fn current() -> Option<String> {
    let scope = CURRENT.get();
    match scope.decision {
        Some(Decision::Unsampled { trace_id }) => Some(unsampled_traceparent(trace_id)),
        _ => scope.span.map(|ids| ids.traceparent()),
    }
}

/// The ids of the span the current work runs in (a log line written
/// inside ends with them).
pub fn current_ids() -> Option<Ids> {
    CURRENT.get().span
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
) -> (Span, Option<allies_core::Metadata>) {
    let decision = child();
    if let Some(Decision::Unsampled { trace_id }) = decision {
        let traced = allies_core::Metadata { traceparent: Some(unsampled_traceparent(trace_id)), ..metadata.clone() };
        return (Span::none(), Some(traced));
    }
    if !on() {
        return (Span::none(), None);
    }
    let span = Span::start(
        format!("send {log}"),
        SpanKind::Producer,
        Parent::Current,
        vec![
            KeyValue::new("messaging.system", "redis"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.destination.name", log.to_owned()),
            KeyValue::new("aggregate.type", aggregate_type.to_owned()),
            KeyValue::new("aggregate.id", aggregate_id.to_owned()),
        ],
        Vec::new(),
    );
    let traced = span.traceparent().map(|tp| allies_core::Metadata { traceparent: Some(tp), ..metadata.clone() });
    (span, traced)
}

/// Whether a trace is recorded, decided where it enters the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Its spans are built and exported.
    Sampled,
    /// Its spans are built and the SDK decides (a sampler that must see
    /// the trace id: `traceidratio` without a parent); [`settle`] reads
    /// what it decided.
    Deferred,
    /// No span is built; its `traceparent` (flags `00`) is carried on.
    Unsampled { trace_id: u128 },
}

impl Decision {
    /// Whether the spans of this work are built.
    pub fn builds(decision: Option<Decision>) -> bool {
        !matches!(decision, Some(Decision::Unsampled { .. }))
    }
}

/// The configured sampler (the OpenTelemetry SDK's variables and names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl Sampler {
    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (the
    /// specification's default, `parentbased_always_on`, when unset or
    /// unknown; a ratio outside 0..=1 or unreadable is 1).
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Sampler {
        let ratio =
            || arg.and_then(|a| a.trim().parse::<f64>().ok()).filter(|r| (0.0..=1.0).contains(r)).unwrap_or(1.0);
        match name.map(str::trim) {
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::TraceIdRatio(ratio()),
            Some("parentbased_always_off") => Sampler::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => Sampler::ParentBasedTraceIdRatio(ratio()),
            _ => Sampler::ParentBasedAlwaysOn,
        }
    }

    fn from_env() -> Sampler {
        let var = |k: &str| std::env::var(k).ok();
        Sampler::parse(var("OTEL_TRACES_SAMPLER").as_deref(), var("OTEL_TRACES_SAMPLER_ARG").as_deref())
    }

    /// The decision for a trace entering here, child of a remote parent
    /// (its `traceparent`) or of none.
    pub fn root(self, parent: Option<&str>) -> Decision {
        let remote = parent.and_then(parse_traceparent);
        let fresh = |sampled: bool| match (sampled, remote) {
            (true, _) => Decision::Sampled,
            (false, Some((trace_id, _))) => Decision::Unsampled { trace_id },
            (false, None) => Decision::Unsampled { trace_id: random_id() },
        };
        match (self, remote) {
            (Sampler::AlwaysOn, _) => Decision::Sampled,
            (Sampler::AlwaysOff, _) => fresh(false),
            // The ratio of a trace that has an id is decided on that id, as
            // the SDK does (every service agrees); a new trace's by the SDK.
            (Sampler::TraceIdRatio(r), Some((trace_id, _))) => fresh(ratio_keeps(r, trace_id)),
            (Sampler::TraceIdRatio(_), None) => Decision::Deferred,
            (_, Some((_, sampled))) => fresh(sampled),
            (Sampler::ParentBasedAlwaysOn, None) => Decision::Sampled,
            (Sampler::ParentBasedAlwaysOff, None) => fresh(false),
            (Sampler::ParentBasedTraceIdRatio(r), None) => {
                fresh(r >= 1.0 || (next_random() >> 11) < (r * (1u64 << 53) as f64) as u64)
            }
        }
    }

    /// The decision for work that starts a trace of its own *linked* to
    /// others (a consumer's processing of an event, to the event's
    /// creation; a match, to its players' requests): a parent-based
    /// sampler records it when one of them was recorded, and not when
    /// none was; with no link at all it is a new trace.
    pub fn linked<'a>(self, links: impl IntoIterator<Item = Option<&'a str>>) -> Decision {
        let parent_based = matches!(
            self,
            Sampler::ParentBasedAlwaysOn | Sampler::ParentBasedAlwaysOff | Sampler::ParentBasedTraceIdRatio(_)
        );
        if !parent_based {
            return self.root(None);
        }
        let mut any = false;
        for link in links.into_iter().flatten().filter_map(parse_traceparent) {
            if link.1 {
                return Decision::Sampled;
            }
            any = true;
        }
        if any { Decision::Unsampled { trace_id: random_id() } } else { self.root(None) }
    }

    /// The SDK's sampler: it keeps what this module let through (roots
    /// were decided here, children follow their parent), except a new
    /// trace under `traceidratio`, which it decides on the trace's id.
    pub fn sdk(self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler as S;
        match self {
            Sampler::AlwaysOff => S::AlwaysOff,
            Sampler::TraceIdRatio(r) => S::TraceIdRatioBased(r),
            _ => S::ParentBased(Box::new(S::AlwaysOn)),
        }
    }
}

static SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// Turns the decisions on (the platform calls it when it installs the
/// OpenTelemetry layer); the sampler read from the environment.
pub fn enable() -> Sampler {
    *SAMPLER.get_or_init(Sampler::from_env)
}

/// The sampler when tracing is on.
pub fn sampler() -> Option<Sampler> {
    SAMPLER.get().copied()
}

/// The SDK's sampler for [`enable`]d tracing.
pub fn sdk_sampler() -> opentelemetry_sdk::trace::Sampler {
    enable().sdk()
}

/// The decision for a trace entering the service (None: tracing is off).
pub fn root(parent: Option<&str>) -> Option<Decision> {
    sampler().map(|s| s.root(parent))
}

/// The decision for work linked to the given creation contexts.
pub fn linked<'a>(links: impl IntoIterator<Item = Option<&'a str>>) -> Option<Decision> {
    sampler().map(|s| s.linked(links))
}

/// The decision of the work being polled, or a new root's when none holds
/// one (None: tracing is off).
pub fn child() -> Option<Decision> {
    sampler()?;
    CURRENT.get().decision.or_else(|| root(None))
}

/// What a [`Decision::Deferred`] span's SDK decided (others unchanged).
pub fn settle(decision: Option<Decision>, span: &Span) -> Option<Decision> {
    match decision {
        Some(Decision::Deferred) => Some(match span.inner.as_ref().map(|s| s.span_context()) {
            Some(sc) if sc.is_valid() && !sc.is_sampled() => {
                Decision::Unsampled { trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()) }
            }
            _ => Decision::Sampled,
        }),
        d => d,
    }
}

/// What the work being polled holds: its trace's decision and its span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Scope {
    decision: Option<Decision>,
    span: Option<Ids>,
}

thread_local! {
    static CURRENT: Cell<Scope> = const { Cell::new(Scope { decision: None, span: None }) };
}

pin_project_lite::pin_project! {
    /// A future that holds its trace's decision and its span while it is
    /// polled, so the spans created inside follow them.
    pub struct Scoped<F> {
        scope: Scope,
        #[pin]
        inner: F,
    }
}

/// `work`, holding `decision` (nothing with tracing off), in the span
/// being polled now.
pub fn scoped<F: Future>(decision: Option<Decision>, work: F) -> Scoped<F> {
    Scoped { scope: Scope { decision, span: CURRENT.get().span }, inner: work }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        if *this.scope == Scope::default() {
            return this.inner.poll(cx);
        }
        let outer = CURRENT.replace(*this.scope);
        let polled = this.inner.poll(cx);
        CURRENT.set(outer);
        polled
    }
}

/// `00-<trace id>-<span id>-<flags>`: the trace id and whether sampled.
fn parse_traceparent(tp: &str) -> Option<(u128, bool)> {
    let b = tp.trim().as_bytes();
    if b.len() < 55 || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace_id = u128::from_str_radix(std::str::from_utf8(&b[3..35]).ok()?, 16).ok()?;
    u64::from_str_radix(std::str::from_utf8(&b[36..52]).ok()?, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(std::str::from_utf8(&b[53..55]).ok()?, 16).ok()?;
    (trace_id != 0).then_some((trace_id, flags & 1 == 1))
}

/// The SDK's `TraceIdRatioBased`: the trace id's low 8 bytes, shifted
/// right by one, below the ratio of 2^63.
fn ratio_keeps(ratio: f64, trace_id: u128) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let low = (trace_id as u64) >> 1;
    low < (ratio * (1u64 << 63) as f64) as u64
}

fn unsampled_traceparent(trace_id: u128) -> String {
    format!("00-{trace_id:032x}-{:016x}-00", next_random() | 1)
}

fn random_id() -> u128 {
    (u128::from(next_random()) << 64 | u128::from(next_random())).max(1)
}

/// SplitMix64 per thread, seeded from the process's random hasher keys:
/// ids and draws for traces nobody records, not secrets.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id().into());
            h.finish()
        });
    }
    STATE.with(|s| {
        let z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(z);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    const TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;

    #[test]
    fn a_traceparent_is_written_and_read_exactly_as_the_w3c_propagator_does() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let propagator = TraceContextPropagator::new();
        for (trace_id, span_id, flags) in [(TRACE, 0x00f0_67aa_0ba9_02b7, 1), (1, 1, 0), (u128::MAX, u64::MAX, 3)] {
            let sc = SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(span_id),
                TraceFlags::new(flags),
                false,
                TraceState::default(),
            );
            let mut carrier = HashMap::new();
            propagator
                .inject_context(&opentelemetry::Context::new().with_remote_span_context(sc.clone()), &mut carrier);
            assert_eq!(Ids::of(&sc).map(|ids| ids.traceparent()), carrier.remove("traceparent"));
        }
        for tp in [
            SAMPLED,
            UNSAMPLED,
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
            "",
            "garbage",
        ] {
            let carrier = HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
            let expected = propagator.extract(&carrier);
            assert_eq!(context_of(tp).span().span_context(), expected.span().span_context(), "{tp:?}");
        }
    }

    #[test]
    fn the_sampler_is_read_as_the_sdk_reads_it() {
        assert_eq!(Sampler::parse(None, None), Sampler::ParentBasedAlwaysOn);
        assert_eq!(Sampler::parse(Some("nonsense"), None), Sampler::ParentBasedAlwaysOn);
        assert_eq!(Sampler::parse(Some("always_off"), None), Sampler::AlwaysOff);
        assert_eq!(
            Sampler::parse(Some("parentbased_traceidratio"), Some("0.1")),
            Sampler::ParentBasedTraceIdRatio(0.1)
        );
        assert_eq!(Sampler::parse(Some("traceidratio"), Some("7")), Sampler::TraceIdRatio(1.0));
        assert_eq!(Sampler::parse(Some("traceidratio"), Some("x")), Sampler::TraceIdRatio(1.0));
    }

    #[test]
    fn a_remote_parent_decides_for_parent_based_samplers_and_its_trace_id_is_kept() {
        for s in [Sampler::ParentBasedAlwaysOn, Sampler::ParentBasedAlwaysOff, Sampler::ParentBasedTraceIdRatio(0.0)] {
            assert_eq!(s.root(Some(SAMPLED)), Decision::Sampled, "{s:?}");
            assert_eq!(s.root(Some(UNSAMPLED)), Decision::Unsampled { trace_id: TRACE }, "{s:?}");
        }
        assert_eq!(Sampler::AlwaysOn.root(Some(UNSAMPLED)), Decision::Sampled);
        assert_eq!(Sampler::AlwaysOff.root(Some(SAMPLED)), Decision::Unsampled { trace_id: TRACE });
        // Malformed parents are no parent.
        assert_eq!(Sampler::ParentBasedAlwaysOn.root(Some("00-zz-01")), Decision::Sampled);
        assert!(matches!(Sampler::ParentBasedAlwaysOff.root(Some("00-zz-01")), Decision::Unsampled { .. }));
    }

    #[test]
    fn new_traces_are_kept_at_the_configured_ratio() {
        let s = Sampler::ParentBasedTraceIdRatio(0.1);
        let kept = (0..100_000).filter(|_| s.root(None) == Decision::Sampled).count();
        assert!((9_000..11_000).contains(&kept), "{kept} of 100000 at 10%");
        assert!((0..1000).all(|_| Sampler::ParentBasedTraceIdRatio(1.0).root(None) == Decision::Sampled));
        assert!((0..1000).all(|_| Sampler::ParentBasedTraceIdRatio(0.0).root(None) != Decision::Sampled));
        // Without a parent, traceidratio waits for the SDK's trace id; with
        // one it decides on that id as the SDK would.
        assert_eq!(Sampler::TraceIdRatio(0.5).root(None), Decision::Deferred);
        let low = "00-4bf92f3577b34da60000000000000001-00f067aa0ba902b7-01";
        let high = "00-4bf92f3577b34da6ffffffffffffffff-00f067aa0ba902b7-01";
        assert_eq!(Sampler::TraceIdRatio(0.5).root(Some(low)), Decision::Sampled);
        assert!(matches!(Sampler::TraceIdRatio(0.5).root(Some(high)), Decision::Unsampled { .. }));
    }

    #[test]
    fn linked_work_is_recorded_when_a_link_was() {
        let s = Sampler::ParentBasedTraceIdRatio(0.0);
        assert_eq!(s.linked([Some(UNSAMPLED), None, Some(SAMPLED)]), Decision::Sampled);
        assert!(matches!(s.linked([Some(UNSAMPLED), None]), Decision::Unsampled { .. }));
        assert!(matches!(s.linked([None, Some("garbage")]), Decision::Unsampled { .. }), "no link: a new trace at 0%");
        assert_eq!(Sampler::ParentBasedAlwaysOn.linked([None]), Decision::Sampled);
        assert_eq!(Sampler::AlwaysOn.linked([Some(UNSAMPLED)]), Decision::Sampled);
    }

    #[test]
    fn an_unsampled_trace_carries_its_id_on_with_flags_00() {
        let tp = unsampled_traceparent(TRACE);
        assert_eq!(parse_traceparent(&tp), Some((TRACE, false)), "{tp}");
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-00"), "{tp}");
    }

    #[tokio::test]
    async fn a_scoped_future_holds_its_decision_only_while_polled() {
        let d = Some(Decision::Unsampled { trace_id: TRACE });
        let inside = scoped(d, async {
            tokio::task::yield_now().await;
            CURRENT.get().decision
        })
        .await;
        assert_eq!(inside, d);
        assert_eq!(CURRENT.get(), Scope::default());
        let nested = scoped(Some(Decision::Sampled), async { scoped(d, async { CURRENT.get().decision }).await }).await;
        assert_eq!(nested, d);
    }
}
