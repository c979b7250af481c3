//! The consistency checker, for any registered projection: rebuilds every
//! read model it expects from the events in the partition logs of its
//! sources (every event of every aggregate, whatever its storage strategy or
//! trimming) by folding the projection's own [`changes`](crate::registry::Projection::changes),
//! compares field by field with what Redis holds, reports drift and, if
//! asked, rewrites the drifted models atomically.

use std::collections::BTreeMap;

use allies_store::{RecordedEvent, RedisConn, StoreError, keys};

use crate::readmodel::Namespace;
use crate::registry::{Change, Projection};

/// One read model that does not match its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub model_id: String,
    pub problem: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub checked: u64,
    pub drifted: Vec<Drift>,
    pub repaired: u64,
}

#[derive(Default)]
struct Expected {
    id: String,
    version: u64,
    fields: BTreeMap<String, String>,
}

/// Folds `each` over every change the projection makes for every event in
/// its sources' partition logs, in log order per partition.
async fn fold_changes(
    conn: &mut RedisConn,
    projection: &dyn Projection,
    partitions: u32,
    mut each: impl FnMut(Change),
) -> Result<(), StoreError> {
    for source in projection.sources() {
        for p in 0..partitions {
            let log = keys::log_key(source, p);
            let mut pages = allies_store::Pages::new(&log, "-", "+", 1000);
            while let Some(page) = pages.next(conn).await? {
                for entry in &page {
                    // An unreadable event changes nothing (it is in the dead letters).
                    let Ok(event) = RecordedEvent::from_entry(&log, entry) else { continue };
                    let Ok(changes) = projection.changes(&event) else { continue };
                    changes.into_iter().for_each(&mut each);
                }
            }
        }
    }
    Ok(())
}

/// Expected read models (by relative key) of a projection.
async fn expected(
    conn: &mut RedisConn,
    projection: &dyn Projection,
    partitions: u32,
) -> Result<BTreeMap<String, Expected>, StoreError> {
    let mut models: BTreeMap<String, Expected> = BTreeMap::new();
    fold_changes(conn, projection, partitions, |change| {
        if let Change::Model { key, id, version, set, del } = change {
            let model = models.entry(key).or_default();
            if version <= model.version {
                return;
            }
            model.id = id;
            model.version = version;
            for (f, v) in set {
                model.fields.insert(f, v);
            }
            for f in del {
                model.fields.remove(&f);
            }
        }
    })
    .await?;
    Ok(models)
}

/// Every key (relative to a namespace) the projection writes for the events
/// in its sources: its read models and its indexes — exactly the keys one of
/// its generations holds, whatever other projections share the namespace.
pub async fn written_keys(
    conn: &mut RedisConn,
    projection: &dyn Projection,
    partitions: u32,
) -> Result<std::collections::BTreeSet<String>, StoreError> {
    use crate::registry::IndexOp;
    let mut out = std::collections::BTreeSet::new();
    fold_changes(conn, projection, partitions, |change| {
        let key = match change {
            Change::Model { key, .. } => key,
            Change::Index(
                IndexOp::HSet { key, .. }
                | IndexOp::HDel { key, .. }
                | IndexOp::ZAdd { key, .. }
                | IndexOp::ZRem { key, .. }
                | IndexOp::SAdd { key, .. }
                | IndexOp::SRem { key, .. },
            ) => key,
        };
        out.insert(key);
    })
    .await?;
    Ok(out)
}

/// What a read model holds against what its events make of it: the
/// differences, and whether it is at a later version than the events read.
async fn compare(conn: &mut RedisConn, full: &str, want: &Expected) -> Result<(Vec<String>, bool), StoreError> {
    let have: BTreeMap<String, String> = redis::cmd("HGETALL").arg(full).query_async(conn).await?;
    let mut problems = Vec::new();
    if have.is_empty() {
        problems.push("read model missing".to_owned());
        return Ok((problems, false));
    }
    for (field, value) in &want.fields {
        match have.get(field) {
            Some(v) if v == value => {}
            Some(v) => problems.push(format!("{field}: expected {value:?}, found {v:?}")),
            None => problems.push(format!("{field}: expected {value:?}, missing")),
        }
    }
    for field in have.keys().filter(|f| !want.fields.contains_key(*f)) {
        problems.push(format!("{field}: not expected"));
    }
    let ahead = have.get("_version").and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v > want.version);
    Ok((problems, ahead))
}

/// Checks (and with `repair`, rewrites) every read model of a projection in `view`.
///
/// The logs are read first, the read models after: a model the projector
/// moved on meanwhile (its version past the events read) is checked again
/// against the logs read anew, and is drift only if it is still ahead or
/// differs then (its events must be in the logs, since the projector reads
/// them there). It is never "repaired" back to the older state.
pub async fn check(
    view: &Namespace,
    projection: &dyn Projection,
    partitions: u32,
    repair: bool,
) -> Result<Report, StoreError> {
    let mut conn = view.conn.clone();
    let mut report = Report::default();
    let mut moved_on = Vec::new();
    for (key, mut want) in expected(&mut conn, projection, partitions).await? {
        report.checked += 1;
        want.fields.insert("_version".into(), want.version.to_string());
        let (problems, ahead) = compare(&mut conn, &view.key(&key), &want).await?;
        if ahead {
            moved_on.push(key);
        } else if !problems.is_empty() {
            drifted(&mut conn, view, &mut report, &key, &want, problems, repair).await?;
        }
    }
    if !moved_on.is_empty() {
        let mut again = expected(&mut conn, projection, partitions).await?;
        for key in moved_on {
            let mut want = again.remove(&key).unwrap_or_default();
            want.fields.insert("_version".into(), want.version.to_string());
            let (problems, _) = compare(&mut conn, &view.key(&key), &want).await?;
            if !problems.is_empty() {
                drifted(&mut conn, view, &mut report, &key, &want, problems, repair).await?;
            }
        }
    }
    Ok(report)
}

/// Records a drifted model and, with `repair`, rewrites it from its events.
async fn drifted(
    conn: &mut RedisConn,
    view: &Namespace,
    report: &mut Report,
    key: &str,
    want: &Expected,
    problems: Vec<String>,
    repair: bool,
) -> Result<(), StoreError> {
    let id = if want.id.is_empty() { key.to_owned() } else { want.id.clone() };
    report.drifted.push(Drift { model_id: id, problem: problems.join("; ") });
    if repair {
        let full = view.key(key);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&full).ignore();
        let mut hset = redis::cmd("HSET");
        hset.arg(&full);
        for (f, v) in &want.fields {
            hset.arg(f).arg(v);
        }
        pipe.add_command(hset).ignore();
        let _: () = pipe.query_async(conn).await?;
        report.repaired += 1;
    }
    Ok(())
}
