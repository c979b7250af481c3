//! The search projection: players and games in full-text indexes (tantivy)
//! that every projector replica keeps on its own disk, so any replica
//! answers a search.
//!
//! Unlike the key-value projections, it reads the partition logs without a
//! consumer group: its checkpoint is the commit payload of its own index
//! ([`index::SearchIndex::commit`]), written in the same atomic step as the
//! documents. Per index, one tail per partition log (`allies_store::tail`,
//! from the committed positions) feeds a bounded channel; one thread — the
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

/// Whether a search sees every position of `target` in `status`.
fn has_reached(status: &Status, target: &Positions) -> bool {
    target.iter().all(|(log, id)| status.visible.get(log).is_some_and(|c| entry_order(c) >= entry_order(id)))
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
    /// last commit left it), a tail of the partition logs from the committed
    /// positions (one for all on a single Redis, one per log on a Cluster),
    /// and the thread that folds and commits.
    fn spawn(&self, kind: Kind, generation: u64) -> anyhow::Result<Arc<Live>> {
        let dir = self.kind_dir(kind).join(format!("gen-{generation}"));
        let mut index = SearchIndex::open(kind, &dir)?;
        let status = Arc::new(Mutex::new(Status {
            committed: index.committed.clone(),
            visible: index.committed.clone(),
            docs: index.docs(),
            bytes: index.size(),
            ..Status::default()
        }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel::<(String, String, Option<RecordedEvent>)>(8_192);
        let logs: Vec<(String, String)> = (0..self.partitions)
            .map(|partition| {
                let log = keys::log_key(kind.source(), partition);
                let start = index.committed.get(&log).cloned().unwrap_or_else(|| "0-0".into());
                (log, start)
            })
            .collect();
        // One tail reads every partition log (one XREAD, one connection);
        // on a Cluster the logs live in different slots: a tail each.
        let tails: Vec<Vec<(String, String)>> =
            if self.target.is_cluster() { logs.into_iter().map(|l| vec![l]).collect() } else { vec![logs] };
        for streams in tails {
            let names: Arc<Vec<String>> = Arc::new(streams.iter().map(|(log, _)| log.clone()).collect());
            let tx = tx.clone();
            let follow =
                tail::follow_all(self.target.clone(), streams, self.linger, stop_rx.clone(), move |i, entry| {
                    let (tx, names) = (tx.clone(), names.clone());
                    async move {
                        let log = &names[i];
                        // An event no document of this kind folds is passed on
                        // unread (not parsed, not decoded): only its position moves.
                        let folded = allies_store::entry_text(&entry, "event_type").is_none_or(|t| kind.can_change(t));
                        if !folded {
                            let _ = tx.send((log.clone(), entry.id, None)).await;
                            return;
                        }
                        let event = match RecordedEvent::from_entry(log, &entry) {
                            Ok(e) => Some(e),
                            Err(e) => {
                                tracing::warn!(%log, entry = %entry.id, error = %e, "search: an unreadable entry");
                                None
                            }
                        };
                        let _ = tx.send((log.clone(), entry.id, event)).await;
                    }
                });
            tokio::spawn(follow);
        }
        drop(tx);
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

    /// The last entry of every partition log of `kind` now.
    async fn tails(&self, kind: Kind) -> Result<Positions, allies_store::StoreError> {
        let mut out = Positions::new();
        for partition in 0..self.partitions {
            let log = keys::log_key(kind.source(), partition);
            let last = tail::last_id(&self.conn, &log).await?;
            if last != "0-0" {
                out.insert(log, last);
            }
        }
        Ok(out)
    }

    /// Entries of `kind`'s logs a search of the live generation does not
    /// see yet (counted up to 10,000 per log).
    pub async fn lag(&self, kind: Kind) -> Result<u64, allies_store::StoreError> {
        let Some(live) = self.live(kind) else { return Ok(0) };
        let committed = live.status.lock().map(|s| s.visible.clone()).unwrap_or_default();
        let mut lag = 0u64;
        let mut conn = self.conn.clone();
        for (log, last) in self.tails(kind).await? {
            let from = committed.get(&log).cloned().unwrap_or_else(|| "0-0".into());
            if entry_order(&from) >= entry_order(&last) {
                continue;
            }
            let behind: Vec<redis::Value> = redis::cmd("XRANGE")
                .arg(&log)
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
            ("allies_search_lag", "Entries in the partition logs a search of this replica's index does not see yet."),
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
