//! An in-process OpenTelemetry collector: the OTLP/gRPC trace service on
//! the real OTLP protos, keeping every span it receives with the service
//! that sent it (tests and benchmarks point the fleet's
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// A received span with the service that sent it.
#[derive(Clone, Debug)]
pub struct Got {
    pub service: String,
    pub span: Span,
}

impl Got {
    pub fn trace(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    pub fn attr(&self, key: &str) -> String {
        self.span
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.clone())
            .map(|v| match v {
                Value::StringValue(s) => s,
                Value::IntValue(i) => i.to_string(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default()
    }
    /// The ids of the messages a consumer span processed: its own
    /// `messaging.message.id`, or each link's (a batch's span).
    pub fn message_ids(&self) -> Vec<String> {
        let own = self.attr("messaging.message.id");
        if !own.is_empty() {
            return vec![own];
        }
        let text = |a: &opentelemetry_proto::tonic::common::v1::KeyValue| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        };
        self.span
            .links
            .iter()
            .filter_map(|l| l.attributes.iter().find(|a| a.key == "messaging.message.id").and_then(text))
            .collect()
    }
    /// (trace id, span id) of each link.
    pub fn links(&self) -> Vec<(String, String)> {
        self.span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
pub struct Collector {
    pub spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Got { service: service.clone(), span });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Serves on a free loopback port; returns it with its endpoint URL.
    pub async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Self::default();
        let server = TraceServiceServer::new(c.clone()).max_decoding_message_size(64 << 20);
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder().add_service(server).serve_with_incoming(incoming).await;
        });
        (c, format!("http://{addr}"))
    }

    /// The first span `pick` accepts, waiting for the exporters (15 s).
    pub async fn wait(&self, what: &str, pick: impl Fn(&Got) -> bool) -> Got {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(g) = self.spans.lock().unwrap().iter().find(|g| pick(g)).cloned() {
                return g;
            }
            if Instant::now() > deadline {
                let all: Vec<String> = self
                    .spans
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|g| {
                        format!(
                            "{} {} {} parent {} links {:?}",
                            g.service,
                            g.span.name,
                            g.trace(),
                            g.parent(),
                            g.links()
                        )
                    })
                    .collect();
                panic!("no span: {what}; received:\n{}", all.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spans received so far.
    pub fn count(&self) -> usize {
        self.spans.lock().map(|s| s.len()).unwrap_or(0)
    }
}
