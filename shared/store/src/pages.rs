//! Reading a whole stream (or a range of it) in pages of XRANGE — for the
//! work that walks history: the consistency checker, deleting a retired
//! generation, finding idle aggregates, reports.

use redis::streams::{StreamId, StreamRangeReply};

use crate::{RedisConn, StoreError};

/// The pages of `stream` from `start` to `end` (stream ids, or `-` / `+`),
/// `count` entries each:
///
/// ```ignore
/// let mut pages = Pages::new(&log, "-", "+", 1000);
/// while let Some(page) = pages.next(&mut conn).await? { … }
/// ```
pub struct Pages {
    stream: String,
    next: Option<String>,
    end: String,
    count: usize,
}

impl Pages {
    pub fn new(stream: &str, start: &str, end: &str, count: usize) -> Self {
        Self { stream: stream.to_owned(), next: Some(start.to_owned()), end: end.to_owned(), count: count.max(1) }
    }

    /// The next page (None once the range is read).
    pub async fn next(&mut self, conn: &mut RedisConn) -> Result<Option<Vec<StreamId>>, StoreError> {
        let Some(start) = self.next.take() else { return Ok(None) };
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg(&start)
            .arg(&self.end)
            .arg("COUNT")
            .arg(self.count)
            .query_async(conn)
            .await?;
        if page.ids.len() == self.count {
            self.next = page.ids.last().map(|l| format!("({}", l.id));
        }
        Ok(if page.ids.is_empty() { None } else { Some(page.ids) })
    }
}
