//! Long work, asynchronous: reports and maintenance as Job aggregates.
//!
//! `GenerateReport` / `PerformMaintenance` validate, append `JobRequested`
//! and answer at once with the job's id. The workers are consumer group
//! `cmd.jobs` on the `job` partition log — one consumer per command-service
//! instance, so any replica may take a job:
//!
//! 1. the worker appends `JobStarted` (attempt n + 1) and does the work,
//!    writing `JobProgressed` at most twice a second;
//! 2. while it works, the subscriber keeps its entry fresh (see the
//!    reader's `keeping_fresh`), so no live worker's job is claimed;
//! 3. when it is killed, its entry goes idle and after `claim_idle` another
//!    instance claims it, starts attempt n + 1 and does the job again from
//!    the start; the dead attempt can no longer write (the decider refuses a
//!    superseded attempt), so the job ends with exactly one outcome event.
//!
//! A report's bytes are written under its attempt (`cmd:report:<id>:a<n>`,
//! expiring after the retention) and become the report only with the
//! attempt's `ReportGenerated`; other attempts' bytes are deleted then.

use std::sync::Arc;

use allies_contracts::command::events::JobEvent;
use allies_contracts::command::events::v1::{MaintenanceSpec, ReportSpec, job_requested};
use allies_contracts::command::v1::maintenance_service_server::MaintenanceService;
use allies_contracts::command::v1::report_service_server::ReportService;
use allies_contracts::command::v1::*;
use allies_platform::auth::Authenticator;
use allies_platform::status::OrStatus;
use allies_store::subscriber::{Handler, HandlerError};
use allies_store::{CommandExecutor, ExecuteError, RecordedEvent, RedisConn, StoreError};
use command_domain::job::{Job, JobCommand, JobError, Status, Work};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::attempt::{Attempt, Stop, credential_key, data_key};

pub const GROUP: &str = "cmd.jobs";
use crate::report_data::job_index as index;

/// The view of a job.
pub fn view(id: &str, version: u64, j: &Job) -> allies_contracts::command::v1::Job {
    let mut out = allies_contracts::command::v1::Job {
        id: id.to_owned(),
        kind: j.work.as_ref().map(Work::kind).unwrap_or_default().into(),
        status: j.status.as_str().into(),
        done: j.done,
        total: j.total,
        stage: j.stage.clone(),
        attempt: j.attempt,
        worker: j.worker.clone(),
        by: j.by.clone(),
        reason: j.reason.clone(),
        requested_at_ms: j.requested_at_ms,
        started_at_ms: j.started_at_ms,
        finished_at_ms: j.finished_at_ms,
        error: j.error.clone(),
        result: j.result.clone(),
        version,
        ..Default::default()
    };
    match &j.work {
        Some(Work::Report(r)) => {
            out.report = Some(GenerateReportRequest {
                kind: r.kind.clone(),
                format: r.format.clone(),
                from_ms: r.from_ms,
                to_ms: r.to_ms,
                reason: j.reason.clone(),
            })
        }
        Some(Work::Maintenance(m)) => {
            out.maintenance = Some(PerformMaintenanceRequest {
                operation: m.operation.clone(),
                projection: m.projection.clone(),
                repair: m.repair,
                event_type: m.event_type.clone(),
                aggregate_type: m.aggregate_type.clone(),
                older_than_ms: m.older_than_ms,
                generation: m.generation,
                enable: m.enable,
                retry_after_secs: m.retry_after_secs,
                reason: j.reason.clone(),
            })
        }
        None => {}
    }
    if let Some(a) = &j.artifact {
        (out.rows, out.bytes, out.checksum, out.content_type) =
            (a.rows, a.bytes, a.checksum.clone(), a.content_type.clone());
    }
    out
}

#[derive(Clone)]
pub struct JobsApi {
    pub auth: Arc<Authenticator>,
    /// A retried command answers its first reply.
    pub replies: Arc<allies_platform::Replies>,
    pub executor: CommandExecutor,
    pub conn: RedisConn,
}

