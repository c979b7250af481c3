//! What a report reads and writes besides the event store: the `games`
//! topic's `GameEnded` events (read in pages, for progress), the job index,
//! the system-metrics samples, and the report's bytes per attempt. An
//! interface with two homes: Redis for the fleet, memory for the use-case
//! scenarios.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use allies_contracts::timesquare::integration::{GameIntegrationEvent, TOPIC, v1::GameEnded};
use allies_store::{Priority, RecordedEvent, RedisConn, keys};
use uuid::Uuid;

use crate::attempt::{Stop, data_key};

/// The index of the jobs of `kind` ("report" or "maintenance"), scored by
/// the time each was requested.
pub fn job_index(kind: &str) -> &'static str {
    if kind == "report" { "cmd:jobs:report" } else { "cmd:jobs:maintenance" }
}

/// Entries read per page of the games topic.
pub const PAGE: usize = 1_000;

/// Where a reading of the games topic is.
#[derive(Debug, Clone, Default)]
pub struct GamesCursor {
    /// The stream being read (index in the source's order).
    pub stream: usize,
    /// The last entry read of it.
    pub after: Option<String>,
}

/// A page of the games topic: each `GameEnded` with its event id, and how
/// many entries the page covered (for progress).
pub type GamesPage = (Vec<(Uuid, GameEnded)>, u64);

#[async_trait::async_trait]
pub trait ReportData: Send + Sync + 'static {
    /// How many entries the games topic holds.
    async fn games_total(&self) -> Result<u64, Stop>;
    /// The next page of `GameEnded` events recorded in `from_ms..=to_ms`
    /// after `cursor`; an empty page with 0 entries covered is the end.
    async fn games_page(&self, cursor: &mut GamesCursor, from_ms: i64, to_ms: i64) -> Result<GamesPage, Stop>;
    /// The jobs of `kind` requested in `from_ms..to_ms`.
    async fn jobs_requested(&self, kind: &str, from_ms: i64, to_ms: i64) -> Result<Vec<String>, Stop>;
    /// Indexes a job of `kind` requested at `at_ms` (again: no change).
    async fn index_job(&self, kind: &str, at_ms: i64, id: &str) -> Result<(), Stop>;
    /// The samples of a system-metrics series in `from_ms..to_ms`.
    async fn metric_samples(&self, series: &str, from_ms: i64, to_ms: i64) -> Result<Vec<f64>, Stop>;
    /// Stores a report's bytes under its attempt, replacing any, for `ttl`.
    async fn put_report(&self, id: &str, attempt: u32, chunks: &[&[u8]], ttl: Duration) -> Result<(), Stop>;
    /// Drops an attempt's bytes (best effort).
    async fn drop_report(&self, id: &str, attempt: u32);
}

/// The fleet's report data, in Redis.
pub struct RedisReportData {
    pub conn: RedisConn,
    pub partitions: u32,
    /// A pause between pages of the topic (COMMAND_REPORT_PAGE_PAUSE_MS).
    pub page_pause: Duration,
}

impl RedisReportData {
    fn streams(&self) -> Vec<String> {
        (0..self.partitions)
            .flat_map(|p| Priority::ALL.iter().map(move |prio| keys::integration_key(TOPIC, "game_session", p, *prio)))
            .collect()
    }
}

#[async_trait::async_trait]
impl ReportData for RedisReportData {
    async fn games_total(&self) -> Result<u64, Stop> {
        // One XLEN per stream, not a pipeline: the partitions' streams live
        // in different Redis Cluster slots.
        let mut conn = self.conn.clone();
        let mut total = 0u64;
        for s in self.streams() {
            total += redis::cmd("XLEN").arg(s).query_async::<u64>(&mut conn).await?;
        }
        Ok(total)
    }

    async fn games_page(&self, cursor: &mut GamesCursor, from_ms: i64, to_ms: i64) -> Result<GamesPage, Stop> {
        let streams = self.streams();
        let mut conn = self.conn.clone();
        while let Some(stream) = streams.get(cursor.stream) {
            let start = cursor.after.as_ref().map_or_else(|| from_ms.to_string(), |id| format!("({id}"));
            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(stream)
                .arg(start)
                .arg(to_ms.to_string())
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await?;
            if page.ids.is_empty() {
                *cursor = GamesCursor { stream: cursor.stream + 1, after: None };
                continue;
            }
            cursor.after = page.ids.last().map(|e| e.id.clone());
            let games = page
                .ids
                .iter()
                .filter_map(|entry| RecordedEvent::from_entry(stream, entry).ok())
                .filter_map(|event| event.decode::<GameIntegrationEvent>().ok())
                .filter_map(|e| match e.payload {
                    GameIntegrationEvent::Ended(g) => Some((e.event_id, g)),
                    _ => None,
                })
                .collect();
            if !self.page_pause.is_zero() {
                tokio::time::sleep(self.page_pause).await;
            }
            return Ok((games, page.ids.len() as u64));
        }
        Ok((Vec::new(), 0))
    }

