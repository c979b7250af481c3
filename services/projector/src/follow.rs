//! External subscriptions: a server stream of one category's events.
//!
//! Every event leaves as proto3 JSON decoded through the contracts, upcast to
//! the current schema and with its secrets (password and refresh-token
//! hashes) redacted; a category without contracts cannot be followed.
//!
//! Events of a category live in P partition logs; the cursor is the last
//! entry id read in each (`<p>=<id>` pairs joined by `,`), so a follower that
//! reconnects with its last cursor continues exactly where it stopped. The
//! partitions are polled round-robin with non-blocking XREADs (which works on
//! Redis Cluster, where one XREAD cannot span slots); an idle round sleeps
//! 20 ms, which bounds the added latency.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use allies_contracts::projector::v1::event_subscription_service_server::EventSubscriptionService;
use allies_contracts::projector::v1::{FollowRequest, FollowedEvent};
use allies_contracts::registry;
use allies_core::FieldViolation;
use allies_platform::auth::{Authenticator, ROLE_ADMIN};
use allies_platform::{IntoStatus, OrStatus};
use allies_store::{RecordedEvent, RedisConn, StoreError, keys};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct FollowApi {
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
    pub partitions: u32,
    /// Turns true when the service starts shutting down: open streams end
    /// with UNAVAILABLE so their clients resume on another replica.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

fn valid_category(c: &str) -> bool {
    !c.is_empty() && c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
}

/// Parses a cursor into one start id per partition.
fn starts(from: &str, partitions: u32, now: &[String]) -> Result<Vec<String>, String> {
    match from {
        "" => Ok(now.to_vec()),
        "start" => Ok(vec!["0-0".to_owned(); partitions as usize]),
        cursor => {
            let mut ids = vec!["0-0".to_owned(); partitions as usize];
            for pair in cursor.split(',') {
                let (p, id) = pair.split_once('=').ok_or("cursor pairs are <partition>=<entry id>")?;
                let p: usize = p.parse().map_err(|_| "bad partition in cursor")?;
                let (ms, seq) = id.split_once('-').ok_or("bad entry id in cursor")?;
                if p >= ids.len() || ms.parse::<u64>().is_err() || seq.parse::<u64>().is_err() {
                    return Err("cursor does not match this deployment's partitions".into());
                }
                ids[p] = id.to_owned();
            }
            Ok(ids)
        }
    }
}

fn cursor(ids: &[String]) -> String {
    ids.iter().enumerate().map(|(p, id)| format!("{p}={id}")).collect::<Vec<_>>().join(",")
}

type EventStream = Pin<Box<dyn Stream<Item = Result<FollowedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl EventSubscriptionService for FollowApi {
    type FollowStream = EventStream;

    async fn follow(&self, request: Request<FollowRequest>) -> Result<Response<Self::FollowStream>, Status> {
        self.auth.authenticate(&request).await.or_status()?.require_role(ROLE_ADMIN).or_status()?;
        let r = request.into_inner();
        if !valid_category(&r.category) {
            return Err(FieldViolation::new("category", "must be an aggregate type like 'user'").into_status());
        }
        if !registry::CATEGORIES.contains(&r.category.as_str()) {
            return Err(FieldViolation::new(
                "category",
                format!("has no event contracts (followable: {})", registry::CATEGORIES.join(", ")),
            )
            .into_status());
        }
        let mut conn = self.conn.clone();
        let logs: Vec<String> = (0..self.partitions).map(|p| keys::log_key(&r.category, p)).collect();
        // "now" = each log's last id at the moment of the request.
        let mut now = Vec::with_capacity(logs.len());
        for log in &logs {
            let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(log)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await
                .map_err(|e| StoreError::from(e).into_status())?;
            now.push(last.ids.first().map(|e| e.id.clone()).unwrap_or_else(|| "0-0".into()));
        }
        let mut ids =
            starts(&r.from, self.partitions, &now).map_err(|e| FieldViolation::new("from", e).into_status())?;
        let (tx, rx) = mpsc::channel::<Result<FollowedEvent, Status>>(256);
        tokio::spawn(async move {
            loop {
                let mut any = false;
                for (p, log) in logs.iter().enumerate() {
                    let reply: Result<allies_store::StreamRead, _> = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(200)
                        .arg("STREAMS")
                        .arg(log)
                        .arg(&ids[p])
                        .query_async(&mut conn)
                        .await;
                    let entries = match reply {
                        Ok(r) => r.into_entries().collect::<Vec<_>>(),
                        Err(e) => {
                            let _ = tx.send(Err(StoreError::from(e).into_status())).await;
                            return;
                        }
                    };
                    for entry in entries {
                        any = true;
                        ids[p] = entry.id.clone();
                        let event = RecordedEvent::from_entry(log, &entry).map_err(|e| e.to_string()).and_then(|ev| {
                            let e = &ev.envelope;
                            let json = registry::public_json(
                                &e.aggregate_type,
                                &e.event_type,
                                e.schema_version,
                                &ev.content_type,
                                &ev.data,
                            )?;
                            Ok((ev, json))
                        });
                        let message = match event {
                            Ok((ev, (json, schema))) => FollowedEvent {
                                cursor: cursor(&ids),
                                event_id: ev.envelope.event_id.to_string(),
                                event_type: ev.envelope.event_type.clone(),
                                aggregate_type: ev.envelope.aggregate_type.clone(),
                                aggregate_id: ev.envelope.aggregate_id.clone(),
                                version: ev.envelope.version,
                                // Upcast on the way out: the current schema, as proto3 JSON.
                                schema_version: schema,
                                content_type: allies_store::CONTENT_TYPE_JSON.into(),
                                data: json.to_string().into_bytes(),
                                recorded_at_ms: ev.envelope.recorded_at_ms,
                                correlation_id: ev.envelope.metadata.correlation_id.to_string(),
                            },
                            Err(e) => {
                                tracing::warn!(entry = %entry.id, error = %e, "skipping an unreadable entry for a follower");
                                continue;
                            }
                        };
                        if tx.send(Ok(message)).await.is_err() {
                            return; // the follower went away
                        }
                    }
                }
                if !any {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let events = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(allies_platform::drain::until_stopping(events, self.stopping.clone())))
    }
}
