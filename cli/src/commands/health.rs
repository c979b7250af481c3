//! `allies health`: grpc.health.v1 of every service.

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::context::Context;
use crate::output::{Failure, print};

#[derive(clap::Args)]
pub struct Health {
    /// Keep asking until every service is SERVING or this many seconds pass.
    #[arg(long, default_value_t = 0)]
    wait: u64,
    /// Check only this service.
    #[arg(long, value_parser = ["guardian", "timesquare", "command", "projector"])]
    only: Option<String>,
}

async fn status(ctx: &Context, endpoint: &str) -> String {
    let Ok(channel) = ctx.channel(endpoint).await else { return "UNREACHABLE".into() };
    match HealthClient::new(channel).check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await {
        Ok(r) => ServingStatus::try_from(r.into_inner().status)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_else(|_| "UNKNOWN".into()),
        Err(s) => format!("{:?}", s.code()),
    }
}

pub async fn run(args: &Health, ctx: &Context) -> Result<(), Failure> {
    let services = [
        ("guardian", &ctx.guardian),
        ("timesquare", &ctx.timesquare),
        ("command", &ctx.command),
        ("projector", &ctx.projector),
    ];
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    loop {
        let mut report = serde_json::Map::new();
        let mut all_serving = true;
        for (name, endpoint) in services.into_iter().filter(|(n, _)| args.only.as_deref().is_none_or(|o| o == *n)) {
            let s = status(ctx, endpoint).await;
            all_serving &= s == "SERVING";
            report.insert(name.to_owned(), serde_json::json!({ "endpoint": endpoint, "status": s }));
        }
        if all_serving || Instant::now() >= deadline {
            print(ctx.json, &report, || {
                report
                    .iter()
                    .map(|(n, v)| {
                        let endpoint = v["endpoint"].as_str().unwrap_or("");
                        format!("{n:<11} {endpoint:<40} {}", v["status"].as_str().unwrap_or(""))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            if all_serving {
                return Ok(());
            }
            return Err(Failure::unavailable("not every service is SERVING"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
