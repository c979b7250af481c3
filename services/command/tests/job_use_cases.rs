//! The command service's jobs in memory: a report job requested, taken by
//! the worker (the `cmd.jobs` consumer, here fed by a pump in commit order),
//! computed from the games topic and stored under its attempt; a worker that
//! dies mid-way and the takeover whose attempt alone counts; a job whose
//! workers keep dying fails after its last attempt. On the in-memory event
//! store and report data — no Redis, a few milliseconds each. The real
//! fleet's reports (kill -9 of a worker, downloads) stay in
//! `tests/e2e/tests/operations.rs`.

use std::sync::Arc;
use std::time::Duration;

use allies_contracts::command::events::v1::ReportSpec;
use allies_contracts::timesquare::integration::v1::GameEnded;
use allies_core::CommandContext;
use allies_store::subscriber::Handler;
use allies_store::{CommandExecutor, EventStore, ExecuteError, MemoryEventStore};
use command::jobs::Worker;
use command::report_data::MemoryReportData;
use command::reports::Reports;
use command_domain::job::{Artifact, Job, JobCommand, JobError, MAX_ATTEMPTS, Status, Work};
use uuid::Uuid;

const DAY: i64 = 86_400_000;
/// 2026-12-01 00:00 UTC.
const DAY1: i64 = 1_796_083_200_000;

struct World {
    store: Arc<MemoryEventStore>,
    executor: CommandExecutor,
    data: Arc<MemoryReportData>,
    pumped: std::sync::Mutex<usize>,
}

impl World {
    fn new() -> Self {
        let store = Arc::new(MemoryEventStore::new());
        let executor = CommandExecutor::new(store.clone() as Arc<dyn EventStore>);
        Self { store, executor, data: Arc::new(MemoryReportData::default()), pumped: Default::default() }
    }

    fn worker(&self, name: &str) -> Worker {
        let reports = Reports {
            store: self.executor.store().clone(),
            data: self.data.clone(),
            retention: Duration::from_secs(3600),
        };
        Worker { executor: self.executor.clone(), name: name.into(), reports: Arc::new(reports), maintenance: None }
    }

    /// Hands each new job event to `worker` (the consumer group), once.
    async fn pump(&self, worker: &Worker) {
        let log = self.store.log();
        let from = std::mem::replace(&mut *self.pumped.lock().unwrap(), log.len());
        for record in &log[from..] {
            worker.handle(record).await.unwrap_or_else(|e| panic!("{}: {e:?}", record.envelope.event_type));
        }
    }

    async fn request(&self, kind: &str) -> String {
        let id = Uuid::now_v7().to_string();
        let spec = ReportSpec { kind: kind.into(), format: "csv".into(), from_ms: DAY1, to_ms: DAY1 + 2 * DAY };
        let command =
            JobCommand::Request { work: Work::Report(spec), by: "admin".into(), reason: "weekly".into(), now_ms: DAY1 };
        self.executor.execute::<Job>(&id, &command, &ctx()).await.expect("requested");
        id
    }

    async fn job(&self, id: &str) -> Job {
        allies_store::load::<Job>(&**self.executor.store(), id).await.expect("job").state
    }

    fn game(&self, ended_at_ms: i64, map: &str, outcome: &str, waves: u32) -> (Uuid, GameEnded) {
        let id = Uuid::now_v7();
        let game = GameEnded {
            session_id: Uuid::now_v7().to_string(),
            map: map.into(),
            difficulty: "easy".into(),
            outcome: outcome.into(),
            waves_cleared: waves,
            total_waves: 20,
            started_at_ms: ended_at_ms - 600_000,
            ended_at_ms,
            duration_ms: 600_000,
            ..Default::default()
        };
        self.data.publish_game(ended_at_ms + 5, id, game.clone());
        (id, game)
    }
}

fn ctx() -> CommandContext {
    allies_platform::RequestContext::system(DAY1).command_context()
}

