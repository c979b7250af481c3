//! `allies ops`: the operator's commands (admins) — the live configuration,
//! feature flags, game statistics, system metrics, reports and recorded
//! maintenance. Reports and maintenance are jobs: the command answers with
//! the job's id at once; `--wait` follows its progress until it ends.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use allies_contracts::command::v1::maintenance_service_client::MaintenanceServiceClient;
use allies_contracts::command::v1::report_service_client::ReportServiceClient;
use allies_contracts::command::v1::*;
use clap::{Args, Subcommand};

use crate::commands::{config, stats};
use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Subcommand)]
pub enum OpsCommand {
    /// The live configuration: get, set, rollback, history, status, rules.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Feature flags: list, set, kill, eval.
    #[command(subcommand)]
    Flags(FlagsCommand),
    /// Game statistics per map and difficulty.
    Stats(stats::Stats),
    /// The fleet's sampled metrics.
    Metrics(stats::Metrics),
    /// Reports, generated asynchronously: generate, status, list, download.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Recorded maintenance: each operation runs as a job and is recorded
    /// (who, why, what, result).
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
}

#[derive(Subcommand)]
pub enum FlagsCommand {
    /// Every flag and its definition.
    List,
    /// Define a flag: `allies ops flags set towers.tesla '{"enabled":true,"variants":["off","on"],"default":"off","rollout":[["on",25]]}' --reason …`.
    Set {
        name: String,
        definition: String,
        #[arg(long)]
        reason: String,
    },
    /// The kill switch: the flag gives its default to everyone (DISABLED).
    Kill {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Evaluate a flag for you: its value and why.
    Eval { name: String },
}

#[derive(Args)]
pub struct Wait {
    /// Follow the job's progress until it ends (exit 1 if it failed).
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Start a report; prints its id at once.
    Generate {
        /// daily_game_statistics | player_activity | operations_summary
        kind: String,
        /// csv | json
        #[arg(long, default_value = "csv")]
        format: String,
        /// Unix ms (default: 7 days before --to).
        #[arg(long)]
        from: Option<i64>,
        /// Unix ms (default: now).
        #[arg(long)]
        to: Option<i64>,
        #[arg(long, default_value = "report")]
        reason: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// A report's status and progress.
    Status {
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Recent reports, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Download a generated report (to a file, or stdout).
    Download {
        id: String,
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum MaintenanceCommand {
    /// Rebuild a projection blue/green (queries switch when it caught up).
    Rebuild {
        projection: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Compare a projection's read models with its events; --repair rewrites drifted ones.
    Check {
        projection: String,
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Re-apply a projection's dead letters (all, or one event type).
    Replay {
        projection: String,
        #[arg(long)]
        event_type: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Drop a projection's dead letters (all, or one event type).
    Purge {
        projection: String,
        #[arg(long)]
        event_type: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Archive (then trim from Redis) every aggregate of a type idle since a date.
    Archive {
        aggregate_type: String,
        /// Unix ms: the aggregates whose last event is before it.
        #[arg(long)]
        older_than: i64,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete a retired projection generation's keys and consumer group.
    DeleteGeneration {
        projection: String,
        generation: u64,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Maintenance mode: `on` pauses every client's writes (UNAVAILABLE with retry info), reads go on.
    Mode {
        /// on | off
        state: String,
        /// The retry delay refused writes are told (default: the configured one).
        #[arg(long, default_value_t = 0)]
        retry_after: u32,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// One maintenance job: its status and result.
    Status {
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// The record of maintenance performed, newest first.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

fn line(j: &Job, names: &HashMap<String, String>) -> String {
    let what = match (&j.report, &j.maintenance) {
        (Some(r), _) => {
            let at = allies_core::calendar::utc_time;
            format!("{} ({}, {} .. {})", r.kind, r.format, at(r.from_ms), at(r.to_ms))
        }
        (_, Some(m)) => {
            let on = if m.projection.is_empty() { m.aggregate_type.clone() } else { m.projection.clone() };
            format!("{} {on}", m.operation).trim().to_owned()
        }
        _ => String::new(),
    };
    // Progress while it runs; a finished job says how it ended, not "0/1".
    let running = j.status == "running" || j.status == "pending";
    let progress = if j.total > 0 && running { format!(" {}/{}", j.done, j.total) } else { String::new() };
    let mut out = format!("{} {} {}{progress}", j.id, j.status, what);
    if j.attempt > 0 {
        out.push_str(&format!("  attempt {} on {}", j.attempt, j.worker));
    }
    if !j.stage.is_empty() && j.status == "running" {
        out.push_str(&format!("  [{}]", j.stage));
    }
    if j.status == "done" && j.bytes > 0 {
        out.push_str(&format!("\n  {} rows, {} bytes, {} crc32 {}", j.rows, j.bytes, j.content_type, j.checksum));
    }
    if !j.result.is_empty() {
        out.push_str(&format!("\n  result: {}", j.result));
    }
    if !j.error.is_empty() {
        out.push_str(&format!("\n  error: {}", j.error));
    }
    let by = crate::context::named(names, &j.by);
    out.push_str(&format!("\n  by {by} at {}: {}", crate::output::when(j.requested_at_ms), j.reason));
    out
}

/// Prints the job; with `wait`, polls until it ends (a failed job exits 1).
async fn follow<F, Fut>(ctx: &Context, first: Job, wait: bool, mut get: F) -> Result<(), Failure>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Job, Failure>>,
{
    let mut j = first;
    if wait {
        let mut shown = String::new();
        while j.status == "pending" || j.status == "running" {
            let now = format!("{} {}/{} {}", j.status, j.done, j.total, j.stage);
            if !ctx.json && now != shown {
                eprintln!("{now}");
                shown = now;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            j = get(j.id.clone()).await?;
        }
    }
    let names = if ctx.json { HashMap::new() } else { ctx.names(std::slice::from_ref(&j.by)).await };
    print(ctx.json, &j, || line(&j, &names));
    if j.status == "failed" {
        return Err(Failure::new("JobFailed", format!("job {} failed: {}", j.id, j.error)));
    }
    Ok(())
}

pub async fn run(c: &OpsCommand, ctx: &Context) -> Result<(), Failure> {
    match c {
        OpsCommand::Config(c) => config::run(c, ctx).await,
        OpsCommand::Stats(s) => stats::run(s, ctx).await,
        OpsCommand::Metrics(m) => stats::run_metrics(m, ctx).await,
        OpsCommand::Flags(f) => flags(f, ctx).await,
        OpsCommand::Report(r) => report(r, ctx).await,
        OpsCommand::Maintenance(m) => maintenance(m, ctx).await,
    }
}

async fn flags(c: &FlagsCommand, ctx: &Context) -> Result<(), Failure> {
    let set = |name: &str, value: String, reason: &str| config::ConfigCommand::Set {
        changes: vec![format!("flag.{name}={value}")],
        reason: reason.to_owned(),
        expect: None,
    };
    match c {
        FlagsCommand::Eval { name } => config::run(&config::ConfigCommand::Flag { name: name.clone() }, ctx).await,
        FlagsCommand::Set { name, definition, reason } => {
            config::run(&set(name, definition.clone(), reason), ctx).await
        }
        FlagsCommand::List | FlagsCommand::Kill { .. } => {
            use allies_contracts::command::v1::configuration_service_client::ConfigurationServiceClient;
            let mut client = ConfigurationServiceClient::new(ctx.channel(&ctx.command).await?);
            let v = client.get_configuration(ctx.authorized(GetConfigurationRequest {})?).await?.into_inner();
            let flags: HashMap<String, String> = v
                .keys
                .into_iter()
                .filter(|k| k.kind == "flag")
                .map(|k| (k.key.trim_start_matches("flag.").to_owned(), k.value))
                .collect();
            let FlagsCommand::Kill { name, reason } = c else {
                let mut names: Vec<&String> = flags.keys().collect();
                names.sort();
                print(ctx.json, &flags, || {
                    if names.is_empty() {
                        return "(no flags)".into();
                    }
                    names.iter().map(|n| format!("{n:<24} {}", flags[*n])).collect::<Vec<_>>().join("\n")
                });
                return Ok(());
            };
            // One call: the server turns it off on whatever version is current.
            let request = KillFlagRequest { flag: name.clone(), reason: reason.clone() };
            let v = client.kill_flag(ctx.authorized(request)?).await?.into_inner();
            print(ctx.json, &v, || format!("flag {name} killed: off for everyone (configuration v{})", v.version));
            Ok(())
        }
    }
}

async fn report(c: &ReportCommand, ctx: &Context) -> Result<(), Failure> {
    let mut client = ReportServiceClient::new(ctx.channel(&ctx.command).await?);
    let getter = |client: ReportServiceClient<_>| {
        move |id: String| {
            let mut client = client.clone();
            async move { Ok(client.get_report(ctx.authorized(GetJobRequest { id })?).await?.into_inner()) }
        }
    };
    match c {
        ReportCommand::Generate { kind, format, from, to, reason, wait } => {
            let request = GenerateReportRequest {
                kind: kind.clone(),
                format: format.clone(),
                from_ms: from.unwrap_or(0),
                to_ms: to.unwrap_or(0),
                reason: reason.clone(),
            };
            let j = client.generate_report(ctx.authorized(request)?).await?.into_inner();
            follow(ctx, j, wait.wait, getter(client)).await
        }
        ReportCommand::Status { id, wait } => {
            let j = client.get_report(ctx.authorized(GetJobRequest { id: id.clone() })?).await?.into_inner();
            follow(ctx, j, wait.wait, getter(client)).await
        }
        ReportCommand::List { limit } => {
            let r = client.list_reports(ctx.authorized(ListJobsRequest { limit: *limit })?).await?.into_inner();
            let text = if ctx.json { String::new() } else { jobs(ctx, &r.jobs).await };
            print(ctx.json, &r, || text);
            Ok(())
        }
        ReportCommand::Download { id, output } => {
            let mut streaming = ReportServiceClient::new(ctx.stream_channel(&ctx.command).await?);
            let mut stream =
                streaming.download_report(ctx.authorized(GetJobRequest { id: id.clone() })?).await?.into_inner();
            let mut bytes = Vec::new();
            let mut checksum = String::new();
            while let Some(chunk) = stream.message().await? {
                if !chunk.checksum.is_empty() {
                    checksum = chunk.checksum.clone();
                }
                bytes.extend_from_slice(&chunk.data);
            }
            let got = format!("{:08x}", crc32(&bytes));
            if !checksum.is_empty() && got != checksum {
                return Err(Failure::new("DataLoss", format!("report {id}: crc32 {got}, expected {checksum}")));
            }
            match output {
                Some(path) => {
                    std::fs::write(path, &bytes)
                        .map_err(|e| Failure::local(format!("cannot write {}: {e}", path.display())))?;
                    eprintln!("{} bytes to {} (crc32 {got} checked)", bytes.len(), path.display());
                }
                None => {
                    let _ = std::io::stdout().write_all(&bytes);
                }
            }
            Ok(())
        }
    }
}

/// The jobs, each with its requester's name.
async fn jobs(ctx: &Context, list: &[Job]) -> String {
    if list.is_empty() {
        return "(none)".into();
    }
    let by: Vec<String> = list.iter().map(|j| j.by.clone()).collect();
    let names = ctx.names(&by).await;
    list.iter().map(|j| line(j, &names)).collect::<Vec<_>>().join("\n")
}

/// CRC-32 (IEEE), as the service computes the report's checksum.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

async fn maintenance(c: &MaintenanceCommand, ctx: &Context) -> Result<(), Failure> {
    use MaintenanceCommand as M;
    let mut client = MaintenanceServiceClient::new(ctx.channel(&ctx.command).await?);
    let getter = |client: MaintenanceServiceClient<_>| {
        move |id: String| {
            let mut client = client.clone();
            async move { Ok(client.get_maintenance(ctx.authorized(GetJobRequest { id })?).await?.into_inner()) }
        }
    };
    let base = |operation: &str, reason: &str| PerformMaintenanceRequest {
        operation: operation.into(),
        reason: reason.into(),
        ..Default::default()
    };
    let (request, wait) = match c {
        M::Status { id, wait } => {
            let j = client.get_maintenance(ctx.authorized(GetJobRequest { id: id.clone() })?).await?.into_inner();
            return follow(ctx, j, wait.wait, getter(client)).await;
        }
        M::History { limit } => {
            let r = client.list_maintenance(ctx.authorized(ListJobsRequest { limit: *limit })?).await?.into_inner();
            let text = if ctx.json { String::new() } else { jobs(ctx, &r.jobs).await };
            print(ctx.json, &r, || text);
            return Ok(());
        }
        M::Rebuild { projection, reason, wait } => {
            (PerformMaintenanceRequest { projection: projection.clone(), ..base("rebuild_projection", reason) }, wait)
        }
        M::Check { projection, repair, reason, wait } => (
            PerformMaintenanceRequest {
                projection: projection.clone(),
                repair: *repair,
                ..base("check_consistency", reason)
            },
            wait,
        ),
        M::Replay { projection, event_type, reason, wait } => (
            PerformMaintenanceRequest {
                projection: projection.clone(),
                event_type: event_type.clone().unwrap_or_default(),
                ..base("replay_dead_letters", reason)
            },
            wait,
        ),
        M::Purge { projection, event_type, reason, wait } => (
            PerformMaintenanceRequest {
                projection: projection.clone(),
                event_type: event_type.clone().unwrap_or_default(),
                ..base("purge_dead_letters", reason)
            },
            wait,
        ),
        M::Archive { aggregate_type, older_than, reason, wait } => (
            PerformMaintenanceRequest {
                aggregate_type: aggregate_type.clone(),
                older_than_ms: *older_than,
                ..base("archive_aggregates", reason)
            },
            wait,
        ),
        M::DeleteGeneration { projection, generation, reason, wait } => (
            PerformMaintenanceRequest {
                projection: projection.clone(),
                generation: *generation,
                ..base("delete_generation", reason)
            },
            wait,
        ),
        M::Mode { state, retry_after, reason, wait } => {
            let enable = match state.as_str() {
                "on" => true,
                "off" => false,
                _ => return Err(Failure::local("maintenance mode is `on` or `off`")),
            };
            (
                PerformMaintenanceRequest {
                    enable,
                    retry_after_secs: *retry_after,
                    ..base("maintenance_mode", reason)
                },
                wait,
            )
        }
    };
    let j = client.perform_maintenance(ctx.authorized(request)?).await?.into_inner();
    follow(ctx, j, wait.wait, getter(client)).await
}
