//! Recorded maintenance: each operation runs as a job and ends in one
//! `MaintenancePerformed` (who, why, what, result).
//!
//! - projection rebuild, consistency check (and repair), dead-letter replay
//!   and purge, and deleting a retired projection generation go to the
//!   projector's admin gRPC API, with the requesting admin's credential
//!   (kept beside the job until that token expires);
//! - archiving the aggregates of a type whose last event is older than a
//!   date uses the store (snapshot first, archive, trim) through
//!   `allies-store-admin`, into the fleet's `ARCHIVE_DIR`;
//! - maintenance mode is a configuration change (`maintenance.writes_paused`)
//!   made for the admin: every instance applies it within a second, and a
//!   client's writes then get UNAVAILABLE with retry info while reads go on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use allies_contracts::command::events::CONFIGURATION_ID;
use allies_contracts::command::events::v1::MaintenanceSpec;
use allies_contracts::projector::v1::projector_admin_service_client::ProjectorAdminServiceClient;
use allies_contracts::projector::v1::*;
use allies_platform::RequestContext;
use allies_store::{CommandExecutor, ExecuteError, RedisConn, RedisEventStore};
use command_domain::configuration::{Configuration, ConfigurationCommand, ConfigurationError, Who};
use command_domain::job::JobCommand;
use tonic::transport::Channel;

use crate::attempt::{Attempt, Stop, credential_key};

pub struct Maintenance {
    pub conn: RedisConn,
    pub store: RedisEventStore,
    pub executor: CommandExecutor,
    /// `PROJECTOR_URL`.
    pub projector_url: String,
    pub archive_dir: PathBuf,
}

/// An operation's outcome: its result line, or why it failed.
type Outcome = Result<String, String>;

/// A call to another service, as the admin whose token it carries.
fn as_admin<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = allies_platform::auth::outgoing(message);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

impl Maintenance {
    /// Runs `spec` under `attempt` and records `MaintenancePerformed`.
    pub async fn run(&self, attempt: &Attempt, spec: &MaintenanceSpec) -> Result<(), Stop> {
        attempt.progress(0, 1, &spec.operation).await?;
        let outcome = match spec.operation.as_str() {
            "maintenance_mode" => self.mode(attempt, spec).await?,
            "archive_aggregates" => self.archive(attempt, spec).await?,
            _ => self.projector(attempt, spec).await?,
        };
        let (ok, result, error) = match outcome {
            Ok(r) => (true, r, String::new()),
            Err(e) => (false, String::new(), e),
        };
        let now_ms = allies_platform::context::now_ms();
        attempt.record(JobCommand::RecordMaintenance { attempt: attempt.attempt, ok, result, error, now_ms }).await?;
        let mut conn = self.conn.clone();
        let _: redis::RedisResult<i64> =
            redis::cmd("DEL").arg(credential_key(&attempt.id)).query_async(&mut conn).await;
        Ok(())
    }

    async fn mode(&self, attempt: &Attempt, spec: &MaintenanceSpec) -> Result<Outcome, Stop> {
        let mut changes = BTreeMap::from([("maintenance.writes_paused".to_owned(), u8::from(spec.enable).to_string())]);
        if spec.enable && spec.retry_after_secs > 0 {
            changes.insert("maintenance.retry_after_secs".to_owned(), spec.retry_after_secs.to_string());
        }
        let by = Who { user_id: attempt.job.by.clone(), name: attempt.job.by.clone() };
        let reason = format!("maintenance {}: {}", attempt.id, attempt.job.reason);
        let ctx = RequestContext::system(allies_platform::context::now_ms()).command_context();
        for _ in 0..5 {
            let current = allies_store::load::<Configuration>(&**self.executor.store(), CONFIGURATION_ID).await?;
            let command = ConfigurationCommand::Update {
                expected_version: current.version,
                changes: changes.clone(),
                reason: reason.clone(),
                by: by.clone(),
                now_ms: ctx.now_ms,
            };
            let state = if spec.enable { "on: a client's writes are refused" } else { "off: writes go on" };
            return match self.executor.execute::<Configuration>(CONFIGURATION_ID, &command, &ctx).await {
                Ok(done) => Ok(Ok(format!("maintenance mode {state} (configuration version {})", done.version))),
                Err(ExecuteError::Domain(ConfigurationError::NoChange)) => {
                    Ok(Ok(format!("maintenance mode was already {state} (configuration version {})", current.version)))
                }
                Err(ExecuteError::Domain(ConfigurationError::VersionMismatch { .. })) => continue,
                Err(ExecuteError::Domain(e)) => Ok(Err(e.to_string())),
                Err(e) => Err(Stop::Retry(e.to_string())),
            };
        }
        Ok(Err("the configuration kept changing concurrently; request again".into()))
    }

