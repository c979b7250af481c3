//! Where a consumer group is: consistency tokens (read-your-writes) and
//! lag / pending / last delivered entry per stream.

use redis::Value;

use crate::{RedisConn, StoreError, keys};

/// A consistency token: `<aggregate_type>.<partition>@<log entry id>`, as an
/// append returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub aggregate_type: String,
    pub partition: u32,
    pub entry: (u64, u64),
}

impl std::str::FromStr for ConsistencyToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not <aggregate_type>.<partition>@<entry id>");
        let (log, id) = s.split_once('@').ok_or_else(bad)?;
        let (aggregate_type, partition) = log.rsplit_once('.').ok_or_else(bad)?;
        if aggregate_type.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            aggregate_type: aggregate_type.to_owned(),
            partition: partition.parse().map_err(|_| bad())?,
            entry: parse_entry_id(id).ok_or_else(bad)?,
        })
    }
}

pub(crate) fn parse_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Whether consumer group `group` has applied the entry a token names: the
/// group has read past it and it is not pending (so its handler succeeded).
pub async fn has_applied(conn: &mut RedisConn, group: &str, token: &ConsistencyToken) -> Result<bool, StoreError> {
    let log = keys::log_key(&token.aggregate_type, token.partition);
    let Some(position) = group_position(conn, &log, group).await? else { return Ok(false) };
    if parse_entry_id(&position.last_delivered).is_none_or(|last| last < token.entry) {
        return Ok(false);
    }
    let id = format!("{}-{}", token.entry.0, token.entry.1);
    let pending: Vec<Value> =
        redis::cmd("XPENDING").arg(&log).arg(group).arg(&id).arg(&id).arg(1).query_async(conn).await?;
    Ok(pending.is_empty())
}

/// A consumer group's position on one stream.
///
/// `lag` is 0 exactly when the group has been handed the stream's last
/// entry. Behind it, up to [`COUNTED`] entries are counted; further behind,
/// Redis's own estimate (XINFO GROUPS `lag`) is taken. Redis's counter alone
/// is not trusted: after a failover a promoted replica's `entries-read` can
/// be short of what was delivered (a cluster soak showed groups handed every
/// entry, nothing pending, and `lag` 4 to 210), or unknown (nil).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPosition {
    pub lag: u64,
    pub pending: u64,
    pub last_delivered: String,
}

fn int_field(fields: &[Value], name: &str) -> Option<i64> {
    fields.chunks(2).find(|kv| is(&kv[0], name)).and_then(|kv| match kv.get(1)? {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    })
}

fn is(v: &Value, name: &str) -> bool {
    match v {
        Value::BulkString(b) => b == name.as_bytes(),
        Value::SimpleString(s) => s == name,
        _ => false,
    }
}

/// The position of `group` on `stream`: None when the stream or the group
/// does not exist (yet).
pub async fn group_position(
    conn: &mut RedisConn,
    stream: &str,
    group: &str,
) -> Result<Option<GroupPosition>, StoreError> {
    Ok(group_positions(conn, stream).await?.into_iter().find(|(name, _)| name == group).map(|(_, p)| p))
}

/// Every consumer group on `stream` with its position (none when the
/// stream does not exist).
pub async fn group_positions(conn: &mut RedisConn, stream: &str) -> Result<Vec<(String, GroupPosition)>, StoreError> {
    let groups: Value = match redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await {
        Ok(g) => g,
        // No such stream: nothing was ever written there.
        Err(e) if e.code() == Some("ERR") => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let Value::Array(groups) = groups else { return Ok(Vec::new()) };
    let text = |fields: &[Value], name: &str| {
        fields.chunks(2).find(|kv| is(&kv[0], name)).and_then(|kv| match kv.get(1)? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        })
    };
    // The stream's last entry: a group handed it is not behind.
    let newest: redis::streams::StreamRangeReply =
        redis::cmd("XREVRANGE").arg(stream).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
    let newest = newest.ids.first().and_then(|e| parse_entry_id(&e.id));
    let mut out = Vec::new();
    for g in groups {
        let fields = match g {
            Value::Array(f) => f,
            Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => continue,
        };
        let Some(name) = text(&fields, "name") else { continue };
        let last_delivered = text(&fields, "last-delivered-id").unwrap_or_else(|| "0-0".into());
        let estimate = int_field(&fields, "lag").map(|l| l.max(0) as u64);
        let lag = match (newest, parse_entry_id(&last_delivered)) {
            (None, _) => 0,
            (Some(last), Some(at)) if at >= last => 0,
            _ => behind(conn, stream, &last_delivered, estimate).await?,
        };
        out.push((
            name,
            GroupPosition { lag, pending: int_field(&fields, "pending").unwrap_or(0).max(0) as u64, last_delivered },
        ));
    }
    Ok(out)
}

/// Up to this many entries behind, a lag is counted, not estimated.
pub const COUNTED: usize = 100;

/// How many entries of `stream` come after `after`: counted up to
/// [`COUNTED`], beyond it Redis's estimate (when it has one and says more).
async fn behind(conn: &mut RedisConn, stream: &str, after: &str, estimate: Option<u64>) -> Result<u64, StoreError> {
    let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(COUNTED)
        .query_async(conn)
        .await?;
    let counted = page.ids.len() as u64;
    Ok(if counted < COUNTED as u64 { counted } else { counted.max(estimate.unwrap_or(0)) })
}
