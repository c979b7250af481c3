//! The search projection: players and games in full-text indexes (tantivy)
//! that every projector replica keeps on its own disk, so any replica
//! answers a search.
//!
//! Unlike the key-value projections, it reads the partition logs without a
//! consumer group: its checkpoint is the commit payload of its own index
//! ([`index::SearchIndex::commit`]), written in the same atomic step as the
//! documents. Per index, a tail (`allies_store::tail`, from the committed
//! positions) feeds a bounded channel: of the player partition logs for
//! players; for games, of the game's `ts.search` topic, after reading the
//! logs once up to their ends if the index does not hold the topic's
//! positions yet ([`feed`]); one thread — the
//! engine is synchronous — folds what arrived and commits (a batch is what
//! queued while the last commit ran, at most 5,000 entries), then shows it
//! to searches. A batch that changed no document (a game's towers and
//! waves are not searchable: most of a game's events) is searchable as it
//! stands; its positions alone are committed at most once a second
//! ([`CHECKPOINT_EVERY`]) — a tantivy commit writes a segment and wakes its
//! merger, and committing each such batch cost the projector more CPU than
//! its key-value projections did. A crash refolds at most that second,
//! which the documents' versions make harmless. Each replica's index is independent: a replica that starts
//! with an empty volume catches up from the logs.
//!
//! A rebuild builds the next generation (`<dir>/<kind>/gen-<n>`) from the
//! start of the logs while the live one keeps answering, and swaps when it
//! has reached the positions the logs had when it began (`CURRENT` names
//! the live generation; the old one is removed).
//!
//! Outgrowing one machine: the documents ([`docs`]) and their fold do not
//! depend on tantivy; the same projection would feed Elasticsearch (one
//! index per kind, the positions kept beside it) and the queries
//! ([`query`]) would become its bool and terms-aggregation queries.

pub mod docs;
pub mod index;
pub mod query;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use allies_store::{RecordedEvent, RedisConn, RedisTarget, keys, tail};
use tantivy::{Index, IndexReader};
use tokio::sync::{mpsc, watch};

use docs::Kind;
use index::{Fields, Positions, SearchIndex};

/// What the indexer of one generation reports.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Entries folded since this process started it.
    pub folded: u64,
    pub commits: u64,
    /// Positions of the last commit: where a restart resumes.
    pub committed: Positions,
    /// Positions a search sees everything up to (ahead of `committed`
    /// when only positions moved since).
    pub visible: Positions,
    pub docs: u64,
    pub bytes: u64,
    pub last_error: String,
    /// The topic streams the index follows (empty: it follows the logs).
    pub topics: Vec<String>,
}

impl Status {
    /// Whether the index follows its topic: it read the logs up to where
    /// they ended when it first started, and what came after is on the
    /// topic streams, whose positions it now holds.
    pub fn handed_over(&self) -> bool {
        !self.topics.is_empty() && self.topics.iter().all(|t| self.visible.contains_key(t))
    }
}

