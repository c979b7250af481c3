//! The Redis key layout. Every key one append touches carries the same hash
//! tag `{<aggregate_type>.<partition>}`, so they share one Redis Cluster slot.

/// Stable partition of an aggregate: FNV-1a 64 of its id, modulo `partitions`.
/// Stable across processes, versions and platforms (unlike `DefaultHasher`).
pub fn partition_of(aggregate_id: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in aggregate_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// The hash tag shared by all keys of one partition of one aggregate type.
pub fn tag(aggregate_type: &str, partition: u32) -> String {
    let mut t = String::with_capacity(13 + aggregate_type.len());
    push_tag(&mut t, aggregate_type, partition);
    t
}

fn push_tag(k: &mut String, aggregate_type: &str, partition: u32) {
    use std::fmt::Write as _;
    k.push('{');
    k.push_str(aggregate_type);
    let _ = write!(k, ".{partition}}}");
}

/// `es:{<aggregate_type>.<partition>}` then `:<part>` for each part, built
/// in one allocation (a command builds four keys: `format!` twice per key
/// was ~2 % of timesquare's CPU per game command).
fn key(aggregate_type: &str, partition: u32, parts: &[&str]) -> String {
    let len = 16 + aggregate_type.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut k = String::with_capacity(len);
    k.push_str("es:");
    push_tag(&mut k, aggregate_type, partition);
    for p in parts {
        k.push(':');
        k.push_str(p);
    }
    k
}

/// Per-aggregate event stream: the source of truth. Entry ids are `0-<version>`.
pub fn stream_key(aggregate_type: &str, partition: u32, aggregate_id: &str) -> String {
    key(aggregate_type, partition, &["stream", aggregate_id])
}

/// The aggregate type and id of an aggregate stream key, if it is one.
pub fn parse_stream_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("es:{")?;
    let (tag, rest) = rest.split_once("}:stream:")?;
    let (aggregate_type, _partition) = tag.rsplit_once('.')?;
    Some((aggregate_type, rest))
}

/// Partition log: every event of one partition of one aggregate type, in commit order.
pub fn log_key(aggregate_type: &str, partition: u32) -> String {
    key(aggregate_type, partition, &["log"])
}

/// The aggregate's current state (hybrid write), next to its stream.
pub fn state_key(aggregate_type: &str, partition: u32, aggregate_id: &str) -> String {
    key(aggregate_type, partition, &["state", aggregate_id])
}

/// Idempotency record of one command id on one aggregate (with a TTL).
pub fn command_key(aggregate_type: &str, partition: u32, aggregate_id: &str, command_id: &str) -> String {
    key(aggregate_type, partition, &["cmd", aggregate_id, command_id])
}

/// Dead letters of one consumer group on one partition log (same slot as the log).
pub fn dead_letter_key(aggregate_type: &str, partition: u32, group: &str) -> String {
    key(aggregate_type, partition, &["dlq", group])
}

/// How many of an aggregate stream's first events were archived and trimmed.
pub fn trimmed_key(aggregate_type: &str, partition: u32, aggregate_id: &str) -> String {
    key(aggregate_type, partition, &["trimmed", aggregate_id])
}

/// An integration topic's stream of one priority in one partition of the
/// publishing aggregate type (same slot as the aggregates that publish to it,
/// so the append script writes it atomically with the events).
pub fn integration_key(topic: &str, aggregate_type: &str, partition: u32, priority: crate::Priority) -> String {
    key(aggregate_type, partition, &["ie", topic, priority.as_str()])
}

/// Latest snapshot of an aggregate.
pub fn snapshot_key(aggregate_type: &str, partition: u32, aggregate_id: &str) -> String {
    key(aggregate_type, partition, &["snap", aggregate_id])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        // Fixed values: changing the hash would move every aggregate's keys.
        assert_eq!(partition_of("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as u32);
        assert_eq!(partition_of("abc", 16), partition_of("abc", 16));
        for i in 0..1000 {
            assert!(partition_of(&format!("agg-{i}"), 16) < 16);
        }
        assert_eq!(partition_of("x", 0), 0, "zero partitions is treated as one");
    }

    #[test]
    fn keys_of_one_partition_share_the_hash_tag() {
        assert_eq!(stream_key("user", 7, "u1"), "es:{user.7}:stream:u1");
        assert_eq!(log_key("user", 7), "es:{user.7}:log");
        assert_eq!(tag("game.session", 15), "{game.session.15}");
        assert_eq!(state_key("user", 0, "u1"), "es:{user.0}:state:u1");
        assert_eq!(command_key("game", 12, "g:1", "c-9"), "es:{game.12}:cmd:g:1:c-9");
        assert_eq!(dead_letter_key("game", 3, "rm.games"), "es:{game.3}:dlq:rm.games");
        assert_eq!(trimmed_key("game", 3, "g1"), "es:{game.3}:trimmed:g1");
        assert_eq!(snapshot_key("game", 4294967295, "g1"), "es:{game.4294967295}:snap:g1");
        assert_eq!(
            integration_key("matches", "lobby", 2, crate::Priority::High),
            format!("es:{{lobby.2}}:ie:matches:{}", crate::Priority::High.as_str())
        );
        assert_eq!(parse_stream_key("es:{user.7}:stream:u1"), Some(("user", "u1")));
        assert_eq!(parse_stream_key("es:{game.session.3}:stream:a:b"), Some(("game.session", "a:b")));
        assert_eq!(parse_stream_key("es:{user.7}:log"), None);
    }

    #[test]
    fn partitions_spread_aggregates() {
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[partition_of(&format!("{i:08x}-aggregate"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }
}