#[tokio::test]
async fn a_report_job_is_taken_computed_from_the_games_and_stored_under_its_attempt() {
    let w = World::new();
    w.game(DAY1 + 1_000, "meadow", "victory", 20);
    let (again, game) = w.game(DAY1 + 2_000, "meadow", "defeat", 7);
    w.game(DAY1 + DAY + 1_000, "canyon", "victory", 22);
    w.game(DAY1 + 5 * DAY, "meadow", "victory", 20); // outside the range
    // The topic delivered one game twice: it counts once.
    w.data.publish_game(DAY1 + 2_010, again, game);

    let id = w.request("daily_game_statistics").await;
    w.pump(&w.worker("command/a")).await;

    let job = w.job(&id).await;
    assert_eq!((job.status, job.attempt, job.worker.as_str()), (Status::Done, 1, "command/a"), "{job:?}");
    let artifact = job.artifact.expect("an artifact");
    let bytes = w.data.report(&id, 1).expect("the bytes under attempt 1");
    assert_eq!((artifact.bytes, artifact.checksum.clone()), (bytes.len() as u64, allies_store::checksum(&bytes)));
    let csv = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two days: {csv}");
    assert!(lines[1].starts_with("2026-12-01,meadow,easy,2,1,1,"), "{csv}");
    assert!(lines[2].starts_with("2026-12-02,canyon,easy,1,1,0,"), "{csv}");
    assert_eq!(artifact.rows, 2);
    assert_eq!((job.done, job.total), (job.total, 5), "progress ends at every entry read");
}

#[tokio::test]
async fn a_worker_that_dies_mid_way_is_taken_over_and_only_the_last_attempt_counts() {
    let w = World::new();
    w.game(DAY1 + 1_000, "meadow", "victory", 20);
    let id = w.request("player_activity").await;
    // Worker a takes the job (attempt 1), then dies before its outcome.
    let start = JobCommand::Start { worker: "command/a".into(), now_ms: DAY1 + 10 };
    w.executor.execute::<Job>(&id, &start, &ctx()).await.expect("taken by a");
    // The entry is delivered again (claimed after a's death): b takes over as attempt 2.
    w.pump(&w.worker("command/b")).await;
    let job = w.job(&id).await;
    assert_eq!((job.status, job.attempt, job.worker.as_str()), (Status::Done, 2, "command/b"), "{job:?}");
    assert!(w.data.report(&id, 2).is_some() && w.data.report(&id, 1).is_none());
    // a's late outcome is refused: the job is b's.
    let late = JobCommand::FinishReport { attempt: 1, artifact: Artifact::default(), now_ms: DAY1 + 99 };
    let e = w.executor.execute::<Job>(&id, &late, &ctx()).await.expect_err("superseded");
    assert!(matches!(e, ExecuteError::Domain(JobError::Finished(_) | JobError::Superseded { .. })), "{e:?}");
    assert_eq!(w.job(&id).await.artifact, job.artifact, "the outcome stays b's");
}

#[tokio::test]
async fn a_job_whose_workers_keep_dying_fails_after_its_last_attempt() {
    let w = World::new();
    let id = w.request("operations_summary").await;
    for n in 1..=MAX_ATTEMPTS {
        let start = JobCommand::Start { worker: format!("command/{n}"), now_ms: DAY1 + i64::from(n) };
        w.executor.execute::<Job>(&id, &start, &ctx()).await.expect("taken");
    }
    // The next delivery finds every attempt spent: the job fails, nothing runs.
    w.pump(&w.worker("command/last")).await;
    let job = w.job(&id).await;
    assert_eq!((job.status, job.attempt), (Status::Failed, MAX_ATTEMPTS), "{job:?}");
    assert!(!job.error.is_empty());
    assert!(w.data.report(&id, MAX_ATTEMPTS).is_none());
}

#[tokio::test]
async fn a_job_is_indexed_by_the_worker_that_takes_it_so_a_summary_counts_itself() {
    // The API indexes a job after appending it; here it never did (a worker
    // that took the job first, or an API that died in between).
    let w = World::new();
    let first = w.request("daily_game_statistics").await;
    let summary = w.request("operations_summary").await;
    let worker = w.worker("command/a");
    w.pump(&worker).await;
    assert_eq!(w.job(&summary).await.status, Status::Done);
    let csv = String::from_utf8(w.data.report(&summary, 1).expect("the summary's bytes")).unwrap();
    assert!(csv.contains("\r\nreports,requested,2,"), "both reports, itself included: {csv}");
    // A redelivery of the requests indexes nothing twice.
    for record in w.store.log() {
        worker.handle(&record).await.expect("redelivered");
    }
    let indexed = command::report_data::ReportData::jobs_requested(&*w.data, "report", DAY1, DAY1 + 1).await;
    assert_eq!(indexed.ok(), Some(vec![first, summary]));
}
