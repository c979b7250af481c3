//! XREAD and XREADGROUP replies, taken apart without copies.
//!
//! redis-rs's `StreamReadReply` clones the whole reply before parsing it
//! (so it can try a second format when the first fails) and builds it
//! through three levels of hash maps. In a profile of the projector under
//! the game benchmark that was most of the time spent turning entries into
//! values, after the RESP parser itself: every event crosses it once per
//! consumer. [`StreamRead`] has the same shape (`keys`, each a
//! [`StreamKey`] of [`StreamId`]s, in the reply's order) and moves every
//! value into place.

use std::collections::HashMap;

use redis::streams::{StreamId, StreamKey};
use redis::{FromRedisValue, ParsingError, Value};

/// The entries an XREAD or XREADGROUP returned, per stream, in reply order
/// (empty on a timeout's nil).
#[derive(Debug, Default)]
pub struct StreamRead {
    pub keys: Vec<StreamKey>,
}

impl StreamRead {
    /// Every entry, the streams one after the other.
    pub fn into_entries(self) -> impl Iterator<Item = StreamId> {
        self.keys.into_iter().flat_map(|k| k.ids)
    }
}

impl FromRedisValue for StreamRead {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        // RESP2: [[key, entries], ...]; RESP3: {key: entries, ...}.
        let rows: Vec<(Value, Value)> = match v {
            Value::Nil => return Ok(Self::default()),
            Value::Map(rows) => rows,
            Value::Array(rows) => rows.into_iter().map(two).collect::<Result<_, _>>()?,
            other => return Err(unexpected("an XREAD reply", &other)),
        };
        let mut keys = Vec::with_capacity(rows.len());
        for (key, entries) in rows {
            let key = String::from_redis_value(key)?;
            let entries = match entries {
                Value::Nil => Vec::new(),
                Value::Array(entries) => entries,
                other => return Err(unexpected("a stream's entries", &other)),
            };
            let ids = entries.into_iter().map(entry).collect::<Result<_, _>>()?;
            keys.push(StreamKey { key, ids });
        }
        Ok(Self { keys })
    }
}

/// `[id, [field, value, ...]]` (a pending entry deleted since has nil
/// fields; XREADGROUP … CLAIM adds two numbers, not used here).
fn entry(v: Value) -> Result<StreamId, ParsingError> {
    let Value::Array(parts) = v else { return Err(unexpected("a stream entry", &v)) };
    let mut parts = parts.into_iter();
    let id = String::from_redis_value(parts.next().unwrap_or(Value::Nil))?;
    let map = match parts.next().unwrap_or(Value::Nil) {
        Value::Nil => HashMap::new(),
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(format!("an entry with {} field names and values", flat.len()).into());
            }
            let mut map = HashMap::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                map.insert(String::from_redis_value(k)?, v);
            }
            map
        }
        Value::Map(pairs) => {
            let mut map = HashMap::with_capacity(pairs.len());
            for (k, v) in pairs {
                map.insert(String::from_redis_value(k)?, v);
            }
            map
        }
        other => return Err(unexpected("an entry's fields", &other)),
    };
    Ok(StreamId { id, map, ..StreamId::default() })
}

fn two(v: Value) -> Result<(Value, Value), ParsingError> {
    match v {
        Value::Array(pair) if pair.len() == 2 => {
            let mut pair = pair.into_iter();
            Ok((pair.next().unwrap_or(Value::Nil), pair.next().unwrap_or(Value::Nil)))
        }
        other => Err(unexpected("a [key, entries] pair", &other)),
    }
}

/// What was found instead, by kind only (a reply can be megabytes).
fn unexpected(wanted: &str, found: &Value) -> ParsingError {
    let kind = match found {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) => "a bulk string",
        Value::Array(a) => return format!("{wanted} expected, an array of {} found", a.len()).into(),
        Value::SimpleString(_) => "a simple string",
        Value::Map(_) => "a map",
        _ => "another type",
    };
    format!("{wanted} expected, {kind} found").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn resp2_entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![bulk(id), Value::Array(fields.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())])
    }

    #[test]
    fn both_protocols_read_as_redis_rs_reads_them() {
        let a = resp2_entry("1-0", &[("event_type", "TowerPlaced"), ("data", "{}")]);
        let b = resp2_entry("2-0", &[("event_type", "TowerUpgraded")]);
        let resp2 = Value::Array(vec![
            Value::Array(vec![bulk("es:{g.0}:log"), Value::Array(vec![a.clone(), b.clone()])]),
            Value::Array(vec![bulk("es:{g.1}:log"), Value::Array(vec![])]),
        ]);
        let ours = StreamRead::from_redis_value(resp2.clone()).expect("resp2");
        let theirs = redis::streams::StreamReadReply::from_redis_value(resp2).expect("redis-rs");
        let flat = |keys: Vec<StreamKey>| -> Vec<(String, Vec<StreamId>)> {
            keys.into_iter().map(|k| (k.key, k.ids)).collect()
        };
        let mut theirs = flat(theirs.keys);
        theirs.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(flat(ours.keys), theirs);

        let resp3 = Value::Map(vec![(bulk("es:{g.0}:log"), Value::Array(vec![a, b]))]);
        let ours = StreamRead::from_redis_value(resp3).expect("resp3");
        let ids: Vec<&str> = ours.keys[0].ids.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "2-0"]);
        assert_eq!(ours.keys[0].ids[1].get::<String>("event_type").as_deref(), Some("TowerUpgraded"));
    }

    #[test]
    fn a_timeout_is_empty_and_a_deleted_pending_entry_has_no_fields() {
        assert!(StreamRead::from_redis_value(Value::Nil).expect("nil").keys.is_empty());
        let deleted = Value::Array(vec![bulk("7-0"), Value::Nil]);
        let r = StreamRead::from_redis_value(Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![deleted]),
        ])]))
        .expect("pending");
        let e = r.into_entries().next().expect("the entry");
        assert_eq!((e.id.as_str(), e.map.is_empty()), ("7-0", true));
    }

    #[test]
    fn a_malformed_reply_is_an_error_of_bounded_size_not_a_panic() {
        let huge = Value::BulkString(vec![b'x'; 1 << 20]);
        for v in [
            Value::Int(3),
            huge.clone(),
            Value::Array(vec![huge.clone()]),
            Value::Array(vec![Value::Array(vec![bulk("s"), Value::Int(1)])]),
            Value::Array(vec![Value::Array(vec![bulk("s"), Value::Array(vec![Value::Int(1)])])]),
            Value::Array(vec![Value::Array(vec![
                bulk("s"),
                Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("odd")])])]),
            ])]),
        ] {
            let e = StreamRead::from_redis_value(v).expect_err("malformed");
            assert!(e.to_string().len() < 200, "{e}");
        }
    }
}
