//! What every query service of the projector shares: paging (page sizes and
//! tokens), ids from requests, and the read-your-writes wait on a
//! consistency token.

use std::time::Duration;

use allies_core::{Failure, FieldViolation, Invalid};
use allies_store::RedisConn;
use allies_store::subscriber::{ConsistencyToken, has_applied};
use uuid::Uuid;

use crate::error::Result;

/// A page size (1 to 100, default 20) and the offset a page token names,
/// each wrong one noted in `invalid`.
pub fn paging(page_size: u32, page_token: &str, invalid: &mut Invalid) -> (usize, usize) {
    let size = match page_size {
        0 => 20,
        n @ 1..=100 => n as usize,
        _ => {
            invalid.push("page_size", "must be 1 to 100");
            20
        }
    };
    let offset = match page_token {
        "" => 0,
        t => t.strip_prefix("o:").and_then(|o| o.parse().ok()).unwrap_or_else(|| {
            invalid.push("page_token", "is not a token this API returned");
            0
        }),
    };
    (size, offset)
}

/// The token of the page at `offset` (empty: no more pages).
pub fn page_token<T: std::fmt::Display>(next: Option<T>) -> String {
    next.map(|o| format!("o:{o}")).unwrap_or_default()
}

pub fn uuid_field(field: &str, value: &str) -> std::result::Result<String, FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    Uuid::parse_str(value).map(|u| u.to_string()).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// How long a query waits for its consistency token at most.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

/// Waits until `group` has applied the write `token` names (read-your-writes).
/// The group is looked up only when there is a token to wait for.
pub async fn wait_for(
    conn: &RedisConn,
    group: impl FnOnce() -> String,
    aggregate_types: &[&str],
    token: &str,
) -> Result<()> {
    if token.is_empty() {
        return Ok(());
    }
    let parsed: ConsistencyToken = token.parse().map_err(|e: String| FieldViolation::new("consistency_token", e))?;
    if !aggregate_types.contains(&parsed.aggregate_type.as_str()) {
        return Err(FieldViolation::new(
            "consistency_token",
            format!("is a token of {} writes; this query reads {}", parsed.aggregate_type, aggregate_types.join(", ")),
        )
        .into());
    }
    let group = group();
    let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
    let mut conn = conn.clone();
    loop {
        if has_applied(&mut conn, &group, &parsed).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                allies_core::ErrorCode::DeadlineExceeded,
                format!("the read model has not caught up with {token} within {READ_YOUR_WRITES_WAIT:?}"),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
