//! Draining a replica: a long-lived server stream (a game watch, a ticket
//! watch, an event follow) ends with `UNAVAILABLE` as soon as its service
//! starts shutting down, instead of holding the shutdown for its whole grace
//! period and then being cut. The client sees a status it retries and
//! resumes from its cursor on another replica (the load balancer has taken
//! this one out: health already says NOT_SERVING).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::Status;

/// What a streaming RPC returns.
pub type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The status a drained stream ends with.
pub fn shutting_down() -> Status {
    Status::unavailable("this replica is shutting down: resume on another one from your last version or cursor")
}

/// `stream`, ended with [`shutting_down`] once `stopping` turns true (the
/// service's [`stopping`](crate::service::ServiceBuilder::stopping) signal).
pub fn until_stopping<T, S>(stream: S, stopping: watch::Receiver<bool>) -> ServerStream<T>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let state = (Box::pin(stream), stopping, false);
    Box::pin(futures_util::stream::unfold(state, |(mut stream, mut stopping, ended)| async move {
        if ended {
            return None;
        }
        if *stopping.borrow() {
            return Some((Err(shutting_down()), (stream, stopping, true)));
        }
        // The next item, or None once the service is stopping. A stream
        // whose source ended because the service is stopping (a hub told to
        // stop closes its channels) ends the same way.
        let next = tokio::select! {
            biased;
            _ = stopping.wait_for(|s| *s) => None,
            item = stream.next() => Some(item),
        };
        let next = match next {
            Some(None) if !*stopping.borrow() => return None,
            Some(None) => None,
            Some(Some(item)) => Some(item),
            None => None,
        };
        match next {
            Some(item) => Some((item, (stream, stopping, false))),
            None => Some((Err(shutting_down()), (stream, stopping, true))),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_ends_with_unavailable_when_the_service_starts_stopping() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, Status>>(4);
        let (stop, stopping) = watch::channel(false);
        let mut s = until_stopping(tokio_stream::wrappers::ReceiverStream::new(rx), stopping);
        tx.send(Ok(1)).await.unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), 1);
        let _ = stop.send(true);
        let end = s.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unavailable);
        assert!(end.message().contains("resume on another"), "{}", end.message());
        assert!(s.next().await.is_none(), "nothing after the status");
        drop(tx);
    }
}