    async fn jobs_requested(&self, kind: &str, from_ms: i64, to_ms: i64) -> Result<Vec<String>, Stop> {
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(job_index(kind))
            .arg(from_ms)
            .arg(format!("({to_ms}"))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    async fn index_job(&self, kind: &str, at_ms: i64, id: &str) -> Result<(), Stop> {
        Ok(redis::cmd("ZADD").arg(job_index(kind)).arg(at_ms).arg(id).query_async::<()>(&mut self.conn.clone()).await?)
    }

    async fn metric_samples(&self, series: &str, from_ms: i64, to_ms: i64) -> Result<Vec<f64>, Stop> {
        let raw: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(crate::metrics::key(series))
            .arg(from_ms)
            .arg(format!("({to_ms}"))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(raw.iter().filter_map(|m| m.split_once(':').and_then(|(_, v)| v.parse().ok())).collect())
    }

    async fn put_report(&self, id: &str, attempt: u32, chunks: &[&[u8]], ttl: Duration) -> Result<(), Stop> {
        let key = data_key(id, attempt);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&key).ignore();
        for c in chunks {
            pipe.cmd("RPUSH").arg(&key).arg(*c).ignore();
        }
        if chunks.is_empty() {
            pipe.cmd("RPUSH").arg(&key).arg(&b""[..]).ignore();
        }
        pipe.cmd("EXPIRE").arg(&key).arg(ttl.as_secs().max(1)).ignore();
        Ok(pipe.query_async::<()>(&mut self.conn.clone()).await?)
    }

    async fn drop_report(&self, id: &str, attempt: u32) {
        let _: redis::RedisResult<i64> =
            redis::cmd("DEL").arg(data_key(id, attempt)).query_async(&mut self.conn.clone()).await;
    }
}

#[derive(Default)]
struct Held {
    /// (recorded at ms, event id, game) in recording order.
    games: Vec<(i64, Uuid, GameEnded)>,
    jobs: BTreeMap<String, Vec<(i64, String)>>,
    samples: BTreeMap<String, Vec<(i64, f64)>>,
    reports: BTreeMap<(String, u32), Vec<u8>>,
}

/// Report data in memory (use-case scenarios; one process).
#[derive(Default)]
pub struct MemoryReportData {
    held: Mutex<Held>,
}

impl MemoryReportData {
    fn with<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        f(&mut self.held.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A `GameEnded` on the games topic (`id` the event's: a redelivery repeats it).
    pub fn publish_game(&self, recorded_at_ms: i64, id: Uuid, game: GameEnded) {
        self.with(|h| h.games.push((recorded_at_ms, id, game)));
    }

    /// A report's bytes under an attempt, if stored.
    pub fn report(&self, id: &str, attempt: u32) -> Option<Vec<u8>> {
        self.with(|h| h.reports.get(&(id.to_owned(), attempt)).cloned())
    }
}

#[async_trait::async_trait]
impl ReportData for MemoryReportData {
    async fn games_total(&self) -> Result<u64, Stop> {
        Ok(self.with(|h| h.games.len() as u64))
    }

    async fn games_page(&self, cursor: &mut GamesCursor, from_ms: i64, to_ms: i64) -> Result<GamesPage, Stop> {
        // One stream; `after` is the index of the last entry read.
        let start = cursor.after.as_ref().and_then(|a| a.parse::<usize>().ok()).map_or(0, |i| i + 1);
        Ok(self.with(|h| {
            let page: Vec<_> = h.games.iter().enumerate().skip(start).take(PAGE).collect();
            if let Some((i, _)) = page.last() {
                cursor.after = Some(i.to_string());
            }
            let covered = page.len() as u64;
            let games = page
                .into_iter()
                .filter(|(_, (at, _, _))| (from_ms..=to_ms).contains(at))
                .map(|(_, (_, id, g))| (*id, g.clone()))
                .collect();
            (games, covered)
        }))
    }

    async fn jobs_requested(&self, kind: &str, from_ms: i64, to_ms: i64) -> Result<Vec<String>, Stop> {
        Ok(self.with(|h| {
            let jobs = h.jobs.get(kind).map(Vec::as_slice).unwrap_or_default();
            jobs.iter().filter(|(at, _)| (from_ms..to_ms).contains(at)).map(|(_, id)| id.clone()).collect()
        }))
    }

    async fn index_job(&self, kind: &str, at_ms: i64, id: &str) -> Result<(), Stop> {
        self.with(|h| {
            let jobs = h.jobs.entry(kind.to_owned()).or_default();
            if !jobs.iter().any(|(_, held)| held == id) {
                jobs.push((at_ms, id.to_owned()));
            }
        });
        Ok(())
    }

    async fn metric_samples(&self, series: &str, from_ms: i64, to_ms: i64) -> Result<Vec<f64>, Stop> {
        Ok(self.with(|h| {
            let samples = h.samples.get(series).map(Vec::as_slice).unwrap_or_default();
            samples.iter().filter(|(at, _)| (from_ms..to_ms).contains(at)).map(|(_, v)| *v).collect()
        }))
    }

    async fn put_report(&self, id: &str, attempt: u32, chunks: &[&[u8]], _ttl: Duration) -> Result<(), Stop> {
        self.with(|h| h.reports.insert((id.to_owned(), attempt), chunks.concat()));
        Ok(())
    }

    async fn drop_report(&self, id: &str, attempt: u32) {
        self.with(|h| h.reports.remove(&(id.to_owned(), attempt)));
    }
}