/// One generation of one kind, being written by its thread.
pub struct Live {
    pub kind: Kind,
    pub generation: u64,
    pub dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
    pub status: Arc<Mutex<Status>>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Live {
    /// Stops its tails, lets the thread commit what it folded, waits for it.
    fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// The search indexes of this replica.
pub struct Search {
    root: PathBuf,
    target: RedisTarget,
    conn: RedisConn,
    partitions: u32,
    /// How long a busy log's tail waits before its next read (the fleet's
    /// `subscriber.linger_ms`): fewer reads under load, a document
    /// searchable at most this much later.
    linger: Duration,
    live: RwLock<HashMap<&'static str, Arc<Live>>>,
    rebuilding: Mutex<HashMap<&'static str, u64>>,
    /// Set once every index has folded what the logs held when it opened:
    /// a replica with a new (empty) disk is not ready before, so it never
    /// answers a search from a half-built index.
    caught_up: std::sync::atomic::AtomicBool,
}

/// Entries per commit at most.
const BATCH: usize = 5_000;

/// How long positions alone (no document changed) may wait for a commit.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Whether a search sees every position of `target` in `status`. Once an
/// index follows its topic, what its logs hold beyond where it left them
/// is on the topic (`target` holds the topic's positions too).
fn has_reached(status: &Status, target: &Positions) -> bool {
    let handed_over = status.handed_over();
    target.iter().all(|(key, id)| {
        (handed_over && !status.topics.contains(key))
            || status.visible.get(key).is_some_and(|c| entry_order(c) >= entry_order(id))
    })
}

/// Where one generation's entries come from.
struct Source {
    kind: Kind,
    target: RedisTarget,
    conn: RedisConn,
    linger: Duration,
    /// The partition logs, each from the committed position.
    logs: Vec<(String, String)>,
    /// The topic streams (none: the kind follows its logs), each from the
    /// committed position.
    topics: Vec<(String, String)>,
    /// Whether the committed positions hold every topic stream's.
    handed_over: bool,
}

/// Feeds the indexer thread of one generation until `stop`. A kind without
/// a topic follows its partition logs. A kind with one follows its topic
/// streams; an index that does not hold their positions yet (new, or
/// older than the topic) first reads the logs up to where they end — the
/// topics' ends are read before the logs', so an event appended meanwhile
/// is read twice (the versions make that harmless), never missed — and then
/// follows the topics from those ends.
async fn feed(source: Source, tx: mpsc::Sender<(String, String, Option<RecordedEvent>)>, stop: watch::Receiver<bool>) {
    let Source { kind, target, conn, linger, logs, mut topics, handed_over } = source;
    let follow = if topics.is_empty() {
        logs
    } else {
        if !handed_over {
            let Some(ends) = retrying(&stop, "the topic's ends", || last_ids(&conn, &topics)).await else { return };
            for (log, from) in logs {
                if !catch_up(&conn, &log, from, kind, &tx, &stop).await {
                    return;
                }
            }
            for ((topic, from), end) in topics.iter_mut().zip(ends) {
                // The position alone: the index now holds the topic's.
                let _ = tx.send((topic.clone(), end.clone(), None)).await;
                *from = end;
            }
            tracing::info!(kind = kind.name(), "search: the logs are read; following the topic");
        }
        topics
    };
    // One tail reads every stream (one XREAD, one connection); on a
    // Cluster they live in different slots: a tail each.
    let tails: Vec<Vec<(String, String)>> =
        if target.is_cluster() { follow.into_iter().map(|l| vec![l]).collect() } else { vec![follow] };
    for streams in tails {
        let names: Arc<Vec<String>> = Arc::new(streams.iter().map(|(key, _)| key.clone()).collect());
        let tx = tx.clone();
        tokio::spawn(tail::follow_all(target.clone(), streams, linger, stop.clone(), move |i, entry| {
            let (tx, names) = (tx.clone(), names.clone());
            async move { pass(&tx, kind, &names[i], entry).await }
        }));
    }
}

/// Hands one entry of `key` to the indexer thread. An event no document of
/// this kind folds is passed on unread (not parsed, not decoded): only its
/// position moves.
async fn pass(
    tx: &mpsc::Sender<(String, String, Option<RecordedEvent>)>,
    kind: Kind,
    key: &str,
    entry: redis::streams::StreamId,
) {
    let folded = allies_store::entry_text(&entry, "event_type").is_none_or(|t| kind.can_change(t));
    if !folded {
        let _ = tx.send((key.to_owned(), entry.id, None)).await;
        return;
    }
    let event = match RecordedEvent::from_entry(key, &entry) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(%key, entry = %entry.id, error = %e, "search: an unreadable entry");
            None
        }
    };
    let _ = tx.send((key.to_owned(), entry.id, event)).await;
}

/// Entries of one read of a log being caught up.
const CATCH_UP_PAGE: usize = 1_000;

