//! Read models in Redis: a [`Namespace`] is one generation (`rm`,
//! `rm.g1`, …) of the keys the projections write; it applies [`Change`]s
//! and reads models back.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use allies_store::RedisConn;
use allies_store::subscriber::HandlerError;

use crate::registry::{Change, IndexOp};

/// Key prefix of the first generation of every read model.
pub const DEFAULT_NAMESPACE: &str = "rm";

/// One generation's key namespace.
#[derive(Clone)]
pub struct Namespace {
    pub conn: RedisConn,
    pub ns: String,
}

/// One model's change (Cluster: model by model).
static APPLY: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("apply.lua")));
/// Whole events' changes in one script (single Redis).
static APPLY_ALL: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("apply_all.lua")));

/// Writing a read model failed: Redis is away (or a failover is under way).
fn handler_error(e: redis::RedisError) -> HandlerError {
    HandlerError::transient(e)
}

impl Namespace {
    pub fn new(conn: RedisConn, ns: &str) -> Self {
        Self { conn, ns: ns.to_owned() }
    }

    /// `<ns>:<key>`.
    pub fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.ns)
    }

    /// Applies one event's changes (see [`Change`]): on a single Redis in
    /// one script, atomically (one round trip; a crash never leaves a model
    /// written without its indexes); on a Cluster model by model, then the
    /// index writes.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), HandlerError> {
        self.apply_many(&[changes]).await
    }

    /// A read's events on a Cluster, where a model and its index keys live
    /// in different slots: in groups of consecutive events in which no
    /// model appears twice (and no index key is a model key), each group's
    /// models written at once, each with its own script, then the
    /// group's index writes of the events that wrote (or already held)
    /// their model, gathered per key as on a single Redis ([`Gathered`]).
    /// A crash between leaves models written without their index writes;
    /// the group's redelivery finds each model at exactly its event's
    /// version (no later event of it ran) and makes them.
    async fn apply_on_cluster(&self, events: &[Cow<'_, [Change]>]) -> Result<(), HandlerError> {
        let mut rest = events;
        while !rest.is_empty() {
            let mut models: HashSet<&str> = HashSet::new();
            let mut indexes: HashSet<&str> = HashSet::new();
            let mut len = 0;
            for changes in rest {
                let (m, x) = keys_of(changes);
                // An event naming a model twice goes alone.
                let alone = m.len() != m.iter().collect::<HashSet<_>>().len();
                let clash = alone
                    || m.iter().any(|k| models.contains(k) || indexes.contains(k))
                    || x.iter().any(|k| models.contains(k));
                if clash && len > 0 {
                    break;
                }
                models.extend(m);
                indexes.extend(x);
                len += 1;
                if alone {
                    break;
                }
            }
            let (group, later) = rest.split_at(len);
            // The group's models are distinct keys: written concurrently.
            let made = futures_util::future::try_join_all(group.iter().map(|c| self.write_models(c))).await?;
            let mut gathered = Gathered::default();
            for (changes, made) in group.iter().zip(made) {
                if made {
                    for change in changes.iter() {
                        if let Change::Index(op) = change {
                            gathered.push(self.key(op.key()), op);
                        }
                    }
                }
            }
            let mut conn = self.conn.clone();
            // One command each: the index keys live in other slots.
            for cmd in gathered.commands() {
                let _: redis::Value = cmd.query_async(&mut conn).await.map_err(handler_error)?;
            }
            rest = later;
        }
        Ok(())
    }

    /// One event's models on a Cluster, each with its own script; whether
    /// its index writes are to be made (it has no model, or one of them was
    /// written or already at exactly this version: an older event
    /// redelivered moves no index back).
    async fn write_models(&self, changes: &[Change]) -> Result<bool, HandlerError> {
        let mut models = 0;
        let mut written = 0;
        for change in changes {
            if let Change::Model { key, version, set, del, .. } = change {
                models += 1;
                let mut inv = APPLY.key(self.key(key));
                inv.arg(*version).arg(set.len());
                for (f, v) in set {
                    inv.arg(f).arg(v);
                }
                for f in del {
                    inv.arg(f);
                }
                let mut conn = self.conn.clone();
                let applied: i64 = inv.invoke_async(&mut conn).await.map_err(handler_error)?;
                if applied > 0 {
                    written += 1;
                }
            }
        }
        Ok(models == 0 || written > 0)
    }

    /// Several events' changes (in log order), each as [`apply`](Self::apply)
    /// would: on a single Redis in one script (one round trip for a read's
    /// events), on a Cluster in groups (`apply_on_cluster`).
    ///
    /// A model's events at consecutive versions that change only that model
    /// (no index write) are written as one change ([`coalesce`]): the model
    /// ends as it would event by event, with one version check and one
    /// write instead of one per event.
    pub async fn apply_many<C: AsRef<[Change]>>(&self, events: &[C]) -> Result<(), HandlerError> {
        let events = coalesce(events);
        if self.conn.is_cluster() {
            return self.apply_on_cluster(&events).await;
        }
        if events.iter().all(|c| c.as_ref().is_empty()) {
            return Ok(());
        }
        let mut inv = APPLY_ALL.prepare_invoke();
        inv.arg(events.len());
        for changes in &events {
            let changes = changes.as_ref();
            let models = changes.iter().filter(|c| matches!(c, Change::Model { .. })).count();
            inv.arg(models).arg(changes.len() - models);
            for change in changes {
                let Change::Model { key, version, set, del, .. } = change else { continue };
                inv.key(self.key(key)).arg(*version).arg(set.len()).arg(del.len());
                for (f, v) in set {
                    inv.arg(f).arg(v);
                }
                for f in del {
                    inv.arg(f);
                }
            }
            for change in changes {
                let Change::Index(op) = change else { continue };
                inv.key(self.key(op.key())).arg(op.command());
                index_args(op, &mut inv);
            }
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(handler_error)?;
        Ok(())
    }

    /// A read model's fields (None when it does not exist).
    pub async fn model(&self, key: &str) -> Result<Option<HashMap<String, String>>, redis::RedisError> {
        let mut conn = self.conn.clone();
        // Read as pairs, then collected at its final size (a map filled
        // pair by pair from the reply grows three times for ten fields).
        let pairs: Vec<(String, String)> = redis::cmd("HGETALL").arg(self.key(key)).query_async(&mut conn).await?;
        Ok((!pairs.is_empty()).then(|| pairs.into_iter().collect()))
    }

    /// Several read models at once, in order (see [`Namespace::each`]).
    pub async fn models(&self, keys: &[String]) -> Result<Vec<Option<HashMap<String, String>>>, redis::RedisError> {
        let maps: Vec<HashMap<String, String>> = self
            .each(
                keys.iter()
                    .map(|k| {
                        let mut cmd = redis::cmd("HGETALL");
                        cmd.arg(self.key(k));
                        cmd
                    })
                    .collect(),
            )
            .await?;
        Ok(maps.into_iter().map(|m| (!m.is_empty()).then_some(m)).collect())
    }

    /// Commands on keys of different models, their replies in order: one
    /// pipeline on a single Redis; on a Cluster, where the keys live in
    /// different slots, the commands at once (at most [`IN_FLIGHT`] at a
    /// time), each routed to its slot's node. Either way one round trip's
    /// wait for the lot, not one per command.
    pub async fn each<T: redis::FromRedisValue>(&self, cmds: Vec<redis::Cmd>) -> Result<Vec<T>, redis::RedisError> {
        let mut conn = self.conn.clone();
        if conn.is_cluster() {
            use futures_util::{StreamExt, TryStreamExt};
            return futures_util::stream::iter(cmds)
                .map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<T>(&mut conn).await }
                })
                .buffered(IN_FLIGHT)
                .try_collect()
                .await;
        }
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        if pipe.is_empty() {
            return Ok(Vec::new());
        }
        pipe.query_async(&mut conn).await
    }
}

