//! Structured logs through `tracing`: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches to one JSON object per line. Colour codes only
//! when writing to a terminal (never into log files).

use tonic::Request;
use tracing_subscriber::EnvFilter;

use crate::config::ServiceConfig;

/// Installs the global subscriber for a service. Safe to call more than once
/// (tests start several services in one process): the first one wins.
pub fn init(config: &ServiceConfig) {
    init_with(&config.name, &config.log_filter, config.log_json);
}

/// As [`init`], for tools without a service configuration.
pub fn init_with(service: &str, filter: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
    tracing::debug!(service, "telemetry initialised");
}

/// The W3C `traceparent` of a request, if it carries a well-formed one
/// (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn traceparent_of<T>(request: &Request<T>) -> Option<String> {
    let v = request.metadata().get(crate::context::TRACEPARENT)?.to_str().ok()?;
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2))
        .then(|| v.to_owned())
}
