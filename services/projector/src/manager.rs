//! The projection manager: runs every registered projection at its live
//! generation, and blue/green rebuilds.
//!
//! A projection's live generation (key namespace + consumer group) is kept in
//! `pm:<projection>`. A rebuild starts the next generation — a new namespace
//! and a new consumer group reading every source's partition logs from the
//! start — while queries keep answering from the live one; once the new
//! group has read to the end of every log with nothing pending, the pointer
//! is switched (one HSET) and queries read the new generation; the old
//! subscriptions stop. Every projector instance follows the pointer, so all
//! replicas switch. Deleting an old generation's keys is an operator's call
//! (`allies ops maintenance delete-generation`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use allies_store::breaker::CircuitBreaker;
use allies_store::subscriber::{self, Handler, HandlerError, SubscriptionConfig, group_position};
use allies_store::{RecordedEvent, RedisConn, RedisTarget, keys};
use tokio::sync::watch;

use crate::readmodel::{DEFAULT_NAMESPACE, Namespace};
use crate::registry::{Projection, Registry};

/// A generation of a projection: where its models live and which group feeds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub number: u64,
    pub namespace: String,
    pub group: String,
}

impl Generation {
    pub fn first(name: &str) -> Self {
        Self { number: 0, namespace: DEFAULT_NAMESPACE.to_owned(), group: name.to_owned() }
    }

    pub fn next(&self, name: &str) -> Self {
        Self::numbered(name, self.number + 1)
    }

    /// Generation `n` of projection `name` (0 is the first).
    pub fn numbered(name: &str, n: u64) -> Self {
        if n == 0 {
            return Self::first(name);
        }
        Self { number: n, namespace: format!("{DEFAULT_NAMESPACE}.g{n}"), group: format!("{name}.g{n}") }
    }
}

fn pointer(name: &str) -> String {
    format!("pm:{name}")
}

/// The live generation of `name` as Redis records it (the first if none).
pub async fn read_generation(conn: &mut RedisConn, name: &str) -> Result<Generation, redis::RedisError> {
    let m: HashMap<String, String> = redis::cmd("HGETALL").arg(pointer(name)).query_async(conn).await?;
    match (m.get("generation").and_then(|g| g.parse().ok()), m.get("namespace"), m.get("group")) {
        (Some(number), Some(ns), Some(group)) => Ok(Generation { number, namespace: ns.clone(), group: group.clone() }),
        _ => Ok(Generation::first(name)),
    }
}

/// Applies a projection's changes in one generation's namespace: the
/// subscription handler, also used to replay dead letters.
pub struct Applier {
    pub projection: Arc<dyn Projection>,
    pub view: Namespace,
    /// Read-model writes are on this many replicas before their entries
    /// are acknowledged (a failover must not keep the ack and lose the row).
    pub replicas: allies_store::ReplicaAcks,
}

impl Handler for Applier {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let changes = self.projection.changes(event)?;
        self.view.apply(&changes).await
    }

    /// A read's events are written together: on a single Redis in one
    /// script, on a Cluster in groups (`Namespace::apply_many`).
    fn batches(&self) -> bool {
        true
    }

    async fn handle_all(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        let changes = events.iter().map(|e| self.projection.changes(e)).collect::<Result<Vec<_>, _>>()?;
        self.view.apply_many(&changes).await
    }

    async fn confirm(&self) -> Result<(), HandlerError> {
        let allies_store::ReplicaAcks { replicas, timeout } = self.replicas;
        if replicas == 0 {
            return Ok(());
        }
        let acked = self
            .view
            .conn
            .clone()
            .wait_for_replicas_everywhere(replicas, timeout)
            .await
            .map_err(HandlerError::transient)?;
        if acked < replicas {
            return Err(HandlerError::transient(format!(
                "{acked} of {replicas} replicas confirmed the read-model writes in time"
            )));
        }
        Ok(())
    }
}