/// How many of [`Namespace::each`]'s commands are under way at once on a
/// Cluster.
pub const IN_FLIGHT: usize = 64;

/// An event's model keys and index keys.
fn keys_of(changes: &[Change]) -> (Vec<&str>, Vec<&str>) {
    let (mut models, mut indexes) = (Vec::new(), Vec::new());
    for change in changes {
        match change {
            Change::Model { key, .. } => models.push(key.as_str()),
            Change::Index(op) => indexes.push(op.key()),
        }
    }
    (models, indexes)
}

/// What takes a command's arguments: a command, or a script's invocation.
trait Args {
    fn add<T: redis::ToRedisArgs>(&mut self, arg: T);
}

impl Args for redis::Cmd {
    fn add<T: redis::ToRedisArgs>(&mut self, arg: T) {
        self.arg(arg);
    }
}

impl Args for redis::ScriptInvocation<'_> {
    fn add<T: redis::ToRedisArgs>(&mut self, arg: T) {
        self.arg(arg);
    }
}

/// An index write's arguments after its key (field value, field, score
/// member, member), added to `to`; returns how many.
fn index_args(op: &IndexOp, to: &mut impl Args) -> usize {
    match op {
        IndexOp::HSet { field, value, .. } => {
            to.add(field);
            to.add(value);
            2
        }
        IndexOp::ZAdd { member, score, .. } => {
            to.add(*score);
            to.add(member);
            2
        }
        IndexOp::HDel { field: one, .. }
        | IndexOp::ZRem { member: one, .. }
        | IndexOp::SAdd { member: one, .. }
        | IndexOp::SRem { member: one, .. } => {
            to.add(one);
            1
        }
    }
}

