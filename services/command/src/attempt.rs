//! One attempt at a job as its worker sees it, and the keys a job's work
//! writes: what the worker (`jobs`) hands the reports and the maintenance
//! operations, a room below all three so none imports another for it.

use std::time::{Duration, Instant};

use allies_platform::RequestContext;
use allies_store::{CommandExecutor, ExecuteError, StoreError};
use command_domain::job::{Artifact, Job, JobCommand, JobError};

/// A report's bytes are sent in chunks of this size.
pub const CHUNK: usize = 64 * 1024;

pub fn data_key(id: &str, attempt: u32) -> String {
    format!("cmd:report:{id}:a{attempt}")
}

/// Where a maintenance job keeps the requesting admin's credential, until
/// the token expires: the worker acts with it on the projector.
pub fn credential_key(id: &str) -> String {
    format!("cmd:job:{id}:bearer")
}

/// The context of the worker's own commands.
pub(crate) fn system_context() -> allies_core::CommandContext {
    RequestContext::system(allies_platform::context::now_ms()).command_context()
}

/// Why a job's work stopped before its outcome.
#[derive(Debug)]
pub enum Stop {
    /// Another worker took the job over: this attempt must not write.
    Superseded,
    /// Redis or a dependency failed: the entry stays pending and is retried.
    Retry(String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Retry(e.to_string())
    }
}

impl From<redis::RedisError> for Stop {
    fn from(e: redis::RedisError) -> Self {
        Self::Retry(e.to_string())
    }
}

/// One attempt at a job, as the worker doing it sees it.
pub struct Attempt {
    pub id: String,
    pub attempt: u32,
    pub job: Job,
    pub(crate) executor: CommandExecutor,
    pub(crate) last_progress: std::sync::Mutex<Option<Instant>>,
}

impl Attempt {
    /// Runs a command under this attempt.
    pub async fn record(&self, command: JobCommand) -> Result<(), Stop> {
        match self.executor.execute::<Job>(&self.id, &command, &system_context()).await {
            Ok(_) => Ok(()),
            Err(ExecuteError::Domain(JobError::Superseded { .. } | JobError::Finished(_))) => Err(Stop::Superseded),
            Err(e) => Err(Stop::Retry(e.to_string())),
        }
    }

    /// Records the report's outcome under this attempt.
    pub async fn finish_report(&self, artifact: Artifact) -> Result<(), Stop> {
        let now_ms = allies_platform::context::now_ms();
        self.record(JobCommand::FinishReport { attempt: self.attempt, artifact, now_ms }).await
    }

    /// Records progress, at most twice a second (and always the last step).
    pub async fn progress(&self, done: u64, total: u64, stage: &str) -> Result<(), Stop> {
        let due = {
            let mut last = self.last_progress.lock().unwrap_or_else(|p| p.into_inner());
            let due = done >= total || last.is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if !due {
            return Ok(());
        }
        let now_ms = allies_platform::context::now_ms();
        self.record(JobCommand::Progress { attempt: self.attempt, done, total, stage: stage.to_owned(), now_ms }).await
    }
}
