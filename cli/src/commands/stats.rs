//! `allies stats`: game statistics per map and difficulty (the command service).

use allies_contracts::command::v1::GetGameStatisticsRequest;
use allies_contracts::command::v1::game_statistics_service_client::GameStatisticsServiceClient;
use clap::Args;

use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Args)]
pub struct Stats {
    /// Only this map.
    #[arg(long, default_value = "")]
    map: String,
    /// Only this difficulty.
    #[arg(long, default_value = "")]
    difficulty: String,
}

pub async fn run(s: &Stats, ctx: &Context) -> Result<(), Failure> {
    let mut client = GameStatisticsServiceClient::new(ctx.channel(&ctx.command).await?);
    let request = GetGameStatisticsRequest { map: s.map.clone(), difficulty: s.difficulty.clone() };
    let r = client.get_game_statistics(ctx.authorized(request)?).await?.into_inner();
    print(ctx.json, &r, || {
        let mut lines = vec![format!(
            "{:<10} {:<8} {:>6} {:>6} {:>9} {:>9} {:>10}  towers",
            "map", "level", "games", "won", "avg wave", "best wave", "avg length"
        )];
        for m in &r.statistics {
            let towers: Vec<String> = m.towers.iter().map(|t| format!("{} {}", t.tower_type, t.count)).collect();
            lines.push(format!(
                "{:<10} {:<8} {:>6} {:>5.0}% {:>9.1} {:>9} {:>9}s  {}",
                m.map,
                m.difficulty,
                m.games,
                m.win_rate * 100.0,
                m.average_wave,
                m.best_wave,
                m.average_duration_ms / 1000,
                towers.join(", ")
            ));
        }
        if r.statistics.is_empty() {
            lines.push("  (no finished game yet)".into());
        }
        lines.join("\n")
    });
    Ok(())
}

#[derive(Args)]
pub struct Metrics {
    /// Only these series (repeat; default: all).
    #[arg(long = "series")]
    series: Vec<String>,
    /// How far back, in minutes.
    #[arg(long, default_value_t = 60)]
    minutes: i64,
    /// One point per step, in seconds.
    #[arg(long, default_value_t = 60)]
    step: i64,
}

/// `allies metrics`: the fleet's sampled time series (admins).
pub async fn run_metrics(m: &Metrics, ctx: &Context) -> Result<(), Failure> {
    use allies_contracts::command::v1::GetSystemMetricsRequest;
    use allies_contracts::command::v1::system_metrics_service_client::SystemMetricsServiceClient;
    let mut client = SystemMetricsServiceClient::new(ctx.channel(&ctx.command).await?);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
    let request = GetSystemMetricsRequest {
        from_ms: now - m.minutes * 60_000,
        to_ms: now,
        step_ms: m.step * 1000,
        series: m.series.clone(),
    };
    let r = client.get_system_metrics(ctx.authorized(request)?).await?.into_inner();
    print(ctx.json, &r, || {
        let mut lines = vec![format!("sampled every {} ms; last value, then the series (oldest first)", r.interval_ms)];
        for s in &r.series {
            let last = s.points.last().map(|p| format!("{}", p.value)).unwrap_or_else(|| "-".into());
            let points: Vec<String> = s.points.iter().map(|p| format!("{}", p.value)).collect();
            lines.push(format!("  {:<28} {:>14}  [{}]", s.name, last, points.join(" ")));
        }
        lines.join("\n")
    });
    Ok(())
}
