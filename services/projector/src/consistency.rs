//! The consistency checker, for any registered projection: rebuilds every
//! read model it expects from the events in the partition logs of its
//! sources (every event of every aggregate, whatever its storage strategy or
//! trimming) by folding the projection's own [`changes`](crate::registry::Projection::changes),
//! compares field by field with what Redis holds, reports drift and, if
//! asked, rewrites the drifted models atomically.

use std::collections::BTreeMap;

use allies_store::{RecordedEvent, RedisConn, StoreError, keys};
use redis::streams::StreamRangeReply;

use crate::readmodel::View;
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

/// Expected read models (by relative key) of a projection.
async fn expected(
    conn: &mut RedisConn,
    projection: &dyn Projection,
    partitions: u32,
) -> Result<BTreeMap<String, Expected>, StoreError> {
    let mut models: BTreeMap<String, Expected> = BTreeMap::new();
    for source in projection.sources() {
        for p in 0..partitions {
            let log = keys::log_key(source, p);
            let mut start = "-".to_owned();
            loop {
                let page: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&log)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(conn)
                    .await?;
                for entry in &page.ids {
                    // An unreadable event changes nothing (it is in the dead letters).
                    let Ok(event) = RecordedEvent::from_entry(&log, entry) else { continue };
                    let Ok(changes) = projection.changes(&event) else { continue };
                    for change in changes {
                        if let Change::Model { key, id, version, set, del } = change {
                            let model = models.entry(key).or_default();
                            if version <= model.version {
                                continue;
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
                    }
                }
                match page.ids.last() {
                    Some(last) if page.ids.len() == 1000 => start = format!("({}", last.id),
                    _ => break,
                }
            }
        }
    }
    Ok(models)
}

/// Checks (and with `repair`, rewrites) every read model of a projection in `view`.
pub async fn check(
    view: &View,
    projection: &dyn Projection,
    partitions: u32,
    repair: bool,
) -> Result<Report, StoreError> {
    let mut conn = view.conn.clone();
    let mut report = Report::default();
    for (key, mut want) in expected(&mut conn, projection, partitions).await? {
        report.checked += 1;
        want.fields.insert("_version".into(), want.version.to_string());
        let full = view.key(&key);
        let have: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&full).query_async(&mut conn).await?;
        let mut problems = Vec::new();
        if have.is_empty() {
            problems.push("read model missing".to_owned());
        } else {
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
        }
        if problems.is_empty() {
            continue;
        }
        report.drifted.push(Drift { model_id: want.id.clone(), problem: problems.join("; ") });
        if repair {
            let mut pipe = redis::pipe();
            pipe.atomic().del(&full).ignore();
            let mut hset = redis::cmd("HSET");
            hset.arg(&full);
            for (f, v) in &want.fields {
                hset.arg(f).arg(v);
            }
            pipe.add_command(hset).ignore();
            let _: () = pipe.query_async(&mut conn).await?;
            report.repaired += 1;
        }
    }
    Ok(report)
}
