//! Operating the projections (admins only): `allies projections | rebuild |
//! check | dlq … | follow`.

use allies_contracts::projector::v1::event_subscription_service_client::EventSubscriptionServiceClient;
use allies_contracts::projector::v1::projector_admin_service_client::ProjectorAdminServiceClient;
use allies_contracts::projector::v1::*;
use clap::Subcommand;

use crate::context::Context;
use crate::output::{Failure, print};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Every projection's state, counts, lag and last error (admins only).
    Projections,
    /// Every consumer group of the fleet (projections, sagas, integration
    /// subscribers): lag, pending, dead letters (admins only).
    Subscriptions,
    /// Blue/green rebuild of a projection from the start of the logs (admins only).
    Rebuild { projection: String },
    /// Compare a projection's read models with its events (admins only).
    Check {
        /// rm.user, rm.session, …
        projection: String,
        /// Rewrite every read model that drifted.
        #[arg(long)]
        repair: bool,
    },
    /// Dead letters of a projection (admins only).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Follow a category's events as they happen (admins only); one JSON line
    /// each, secrets redacted.
    Follow {
        /// Aggregate type: user, session, …
        category: String,
        /// "start", a cursor from an earlier line, or nothing for "from now".
        #[arg(long, default_value = "")]
        from: String,
        /// Stop after this many events (0 = follow until interrupted).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List a projection's dead letters (rm.user, rm.session, …).
    List {
        projection: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Run dead letters through the projection again.
    Replay {
        projection: String,
        #[command(flatten)]
        which: Which,
    },
    /// Delete dead letters.
    Purge {
        projection: String,
        #[command(flatten)]
        which: Which,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// Dead letter ids (as `dlq list` shows them).
    #[arg(long = "id")]
    ids: Vec<String>,
    #[arg(long)]
    event_type: Option<String>,
    #[arg(long)]
    all: bool,
}

impl Which {
    fn selection(&self, projection: &str) -> DeadLetterSelection {
        DeadLetterSelection {
            projection: projection.to_owned(),
            ids: self.ids.clone(),
            event_type: self.event_type.clone().unwrap_or_default(),
            all: self.all,
        }
    }
}

pub async fn run(command: &AdminCommand, ctx: &Context) -> Result<(), Failure> {
    let json = ctx.json;
    match command {
        AdminCommand::Subscriptions => {
            let mut client = ProjectorAdminServiceClient::new(ctx.channel(&ctx.projector).await?);
            let r = client.list_subscriptions(ctx.authorized(ListSubscriptionsRequest {})?).await?.into_inner();
            print(json, &r, || {
                let mut lines = vec![format!(
                    "{:<14} {:<34} {:>6} {:>8} {:>13} {:>8}",
                    "group", "reads", "lag", "pending", "dead letters", "streams"
                )];
                for s in &r.subscriptions {
                    let reads = if s.topic.is_empty() {
                        format!("{} log", s.aggregate_type)
                    } else {
                        format!("topic {} ({})", s.topic, s.aggregate_type)
                    };
                    lines.push(format!(
                        "{:<14} {:<34} {:>6} {:>8} {:>13} {:>8}",
                        s.group, reads, s.lag, s.pending, s.dead_letters, s.streams
                    ));
                }
                lines.join("\n")
            });
        }
        AdminCommand::Projections => {
            let mut client = ProjectorAdminServiceClient::new(ctx.channel(&ctx.projector).await?);
            let r = client.list_projections(ctx.authorized(ListProjectionsRequest {})?).await?.into_inner();
            print(json, &r, || {
                r.projections
                    .iter()
                    .map(|p| {
                        format!(
                            "{:<11} {:<12} generation {}  processed {}  failed {}  dead letters {}  lag {}  pending {}  breaker {}{}",
                            p.name,
                            p.state,
                            p.generation,
                            p.processed,
                            p.failed,
                            p.dead_letters,
                            p.lag,
                            p.pending,
                            p.breaker,
                            if p.last_error.is_empty() { String::new() } else { format!("\n  last error: {}", p.last_error) }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AdminCommand::Rebuild { projection } => {
            let mut client = ProjectorAdminServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = RebuildProjectionRequest { projection: projection.clone() };
            let r = client.rebuild_projection(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || {
                format!(
                    "rebuilding {projection} as generation {} (namespace {}, group {}); queries switch when it has caught up",
                    r.generation, r.namespace, r.group
                )
            });
        }
        AdminCommand::Check { projection, repair } => {
            let mut client = ProjectorAdminServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = CheckConsistencyRequest { projection: projection.clone(), repair: *repair };
            let r = client.check_consistency(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || {
                let mut lines = vec![format!(
                    "checked {} read models of {projection}: {} drifted, {} repaired",
                    r.checked,
                    r.drifted.len(),
                    r.repaired
                )];
                lines.extend(r.drifted.iter().map(|d| format!("  {}: {}", d.aggregate_id, d.problem)));
                lines.join("\n")
            });
        }
        AdminCommand::Dlq(DlqCommand::List { projection, limit }) => {
            let mut client = ProjectorAdminServiceClient::new(ctx.channel(&ctx.projector).await?);
            let request = ListDeadLettersRequest { projection: projection.clone(), limit: *limit };
            let r = client.list_dead_letters(ctx.authorized(request)?).await?.into_inner();
            print(json, &r, || {
                if r.dead_letters.is_empty() {
                    return format!("no dead letters in {projection}");
                }
                r.dead_letters
                    .iter()
                    .map(|d| {
                        format!(
                            "{}  {} {} v{}  after {} attempts: {}",
                            d.id, d.event_type, d.aggregate_id, d.version, d.attempts, d.error
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AdminCommand::Dlq(DlqCommand::Replay { projection, which }) => {
            let mut client = ProjectorAdminServiceClient::new(ctx.channel(&ctx.projector).await?);
            let r = client.replay_dead_letters(ctx.authorized(which.selection(projection))?).await?.into_inner();
            print(json, &r, || format!("replayed {}, still failing {}", r.replayed, r.failed));
        }
        AdminCommand::Dlq(DlqCommand::Purge { projection, which }) => {
            let mut client = ProjectorAdminServiceClient::new(ctx.channel(&ctx.projector).await?);
            let r = client.purge_dead_letters(ctx.authorized(which.selection(projection))?).await?.into_inner();
            print(json, &r, || format!("purged {}", r.purged));
        }
        AdminCommand::Follow { category, from, limit } => {
            let mut client = EventSubscriptionServiceClient::new(ctx.stream_channel(&ctx.projector).await?);
            let request = FollowRequest { category: category.clone(), from: from.clone() };
            let mut stream = client.follow(ctx.authorized(request)?).await?.into_inner();
            let mut n = 0;
            while let Some(e) = stream.message().await? {
                let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap_or(serde_json::Value::Null);
                crate::output::json_line(&serde_json::json!({
                    "cursor": e.cursor, "eventType": e.event_type, "aggregateId": e.aggregate_id,
                    "version": e.version, "schemaVersion": e.schema_version, "recordedAtMs": e.recorded_at_ms,
                    "data": data,
                }));
                n += 1;
                if *limit > 0 && n >= *limit {
                    break;
                }
            }
        }
    }
    Ok(())
}