/// Members and values one gathered command carries at most (as
/// `apply_all.lua`'s `MAX_ARGS`).
const MAX_ARGS: usize = 1024;

/// Index writes gathered per key, as `apply_all.lua` gathers them on a
/// single Redis: one command per run of one op on a key, the runs of a key
/// in the order they began (so a key ends as write by write; writes to
/// different keys commute).
#[derive(Default)]
struct Gathered {
    /// Each command, with how many arguments it carries after its key.
    runs: Vec<(redis::Cmd, usize)>,
    /// A key → its open run (the last one begun) and that run's op.
    open: HashMap<String, (usize, &'static str)>,
}

impl Gathered {
    fn push(&mut self, key: String, op: &IndexOp) {
        let at = match self.open.get(&key) {
            Some(&(at, command)) if command == op.command() && self.runs[at].1 < MAX_ARGS => at,
            _ => {
                let mut cmd = redis::cmd(op.command());
                cmd.arg(&key);
                self.open.insert(key, (self.runs.len(), op.command()));
                self.runs.push((cmd, 0));
                self.runs.len() - 1
            }
        };
        let (cmd, n) = &mut self.runs[at];
        *n += index_args(op, cmd);
    }

    fn commands(self) -> impl Iterator<Item = redis::Cmd> {
        self.runs.into_iter().map(|(cmd, _)| cmd)
    }
}

/// A read's events with each run of one model's model-only events (a
/// single [`Change::Model`] and no index write: a game's tower events, say)
/// at consecutive versions folded into the first of them: its fields as the
/// last event left them (a later set or delete of a field replaces an
/// earlier one), at the last event's version. An event with index writes or
/// several models stays as it is and ends the runs of the models it
/// touches; an event whose version does not follow its run's starts a new
/// run. So the folded change ends as the events would one by one: against
/// a model at version `c`, the run's events up to `c` are in it (each of
/// their fields as the last of them left it, which the fold repeats, since
/// the run holds every version from its first to `c`) and the newer ones
/// are written; when none is newer, nothing is.
pub fn coalesce<C: AsRef<[Change]>>(events: &[C]) -> Vec<Cow<'_, [Change]>> {
    let mut out: Vec<Cow<'_, [Change]>> = Vec::with_capacity(events.len());
    // Model key → where its open run is in `out`, and the run's version.
    let mut open: HashMap<&str, (usize, u64)> = HashMap::new();
    for changes in events {
        let changes = changes.as_ref();
        let [Change::Model { key, version, set, del, .. }] = changes else {
            for change in changes {
                if let Change::Model { key, .. } = change {
                    open.remove(key.as_str());
                }
            }
            out.push(Cow::Borrowed(changes));
            continue;
        };
        match open.get_mut(key.as_str()) {
            Some((at, run)) if *version == *run + 1 => {
                *run = *version;
                if let Some([Change::Model { version: v, set: s, del: d, .. }]) =
                    out.get_mut(*at).map(|c| c.to_mut().as_mut_slice())
                {
                    *v = *version;
                    for (field, value) in set {
                        d.retain(|f| f != field);
                        match s.iter_mut().find(|(f, _)| f == field) {
                            Some(kept) => kept.1.clone_from(value),
                            None => s.push((field.clone(), value.clone())),
                        }
                    }
                    for field in del {
                        s.retain(|(f, _)| f != field);
                        if !d.contains(field) {
                            d.push(field.clone());
                        }
                    }
                }
            }
            _ => {
                open.insert(key, (out.len(), *version));
                out.push(Cow::Borrowed(changes));
            }
        }
    }
    out
}

