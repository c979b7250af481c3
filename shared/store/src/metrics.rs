//! Counters and histograms of the subscriber runtime (Prometheus).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~4 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

#[derive(Debug)]
pub struct SubscriberMetrics {
    pub processed: Family<GroupLabels, Counter>,
    pub failed: Family<GroupLabels, Counter>,
    pub dead_lettered: Family<GroupLabels, Counter>,
    pub claimed: Family<GroupLabels, Counter>,
    pub handler_seconds: Family<GroupLabels, Histogram, fn() -> Histogram>,
    /// The last handler error per group.
    pub last_error: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl SubscriberMetrics {
    /// Creates the metrics and registers them under `allies_subscriber_*`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            processed: Family::default(),
            failed: Family::default(),
            dead_lettered: Family::default(),
            claimed: Family::default(),
            handler_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            last_error: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("allies_subscriber");
        r.register("processed", "Entries applied and acknowledged", m.processed.clone());
        r.register("failed", "Failed deliveries (each retry counts)", m.failed.clone());
        r.register("dead_lettered", "Entries moved to the dead-letter stream", m.dead_lettered.clone());
        r.register("claimed", "Entries claimed from other (dead) consumers", m.claimed.clone());
        r.register("handler_seconds", "Handler latency", m.handler_seconds.clone());
        Arc::new(m)
    }

    pub fn labels(group: &str) -> GroupLabels {
        GroupLabels { group: group.to_owned() }
    }
}