impl JobsApi {
    async fn load(&self, id: &str, kind: &str) -> Result<(Job, u64), GrpcStatus> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(allies_platform::status::invalid_argument("id", "a job id (UUID)"));
        }
        let loaded = allies_store::load::<Job>(&**self.executor.store(), id).await.or_status()?;
        if loaded.state.status == Status::None || loaded.state.work.as_ref().map(Work::kind) != Some(kind) {
            return Err(GrpcStatus::not_found(format!("no {kind} job {id}")));
        }
        Ok((loaded.state, loaded.version))
    }

    /// Appends `JobRequested` (a retry with the same `x-command-id` answers
    /// the same job) and indexes it.
    async fn request<T>(
        &self,
        ctx: &allies_platform::RequestContext,
        request: &Request<T>,
        work: Work,
        reason: String,
    ) -> Result<allies_contracts::command::v1::Job, GrpcStatus> {
        let by = ctx.caller().map(|c| c.user_id.clone()).unwrap_or_default();
        let id = match ctx.command_id() {
            Some(key) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("job:{by}:{key}").as_bytes()),
            None => uuid::Uuid::now_v7(),
        }
        .to_string();
        let kind = work.kind();
        let mut conn = self.conn.clone();
        // The admin's credential is in place before the job exists: a worker
        // may take the job the moment `JobRequested` is appended, and must
        // find it (it was written after the append, and a quick worker
        // failed the job as "token expired").
        let mut credential = false;
        if kind == "maintenance"
            && let (Ok(token), Some(caller)) = (allies_platform::auth::bearer_token(request), ctx.caller.as_ref())
        {
            let ttl = caller.expires_at - ctx.now_ms / 1000;
            if ttl > 0 {
                redis::cmd("SET")
                    .arg(credential_key(&id))
                    .arg(token)
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(StoreError::from)
                    .or_status()?;
                credential = true;
            }
        }
        let command = JobCommand::Request { work, by: by.clone(), reason, now_ms: ctx.now_ms };
        let done = match self.executor.execute_with::<Job>(&id, &command, &ctx.command_context(), ctx.options()).await {
            Ok(done) => (done.state.as_ref().clone(), done.version),
            Err(ExecuteError::Domain(JobError::AlreadyRequested)) if ctx.command_id().is_some() => {
                return self.load(&id, kind).await.map(|(j, v)| view(&id, v, &j));
            }
            Err(e) => {
                if credential {
                    let _ = redis::cmd("DEL").arg(credential_key(&id)).query_async::<()>(&mut conn).await;
                }
                return Err(e).or_status();
            }
        };
        redis::cmd("ZADD")
            .arg(index(kind))
            .arg(ctx.now_ms)
            .arg(&id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(StoreError::from)
            .or_status()?;
        Ok(view(&id, done.1, &done.0))
    }

    async fn list(&self, kind: &str, limit: u32) -> Result<ListJobsResponse, GrpcStatus> {
        if limit > 500 {
            return Err(allies_platform::status::invalid_argument("limit", "at most 500"));
        }
        let limit = if limit == 0 { 50 } else { limit };
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(index(kind))
            .arg(0)
            .arg(limit as i64 - 1)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)
            .or_status()?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok((j, v)) = self.load(&id, kind).await {
                jobs.push(view(&id, v, &j));
            }
        }
        Ok(ListJobsResponse { jobs })
    }
}

/// The default report range: the 7 days up to now.
const WEEK_MS: i64 = 7 * 86_400_000;

