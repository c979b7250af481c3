//! Live game streams.
//!
//! Per replica, **one Redis reader per partition log** with watched sessions
//! (a blocking XREAD on `es:{game_session.<p>}:log`) hands each entry to the
//! session's [`Hub`]; a hub keeps the session's state (folding the events,
//! catching up from the stream on a gap), broadcasts every event, and during
//! a wave simulates forward from the last event to "now" at the frame rate
//! and broadcasts frames. Watchers subscribe to their hub: no poller per
//! watcher, and any replica serves any watcher (the state comes from the
//! events, the frames from the deterministic simulation paced by wall time).
//!
//! Buffers are bounded: the hub's broadcast holds `watch_buffer` updates; a
//! watcher that falls further behind is resynchronised with a fresh snapshot
//! (never blocking the hub, the game or the other watchers), and frames to a
//! slow client are dropped rather than queued. A watcher that reconnects
//! with the last version it saw gets the events after it from the stream,
//! then the live ones: no gap, no duplicate; when nothing came after it, a
//! `CaughtUp` at once, so the client knows the stream is live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allies_contracts::timesquare::events::GameEvent;
use allies_contracts::timesquare::v1::game_update::Update;
use allies_contracts::timesquare::v1::{CaughtUp, GameEventUpdate, GameUpdate};
use allies_core::Aggregate;
use allies_platform::auth::Caller;
use allies_store::{EventStore, RecordedEvent, RedisEventStore, RedisTarget, StoreError, keys};
use timesquare_domain::{GameSession, Phase};
use tokio::sync::{OwnedMutexGuard, broadcast, mpsc, watch};

use crate::game::{Result, TimesquareError, may_see};
use crate::view;

/// One message to watchers: an event (with its version) or a frame.
#[derive(Debug, Clone)]
pub struct Message {
    /// The event's version (None for a frame).
    pub version: Option<u64>,
    pub update: GameUpdate,
}

struct HubState {
    session: GameSession,
    version: u64,
}

/// A watched session on this replica.
pub struct Hub {
    session_id: String,
    tx: broadcast::Sender<Arc<Message>>,
    state: Arc<tokio::sync::Mutex<HubState>>,
    watchers: AtomicUsize,
}

/// A recorded event as clients get it (its type and proto3 JSON): in a
/// watch and in a replay page.
pub fn event_update(version: u64, e: &GameEvent, recorded_at_ms: i64) -> GameEventUpdate {
    use allies_core::DomainEvent;
    GameEventUpdate { version, event_type: e.event_type().to_owned(), json: e.to_json().to_string(), recorded_at_ms }
}

fn event_message(version: u64, e: &GameEvent, recorded_at_ms: i64) -> Message {
    Message {
        version: Some(version),
        update: GameUpdate { update: Some(Update::Event(event_update(version, e, recorded_at_ms))) },
    }
}

impl Hub {
    /// Folds a recorded event in (catching up from the stream first on a
    /// gap) and broadcasts each event it folds — with the one fold
    /// (`allies_store::fold`), like every other reader of events.
    async fn apply(&self, record: &RecordedEvent, store: &dyn EventStore) {
        let mut state = self.state.lock().await;
        let HubState { session, version } = &mut *state;
        if record.envelope.version <= *version {
            return;
        }
        let broadcast = |e: &GameEvent, r: &RecordedEvent| {
            let _ = self.tx.send(Arc::new(event_message(r.envelope.version, e, r.envelope.recorded_at_ms)));
        };
        let folded = if record.envelope.version == *version + 1 {
            allies_store::fold_seen(session, version, std::slice::from_ref(record), broadcast)
        } else {
            allies_store::catch_up_seen(store, &self.session_id, session, version, broadcast).await.map(|_| ())
        };
        if let Err(e) = folded {
            tracing::warn!(session_id = self.session_id, error = %e, "a watched session could not fold an event");
        }
    }

    /// The hub's state and version.
    pub async fn current(&self) -> (GameSession, u64) {
        let s = self.state.lock().await;
        (s.session.clone(), s.version)
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::SeqCst)
    }
}

/// The hubs and partition readers of this replica.
pub struct Watch {
    store: RedisEventStore,
    target: RedisTarget,
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
    readers: Mutex<HashMap<u32, watch::Sender<bool>>>,
    buffer: usize,
    frame: Duration,
    stop: watch::Receiver<bool>,
    /// What a watched session is loaded from.
    seed: allies_store::Seed<GameSession>,
    /// Frames sent (all hubs), for metrics and the benchmark.
    pub frames: AtomicUsize,
}