struct Slot {
    generation: Generation,
    applier: Arc<Applier>,
    stop: watch::Sender<bool>,
}

/// Shared settings of every subscription the manager starts.
#[derive(Clone)]
pub struct Settings {
    pub target: RedisTarget,
    pub conn: RedisConn,
    pub partitions: u32,
    /// Batch, block, retry, claim and metrics settings; group, source and
    /// breaker are filled per subscription.
    pub template: SubscriptionConfig,
    /// Every projection's breaker follows it (the live configuration).
    pub breaker: allies_store::Tunable<allies_store::breaker::BreakerConfig>,
    /// REDIS_REPLICA_ACKS: read-model writes confirmed before their acks.
    pub replicas: allies_store::ReplicaAcks,
}

pub struct Manager {
    settings: Settings,
    registry: Registry,
    breakers: HashMap<&'static str, Arc<CircuitBreaker>>,
    live: RwLock<HashMap<&'static str, Slot>>,
    rebuilding: Mutex<HashMap<&'static str, Slot>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

/// Why a rebuild cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("{0} is already being rebuilt")]
    AlreadyRebuilding(String),
    #[error("no projection '{0}'")]
    Unknown(String),
    #[error("generation {generation} of {projection} is {what}: only an older, retired generation can be deleted")]
    NotRetired { projection: String, generation: u64, what: &'static str },
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(#[from] allies_store::StoreError),
}

/// What deleting a retired generation removed.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub generation: Generation,
    pub keys: u64,
    pub groups: u64,
}

impl allies_core::ServiceError for RebuildError {
    fn code(&self) -> allies_core::ErrorCode {
        match self {
            Self::AlreadyRebuilding(_) | Self::NotRetired { .. } => allies_core::ErrorCode::FailedPrecondition,
            Self::Unknown(_) => allies_core::ErrorCode::NotFound,
            Self::Redis(_) => allies_core::ErrorCode::Unavailable,
            Self::Store(e) => e.code(),
        }
    }
}

impl Manager {
    /// Starts every registered projection at its live generation.
    pub async fn start(settings: Settings, registry: Registry) -> Result<Arc<Self>, redis::RedisError> {
        let breakers = registry
            .names()
            .into_iter()
            .map(|n| (n, Arc::new(CircuitBreaker::following(settings.breaker.clone()))))
            .collect();
        let manager = Arc::new(Self {
            settings,
            registry,
            breakers,
            live: RwLock::new(HashMap::new()),
            rebuilding: Mutex::new(HashMap::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        });
        // Every pointer is read before any subscriber starts: their
        // connections' handshakes (TLS) would otherwise compete with these
        // reads, and a read slower than the response timeout stopped the
        // service at start.
        let mut conn = manager.settings.conn.clone();
        let mut generations = Vec::new();
        for projection in manager.registry.all() {
            generations.push((projection.clone(), read_generation(&mut conn, projection.name()).await?));
        }
        for (projection, generation) in generations {
            let slot = manager.spawn(projection.clone(), generation);
            if let Ok(mut live) = manager.live.write() {
                live.insert(projection.name(), slot);
            }
        }
        Ok(manager)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn partitions(&self) -> u32 {
        self.settings.partitions
    }

    pub fn breaker(&self, name: &str) -> Option<&Arc<CircuitBreaker>> {
        self.breakers.get(name)
    }

    fn spawn(&self, projection: Arc<dyn Projection>, generation: Generation) -> Slot {
        let (stop, stopped) = watch::channel(false);
        let name = projection.name();
        let applier = Arc::new(Applier {
            projection: projection.clone(),
            view: Namespace::new(self.settings.conn.clone(), &generation.namespace),
            replicas: self.settings.replicas,
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            for source in projection.sources() {
                let mut config = self.settings.template.clone();
                config.group = generation.group.clone();
                config.aggregate_type = (*source).to_owned();
                config.partitions = self.settings.partitions;
                if let Some(b) = self.breakers.get(name) {
                    config.breaker = b.clone();
                }
                tasks.spawn(subscriber::run(self.settings.target.clone(), config, applier.clone(), stopped.clone()));
            }
        }
        tracing::info!(
            projection = name,
            generation = generation.number,
            group = generation.group,
            "projection started"
        );
        Slot { generation, applier, stop }
    }

    /// Where queries of projection `name` read now.
    pub fn view(&self, name: &str) -> Namespace {
        self.live
            .read()
            .ok()
            .and_then(|l| l.get(name).map(|s| s.applier.view.clone()))
            .unwrap_or_else(|| Namespace::new(self.settings.conn.clone(), DEFAULT_NAMESPACE))
    }

    /// The live applier of a projection (to replay its dead letters).
    pub fn applier(&self, name: &str) -> Option<Arc<Applier>> {
        self.live.read().ok().and_then(|l| l.get(name).map(|s| s.applier.clone()))
    }

    /// The live generation of a projection.
    pub fn generation(&self, name: &str) -> Generation {
        self.live
            .read()
            .ok()
            .and_then(|l| l.get(name).map(|s| s.generation.clone()))
            .unwrap_or_else(|| Generation::first(name))
    }

    /// The generation being built, if a rebuild runs.
    pub fn rebuilding(&self, name: &str) -> Option<Generation> {
        self.rebuilding.lock().ok().and_then(|r| r.get(name).map(|s| s.generation.clone()))
    }

    /// Whether `group` has read to the end of every log of every source
    /// with nothing pending.
    async fn caught_up(&self, projection: &dyn Projection, group: &str) -> bool {
        let mut conn = self.settings.conn.clone();
        for source in projection.sources() {
            for p in 0..self.settings.partitions {
                let log = keys::log_key(source, p);
                let last: redis::streams::StreamRangeReply = match redis::cmd("XREVRANGE")
                    .arg(&log)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                {
                    Ok(r) => r,
                    Err(_) => return false,
                };
                let Some(last) = last.ids.first().map(|e| e.id.clone()) else { continue };
                match group_position(&mut conn, &log, group).await {
                    Ok(Some(pos)) if pos.pending == 0 && pos.last_delivered == last => {}
                    _ => return false,
                }
            }
        }
        true
    }

    /// Starts a blue/green rebuild of projection `name`; returns the generation being built.
    pub async fn rebuild(self: &Arc<Self>, name: &str) -> Result<Generation, RebuildError> {
        let Some(projection) = self.registry.get(name).cloned() else {
            return Err(RebuildError::Unknown(name.to_owned()));
        };
        let name = projection.name();
        if self.rebuilding(name).is_some() {
            return Err(RebuildError::AlreadyRebuilding(name.to_owned()));
        }
        let next = self.generation(name).next(name);
        // A group of that number left by an interrupted rebuild restarts from zero.
        let mut conn = self.settings.conn.clone();
        for source in projection.sources() {
            for p in 0..self.settings.partitions {
                let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                    .arg("DESTROY")
                    .arg(keys::log_key(source, p))
                    .arg(&next.group)
                    .query_async(&mut conn)
                    .await;
            }
        }
        let slot = self.spawn(projection.clone(), next.clone());
        if let Ok(mut r) = self.rebuilding.lock() {
            r.insert(name, slot);
        }
        let manager = self.clone();
        let building = next.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if manager.rebuilding(name).is_none() {
                    return; // stopped
                }
                if manager.caught_up(&*projection, &building.group).await {
                    break;
                }
            }
            let mut conn = manager.settings.conn.clone();
            let switched: redis::RedisResult<()> = redis::cmd("HSET")
                .arg(pointer(name))
                .arg("generation")
                .arg(building.number)
                .arg("namespace")
                .arg(&building.namespace)
                .arg("group")
                .arg(&building.group)
                .query_async(&mut conn)
                .await;
            if let Err(e) = switched {
                tracing::error!(projection = name, error = %e, "cannot switch to the rebuilt generation");
                return;
            }
            manager.promote(name);
            tracing::info!(projection = name, generation = building.number, "rebuild complete; queries switched");
        });
        Ok(next)
    }