/// Reads `log` after `from` up to the entry that was its last when this
/// began, handing every entry on. False when stopped.
async fn catch_up(
    conn: &RedisConn,
    log: &str,
    mut from: String,
    kind: Kind,
    tx: &mpsc::Sender<(String, String, Option<RecordedEvent>)>,
    stop: &watch::Receiver<bool>,
) -> bool {
    let Some(end) = retrying(stop, "a log's end", || tail::last_id(conn, log)).await else { return false };
    while entry_order(&from) < entry_order(&end) {
        let page = || async {
            let mut c = conn.clone();
            redis::cmd("XRANGE")
                .arg(log)
                .arg(format!("({from}"))
                .arg(&end)
                .arg("COUNT")
                .arg(CATCH_UP_PAGE)
                .query_async::<redis::streams::StreamRangeReply>(&mut c)
                .await
                .map_err(allies_store::StoreError::from)
        };
        let Some(page) = retrying(stop, "a log", page).await else { return false };
        if page.ids.is_empty() {
            break;
        }
        for entry in page.ids {
            from = entry.id.clone();
            pass(tx, kind, log, entry).await;
        }
    }
    true
}

/// The last entry id of each of `streams` ("0-0" when empty).
async fn last_ids(conn: &RedisConn, streams: &[(String, String)]) -> Result<Vec<String>, allies_store::StoreError> {
    let mut out = Vec::with_capacity(streams.len());
    for (key, _) in streams {
        out.push(tail::last_id(conn, key).await?);
    }
    Ok(out)
}