type Chunks = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<ReportChunk, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl ReportService for JobsApi {
    async fn generate_report(
        &self,
        request: Request<GenerateReportRequest>,
    ) -> Result<Response<allies_contracts::command::v1::Job>, GrpcStatus> {
        let ctx = self.auth.admin_context(&request).await?;
        let r = request.get_ref().clone();
        let now = ctx.now_ms;
        let to_ms = if r.to_ms == 0 { now } else { r.to_ms };
        let from_ms = if r.from_ms == 0 { to_ms - WEEK_MS } else { r.from_ms };
        let format = if r.format.is_empty() { "csv".to_owned() } else { r.format.to_lowercase() };
        let spec = ReportSpec { kind: r.kind, format, from_ms, to_ms };
        let reason = if r.reason.trim().is_empty() { "report".to_owned() } else { r.reason };
        self.replies
            .once(&ctx, async { Ok(Response::new(self.request(&ctx, &request, Work::Report(spec), reason).await?)) })
            .await
    }

    async fn get_report(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<allies_contracts::command::v1::Job>, GrpcStatus> {
        self.auth.admin_context(&request).await?;
        let id = &request.get_ref().id;
        let (j, v) = self.load(id, "report").await?;
        Ok(Response::new(view(id, v, &j)))
    }

    async fn list_reports(&self, request: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, GrpcStatus> {
        self.auth.admin_context(&request).await?;
        Ok(Response::new(self.list("report", request.get_ref().limit).await?))
    }

    type DownloadReportStream = Chunks;

    async fn download_report(&self, request: Request<GetJobRequest>) -> Result<Response<Chunks>, GrpcStatus> {
        self.auth.admin_context(&request).await?;
        let id = request.get_ref().id.clone();
        let (j, _) = self.load(&id, "report").await?;
        let Some(artifact) = j.artifact.clone().filter(|_| j.status == Status::Done) else {
            return Err(GrpcStatus::failed_precondition(format!(
                "report {id} is {}{}",
                j.status.as_str(),
                if j.error.is_empty() { String::new() } else { format!(": {}", j.error) }
            )));
        };
        let key = data_key(&id, j.attempt);
        let mut conn = self.conn.clone();
        let stored: u64 =
            redis::cmd("LLEN").arg(&key).query_async(&mut conn).await.map_err(StoreError::from).or_status()?;
        if stored != u64::from(artifact.chunks) {
            return Err(GrpcStatus::not_found(format!(
                "report {id} has expired (reports are kept COMMAND_REPORT_RETENTION_SECS)"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for i in 0..artifact.chunks {
                let chunk: redis::RedisResult<Vec<u8>> =
                    redis::cmd("LINDEX").arg(&key).arg(i).query_async(&mut conn).await;
                let item = match chunk {
                    Ok(data) => Ok(ReportChunk {
                        data,
                        content_type: if i == 0 { artifact.content_type.clone() } else { String::new() },
                        total_bytes: if i == 0 { artifact.bytes } else { 0 },
                        checksum: if i == 0 { artifact.checksum.clone() } else { String::new() },
                    }),
                    Err(e) => Err(GrpcStatus::unavailable(format!("Redis: {e}"))),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl MaintenanceService for JobsApi {
    async fn perform_maintenance(
        &self,
        request: Request<PerformMaintenanceRequest>,
    ) -> Result<Response<allies_contracts::command::v1::Job>, GrpcStatus> {
        let ctx = self.auth.admin_context(&request).await?;
        let r = request.get_ref().clone();
        let spec = MaintenanceSpec {
            operation: r.operation,
            projection: r.projection,
            repair: r.repair,
            event_type: r.event_type,
            aggregate_type: r.aggregate_type,
            older_than_ms: r.older_than_ms,
            generation: r.generation,
            enable: r.enable,
            retry_after_secs: r.retry_after_secs,
        };
        self.replies
            .once(&ctx, async {
                Ok(Response::new(self.request(&ctx, &request, Work::Maintenance(spec), r.reason).await?))
            })
            .await
    }

    async fn get_maintenance(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<allies_contracts::command::v1::Job>, GrpcStatus> {
        self.auth.admin_context(&request).await?;
        let id = &request.get_ref().id;
        let (j, v) = self.load(id, "maintenance").await?;
        Ok(Response::new(view(id, v, &j)))
    }

    async fn list_maintenance(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, GrpcStatus> {
        self.auth.admin_context(&request).await?;
        Ok(Response::new(self.list("maintenance", request.get_ref().limit).await?))
    }
}

/// The `cmd.jobs` consumer: takes each requested job and does it.
pub struct Worker {
    pub executor: CommandExecutor,
    /// `command/<instance>`.
    pub name: String,
    pub reports: Arc<crate::reports::Reports>,
    /// Maintenance needs Redis and the projector (None: reports only, as
    /// in the in-memory scenarios).
    pub maintenance: Option<Arc<crate::maintenance::Maintenance>>,
}

impl Handler for Worker {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let e = event.typed::<JobEvent>().map_err(HandlerError::of_service)?;
        let JobEvent::Requested(requested) = &e.payload else { return Ok(()) };
        let id = e.aggregate_id.clone();
        // The index follows the log: the API indexes a job after appending
        // it, and this worker may take it first (an operations summary then
        // missed itself) or the API may have died between the two.
        let kind = match requested.work {
            Some(job_requested::Work::Maintenance(_)) => "maintenance",
            _ => "report",
        };
        if let Err(Stop::Retry(why)) = self.reports.data.index_job(kind, requested.at_ms, &id).await {
            return Err(HandlerError::new(why));
        }
        let start = JobCommand::Start { worker: self.name.clone(), now_ms: allies_platform::context::now_ms() };
        let started = match self.executor.execute::<Job>(&id, &start, &crate::attempt::system_context()).await {
            Ok(s) => s,
            // Done or failed already (a redelivery after the outcome).
            Err(ExecuteError::Domain(JobError::Finished(_))) => return Ok(()),
            Err(e) => return Err(HandlerError::of_service(e)),
        };
        let job = started.state.as_ref().clone();
        let attempt = Attempt {
            id: id.clone(),
            attempt: job.attempt,
            job,
            executor: self.executor.clone(),
            last_progress: Default::default(),
        };
        if attempt.job.status != Status::Running {
            return Ok(()); // the Start was the failure outcome (MAX_ATTEMPTS)
        }
        if attempt.attempt > 1 {
            tracing::warn!(job = %id, attempt = attempt.attempt, worker = %self.name, "took over a job whose worker stopped");
        }
        let result = match &attempt.job.work {
            Some(Work::Report(spec)) => self.reports.run(&attempt, spec).await,
            Some(Work::Maintenance(spec)) => match &self.maintenance {
                Some(m) => m.run(&attempt, spec).await,
                // Left pending: a worker that runs maintenance takes it.
                None => Err(Stop::Retry("this worker does not run maintenance".into())),
            },
            None => Ok(()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(Stop::Superseded) => {
                tracing::warn!(job = %id, attempt = attempt.attempt, "job attempt superseded; stopping it");
                Ok(())
            }
            Err(Stop::Retry(why)) => Err(HandlerError::new(why)),
        }
    }
}