    /// Deletes what a retired generation of `name` (older than the live
    /// one, not being built) left: the keys its projection writes in that
    /// namespace — found by folding the projection's own changes over its
    /// sources, so keys of other projections sharing the namespace stay —
    /// and its consumer group on every source log.
    pub async fn delete_generation(&self, name: &str, number: u64) -> Result<Deleted, RebuildError> {
        let Some(projection) = self.registry.get(name).cloned() else {
            return Err(RebuildError::Unknown(name.to_owned()));
        };
        let name = projection.name();
        let live = self.generation(name).number;
        let what = if number == live {
            Some("live")
        } else if number > live {
            Some(if self.rebuilding(name).is_some_and(|b| b.number == number) {
                "being built"
            } else {
                "not yet built"
            })
        } else {
            None
        };
        if let Some(what) = what {
            return Err(RebuildError::NotRetired { projection: name.to_owned(), generation: number, what });
        }
        let old = Generation::numbered(name, number);
        let mut conn = self.settings.conn.clone();
        let written = crate::consistency::written_keys(&mut conn, &*projection, self.settings.partitions).await?;
        let mut deleted = 0u64;
        let all: Vec<String> = written.iter().map(|k| format!("{}:{k}", old.namespace)).collect();
        // One key a call: on Redis Cluster the keys live in many slots.
        for key in &all {
            let n: u64 = redis::cmd("UNLINK").arg(key).query_async(&mut conn).await?;
            deleted += n;
        }
        let mut groups = 0u64;
        for source in projection.sources() {
            for p in 0..self.settings.partitions {
                let gone: redis::RedisResult<u64> = redis::cmd("XGROUP")
                    .arg("DESTROY")
                    .arg(keys::log_key(source, p))
                    .arg(&old.group)
                    .query_async(&mut conn)
                    .await;
                groups += gone.unwrap_or(0);
            }
        }
        tracing::warn!(projection = name, generation = number, keys = deleted, groups, "retired generation deleted");
        Ok(Deleted { generation: old, keys: deleted, groups })
    }