    async fn archive(&self, attempt: &Attempt, spec: &MaintenanceSpec) -> Result<Outcome, Stop> {
        let idle = match allies_store_admin::idle_since(&self.store, &spec.aggregate_type, spec.older_than_ms).await {
            Ok(idle) => idle,
            Err(allies_store_admin::AdminError::Store(e)) => return Err(e.into()),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let total = idle.len() as u64;
        let (mut archived, mut events, mut untouched, mut failed) = (0u64, 0u64, 0u64, Vec::new());
        for (i, (id, _)) in idle.iter().enumerate() {
            attempt.progress(i as u64, total, "archiving").await?;
            match allies_store_admin::archive(&self.store, &spec.aggregate_type, id, &self.archive_dir).await {
                Ok(a) if a.report.archived > 0 => {
                    archived += 1;
                    events += a.report.archived;
                }
                Ok(_) => untouched += 1,
                Err(e) => failed.push(format!("{id}: {e}")),
            }
        }
        attempt.progress(total, total, "archived").await?;
        let line = format!(
            "{archived} of {total} {} aggregates idle before {} archived ({events} events) to {}; {untouched} had nothing left to archive",
            spec.aggregate_type,
            spec.older_than_ms,
            self.archive_dir.display()
        );
        if failed.is_empty() {
            Ok(Ok(line))
        } else {
            Ok(Err(format!("{line}; {} failed: {}", failed.len(), failed.join("; "))))
        }
    }

    /// The admin's credential, or the reason the job cannot act for them.
    async fn credential(&self, attempt: &Attempt) -> Result<Result<String, String>, Stop> {
        let mut conn = self.conn.clone();
        let token: Option<String> = redis::cmd("GET").arg(credential_key(&attempt.id)).query_async(&mut conn).await?;
        Ok(token.ok_or_else(|| {
            "the requesting admin's access token has expired before the job ran: request it again".to_owned()
        }))
    }

    async fn projector(&self, attempt: &Attempt, spec: &MaintenanceSpec) -> Result<Outcome, Stop> {
        let token = match self.credential(attempt).await? {
            Ok(t) => t,
            Err(why) => return Ok(Err(why)),
        };
        let channel = Channel::from_shared(self.projector_url.clone())
            .map_err(|e| Stop::Retry(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| Stop::Retry(format!("projector at {} unreachable: {e}", self.projector_url)))?;
        let mut admin = ProjectorAdminServiceClient::new(allies_platform::telemetry::traced(channel));
        // A refusal is the operation's result; only an unreachable projector retries.
        let done = |s: tonic::Status| -> Result<Outcome, Stop> {
            if s.code() == tonic::Code::Unavailable {
                Err(Stop::Retry(status_text(&s)))
            } else {
                Ok(Err(status_text(&s)))
            }
        };
        let selection = DeadLetterSelection {
            projection: spec.projection.clone(),
            event_type: spec.event_type.clone(),
            all: spec.event_type.is_empty(),
            ..Default::default()
        };
        match spec.operation.as_str() {
            "rebuild_projection" => {
                let r = match admin
                    .rebuild_projection(as_admin(
                        RebuildProjectionRequest { projection: spec.projection.clone() },
                        &token,
                    ))
                    .await
                {
                    Ok(r) => r.into_inner(),
                    Err(s) => return done(s),
                };
                // Wait for the switch, showing the new generation's lag.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let list = match admin.list_projections(as_admin(ListProjectionsRequest {}, &token)).await {
                        Ok(l) => l.into_inner().projections,
                        Err(s) => return done(s),
                    };
                    let Some(p) = list.into_iter().find(|p| p.name == spec.projection) else {
                        return Ok(Err("the projection disappeared during its rebuild".into()));
                    };
                    if p.generation >= r.generation && p.rebuilding_generation == 0 {
                        return Ok(Ok(format!(
                            "rebuilt into generation {} ({}, group {}); queries switched; generation {} is retired (delete_generation removes it)",
                            r.generation,
                            r.namespace,
                            r.group,
                            r.generation.saturating_sub(1)
                        )));
                    }
                    attempt.progress(0, 1, &format!("rebuilding generation {}: catching up", r.generation)).await?;
                    if tokio::time::Instant::now() > deadline {
                        return Ok(Err(format!("generation {} did not catch up within 10 minutes", r.generation)));
                    }
                }
            }
            "check_consistency" => {
                let request = CheckConsistencyRequest { projection: spec.projection.clone(), repair: spec.repair };
                match admin.check_consistency(as_admin(request, &token)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let shown: Vec<String> =
                            r.drifted.iter().take(5).map(|d| format!("{}: {}", d.aggregate_id, d.problem)).collect();
                        Ok(Ok(format!(
                            "checked {}, drifted {}, repaired {}{}",
                            r.checked,
                            r.drifted.len(),
                            r.repaired,
                            if shown.is_empty() { String::new() } else { format!(" ({})", shown.join("; ")) }
                        )))
                    }
                    Err(s) => done(s),
                }
            }
            "replay_dead_letters" => match admin.replay_dead_letters(as_admin(selection, &token)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    Ok(Ok(format!("replayed {}, still failing {}", r.replayed, r.failed)))
                }
                Err(s) => done(s),
            },
            "purge_dead_letters" => match admin.purge_dead_letters(as_admin(selection, &token)).await {
                Ok(r) => Ok(Ok(format!("purged {}", r.into_inner().purged))),
                Err(s) => done(s),
            },
            "delete_generation" => {
                let request =
                    DeleteGenerationRequest { projection: spec.projection.clone(), generation: spec.generation };
                match admin.delete_generation(as_admin(request, &token)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        Ok(Ok(format!(
                            "deleted generation {} of {}: {} keys in {}, {} consumer groups ({})",
                            spec.generation, spec.projection, r.keys_deleted, r.namespace, r.groups_deleted, r.group
                        )))
                    }
                    Err(s) => done(s),
                }
            }
            other => Ok(Err(format!("unknown operation {other}"))),
        }
    }
}