/// Typed reads of a model's fields.
pub trait Fields {
    fn text(&self, field: &str) -> String;
    /// The field's text, moved out of the model (no copy; read it last).
    fn take(&mut self, field: &str) -> String;
    fn int(&self, field: &str) -> i64;
    fn uint(&self, field: &str) -> u64;
}

impl Fields for HashMap<String, String> {
    fn text(&self, field: &str) -> String {
        self.get(field).cloned().unwrap_or_default()
    }
    fn take(&mut self, field: &str) -> String {
        self.remove(field).unwrap_or_default()
    }
    fn int(&self, field: &str) -> i64 {
        self.get(field).and_then(|v| v.parse().ok()).unwrap_or_default()
    }
    fn uint(&self, field: &str) -> u64 {
        self.get(field).and_then(|v| v.parse().ok()).unwrap_or_default()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(key: &str, version: u64, set: &[(&str, &str)], del: &[&str]) -> Vec<Change> {
        vec![Change::Model {
            key: key.into(),
            id: key.into(),
            version,
            set: set.iter().map(|(f, v)| ((*f).to_owned(), (*v).to_owned())).collect(),
            del: del.iter().map(|f| (*f).to_owned()).collect(),
        }]
    }

    fn index(member: &str) -> Change {
        Change::Index(IndexOp::SAdd { key: "idx".into(), member: member.into() })
    }

    #[test]
    fn a_models_consecutive_model_only_events_fold_into_the_first() {
        let events = vec![
            model("g:1", 4, &[("t:1", "a0"), ("gold", "90")], &[]),
            model("g:2", 7, &[("gold", "10")], &[]),
            model("g:1", 5, &[("t:1", "a1"), ("gold", "80")], &[]),
            model("g:1", 6, &[("gold", "70")], &["t:1"]),
            model("g:1", 7, &[("t:2", "b0")], &[]),
            model("g:2", 8, &[("t:9", "z")], &[]),
        ];
        let folded = coalesce(&events);
        assert_eq!(folded.len(), 2);
        assert_eq!(folded[0].as_ref(), model("g:1", 7, &[("gold", "70"), ("t:2", "b0")], &["t:1"]).as_slice());
        assert_eq!(folded[1].as_ref(), model("g:2", 8, &[("gold", "10"), ("t:9", "z")], &[]).as_slice());
        // A field deleted and set again is set.
        let again = vec![model("g:1", 1, &[], &["x"]), model("g:1", 2, &[("x", "1")], &[])];
        assert_eq!(coalesce(&again)[0].as_ref(), model("g:1", 2, &[("x", "1")], &[]).as_slice());
    }

    #[test]
    fn index_writes_gaps_and_older_versions_end_a_run() {
        let mut with_index = model("g:1", 2, &[("players", "2")], &[]);
        with_index.push(index("u"));
        let events = vec![
            model("g:1", 1, &[("a", "1")], &[]),
            with_index,
            model("g:1", 3, &[("a", "3")], &[]),
            // A gap: version 5 does not follow 3 (4 is not in this read).
            model("g:1", 5, &[("a", "5")], &[]),
            // Older, redelivered: starts its own run.
            model("g:1", 2, &[("a", "old")], &[]),
            model("g:1", 3, &[("b", "3")], &[]),
            vec![],
        ];
        let folded = coalesce(&events);
        let versions: Vec<u64> = folded
            .iter()
            .flat_map(|c| c.iter())
            .filter_map(|c| match c {
                Change::Model { version, .. } => Some(*version),
                Change::Index(_) => None,
            })
            .collect();
        assert_eq!(versions, vec![1, 2, 3, 5, 3]);
        assert_eq!(folded.len(), 6);
        assert_eq!(folded[4].as_ref(), model("g:1", 3, &[("a", "old"), ("b", "3")], &[]).as_slice());
        // Nothing folded: nothing copied.
        assert!(folded.iter().take(4).all(|c| matches!(c, Cow::Borrowed(_))));
    }
}
