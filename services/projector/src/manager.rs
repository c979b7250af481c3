//! The projection manager: generations of each projection and blue/green
//! rebuilds.
//!
//! A projection's live generation (key namespace + consumer group) is kept in
//! `pm:<projection>`. A rebuild starts the next generation — a new namespace
//! and a new consumer group reading every partition log from the start —
//! while queries keep answering from the live one; once the new group has
//! read to the end of every log with nothing pending, the pointer is switched
//! (one HSET) and queries read the new generation; the old subscription stops.
//! Every projector instance follows the pointer, so all replicas switch.
//! The old generation's keys stay until an operator deletes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use allies_store::breaker::CircuitBreaker;
use allies_store::subscriber::{self, SubscriptionConfig};
use allies_store::{RedisConn, RedisTarget, keys};
use tokio::sync::watch;

use crate::sessions::{self, SessionProjection};
use crate::users::{self, DEFAULT_NAMESPACE, UserProjection};

/// (projection name = base consumer group, aggregate type).
pub const PROJECTIONS: [(&str, &str); 2] =
    [(users::GROUP, users::AGGREGATE_TYPE), (sessions::GROUP, sessions::AGGREGATE_TYPE)];

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
        let n = self.number + 1;
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

#[derive(Clone)]
enum Live {
    Users(Arc<UserProjection>),
    Sessions(Arc<SessionProjection>),
}

struct Slot {
    generation: Generation,
    live: Live,
    stop: watch::Sender<bool>,
}

pub struct Manager {
    target: RedisTarget,
    conn: RedisConn,
    partitions: u32,
    template: SubscriptionConfig,
    breakers: Vec<(&'static str, Arc<CircuitBreaker>)>,
    live: RwLock<HashMap<&'static str, Slot>>,
    rebuilding: Mutex<HashMap<&'static str, Slot>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

fn aggregate_type(name: &str) -> &'static str {
    PROJECTIONS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or(users::AGGREGATE_TYPE)
}

impl Manager {
    /// Starts every projection at its live generation.
    pub async fn start(
        target: RedisTarget,
        conn: RedisConn,
        partitions: u32,
        template: SubscriptionConfig,
        breakers: Vec<(&'static str, Arc<CircuitBreaker>)>,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let manager = Arc::new(Self {
            target,
            conn: conn.clone(),
            partitions,
            template,
            breakers,
            live: RwLock::new(HashMap::new()),
            rebuilding: Mutex::new(HashMap::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        });
        let mut conn = conn;
        for (name, _) in PROJECTIONS {
            let generation = read_generation(&mut conn, name).await?;
            let slot = manager.spawn(name, generation);
            if let Ok(mut live) = manager.live.write() {
                live.insert(name, slot);
            }
        }
        Ok(manager)
    }

    fn spawn(&self, name: &'static str, generation: Generation) -> Slot {
        let (stop, stopped) = watch::channel(false);
        let mut config = self.template.clone();
        config.group = generation.group.clone();
        config.aggregate_type = aggregate_type(name).to_owned();
        config.partitions = self.partitions;
        if let Some((_, b)) = self.breakers.iter().find(|(n, _)| *n == name) {
            config.breaker = b.clone();
        }
        let live = if name == sessions::GROUP {
            Live::Sessions(Arc::new(SessionProjection::in_namespace(self.conn.clone(), &generation.namespace)))
        } else {
            Live::Users(Arc::new(UserProjection::in_namespace(self.conn.clone(), &generation.namespace)))
        };
        let target = self.target.clone();
        if let Ok(mut tasks) = self.tasks.lock() {
            match &live {
                Live::Users(p) => tasks.spawn(subscriber::run(target, config, p.clone(), stopped)),
                Live::Sessions(p) => tasks.spawn(subscriber::run(target, config, p.clone(), stopped)),
            };
        }
        tracing::info!(
            projection = name,
            generation = generation.number,
            group = generation.group,
            "projection started"
        );
        Slot { generation, live, stop }
    }

    /// The user projection queries should read now.
    pub fn users(&self) -> Arc<UserProjection> {
        let live = self.live.read().ok();
        match live.as_ref().and_then(|l| l.get(users::GROUP)).map(|s| s.live.clone()) {
            Some(Live::Users(p)) => p,
            _ => Arc::new(UserProjection::new(self.conn.clone())),
        }
    }

    pub fn sessions(&self) -> Arc<SessionProjection> {
        let live = self.live.read().ok();
        match live.as_ref().and_then(|l| l.get(sessions::GROUP)).map(|s| s.live.clone()) {
            Some(Live::Sessions(p)) => p,
            _ => Arc::new(SessionProjection::new(self.conn.clone())),
        }
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

    /// Whether `group` has read to the end of every log of `aggregate_type`
    /// with nothing pending.
    async fn caught_up(&self, aggregate_type: &str, group: &str) -> bool {
        let mut conn = self.conn.clone();
        for p in 0..self.partitions {
            let log = keys::log_key(aggregate_type, p);
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
            let (_, pending, delivered) = crate::ops::group_position(&mut conn, &log, group).await;
            if pending != 0 || delivered != last {
                return false;
            }
        }
        true
    }

    /// Starts a blue/green rebuild of `name`; returns the generation being built.
    pub async fn rebuild(self: &Arc<Self>, name: &'static str) -> Result<Generation, String> {
        if self.rebuilding(name).is_some() {
            return Err(format!("{name} is already being rebuilt"));
        }
        let next = self.generation(name).next(name);
        // A group of that number left by an interrupted rebuild restarts from zero.
        let mut conn = self.conn.clone();
        for p in 0..self.partitions {
            let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(keys::log_key(aggregate_type(name), p))
                .arg(&next.group)
                .query_async(&mut conn)
                .await;
        }
        let slot = self.spawn(name, next.clone());
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
                if manager.caught_up(aggregate_type(name), &building.group).await {
                    break;
                }
            }
            let mut conn = manager.conn.clone();
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
                _ = shutdown.changed() => return,
            }
            let mut conn = self.conn.clone();
            for (name, _) in PROJECTIONS {
                let Ok(recorded) = read_generation(&mut conn, name).await else { continue };
                if recorded.number > self.generation(name).number && self.rebuilding(name).is_none() {
                    let slot = self.spawn(name, recorded);
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