    /// Makes the rebuilt generation live and stops the old one.
    fn promote(&self, name: &'static str) {
        let Some(new) = self.rebuilding.lock().ok().and_then(|mut r| r.remove(name)) else { return };
        if let Ok(mut live) = self.live.write()
            && let Some(old) = live.insert(name, new)
        {
            let _ = old.stop.send(true);
        }
    }

    /// Follows generation switches made by other instances.
    pub async fn follow_pointers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let mut conn = self.settings.conn.clone();
            for projection in self.registry.all() {
                let name = projection.name();
                let Ok(recorded) = read_generation(&mut conn, name).await else { continue };
                if recorded.number > self.generation(name).number && self.rebuilding(name).is_none() {
                    let slot = self.spawn(projection.clone(), recorded);
                    if let Ok(mut live) = self.live.write()
                        && let Some(old) = live.insert(name, slot)
                    {
                        let _ = old.stop.send(true);
                    }
                    tracing::info!(projection = name, "switched to the generation another instance built");
                }
            }
        }
    }

    /// Stops every subscription and waits up to `grace` for them.
    pub async fn stop(&self, grace: Duration) -> bool {
        if let Ok(live) = self.live.read() {
            for slot in live.values() {
                let _ = slot.stop.send(true);
            }
        }
        if let Ok(r) = self.rebuilding.lock() {
            for slot in r.values() {
                let _ = slot.stop.send(true);
            }
        }
        let tasks = self.tasks.lock().map(|mut t| std::mem::take(&mut *t)).ok();
        match tasks {
            Some(t) => tokio::time::timeout(grace, t.join_all()).await.is_ok(),
            None => true,
        }
    }
}
