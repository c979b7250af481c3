//! Following a stream without a consumer group: a blocking XREAD loop on
//! one key (or several) from a position, reconnecting after a failure, handing every
//! entry to a callback. For live fan-out (game watchers, ticket watchers),
//! where every replica needs every entry and nothing needs acknowledging.

use std::time::Duration;

use redis::streams::StreamId;
use tokio::sync::watch;

use crate::{RedisConn, RedisTarget, StoreError, StreamRead};

/// How long one read waits for an entry: an append wakes it at once, a
/// stop ends it at once; the timeout only bounds how long a read that
/// nothing answers waits (the connection's response timeout is 12 s).
const BLOCK: Duration = Duration::from_secs(5);

/// The id of the last entry of `key` ("0-0" when empty): where a tail that
/// wants only new entries starts.
pub async fn last_id(conn: &RedisConn, key: &str) -> Result<String, StoreError> {
    let mut conn = conn.clone();
    let last: redis::streams::StreamRangeReply =
        redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut conn).await?;
    Ok(last.ids.first().map(|e| e.id.clone()).unwrap_or_else(|| "0-0".into()))
}

/// Entries per read of a tail.
const COUNT: usize = 256;

/// Whether a reader that just read `found` entries waits `linger` before
/// its next read: only after a read that found entries — the log is busy,
/// and what arrives meanwhile comes in one read — but not a `full` one (a
/// read that got all it asked for: more may be waiting already). A reader
/// that found nothing blocks as before, so a quiet log's first entry comes
/// at once.
pub(crate) fn lingers(linger: Duration, found: usize, full: bool) -> bool {
    !linger.is_zero() && found > 0 && !full
}

/// Reads `key` after `last` until `stop` turns true, calling `on_entry`
/// for each entry in order (awaiting it before the next). After a read
/// that found entries, the next waits `linger` ([`lingers`]; zero for live
/// fan-out, where every entry goes out at once).
pub async fn follow<F, Fut>(
    target: RedisTarget,
    key: String,
    last: String,
    linger: Duration,
    stop: watch::Receiver<bool>,
    on_entry: F,
) where
    F: Fn(StreamId) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    follow_all(target, vec![(key, last)], linger, stop, |_, entry| on_entry(entry)).await
}

/// [`follow`] for several streams at once, each from its own position: one
/// blocking XREAD names them all (one connection, one read where there
/// would be one per stream), and `on_entry` gets the index of the entry's
/// stream in `streams`. Each stream's entries come in order; a read that
/// found entries is followed by `linger`, and one that filled any stream's
/// `COUNT` is not. The streams must share a hash slot on a Redis Cluster
/// (one command names them all): follow them one by one there.
pub async fn follow_all<F, Fut>(
    target: RedisTarget,
    mut streams: Vec<(String, String)>,
    linger: Duration,
    mut stop: watch::Receiver<bool>,
    on_entry: F,
) where
    F: Fn(usize, StreamId) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let names = streams.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>().join(",");
    let mut conn = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match target.dedicated(Duration::from_secs(12)).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(key = %names, error = %e, "tail cannot connect; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(COUNT).arg("BLOCK").arg(BLOCK.as_millis() as u64).arg("STREAMS");
        for (key, _) in &streams {
            cmd.arg(key);
        }
        for (_, last) in &streams {
            cmd.arg(last);
        }
        let read: redis::RedisResult<StreamRead> = tokio::select! {
            r = cmd.query_async(c) => r,
            _ = stop.changed() => return,
        };
        match read {
            Ok(reply) => {
                let found = reply.keys.iter().map(|k| k.ids.len()).sum();
                let full = reply.keys.iter().any(|k| k.ids.len() >= COUNT);
                for read in reply.keys {
                    let Some(i) = streams.iter().position(|(key, _)| *key == read.key) else { continue };
                    for entry in read.ids {
                        streams[i].1 = entry.id.clone();
                        on_entry(i, entry).await;
                    }
                }
                if lingers(linger, found, full) {
                    tokio::select! {
                        _ = tokio::time::sleep(linger) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
            Err(e) => {
                tracing::warn!(key = %names, error = %e, "tail interrupted; reconnecting");
                conn = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_lingers_only_after_a_read_that_found_entries_but_not_a_full_one() {
        let ms = Duration::from_millis;
        assert!(lingers(ms(5), 1, false), "a busy log: wait for more");
        assert!(lingers(ms(5), 255, false));
        assert!(!lingers(ms(5), 0, false), "a quiet log: block, its next entry comes at once");
        assert!(!lingers(ms(5), 256, true), "a full read: more may be waiting, read on");
        assert!(!lingers(Duration::ZERO, 3, false), "zero: never wait");
    }
}
