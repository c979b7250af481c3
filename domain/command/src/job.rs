//! The Job aggregate (`job`): long work of the operations context — a
//! report or a maintenance operation — as a pure decider.
//!
//! A job is requested (validated here, so a bad request changes nothing),
//! then taken by a worker: every take is a new *attempt*, and a worker's
//! progress and outcome are accepted only under the attempt it holds. When a
//! worker dies mid-job, the one that takes over starts attempt n + 1; the
//! dead (or merely stalled) one can then no longer write, so a job has
//! exactly one outcome: `ReportGenerated`, `ReportFailed` or
//! `MaintenancePerformed`.
//!
//! | command  | pending | running (attempt n) | done / failed |
//! |----------|---------|---------------------|---------------|
//! | Request  | exists  | exists              | exists        |
//! | Start    | n = 1   | n + 1 (takeover); past MAX_ATTEMPTS the failure outcome | Finished |
//! | Progress | NotRunning | under n only     | Finished      |
//! | Finish / Fail | NotRunning | under n only | Finished     |

use allies_contracts::command::events::JobEvent;
use allies_contracts::command::events::v1::*;
use allies_core::{Aggregate, ErrorCode, FieldViolation, RuleViolation, ServiceError};
use serde::{Deserialize, Serialize};

pub const REPORT_KINDS: &[&str] = &["daily_game_statistics", "player_activity", "operations_summary"];
pub const REPORT_FORMATS: &[&str] = &["csv", "json"];
pub const OPERATIONS: &[&str] = &[
    "rebuild_projection",
    "check_consistency",
    "replay_dead_letters",
    "purge_dead_letters",
    "archive_aggregates",
    "delete_generation",
    "maintenance_mode",
];
/// A report covers at most this long a range.
pub const MAX_RANGE_MS: i64 = 366 * 86_400_000;
/// A job whose workers died this many times fails instead of being taken again.
pub const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Not requested.
    #[default]
    None,
    Pending,
    Running,
    Done,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Work {
    Report(ReportSpec),
    Maintenance(MaintenanceSpec),
}

impl Work {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Report(_) => "report",
            Self::Maintenance(_) => "maintenance",
        }
    }
}

/// A done report's artifact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub rows: u64,
    pub bytes: u64,
    pub checksum: String,
    pub content_type: String,
    pub chunks: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub status: Status,
    pub work: Option<Work>,
    pub by: String,
    pub reason: String,
    pub requested_at_ms: i64,
    pub attempt: u32,
    pub worker: String,
    pub started_at_ms: i64,
    pub done: u64,
    pub total: u64,
    pub stage: String,
    pub finished_at_ms: i64,
    pub error: String,
    pub artifact: Option<Artifact>,
    /// A maintenance operation's result.
    pub result: String,
}