impl Watch {
    /// `seed`: what a watched session is loaded from (the game's rules);
    /// `(buffer, frame)`: updates buffered per session, time between frames.
    pub fn new(
        store: RedisEventStore,
        target: RedisTarget,
        seed: allies_store::Seed<GameSession>,
        (buffer, frame): (usize, Duration),
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            target,
            seed,
            hubs: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            buffer,
            frame,
            stop,
            frames: AtomicUsize::new(0),
        })
    }

    fn hub(&self, session_id: &str) -> Option<Arc<Hub>> {
        self.hubs.lock().ok()?.get(session_id).cloned()
    }

    pub fn hubs(&self) -> usize {
        self.hubs.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Watch streams open on this replica (all sessions).
    pub fn watchers(&self) -> usize {
        self.hubs.lock().map(|h| h.values().map(|hub| hub.watchers()).sum()).unwrap_or(0)
    }

    /// The session's hub, created (state loaded, reader running) on first use.
    async fn hub_for(self: &Arc<Self>, session_id: &str) -> Result<Arc<Hub>> {
        if let Some(h) = self.hub(session_id) {
            return Ok(h);
        }
        let partition = self.store.partition_of(session_id);
        self.ensure_reader(partition).await?;
        let (tx, _) = broadcast::channel(self.buffer);
        let state = Arc::new(tokio::sync::Mutex::new(HubState { session: (self.seed)(), version: 0 }));
        // Held while loading: entries the reader hands over meanwhile wait for it.
        let guard: OwnedMutexGuard<HubState> = state.clone().lock_owned().await;
        let hub = Arc::new(Hub { session_id: session_id.to_owned(), tx, state, watchers: AtomicUsize::new(0) });
        {
            let Ok(mut hubs) = self.hubs.lock() else { return Err(StoreError::Archive("hub registry".into()).into()) };
            if let Some(existing) = hubs.get(session_id) {
                return Ok(existing.clone());
            }
            hubs.insert(session_id.to_owned(), hub.clone());
        }
        let mut guard = guard;
        match allies_store::load_from::<GameSession>(&self.store, session_id, &(self.seed)()).await {
            Ok(loaded) => {
                guard.session = loaded.state;
                guard.version = loaded.version;
            }
            Err(e) => {
                drop(guard);
                if let Ok(mut hubs) = self.hubs.lock() {
                    hubs.remove(session_id);
                }
                return Err(e.into());
            }
        }
        drop(guard);
        self.clone().spawn_frames(hub.clone());
        Ok(hub)
    }

    /// Starts the reader of a partition log if it does not run yet. It
    /// starts at the log's current end (the hub then loads the state).
    async fn ensure_reader(self: &Arc<Self>, partition: u32) -> Result<()> {
        if self.readers.lock().map(|r| r.contains_key(&partition)).unwrap_or(false) {
            return Ok(());
        }
        let log = keys::log_key(GameSession::TYPE, partition);
        let start = allies_store::tail::last_id(&self.store.connection(), &log).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        {
            let Ok(mut readers) = self.readers.lock() else { return Ok(()) };
            if readers.contains_key(&partition) {
                return Ok(());
            }
            readers.insert(partition, stop_tx);
        }
        // Either stop ends the reader: this partition's, or the service's.
        let mut service = self.stop.clone();
        let (both_tx, both_rx) = watch::channel(false);
        let mut mine = stop_rx;
        tokio::spawn(async move {
            tokio::select! {
                _ = service.wait_for(|s| *s) => {}
                _ = mine.wait_for(|s| *s) => {}
            }
            let _ = both_tx.send(true);
        });
        let me = self.clone();
        tokio::spawn(allies_store::tail::follow(
            self.target.clone(),
            log.clone(),
            start,
            std::time::Duration::ZERO,
            both_rx,
            move |entry| {
                let (me, log) = (me.clone(), log.clone());
                async move {
                    let id = allies_store::entry_text(&entry, "aggregate_id").unwrap_or_default();
                    let Some(hub) = me.hub(id) else { return };
                    match RecordedEvent::from_entry(&log, &entry) {
                        Ok(record) => hub.apply(&record, &me.store).await,
                        Err(e) => {
                            tracing::warn!(%log, entry = %entry.id, error = %e, "unreadable entry for a watched session")
                        }
                    }
                }
            },
        ));
        Ok(())
    }

    /// Frames while a wave runs and someone watches; the hub goes when
    /// nobody has watched for a while.
    fn spawn_frames(self: Arc<Self>, hub: Arc<Hub>) {
        tokio::spawn(async move {
            let mut stop = self.stop.clone();
            let mut preview: Option<(u64, GameSession)> = None;
            let mut idle = 0u32;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.frame) => {}
                    _ = stop.changed() => return,
                }
                if hub.watchers() == 0 {
                    idle += 1;
                    // About ten seconds without a watcher: let the hub go.
                    if u128::from(idle) * self.frame.as_millis() >= 10_000 {
                        if let Ok(mut hubs) = self.hubs.lock() {
                            hubs.remove(&hub.session_id);
                        }
                        return;
                    }
                    continue;
                }
                idle = 0;
                let (state, version) = {
                    let s = hub.state.lock().await;
                    if s.session.phase != Phase::InWave {
                        preview = None;
                        continue;
                    }
                    match &preview {
                        Some((v, _)) if *v == s.version => (None, s.version),
                        _ => (Some(s.session.clone()), s.version),
                    }
                };
                if let Some(fresh) = state {
                    preview = Some((version, fresh));
                }
                let Some((_, sim)) = preview.as_mut() else { continue };
                let now = allies_platform::context::now_ms();
                sim.advance(sim.tick_at(now));
                let Ok(path) = sim.path() else { continue };
                if let Some(frame) = view::frame(sim, &path, version, now) {
                    self.frames.fetch_add(hub.watchers(), Ordering::Relaxed);
                    let _ = hub.tx.send(Arc::new(Message {
                        version: None,
                        update: GameUpdate { update: Some(Update::Frame(frame)) },
                    }));
                }
            }
        });
    }

    /// A watcher's stream (see the module documentation).
    pub async fn watch(
        self: &Arc<Self>,
        caller: &Caller,
        session_id: &str,
        from_version: u64,
    ) -> Result<mpsc::Receiver<std::result::Result<GameUpdate, tonic::Status>>> {
        let hub = self.hub_for(session_id).await?;
        let mut rx = hub.tx.subscribe();
        let (state, version) = hub.current().await;
        if state.phase == timesquare_domain::Phase::None {
            return Err(timesquare_domain::GameError::NoSuchSession.into());
        }
        may_see(caller, &state).map_err(TimesquareError::from)?;
        let (out, receiver) = mpsc::channel(64);
        hub.watchers.fetch_add(1, Ordering::SeqCst);
        let store = self.store.clone();
        let sid = session_id.to_owned();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let snapshot =
                |s: &GameSession, v: u64| GameUpdate { update: Some(Update::Snapshot(view::game_view(s, v))) };
            let mut last = version;
            let first = if from_version == 0 {
                vec![snapshot(&state, version)]
            } else if from_version > version {
                // The client saw more than this replica's hub has yet (it
                // watched another replica): if the store has it, continue
                // after it; a version that does not exist gets a snapshot.
                match backfill(&store, &sid, version + 1, from_version).await {
                    Ok(ahead) if ahead.len() as u64 == from_version - version => {
                        last = from_version;
                        Vec::new()
                    }
                    _ => vec![snapshot(&state, version)],
                }
            } else {
                match backfill(&store, &sid, from_version + 1, version).await {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(session_id = sid, error = %e, "backfill failed; sending a snapshot");
                        vec![snapshot(&state, version)]
                    }
                }
            };
            // A resumed watch with nothing to replay says so at once.
            let first = if first.is_empty() {
                vec![GameUpdate { update: Some(Update::CaughtUp(CaughtUp { version: last })) }]
            } else {
                first
            };
            for u in first {
                if out.send(Ok(u)).await.is_err() {
                    hub.watchers.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            }
            loop {
                let received = tokio::select! {
                    r = rx.recv() => r,
                    _ = out.closed() => break,
                    _ = stop.changed() => break,
                };
                match received {
                    Ok(m) => match m.version {
                        Some(v) if v <= last => {}
                        Some(v) => {
                            if v > last + 1 {
                                for u in backfill(&store, &sid, last + 1, v - 1).await.unwrap_or_default() {
                                    if out.send(Ok(u)).await.is_err() {
                                        break;
                                    }
                                }
                            }
                            last = v;
                            if out.send(Ok(m.update.clone())).await.is_err() {
                                break;
                            }
                        }
                        // A frame to a client that is behind is dropped, not queued.
                        None => {
                            if let Err(mpsc::error::TrySendError::Closed(_)) = out.try_send(Ok(m.update.clone())) {
                                break;
                            }
                        }
                    },
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(session_id = sid, missed, "a slow watcher is resynchronised");
                        let (s, v) = hub.current().await;
                        last = v;
                        if out.send(Ok(snapshot(&s, v))).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            hub.watchers.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(receiver)
    }
}

/// The events `from..=to` of a session as updates, read from its stream.
async fn backfill(store: &RedisEventStore, session_id: &str, from: u64, to: u64) -> Result<Vec<GameUpdate>> {
    if from > to {
        return Ok(Vec::new());
    }
    let records = store.read(GameSession::TYPE, session_id, from, (to - from + 1) as usize).await?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let e = r.typed::<GameEvent>()?;
        out.push(event_message(r.envelope.version, &e.payload, r.envelope.recorded_at_ms).update);
    }
    Ok(out)
}
