//! Prometheus counters and histograms of the store: the subscriber runtime
//! (`allies_subscriber_*`) and the command loop (`allies_commands_total`, …).

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

// Static label values: an observation on the command path looks its
// series up without building a string (aggregate types are constants).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub aggregate_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub aggregate_type: &'static str,
    /// ok, refused (a domain rule), conflict (after the retries), error
    pub outcome: &'static str,
}

/// Counters and latencies of the command loop and the appends it makes.
#[derive(Debug)]
pub struct ExecutorMetrics {
    pub commands: Family<OutcomeLabels, Counter>,
    pub command_seconds: Family<TypeLabels, Histogram, fn() -> Histogram>,
    pub conflicts: Family<TypeLabels, Counter>,
    pub retries: Family<TypeLabels, Counter>,
    pub appends: Family<OutcomeLabels, Counter>,
    pub append_seconds: Family<TypeLabels, Histogram, fn() -> Histogram>,
}

impl ExecutorMetrics {
    /// Creates the metrics and registers them as `allies_commands_total`,
    /// `allies_command_duration_seconds`, `allies_command_conflicts_total`,
    /// `allies_command_retries_total`, `allies_appends_total` and
    /// `allies_append_duration_seconds`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            commands: Family::default(),
            command_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            conflicts: Family::default(),
            retries: Family::default(),
            appends: Family::default(),
            append_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        let r = registry.sub_registry_with_prefix("allies");
        r.register("commands", "Commands executed, by aggregate type and outcome", m.commands.clone());
        r.register(
            "command_duration_seconds",
            "Command latency (load, decide, append, retries)",
            m.command_seconds.clone(),
        );
        r.register("command_conflicts", "Appends refused by the version check", m.conflicts.clone());
        r.register("command_retries", "Commands re-run after a version conflict", m.retries.clone());
        r.register("appends", "Appends to the event store, by aggregate type and result", m.appends.clone());
        r.register("append_duration_seconds", "Latency of one append script", m.append_seconds.clone());
        Arc::new(m)
    }

    fn labels(aggregate_type: &'static str) -> TypeLabels {
        TypeLabels { aggregate_type }
    }

    pub fn observe_command(&self, aggregate_type: &'static str, outcome: &'static str, took: std::time::Duration) {
        let l = OutcomeLabels { aggregate_type, outcome };
        self.commands.get_or_create(&l).inc();
        self.command_seconds.get_or_create(&Self::labels(aggregate_type)).observe(took.as_secs_f64());
    }

    pub fn observe_append(&self, aggregate_type: &'static str, took: std::time::Duration, ok: bool) {
        let outcome = if ok { "ok" } else { "refused_or_failed" };
        let l = OutcomeLabels { aggregate_type, outcome };
        self.appends.get_or_create(&l).inc();
        self.append_seconds.get_or_create(&Self::labels(aggregate_type)).observe(took.as_secs_f64());
    }

    pub fn count_conflict(&self, aggregate_type: &'static str) {
        self.conflicts.get_or_create(&Self::labels(aggregate_type)).inc();
    }

    pub fn count_retry(&self, aggregate_type: &'static str) {
        self.retries.get_or_create(&Self::labels(aggregate_type)).inc();
    }
}