impl allies_core::Snapshot for Job {
    const SNAPSHOT_SCHEMA: u32 = 1;
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobCommand {
    Request {
        work: Work,
        by: String,
        reason: String,
        now_ms: i64,
    },
    /// A worker takes the job (first, or after its last worker died).
    Start {
        worker: String,
        now_ms: i64,
    },
    Progress {
        attempt: u32,
        done: u64,
        total: u64,
        stage: String,
        now_ms: i64,
    },
    FinishReport {
        attempt: u32,
        artifact: Artifact,
        now_ms: i64,
    },
    FailReport {
        attempt: u32,
        error: String,
        now_ms: i64,
    },
    RecordMaintenance {
        attempt: u32,
        ok: bool,
        result: String,
        error: String,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error("{}", .0.iter().map(|v| format!("{}: {}", v.field, v.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldViolation>),
    #[error("this job was already requested")]
    AlreadyRequested,
    #[error("no such job")]
    NotRequested,
    #[error("the job has ended ({0})")]
    Finished(&'static str),
    #[error("the job is not running")]
    NotRunning,
    /// A worker writing under an attempt that another worker has replaced.
    #[error("attempt {attempt} was superseded by attempt {current}")]
    Superseded { attempt: u32, current: u32 },
    #[error("this is a {0} job")]
    WrongKind(&'static str),
}

impl ServiceError for JobError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::AlreadyRequested => ErrorCode::AlreadyExists,
            Self::NotRequested => ErrorCode::NotFound,
            Self::Finished(_) | Self::NotRunning | Self::WrongKind(_) => ErrorCode::FailedPrecondition,
            Self::Superseded { .. } => ErrorCode::Aborted,
        }
    }
    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            Self::Invalid(v) => v.clone(),
            _ => Vec::new(),
        }
    }
    fn rule(&self) -> Option<RuleViolation> {
        let rule = match self {
            Self::Invalid(_) | Self::NotRequested => return None,
            Self::AlreadyRequested => "JOB_EXISTS",
            Self::Finished(_) => "JOB_FINISHED",
            Self::NotRunning => "JOB_NOT_RUNNING",
            Self::Superseded { .. } => "JOB_ATTEMPT_SUPERSEDED",
            Self::WrongKind(_) => "JOB_KIND",
        };
        Some(RuleViolation { rule: rule.into(), subject: "job".into(), description: self.to_string() })
    }
}

fn one_of(field: &str, value: &str, allowed: &[&str], out: &mut Vec<FieldViolation>) {
    if !allowed.contains(&value) {
        let got = if value.is_empty() { "nothing".to_owned() } else { format!("'{value}'") };
        out.push(FieldViolation::new(field, format!("must be one of {}, got {got}", allowed.join(", "))));
    }
}

/// Checks what a report asks for.
pub fn validate_report(r: &ReportSpec) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    one_of("kind", &r.kind, REPORT_KINDS, &mut out);
    one_of("format", &r.format, REPORT_FORMATS, &mut out);
    if r.from_ms < 0 || r.to_ms <= 0 {
        out.push(FieldViolation::new("from_ms", "the range is Unix milliseconds, from before to"));
    } else if r.from_ms >= r.to_ms {
        out.push(FieldViolation::new("to_ms", "must be after from_ms"));
    } else if r.to_ms - r.from_ms > MAX_RANGE_MS {
        out.push(FieldViolation::new("to_ms", "a report covers at most 366 days"));
    }
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks what a maintenance operation asks for: each operation's own
/// parameters are required.
pub fn validate_maintenance(m: &MaintenanceSpec) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    one_of("operation", &m.operation, OPERATIONS, &mut out);
    let needs_projection = matches!(
        m.operation.as_str(),
        "rebuild_projection" | "check_consistency" | "replay_dead_letters" | "purge_dead_letters" | "delete_generation"
    );
    if needs_projection && !is_name(&m.projection) {
        out.push(FieldViolation::new(
            "projection",
            "name the projection (allies ops maintenance projections lists them)",
        ));
    }
    if !m.event_type.is_empty() && !is_name(&m.event_type) {
        out.push(FieldViolation::new("event_type", "an event type name, e.g. UserRegistered"));
    }
    if m.operation == "archive_aggregates" {
        if !is_name(&m.aggregate_type) {
            out.push(FieldViolation::new("aggregate_type", "name the aggregate type, e.g. game_session"));
        }
        if m.older_than_ms <= 0 {
            out.push(FieldViolation::new("older_than_ms", "give the date (Unix ms) the last event must be before"));
        }
    }
    if m.operation == "maintenance_mode" && m.enable && !(0..=3_600).contains(&m.retry_after_secs) {
        out.push(FieldViolation::new("retry_after_secs", "must be 0 (the configured default) to 3600"));
    }
    out
}

impl Job {
    fn under(&self, attempt: u32) -> Result<(), JobError> {
        match self.status {
            Status::None => Err(JobError::NotRequested),
            Status::Done => Err(JobError::Finished("done")),
            Status::Failed => Err(JobError::Finished("failed")),
            Status::Pending => Err(JobError::NotRunning),
            Status::Running if attempt != self.attempt => Err(JobError::Superseded { attempt, current: self.attempt }),
            Status::Running => Ok(()),
        }
    }

    fn kind(&self) -> &'static str {
        self.work.as_ref().map(Work::kind).unwrap_or("")
    }

    pub fn maintenance(&self) -> Option<&MaintenanceSpec> {
        match &self.work {
            Some(Work::Maintenance(m)) => Some(m),
            _ => None,
        }
    }

    pub fn report(&self) -> Option<&ReportSpec> {
        match &self.work {
            Some(Work::Report(r)) => Some(r),
            _ => None,
        }
    }
}

