//! The consistency checker: rebuilds each aggregate's expected read model
//! from the events in the partition logs (every event of every aggregate,
//! whatever its storage strategy or trimming), compares it with the stored
//! read model, reports drift and, if asked, repairs it.

use std::collections::BTreeMap;

use allies_store::subscriber::HandlerError;
use allies_store::{RecordedEvent, RedisConn, StoreError, keys};
use redis::streams::StreamRangeReply;

/// One read model that does not match its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub aggregate_id: String,
    pub problem: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub checked: u64,
    pub drifted: Vec<Drift>,
    pub repaired: u64,
}

/// How a projection turns an event into read-model fields.
pub type Changes = fn(&RecordedEvent) -> Result<Vec<(&'static str, String)>, HandlerError>;

/// Expected read models of every aggregate of `aggregate_type`, by id.
async fn expected(
    conn: &mut RedisConn,
    aggregate_type: &str,
    partitions: u32,
    changes: Changes,
) -> Result<BTreeMap<String, BTreeMap<&'static str, String>>, StoreError> {
    let mut models: BTreeMap<String, BTreeMap<&'static str, String>> = BTreeMap::new();
    for p in 0..partitions {
        let log = keys::log_key(aggregate_type, p);
        let mut start = "-".to_owned();
        loop {
            let page: StreamRangeReply =
                redis::cmd("XRANGE").arg(&log).arg(&start).arg("+").arg("COUNT").arg(1000).query_async(conn).await?;
            for entry in &page.ids {
                let event = RecordedEvent::from_entry(&log, entry)?;
                let model = models.entry(event.envelope.aggregate_id.clone()).or_default();
                // An unreadable event changes nothing (it is in the dead letters).
                if let Ok(fields) = changes(&event) {
                    for (f, v) in fields {
                        model.insert(f, v);
                    }
                }
                model.insert("_version", event.envelope.version.to_string());
            }
            match page.ids.last() {
                Some(last) if page.ids.len() == 1000 => start = format!("({}", last.id),
                _ => break,
            }
        }
    }
    Ok(models)
}

/// Checks (and with `repair`, rewrites) every read model of a projection.
pub async fn check(
    conn: &mut RedisConn,
    aggregate_type: &str,
    partitions: u32,
    key_of: &(dyn Fn(&str) -> String + Send + Sync),
    changes: Changes,
    repair: bool,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    for (id, want) in expected(conn, aggregate_type, partitions, changes).await? {
        report.checked += 1;
        let key = key_of(&id);
        let have: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
        let mut problems = Vec::new();
        if have.is_empty() {
            problems.push("read model missing".to_owned());
        } else {
            for (field, value) in &want {
                match have.get(*field) {
                    Some(v) if v == value => {}
                    Some(v) => problems.push(format!("{field}: expected {value:?}, found {v:?}")),
                    None => problems.push(format!("{field}: expected {value:?}, missing")),
                }
            }
        }
        if problems.is_empty() {
            continue;
        }
        report.drifted.push(Drift { aggregate_id: id.clone(), problem: problems.join("; ") });
        if repair {
            let mut pipe = redis::pipe();
            pipe.atomic().del(&key).ignore();
            let mut hset = redis::cmd("HSET");
            hset.arg(&key);
            for (f, v) in &want {
                hset.arg(*f).arg(v);
            }
            pipe.add_command(hset).ignore();
            let _: () = pipe.query_async(conn).await?;
            report.repaired += 1;
        }
    }
    Ok(report)
}

/// The user projection's changes without the index part.
pub fn user_changes(e: &RecordedEvent) -> Result<Vec<(&'static str, String)>, HandlerError> {
    crate::users::changes(e).map(|(f, _)| f)
}

/// The session projection's changes without the owner part.
pub fn session_changes(e: &RecordedEvent) -> Result<Vec<(&'static str, String)>, HandlerError> {
    crate::sessions::changes(e).map(|(f, _)| f)
}
