//! Read models in Redis: a [`Namespace`] is one generation (`rm`,
//! `rm.g1`, …) of the keys the projections write; it applies [`Change`]s
//! and reads models back.

use std::borrow::Cow;
use std::collections::HashMap;

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
        if self.conn.is_cluster() {
            self.apply_model_by_model(changes).await
        } else {
            self.apply_many(&[changes]).await
        }
    }

    /// One event's changes on a Cluster: each model in its own script, then the index writes.
    async fn apply_model_by_model(&self, changes: &[Change]) -> Result<(), HandlerError> {
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
        if models > 0 && written == 0 {
            return Ok(()); // an older event redelivered: indexes stay where they are
        }
        let cmds: Vec<redis::Cmd> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Index(op) => Some(self.index_cmd(op)),
                Change::Model { .. } => None,
            })
            .collect();
        let mut conn = self.conn.clone();
        // One command each: the index keys live in other slots.
        for cmd in cmds {
            let _: redis::Value = cmd.query_async(&mut conn).await.map_err(handler_error)?;
        }
        Ok(())
    }

    /// Several events' changes (in log order), each as [`apply`](Self::apply)
    /// would: on a single Redis in one script (one round trip for a read's
    /// events), on a Cluster event by event.
    ///
    /// A model's events at consecutive versions that change only that model
    /// (no index write) are written as one change ([`coalesce`]): the model
    /// ends as it would event by event, with one version check and one
    /// write instead of one per event.
    pub async fn apply_many<C: AsRef<[Change]>>(&self, events: &[C]) -> Result<(), HandlerError> {
        let events = coalesce(events);
        if self.conn.is_cluster() {
            for changes in events {
                self.apply_model_by_model(changes.as_ref()).await?;
            }
            return Ok(());
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
                match op {
                    IndexOp::HSet { key, field, value } => inv.key(self.key(key)).arg("hset").arg(field).arg(value),
                    IndexOp::ZAdd { key, member, score } => inv.key(self.key(key)).arg("zadd").arg(*score).arg(member),
                    IndexOp::HDel { key, field } => inv.key(self.key(key)).arg("hdel").arg(field),
                    IndexOp::ZRem { key, member } => inv.key(self.key(key)).arg("zrem").arg(member),
                    IndexOp::SAdd { key, member } => inv.key(self.key(key)).arg("sadd").arg(member),
                    IndexOp::SRem { key, member } => inv.key(self.key(key)).arg("srem").arg(member),
                };
            }
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(handler_error)?;
        Ok(())
    }

    fn index_cmd(&self, op: &IndexOp) -> redis::Cmd {
        match op {
            IndexOp::HSet { key, field, value } => redis::Cmd::hset(self.key(key), field, value),
            IndexOp::HDel { key, field } => redis::Cmd::hdel(self.key(key), field),
            IndexOp::ZAdd { key, member, score } => redis::Cmd::zadd(self.key(key), member, *score),
            IndexOp::ZRem { key, member } => redis::Cmd::zrem(self.key(key), member),
            IndexOp::SAdd { key, member } => redis::Cmd::sadd(self.key(key), member),
            IndexOp::SRem { key, member } => redis::Cmd::srem(self.key(key), member),
        }
    }

    /// A read model's fields (None when it does not exist).
    pub async fn model(&self, key: &str) -> Result<Option<HashMap<String, String>>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = redis::cmd("HGETALL").arg(self.key(key)).query_async(&mut conn).await?;
        Ok((!map.is_empty()).then_some(map))
    }

    /// Several read models at once, in order: one pipeline on a single
    /// Redis, one call each on a Cluster (the keys live in different slots).
    pub async fn models(&self, keys: &[String]) -> Result<Vec<Option<HashMap<String, String>>>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let maps: Vec<HashMap<String, String>> = if conn.is_cluster() {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                out.push(redis::cmd("HGETALL").arg(self.key(k)).query_async(&mut conn).await?);
            }
            out
        } else if keys.is_empty() {
            Vec::new()
        } else {
            let mut pipe = redis::pipe();
            for k in keys {
                pipe.cmd("HGETALL").arg(self.key(k));
            }
            pipe.query_async(&mut conn).await?
        };
        Ok(maps.into_iter().map(|m| (!m.is_empty()).then_some(m)).collect())
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
    fn int(&self, field: &str) -> i64;
    fn uint(&self, field: &str) -> u64;
}

impl Fields for HashMap<String, String> {
    fn text(&self, field: &str) -> String {
        self.get(field).cloned().unwrap_or_default()
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