impl Aggregate for Job {
    const TYPE: &'static str = allies_contracts::command::events::JOB_TYPE;
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;

    fn decide(&self, command: &JobCommand) -> Result<Vec<JobEvent>, JobError> {
        match command {
            JobCommand::Request { work, by, reason, now_ms } => {
                let mut invalid = match work {
                    Work::Report(r) => validate_report(r),
                    Work::Maintenance(m) => validate_maintenance(m),
                };
                crate::configuration::check_reason(reason, &mut invalid);
                if !invalid.is_empty() {
                    return Err(JobError::Invalid(invalid));
                }
                if self.status != Status::None {
                    return Err(JobError::AlreadyRequested);
                }
                let work = match work {
                    Work::Report(r) => job_requested::Work::Report(r.clone()),
                    Work::Maintenance(m) => job_requested::Work::Maintenance(m.clone()),
                };
                Ok(vec![JobEvent::Requested(JobRequested {
                    work: Some(work),
                    reason: reason.trim().to_owned(),
                    by: by.clone(),
                    at_ms: *now_ms,
                })])
            }
            JobCommand::Start { worker, now_ms } => match self.status {
                Status::None => Err(JobError::NotRequested),
                Status::Done => Err(JobError::Finished("done")),
                Status::Failed => Err(JobError::Finished("failed")),
                // Every worker that took it stopped: a poison job ends, failed.
                Status::Running if self.attempt >= MAX_ATTEMPTS => {
                    let error = format!("gave up: {MAX_ATTEMPTS} workers stopped while doing this job");
                    Ok(vec![match self.maintenance() {
                        Some(what) => JobEvent::MaintenancePerformed(MaintenancePerformed {
                            attempt: self.attempt,
                            what: Some(what.clone()),
                            by: self.by.clone(),
                            reason: self.reason.clone(),
                            ok: false,
                            result: String::new(),
                            error,
                            at_ms: *now_ms,
                        }),
                        None => JobEvent::ReportFailed(ReportFailed { attempt: self.attempt, error, at_ms: *now_ms }),
                    }])
                }
                Status::Pending | Status::Running => Ok(vec![JobEvent::Started(JobStarted {
                    attempt: self.attempt + 1,
                    worker: worker.clone(),
                    at_ms: *now_ms,
                })]),
            },
            JobCommand::Progress { attempt, done, total, stage, now_ms } => {
                self.under(*attempt)?;
                Ok(vec![JobEvent::Progressed(JobProgressed {
                    attempt: *attempt,
                    done: *done,
                    total: *total,
                    stage: stage.clone(),
                    at_ms: *now_ms,
                })])
            }
            JobCommand::FinishReport { attempt, artifact, now_ms } => {
                self.under(*attempt)?;
                if self.report().is_none() {
                    return Err(JobError::WrongKind(self.kind()));
                }
                Ok(vec![JobEvent::ReportGenerated(ReportGenerated {
                    attempt: *attempt,
                    rows: artifact.rows,
                    bytes: artifact.bytes,
                    checksum: artifact.checksum.clone(),
                    content_type: artifact.content_type.clone(),
                    chunks: artifact.chunks,
                    at_ms: *now_ms,
                })])
            }
            JobCommand::FailReport { attempt, error, now_ms } => {
                self.under(*attempt)?;
                if self.report().is_none() {
                    return Err(JobError::WrongKind(self.kind()));
                }
                Ok(vec![JobEvent::ReportFailed(ReportFailed {
                    attempt: *attempt,
                    error: error.clone(),
                    at_ms: *now_ms,
                })])
            }
            JobCommand::RecordMaintenance { attempt, ok, result, error, now_ms } => {
                self.under(*attempt)?;
                let Some(what) = self.maintenance() else { return Err(JobError::WrongKind(self.kind())) };
                Ok(vec![JobEvent::MaintenancePerformed(MaintenancePerformed {
                    attempt: *attempt,
                    what: Some(what.clone()),
                    by: self.by.clone(),
                    reason: self.reason.clone(),
                    ok: *ok,
                    result: result.clone(),
                    error: error.clone(),
                    at_ms: *now_ms,
                })])
            }
        }
    }

