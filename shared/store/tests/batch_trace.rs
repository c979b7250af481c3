//! A read's entries applied together are traced as one consumer span (the
//! OpenTelemetry messaging conventions' batch `process`), linked to each
//! event's creation context with the entry's id on the link; a read none of
//! whose events was recorded builds no span. On a real `redis-server`, the
//! spans caught by an exporter of the test's own. Its own test binary: it
//! turns tracing on for the whole process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use allies_core::{ExpectedVersion, Metadata};
use allies_store::subscriber::{self, Handler, HandlerError, SubscriptionConfig};
use allies_store::{AppendRequest, EventStore, NewEvent, RecordedEvent, RedisEventStore, RedisTarget, keys};
use allies_testkit::RedisServer;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use uuid::Uuid;

/// Keeps every span it is given.
#[derive(Clone, Debug, Default)]
struct Caught(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Caught {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// Applies a read's entries together; counts what it applied.
#[derive(Default)]
struct Together {
    applied: Mutex<usize>,
    reads: Mutex<Vec<usize>>,
}

impl Handler for Together {
    async fn handle(&self, _: &RecordedEvent) -> Result<(), HandlerError> {
        *self.applied.lock().unwrap() += 1;
        Ok(())
    }

    fn batches(&self) -> bool {
        true
    }

    async fn handle_all(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        self.reads.lock().unwrap().push(events.len());
        *self.applied.lock().unwrap() += events.len();
        Ok(())
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traceparent(span: u64, sampled: bool) -> String {
    format!("00-{TRACE}-{span:016x}-{}", if sampled { "01" } else { "00" })
}

/// Appends one event with `traceparent` in its metadata; its log entry's id.
async fn append(store: &RedisEventStore, id: &str, version: u64, traceparent: String) -> String {
    let meta = Metadata { traceparent: Some(traceparent), ..allies_testkit::fixtures::meta() };
    let event = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Fine".into(),
        schema_version: 1,
        content_type: allies_store::CONTENT_TYPE_JSON.into(),
        data: b"{}".to_vec(),
    };
    let request = AppendRequest::new("thing", id, ExpectedVersion::Exact(version), &meta, 0, vec![event]);
    store.append(request).await.unwrap().log_ids.remove(0)
}

async fn applied(handler: &Together, n: usize) {
    allies_testkit::fixtures::wait_until("applied", Duration::from_secs(10), || *handler.applied.lock().unwrap() == n)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_applied_together_is_one_span_linked_to_each_recorded_creation() {
    let redis = RedisServer::start();
    let store = RedisEventStore::connect(&redis.url(), 1).await.unwrap();
    // Written before tracing is on, so each event keeps the traceparent
    // given here: five creations, the first three recorded.
    let mut ids = Vec::new();
    for (i, sampled) in [true, true, true, false, false].into_iter().enumerate() {
        ids.push(append(&store, &format!("a{i}"), 0, traceparent(i as u64 + 1, sampled)).await);
    }
    let caught = Caught::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(allies_store::trace::sdk_sampler())
        .with_simple_exporter(caught.clone())
        .build();
    allies_store::trace::install(provider.tracer("test"));

    let mut config = SubscriptionConfig::new("rm.test", "c", "thing", 1);
    config.claim_idle = Duration::from_millis(300);
    let handler = Arc::new(Together::default());
    let run = |handler: Arc<Together>| {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task =
            tokio::spawn(subscriber::run(RedisTarget::parse(&redis.url()).unwrap(), config.clone(), handler, stopped));
        (stop, task)
    };
    let (stop, task) = run(handler.clone());
    applied(&handler, 5).await;
    assert_eq!(*handler.reads.lock().unwrap(), vec![5], "the five entries came in one read");

    let spans = caught.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "one span for the read, not one per entry: {spans:#?}");
    let span = &spans[0];
    let log = keys::log_key("thing", 0);
    assert_eq!(span.name, format!("process {log}"));
    assert_eq!(span.span_kind, SpanKind::Consumer);
    let attr = |key: &str| span.attributes.iter().find(|a| a.key.as_str() == key).map(|a| a.value.to_string());
    assert_eq!(attr("messaging.batch.message_count").as_deref(), Some("5"));
    assert_eq!(attr("messaging.consumer.group.name").as_deref(), Some("rm.test"));
    assert_eq!(attr("messaging.operation.name").as_deref(), Some("process"));
    assert_eq!(attr("messaging.message.id"), None, "a message's id is on its link");
    // A link to each event's creation, in log order, naming its entry.
    let links: Vec<(String, String)> = span
        .links
        .links
        .iter()
        .map(|l| {
            let id = l.attributes.iter().find(|a| a.key.as_str() == "messaging.message.id").unwrap();
            (format!("{}-{}", l.span_context.trace_id(), l.span_context.span_id()), id.value.to_string())
        })
        .collect();
    let expected: Vec<(String, String)> =
        (1..=5).zip(&ids).map(|(s, id)| (format!("{TRACE}-{s:016x}"), id.to_string())).collect();
    assert_eq!(links, expected);
    let _ = stop.send(true);
    task.await.unwrap();

    // A read of events none of which was recorded: no span at all (the
    // appends run in an unrecorded trace now that tracing is on, so they
    // build none either and carry its traceparent, flags 00).
    for i in 0..3 {
        let unsampled = Some(allies_store::trace::Decision::Unsampled { trace_id: 7 });
        allies_store::trace::scoped(unsampled, append(&store, &format!("b{i}"), 0, traceparent(10 + i, false))).await;
    }
    let handler = Arc::new(Together::default());
    let (stop, task) = run(handler.clone());
    applied(&handler, 3).await;
    assert_eq!(*handler.reads.lock().unwrap(), vec![3]);
    let _ = provider.force_flush();
    assert_eq!(caught.0.lock().unwrap().len(), 1, "an unrecorded read built a span");
    let _ = stop.send(true);
    task.await.unwrap();
}