/// `read` until it succeeds (a warning and a pause after each failure: Redis
/// may be restarting); None once `stop` is set.
async fn retrying<T, F, Fut>(stop: &watch::Receiver<bool>, what: &str, read: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, allies_store::StoreError>>,
{
    loop {
        if *stop.borrow() {
            return None;
        }
        match read().await {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(what, error = %e, "search: cannot read; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The next entry for the indexer thread; while a checkpoint is owed (its
/// positions moved since the last commit), it is written once
/// [`CHECKPOINT_EVERY`] has passed even if nothing more arrives. None when
/// every tail has stopped.
fn next_entry(
    rx: &mut mpsc::Receiver<(String, String, Option<RecordedEvent>)>,
    index: &mut SearchIndex,
    checkpoint: &mut Instant,
    status: &Mutex<Status>,
) -> Option<(String, String, Option<RecordedEvent>)> {
    loop {
        if index.positions == index.committed {
            return rx.blocking_recv();
        }
        match rx.try_recv() {
            Ok(entry) => return Some(entry),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => {
                let owed = CHECKPOINT_EVERY.saturating_sub(checkpoint.elapsed());
                if owed.is_zero() {
                    if !commit(index, checkpoint, status) {
                        return None;
                    }
                } else {
                    std::thread::sleep(owed.min(Duration::from_millis(20)));
                }
            }
        }
    }
}

/// Commits what `index` folded and reports it; false when the commit
/// failed (nothing of it is on disk: the process must fold it again from
/// the committed positions, so the indexer stops).
fn commit(index: &mut SearchIndex, checkpoint: &mut Instant, status: &Mutex<Status>) -> bool {
    if index.positions == index.committed && !index.has_pending() {
        return true;
    }
    let result = index.commit();
    *checkpoint = Instant::now();
    let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(_) => {
            s.commits += 1;
            s.committed = index.committed.clone();
            s.visible = index.committed.clone();
            s.docs = index.docs();
            if s.commits % 50 == 1 {
                s.bytes = index.size();
            }
            true
        }
        Err(e) => {
            tracing::error!(kind = index.kind.name(), error = %e, "search: commit failed; restart to resume");
            s.last_error = e.to_string();
            false
        }
    }
}

/// A stream entry id as (ms, seq), to compare positions.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl Search {
    /// Opens (or creates) each kind's live generation under `root` and
    /// starts its indexer.
    pub fn start(
        root: &Path,
        target: RedisTarget,
        conn: RedisConn,
        partitions: u32,
        linger: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let search = Arc::new(Self {
            root: root.to_owned(),
            target,
            conn,
            partitions,
            linger,
            live: RwLock::new(HashMap::new()),
            rebuilding: Mutex::new(HashMap::new()),
            caught_up: std::sync::atomic::AtomicBool::new(false),
        });
        for kind in Kind::ALL {
            let generation = search.current_generation(kind);
            let live = search.spawn(kind, generation)?;
            search.live.write().map_err(|_| anyhow::anyhow!("search lock"))?.insert(kind.name(), live);
        }
        let me = search.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let mut targets = Vec::new();
                for kind in Kind::ALL {
                    match me.tails(kind).await {
                        Ok(t) => targets.push((kind, t)),
                        Err(e) => tracing::warn!(error = %e, "search: cannot read the log tails yet"),
                    }
                }
                if targets.len() == Kind::ALL.len() {
                    while !targets.iter().all(|(kind, target)| me.reached(*kind, target)) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            me.caught_up.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!(took_ms = started.elapsed().as_millis() as u64, "search indexes caught up");
        });
        Ok(search)
    }

    /// Whether a search of the live generation of `kind` sees `target`.
    fn reached(&self, kind: Kind, target: &Positions) -> bool {
        self.live(kind).is_some_and(|l| l.status.lock().is_ok_and(|s| has_reached(&s, target)))
    }

    /// Whether every index has caught up with the logs as they were at start.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn kind_dir(&self, kind: Kind) -> PathBuf {
        self.root.join(kind.name())
    }

    fn current_generation(&self, kind: Kind) -> u64 {
        std::fs::read_to_string(self.kind_dir(kind).join("CURRENT"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1)
    }

    /// The live generation of `kind`.
    pub fn live(&self, kind: Kind) -> Option<Arc<Live>> {
        self.live.read().ok()?.get(kind.name()).cloned()
    }

    /// The generation a running rebuild of `kind` builds (0: none).
    pub fn rebuilding(&self, kind: Kind) -> u64 {
        self.rebuilding.lock().map(|r| r.get(kind.name()).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Starts generation `generation` of `kind`: opens its index (where its
    /// last commit left it), the task that feeds it from the committed
    /// positions ([`feed`]), and the thread that folds and commits.
    fn spawn(&self, kind: Kind, generation: u64) -> anyhow::Result<Arc<Live>> {
        let dir = self.kind_dir(kind).join(format!("gen-{generation}"));
        let mut index = SearchIndex::open(kind, &dir)?;
        let topics = self.topic_streams(kind);
        let status = Arc::new(Mutex::new(Status {
            committed: index.committed.clone(),
            visible: index.committed.clone(),
            topics: topics.clone(),
            docs: index.docs(),
            bytes: index.size(),
            ..Status::default()
        }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel::<(String, String, Option<RecordedEvent>)>(8_192);
        let from = |key: &String| (key.clone(), index.committed.get(key).cloned().unwrap_or_else(|| "0-0".into()));
        let source = Source {
            kind,
            target: self.target.clone(),
            conn: self.conn.clone(),
            linger: self.linger,
            logs: self.logs(kind).iter().map(from).collect(),
            handed_over: !topics.is_empty() && topics.iter().all(|t| index.committed.contains_key(t)),
            topics: topics.iter().map(from).collect(),
        };
        tokio::spawn(feed(source, tx, stop_rx));
        let (fields, reader, handle) = (index.fields, index.reader.clone(), index.index().clone());
        let st = status.clone();
        let thread = std::thread::Builder::new().name(format!("search-{}", kind.name())).spawn(move || {
            // Ends when every tail has stopped (the senders are gone).
            let mut checkpoint = Instant::now();
            while let Some(first) = next_entry(&mut rx, &mut index, &mut checkpoint, &st) {
                let mut n = 1;
                index.fold(&first.0, &first.1, first.2.as_ref());
                while n < BATCH {
                    match rx.try_recv() {
                        Ok((log, id, event)) => {
                            index.fold(&log, &id, event.as_ref());
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                st.lock().unwrap_or_else(|e| e.into_inner()).folded += n as u64;
                if index.has_pending() || checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    if !commit(&mut index, &mut checkpoint, &st) {
                        return;
                    }
                } else {
                    // Nothing to show that a search does not see already.
                    st.lock().unwrap_or_else(|e| e.into_inner()).visible = index.positions.clone();
                }
            }
            // Stopped: what was folded is committed.
            commit(&mut index, &mut checkpoint, &st);
            let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
            s.bytes = index.size();
        })?;
        Ok(Arc::new(Live {
            kind,
            generation,
            dir,
            index: handle,
            reader,
            fields,
            status,
            stop: stop_tx,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The partition logs of `kind`'s source.
    fn logs(&self, kind: Kind) -> Vec<String> {
        (0..self.partitions).map(|p| keys::log_key(kind.source(), p)).collect()
    }

    /// The topic streams `kind` follows (empty: it follows its logs).
    fn topic_streams(&self, kind: Kind) -> Vec<String> {
        let Some(topic) = kind.topic() else { return Vec::new() };
        (0..self.partitions)
            .map(|p| keys::integration_key(topic, kind.source(), p, allies_store::Priority::Normal))
            .collect()
    }

    /// The last entry of every stream `kind` reads now: its topic streams
    /// (read first) and its partition logs, the empty ones left out. A
    /// generation that follows its topic has reached the logs' ([`has_reached`]).
    async fn tails(&self, kind: Kind) -> Result<Positions, allies_store::StoreError> {
        self.last_ids(self.topic_streams(kind).into_iter().chain(self.logs(kind))).await
    }

    /// The last entry of each of `streams` now, the empty ones left out.
    async fn last_ids(&self, streams: impl Iterator<Item = String>) -> Result<Positions, allies_store::StoreError> {
        let mut out = Positions::new();
        for key in streams {
            let last = tail::last_id(&self.conn, &key).await?;
            if last != "0-0" {
                out.insert(key, last);
            }
        }
        Ok(out)
    }

    /// Entries a search of the live generation of `kind` does not see yet
    /// (counted up to 10,000 per stream): of its topic streams, and of its
    /// logs until it follows its topic.
    pub async fn lag(&self, kind: Kind) -> Result<u64, allies_store::StoreError> {
        let Some(live) = self.live(kind) else { return Ok(0) };
        let status = live.status.lock().map(|s| s.clone()).unwrap_or_default();
        let mut lag = 0u64;
        let mut conn = self.conn.clone();
        let logs = if status.handed_over() { Vec::new() } else { self.logs(kind) };
        for (key, last) in self.last_ids(self.topic_streams(kind).into_iter().chain(logs)).await? {
            let from = status.visible.get(&key).cloned().unwrap_or_else(|| "0-0".into());
            if entry_order(&from) >= entry_order(&last) {
                continue;
            }
            let behind: Vec<redis::Value> = redis::cmd("XRANGE")
                .arg(&key)
                .arg(format!("({from}"))
                .arg("+")
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            lag += behind.len() as u64;
        }
        Ok(lag)
    }

    /// Builds the next generation of `kind` from the start of the logs and
    /// swaps it in once it has reached where the logs are now. Returns its number.
    pub async fn rebuild(self: &Arc<Self>, kind: Kind) -> anyhow::Result<u64> {
        let live = self.live(kind).ok_or_else(|| anyhow::anyhow!("search index {} not open", kind.name()))?;
        let next = live.generation + 1;
        {
            let mut r = self.rebuilding.lock().map_err(|_| anyhow::anyhow!("search lock"))?;
            if r.contains_key(kind.name()) {
                anyhow::bail!("a rebuild of search.{} is already running", kind.name());
            }
            r.insert(kind.name(), next);
        }
        let target = self.tails(kind).await?;
        let dir = self.kind_dir(kind).join(format!("gen-{next}"));
        let _ = std::fs::remove_dir_all(&dir);
        let building = match self.spawn(kind, next) {
            Ok(b) => b,
            Err(e) => {
                self.rebuilding.lock().map(|mut r| r.remove(kind.name())).ok();
                return Err(e);
            }
        };
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while !building.status.lock().is_ok_and(|s| has_reached(&s, &target)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = std::fs::write(me.kind_dir(kind).join("CURRENT"), next.to_string());
            let old = me.live.write().ok().and_then(|mut l| l.insert(kind.name(), building.clone()));
            me.rebuilding.lock().map(|mut r| r.remove(kind.name())).ok();
            tracing::warn!(
                kind = kind.name(),
                generation = next,
                took_ms = started.elapsed().as_millis() as u64,
                docs = building.status.lock().map(|s| s.docs).unwrap_or(0),
                "search rebuild swapped in"
            );
            if let Some(old) = old {
                tokio::task::spawn_blocking(move || {
                    old.stop();
                    let _ = std::fs::remove_dir_all(&old.dir);
                });
            }
        });
        Ok(next)
    }

    /// `/metrics` lines: per index, its documents, entries behind the logs,
    /// entries folded and commits since start, and its bytes on disk.
    pub async fn gauges(self: Arc<Self>) -> String {
        use std::fmt::Write;
        let mut rows: Vec<(&str, &str, String)> = Vec::new();
        for kind in Kind::ALL {
            let Some(live) = self.live(kind) else { continue };
            let s = live.status.lock().map(|s| s.clone()).unwrap_or_default();
            let name = kind.name();
            rows.push(("allies_search_documents", name, s.docs.to_string()));
            if let Ok(lag) = self.lag(kind).await {
                rows.push(("allies_search_lag", name, lag.to_string()));
            }
            rows.push(("allies_search_folded", name, s.folded.to_string()));
            rows.push(("allies_search_commits", name, s.commits.to_string()));
            rows.push(("allies_search_bytes", name, s.bytes.to_string()));
        }
        let mut out = String::new();
        for (metric, help) in [
            ("allies_search_documents", "Documents in this replica's search index."),
            (
                "allies_search_lag",
                "Entries a search of this replica's index does not see yet (of the streams it follows).",
            ),
            ("allies_search_folded", "Entries folded into the search index since this process started."),
            ("allies_search_commits", "Search index commits since this process started."),
            ("allies_search_bytes", "Bytes of the search index on disk."),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for (m, index, value) in rows.iter().filter(|(m, _, _)| *m == metric) {
                let _ = writeln!(out, "{m}{{index=\"{index}\"}} {value}");
            }
        }
        out
    }

    /// Stops every indexer (each commits what it folded).
    pub fn stop(&self) {
        let all: Vec<Arc<Live>> = self.live.read().map(|l| l.values().cloned().collect()).unwrap_or_default();
        for live in all {
            live.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allies_contracts::timesquare::events::GameEvent;
    use allies_contracts::timesquare::events::v1::{GameSessionCreated, GameStarted, PlayerJoined, TowerPlaced};
    use allies_contracts::timesquare::integration::SEARCH_TOPIC;
    use allies_core::{EventFormat, ExpectedVersion};
    use allies_store::{AppendRequest, EventStore, NewEvent, Priority, Publication, RedisEventStore};
    use allies_testkit::fixtures::{meta, wait_for, wait_until};

    const PARTITIONS: u32 = 4;

    /// Appends `events` to game `id` after `version`, each event the game
    /// publishes on the search topic published with them when `publish`.
    async fn append(store: &RedisEventStore, id: &str, version: u64, events: Vec<GameEvent>, publish: bool) {
        let encoded: Vec<NewEvent> =
            events.iter().map(|e| NewEvent::encode_as(e, EventFormat::Json).expect("encode")).collect();
        let publications = encoded
            .iter()
            .filter(|e| publish && Kind::Games.can_change(&e.event_type))
            .map(|e| Publication { topic: SEARCH_TOPIC.into(), priority: Priority::Normal, event: e.clone() })
            .collect();
        let request = AppendRequest::new("game_session", id, ExpectedVersion::after_load(version), &meta(), 1, encoded)
            .with_publications(publications);
        store.append(request).await.expect("append");
    }

    fn opened(host: &str) -> Vec<GameEvent> {
        vec![
            GameEvent::Created(GameSessionCreated { map: "canyon".into(), max_players: 2, ..Default::default() }),
            GameEvent::PlayerJoined(PlayerJoined {
                user_id: host.into(),
                display_name: host.into(),
                ..Default::default()
            }),
        ]
    }

    fn towers(n: usize) -> Vec<GameEvent> {
        (0..n).map(|i| GameEvent::TowerPlaced(TowerPlaced { tower_id: i as u32 + 1, ..Default::default() })).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn games_are_read_from_the_logs_once_then_from_the_topic_alone() {
        let redis = allies_testkit::RedisServer::start();
        let target = RedisTarget::parse(&redis.url()).expect("url");
        let conn = target.connect().await.expect("connect");
        let store = RedisEventStore::with_connection(conn.clone(), PARTITIONS);
        // Written before the topic existed: in the logs alone, with a tower.
        for id in ["old-1", "old-2"] {
            let mut events = opened(id);
            events.extend(towers(1));
            append(&store, id, 0, events, false).await;
        }
        let dir = tempfile::tempdir().expect("dir");
        let start = || Search::start(dir.path(), target.clone(), conn.clone(), PARTITIONS, Duration::from_millis(1));
        let search = start().expect("search");
        wait_until("caught up", Duration::from_secs(20), || search.caught_up()).await;
        let status = |s: &Search| s.live(Kind::Games).expect("games").status.lock().expect("status").clone();
        assert_eq!(status(&search).docs, 2, "the logs' games");
        assert!(status(&search).handed_over(), "following the topic");
        // Every log entry once, then each topic stream's position.
        let read = 6 + u64::from(PARTITIONS);
        assert_eq!(status(&search).folded, read, "every log entry read once");

        // A game as timesquare writes it: its searchable events also on the
        // topic, its towers not. The index reads the three, not the towers.
        append(&store, "new-1", 0, opened("new-1"), true).await;
        append(&store, "new-1", 2, towers(300), true).await;
        append(&store, "new-1", 302, vec![GameEvent::Started(GameStarted::default())], true).await;
        let s = search.clone();
        wait_for("the new game searchable", Duration::from_secs(20), || {
            let s = s.clone();
            async move { s.lag(Kind::Games).await.ok() == Some(0) && status(&s).docs == 3 }
        })
        .await;
        assert_eq!(status(&search).folded, read + 3, "the topic's three entries, none of the 300 towers");

        // Restarted on its disk: it follows the topic from its commit.
        wait_until("committed", Duration::from_secs(20), || {
            let st = status(&search);
            st.committed == st.visible
        })
        .await;
        search.stop();
        drop(search);
        append(&store, "new-2", 0, opened("new-2"), true).await;
        append(&store, "old-1", 3, towers(50), true).await;
        let search = start().expect("search again");
        wait_until("caught up again", Duration::from_secs(20), || search.caught_up()).await;
        let s = search.clone();
        wait_for("the game written while it was down", Duration::from_secs(20), || {
            let s = s.clone();
            async move { s.lag(Kind::Games).await.ok() == Some(0) && status(&s).docs == 4 }
        })
        .await;
        assert_eq!(status(&search).folded, 2, "only what the topic got meanwhile");
        search.stop();
    }
}