    fn evolve(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Requested(e) => {
                self.status = Status::Pending;
                self.work = match &e.work {
                    Some(job_requested::Work::Report(r)) => Some(Work::Report(r.clone())),
                    Some(job_requested::Work::Maintenance(m)) => Some(Work::Maintenance(m.clone())),
                    None => None,
                };
                self.by = e.by.clone();
                self.reason = e.reason.clone();
                self.requested_at_ms = e.at_ms;
            }
            JobEvent::Started(e) => {
                self.status = Status::Running;
                self.attempt = e.attempt;
                self.worker = e.worker.clone();
                self.started_at_ms = e.at_ms;
                self.done = 0;
                self.stage.clear();
            }
            JobEvent::Progressed(e) => {
                self.done = e.done;
                self.total = e.total;
                self.stage = e.stage.clone();
            }
            JobEvent::ReportGenerated(e) => {
                self.status = Status::Done;
                self.finished_at_ms = e.at_ms;
                self.done = self.total.max(self.done);
                self.artifact = Some(Artifact {
                    rows: e.rows,
                    bytes: e.bytes,
                    checksum: e.checksum.clone(),
                    content_type: e.content_type.clone(),
                    chunks: e.chunks,
                });
            }
            JobEvent::ReportFailed(e) => {
                self.status = Status::Failed;
                self.finished_at_ms = e.at_ms;
                self.error = e.error.clone();
            }
            JobEvent::MaintenancePerformed(e) => {
                self.status = if e.ok { Status::Done } else { Status::Failed };
                self.finished_at_ms = e.at_ms;
                self.result = e.result.clone();
                self.error = e.error.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use allies_core::testing::given;

    use super::*;

    fn report() -> Work {
        Work::Report(ReportSpec {
            kind: "daily_game_statistics".into(),
            format: "csv".into(),
            from_ms: 1_000,
            to_ms: 2_000,
        })
    }

    fn request(work: Work) -> JobCommand {
        JobCommand::Request { work, by: "admin-1".into(), reason: "weekly review".into(), now_ms: 10 }
    }

    fn requested() -> JobEvent {
        let Ok(mut e) = Job::default().decide(&request(report())) else { panic!("valid request") };
        e.remove(0)
    }

    fn started(attempt: u32, worker: &str) -> JobEvent {
        JobEvent::Started(JobStarted { attempt, worker: worker.into(), at_ms: 20 })
    }

    fn finish(attempt: u32) -> JobCommand {
        JobCommand::FinishReport {
            attempt,
            artifact: Artifact {
                rows: 3,
                bytes: 90,
                checksum: "abc".into(),
                content_type: "text/csv".into(),
                chunks: 1,
            },
            now_ms: 30,
        }
    }

    #[test]
    fn a_bad_request_names_every_field_and_changes_nothing() {
        let bad = Work::Report(ReportSpec { kind: "sales".into(), format: "xml".into(), from_ms: 5, to_ms: 5 });
        let Err(JobError::Invalid(v)) =
            Job::default().decide(&JobCommand::Request { work: bad, by: "a".into(), reason: " ".into(), now_ms: 1 })
        else {
            panic!("refused")
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, vec!["kind", "format", "to_ms", "reason"]);
        assert!(v[0].reason.contains("daily_game_statistics"), "{v:?}");
        let too_long = Work::Report(ReportSpec {
            kind: "player_activity".into(),
            format: "json".into(),
            from_ms: 0,
            to_ms: MAX_RANGE_MS + 1,
        });
        assert!(matches!(Job::default().decide(&request(too_long)), Err(JobError::Invalid(_))));
    }

    #[test]
    fn each_maintenance_operation_needs_its_own_parameters() {
        let m = |op: &str| MaintenanceSpec { operation: op.into(), ..Default::default() };
        let fields = |spec: MaintenanceSpec| -> Vec<String> {
            validate_maintenance(&spec).into_iter().map(|v| v.field).collect()
        };
        assert_eq!(fields(m("rebuild_projection")), vec!["projection"]);
        assert_eq!(fields(m("archive_aggregates")), vec!["aggregate_type", "older_than_ms"]);
        assert_eq!(fields(m("drop_everything")), vec!["operation"]);
        assert!(fields(m("maintenance_mode")).is_empty());
        assert!(fields(MaintenanceSpec { projection: "rm.user".into(), ..m("delete_generation") }).is_empty());
    }

    #[test]
    fn a_job_is_requested_once() {
        given::<Job>([requested()]).when(request(report())).then_err(JobError::AlreadyRequested);
    }

    #[test]
    fn a_worker_takes_a_pending_job_as_attempt_one_and_a_takeover_is_the_next_attempt() {
        given::<Job>([requested()])
            .when(JobCommand::Start { worker: "command/a".into(), now_ms: 20 })
            .then([started(1, "command/a")]);
        given::<Job>([requested(), started(1, "command/a")])
            .when(JobCommand::Start { worker: "command/b".into(), now_ms: 20 })
            .then([started(2, "command/b")]);
    }

    #[test]
    fn only_the_attempt_in_force_may_progress_or_finish() {
        let history = [requested(), started(1, "command/a"), started(2, "command/b")];
        given::<Job>(history.clone()).when(finish(1)).then_err(JobError::Superseded { attempt: 1, current: 2 });
        given::<Job>(history.clone())
            .when(JobCommand::Progress { attempt: 1, done: 5, total: 10, stage: "x".into(), now_ms: 25 })
            .then_err(JobError::Superseded { attempt: 1, current: 2 });
        let done = given::<Job>(history).when(finish(2)).then([JobEvent::ReportGenerated(ReportGenerated {
            attempt: 2,
            rows: 3,
            bytes: 90,
            checksum: "abc".into(),
            content_type: "text/csv".into(),
            chunks: 1,
            at_ms: 30,
        })]);
        assert_eq!(done.status, Status::Done);
    }

    #[test]
    fn a_job_whose_workers_keep_dying_fails_instead_of_being_taken_again() {
        let mut history = vec![requested()];
        history.extend((1..=MAX_ATTEMPTS).map(|n| started(n, "command/a")));
        let state = given::<Job>(history).when(JobCommand::Start { worker: "command/b".into(), now_ms: 90 }).then([
            JobEvent::ReportFailed(ReportFailed {
                attempt: MAX_ATTEMPTS,
                error: format!("gave up: {MAX_ATTEMPTS} workers stopped while doing this job"),
                at_ms: 90,
            }),
        ]);
        assert_eq!(state.status, Status::Failed);
    }

    #[test]
    fn an_ended_job_has_exactly_one_outcome() {
        let generated = JobEvent::ReportGenerated(ReportGenerated { attempt: 1, ..Default::default() });
        let history = [requested(), started(1, "command/a"), generated];
        given::<Job>(history.clone()).when(finish(1)).then_err(JobError::Finished("done"));
        given::<Job>(history)
            .when(JobCommand::Start { worker: "command/b".into(), now_ms: 40 })
            .then_err(JobError::Finished("done"));
        given::<Job>([requested()]).when(finish(1)).then_err(JobError::NotRunning);
        given::<Job>([]).when(finish(1)).then_err(JobError::NotRequested);
    }

    #[test]
    fn maintenance_is_recorded_with_who_why_what_and_the_result() {
        let spec = MaintenanceSpec {
            operation: "check_consistency".into(),
            projection: "rm.user".into(),
            ..Default::default()
        };
        let Ok(mut e) = Job::default().decide(&request(Work::Maintenance(spec.clone()))) else { panic!() };
        let history = [e.remove(0), started(1, "command/a")];
        given::<Job>(history.clone()).when(finish(1)).then_err(JobError::WrongKind("maintenance"));
        let state = given::<Job>(history)
            .when(JobCommand::RecordMaintenance {
                attempt: 1,
                ok: true,
                result: "checked 4, drifted 0".into(),
                error: String::new(),
                now_ms: 50,
            })
            .then([JobEvent::MaintenancePerformed(MaintenancePerformed {
                attempt: 1,
                what: Some(spec),
                by: "admin-1".into(),
                reason: "weekly review".into(),
                ok: true,
                result: "checked 4, drifted 0".into(),
                error: String::new(),
                at_ms: 50,
            })]);
        assert_eq!((state.status, state.result.as_str()), (Status::Done, "checked 4, drifted 0"));
    }
}
