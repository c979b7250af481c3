//! `allies config`: the fleet's live configuration (admins).

use allies_contracts::command::v1::configuration_service_client::ConfigurationServiceClient;
use allies_contracts::command::v1::*;
use clap::Subcommand;
use tonic::transport::Channel;

use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Every key: value in force, default, range, who applies it live.
    #[command(alias = "show")]
    Get,
    /// Change keys: `allies config set auth.rate_per_username=3 --reason '…'`.
    Set {
        /// KEY=VALUE (repeat).
        #[arg(required = true)]
        changes: Vec<String>,
        #[arg(long)]
        reason: String,
        /// The version you read (default: the current one).
        #[arg(long)]
        expect: Option<u64>,
    },
    /// Put an earlier version's values back in force (0: every default), as a new version.
    Rollback {
        #[arg(long)]
        to: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        expect: Option<u64>,
    },
    /// Every setting of the fleet, from its one table: the environment
    /// variable and cqrs.yaml path that set it at deployment, whether the
    /// live configuration can change it (and who applies it), its type,
    /// range, default and unit. Needs no fleet.
    Keys {
        /// Only the settings whose name, variable or path contains this.
        filter: Option<String>,
    },
    /// Who changed what, when and why (newest first).
    History,
    /// Which instance of which service runs which version.
    Status,
    /// Evaluate a feature flag for you: its value and why (any signed-in user).
    Flag { name: String },
    /// Upload a game rules file (validated by the game's validator); with
    /// --activate new sessions use it (running ones keep theirs).
    Rules {
        file: std::path::PathBuf,
        #[arg(long)]
        activate: bool,
        #[arg(long)]
        reason: String,
    },
}

async fn client(ctx: &Context) -> Result<ConfigurationServiceClient<Channel>, Failure> {
    Ok(ConfigurationServiceClient::new(ctx.channel(&ctx.command).await?))
}

async fn current_version(c: &mut ConfigurationServiceClient<Channel>, ctx: &Context) -> Result<u64, Failure> {
    Ok(c.get_configuration(ctx.authorized(GetConfigurationRequest {})?).await?.into_inner().version)
}

fn show(v: &ConfigurationView) -> String {
    let mut lines = vec![format!(
        "version {} — set: an operator's value, in force everywhere; deployment: each instance's own (its environment, else the default)",
        v.version
    )];
    for k in &v.keys {
        let live = if k.applied_by.is_empty() { String::new() } else { format!("  live: {}", k.applied_by.join(", ")) };
        let (value, source) = match k.source.as_str() {
            "configuration" => (k.value.as_str(), "set"),
            _ => ("-", "deployment"),
        };
        lines.push(format!(
            "  {:<34} {:>8}  {source:<10} (default {}, {}..{}){live}",
            k.key, value, k.default_value, k.min, k.max
        ));
    }
    lines.join("\n")
}

/// The settings table as text.
fn keys(rows: &[&allies_core::settings::Setting]) -> String {
    let mut lines = vec![
        "precedence: environment variable, else cqrs.yaml, else the default; a live setting follows the live \
         configuration once an operator sets it (allies ops config set)"
            .to_owned(),
    ];
    for s in rows {
        let default = if s.default.is_empty() { "(derived)" } else { s.default };
        let live = if s.is_live() { format!("live: {}", s.live.join(", ")) } else { "deployment only".into() };
        lines.push(format!("{}  [{}] default {default} {}  {live}", s.name, s.allowed(), s.unit));
        let mut from = Vec::new();
        if let Some(e) = s.env {
            from.push(format!("env {e}"));
        }
        if let Some(y) = s.yaml {
            from.push(format!("cqrs.yaml {y}"));
        }
        if !from.is_empty() {
            lines.push(format!("    {}", from.join(", ")));
        }
        lines.push(format!("    {} (read by {})", s.description, s.services.join(", ")));
    }
    lines.join("\n")
}

pub async fn run(c: &ConfigCommand, ctx: &Context) -> Result<(), Failure> {
    if let ConfigCommand::Keys { filter } = c {
        let f = filter.as_deref().unwrap_or("").to_ascii_lowercase();
        let rows: Vec<_> = allies_core::settings::ALL
            .iter()
            .copied()
            .filter(|s| {
                [Some(s.name), s.env, s.yaml].into_iter().flatten().any(|n| n.to_ascii_lowercase().contains(&f))
            })
            .collect();
        print(ctx.json, &rows, || keys(&rows));
        return Ok(());
    }
    if let ConfigCommand::Flag { name } = c {
        use allies_contracts::command::v1::feature_flag_service_client::FeatureFlagServiceClient;
        let mut flags = FeatureFlagServiceClient::new(ctx.channel(&ctx.command).await?);
        let request = EvaluateFlagRequest { flag: name.clone(), default_value: String::new() };
        let e = flags.evaluate_flag(ctx.authorized(request)?).await?.into_inner();
        let why = if e.error_code.is_empty() { e.reason.clone() } else { format!("{} ({})", e.reason, e.error_code) };
        print(ctx.json, &e, || format!("{} = {} ({why}, configuration v{})", e.flag, e.value, e.version));
        return Ok(());
    }
    let mut client = client(ctx).await?;
    match c {
        ConfigCommand::Get => {
            let v = client.get_configuration(ctx.authorized(GetConfigurationRequest {})?).await?.into_inner();
            print(ctx.json, &v, || show(&v));
        }
        ConfigCommand::Set { changes, reason, expect } => {
            let mut map = std::collections::BTreeMap::new();
            for c in changes {
                let (k, v) = c.split_once('=').ok_or_else(|| Failure::local(format!("'{c}': write KEY=VALUE")))?;
                map.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            let expected_version = match expect {
                Some(v) => *v,
                None => current_version(&mut client, ctx).await?,
            };
            let request = UpdateConfigurationRequest { expected_version, changes: map, reason: reason.clone() };
            let v = client.update_configuration(ctx.authorized(request)?).await?.into_inner();
            print(ctx.json, &v, || {
                format!("configuration version {} (every instance applies it within a second)", v.version)
            });
        }
        ConfigCommand::Rollback { to, reason, expect } => {
            let expected_version = match expect {
                Some(v) => *v,
                None => current_version(&mut client, ctx).await?,
            };
            let request = RollbackConfigurationRequest { expected_version, to_version: *to, reason: reason.clone() };
            let v = client.rollback_configuration(ctx.authorized(request)?).await?.into_inner();
            print(ctx.json, &v, || format!("configuration version {}: the values of version {to}", v.version));
        }
        ConfigCommand::History => {
            let r = client
                .list_configuration_history(ctx.authorized(ListConfigurationHistoryRequest {})?)
                .await?
                .into_inner();
            let ids: Vec<String> = r.records.iter().map(|rec| rec.by.clone()).collect();
            let names = if ctx.json { Default::default() } else { ctx.names(&ids).await };
            print(ctx.json, &r, || {
                let mut lines = Vec::new();
                for rec in &r.records {
                    let what = if rec.kind == "rollback" {
                        format!("rollback to {}", rec.rolled_back_to)
                    } else {
                        rec.kind.clone()
                    };
                    lines.push(format!(
                        "v{} {what} by {} at {}: {}",
                        rec.version,
                        crate::context::named(&names, &rec.by),
                        crate::output::when(rec.at_ms),
                        rec.reason
                    ));
                    for ch in &rec.changes {
                        lines.push(format!("    {}: {} → {}", ch.key, ch.old_value, ch.new_value));
                    }
                }
                if lines.is_empty() {
                    lines.push("(no change yet: every key has its default)".into());
                }
                lines.join("\n")
            });
        }
        ConfigCommand::Flag { .. } | ConfigCommand::Keys { .. } => unreachable!("answered above"),
        ConfigCommand::Rules { file, activate, reason } => {
            let yaml = std::fs::read_to_string(file)
                .map_err(|e| Failure::local(format!("cannot read {}: {e}", file.display())))?;
            let expected_version = current_version(&mut client, ctx).await?;
            let request = UploadRulesRequest { yaml, activate: *activate, reason: reason.clone(), expected_version };
            let r = client.upload_rules(ctx.authorized(request)?).await?.into_inner();
            print(ctx.json, &r, || match r.configuration_version {
                0 => format!("rules version {} uploaded (not in use: --activate to use it)", r.rules_version),
                v => format!("rules version {} in force for new sessions (configuration v{v})", r.rules_version),
            });
        }
        ConfigCommand::Status => {
            let r =
                client.get_configuration_status(ctx.authorized(GetConfigurationStatusRequest {})?).await?.into_inner();
            print(ctx.json, &r, || {
                let mut lines = vec![format!("version {} in force", r.version)];
                for i in &r.instances {
                    // An instance polls every 250 ms: one a version behind
                    // while it is alive is applying it, not stuck.
                    let mut mark = match (i.version == r.version, i.alive) {
                        (true, _) => String::new(),
                        (false, true) => "  ← applying the new version".to_owned(),
                        (false, false) => "  ← behind".to_owned(),
                    };
                    if !i.not_applied.is_empty() {
                        mark.push_str(&format!("  ← not applied: {}", i.not_applied));
                    }
                    if !i.alive {
                        mark.push_str(&format!("  ← silent since {}", allies_core::calendar::utc_time(i.last_seen_ms)));
                    }
                    lines.push(format!("  {:<11} {:<24} v{}{mark}", i.service, i.instance, i.version));
                }
                lines.join("\n")
            });
        }
    }
    Ok(())
}
