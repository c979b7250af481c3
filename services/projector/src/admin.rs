//! The projector's admin API: dead letters of each projection. Admin only.

use std::sync::Arc;

use allies_contracts::projector::v1::projector_admin_service_server::ProjectorAdminService;
use allies_contracts::projector::v1::*;
use allies_platform::auth::{Authenticator, ROLE_ADMIN};
use allies_platform::status;
use allies_store::RedisConn;
use allies_store::subscriber::{self, DeadLetterSelection as Selection};
use tonic::{Request, Response, Status};

use crate::sessions;
use crate::users;

pub struct AdminApi {
    pub metrics: Arc<allies_store::metrics::SubscriberMetrics>,
    pub breakers: Vec<(&'static str, Arc<allies_store::breaker::CircuitBreaker>)>,
    pub running: Arc<std::sync::atomic::AtomicBool>,
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
    pub partitions: u32,
    pub manager: Arc<crate::manager::Manager>,
}

fn projection(name: &str) -> Result<&'static str, Status> {
    match name {
        users::GROUP => Ok(users::AGGREGATE_TYPE),
        sessions::GROUP => Ok(sessions::AGGREGATE_TYPE),
        "" => Err(status::invalid_argument("projection", "must not be empty (rm.user, rm.session)")),
        other => Err(Status::not_found(format!("no projection '{other}' (rm.user, rm.session)"))),
    }
}

fn selection(s: &DeadLetterSelection) -> Result<Selection, Status> {
    match (s.ids.is_empty(), s.event_type.is_empty(), s.all) {
        (false, true, false) => Ok(Selection::Ids(s.ids.clone())),
        (true, false, false) => Ok(Selection::EventType(s.event_type.clone())),
        (true, true, true) => Ok(Selection::All),
        _ => Err(status::invalid_argument("selection", "give exactly one of ids, event_type or all")),
    }
}

/// An admin's call on a projection: who, which projection (group and
/// aggregate type), checked once for every admin call.
struct AdminCall {
    caller: allies_platform::auth::Caller,
    group: String,
    aggregate_type: &'static str,
}

impl AdminApi {
    async fn admin<T>(&self, request: &Request<T>, projection_name: &str) -> Result<AdminCall, Status> {
        let caller = self.auth.authenticate(request).await?;
        caller.require_role(ROLE_ADMIN)?;
        let aggregate_type = projection(projection_name)?;
        let group = self.manager.generation(projection_name).group;
        Ok(AdminCall { caller, group, aggregate_type })
    }
}

fn unavailable(e: allies_store::StoreError) -> Status {
    status::from_store(&e)
}

#[tonic::async_trait]
impl ProjectorAdminService for AdminApi {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let call = self.admin(&request, &request.get_ref().projection).await?;
        let (aggregate_type, group) = (call.aggregate_type, call.group);
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 100,
            n @ 1..=1000 => n as usize,
            _ => return Err(status::invalid_argument("limit", "must be 1 to 1000")),
        };
        let mut conn = self.conn.clone();
        let dead = subscriber::list_dead_letters(&mut conn, aggregate_type, self.partitions, &group, limit)
            .await
            .map_err(unavailable)?;
        let dead_letters = dead
            .into_iter()
            .map(|d| {
                let e = &d.event.envelope;
                DeadLetter {
                    id: d.id,
                    projection: d.group,
                    event_type: e.event_type.clone(),
                    aggregate_type: e.aggregate_type.clone(),
                    aggregate_id: e.aggregate_id.clone(),
                    version: e.version,
                    error: d.error,
                    attempts: d.attempts,
                    dead_lettered_at_ms: d.dead_lettered_at_ms,
                    log_entry: d.entry,
                    payload: String::from_utf8(d.event.data.clone())
                        .unwrap_or_else(|_| format!("<{} bytes {}>", d.event.data.len(), d.event.content_type)),
                }
            })
            .collect();
        Ok(Response::new(ListDeadLettersResponse { dead_letters }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<DeadLetterSelection>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let call = self.admin(&request, &request.get_ref().projection).await?;
        let which = selection(request.get_ref())?;
        let (mut conn, t, p, g) = (self.conn.clone(), call.aggregate_type, self.partitions, call.group.as_str());
        let (replayed, failed) = match t {
            users::AGGREGATE_TYPE => {
                subscriber::replay_dead_letters(&mut conn, &*self.manager.users(), t, p, g, &which).await
            }
            _ => subscriber::replay_dead_letters(&mut conn, &*self.manager.sessions(), t, p, g, &which).await,
        }
        .map_err(unavailable)?;
        tracing::info!(by = call.caller.user_id, projection = g, replayed, failed, "dead letters replayed");
        Ok(Response::new(ReplayDeadLettersResponse { replayed, failed }))
    }

    async fn check_consistency(
        &self,
        request: Request<CheckConsistencyRequest>,
    ) -> Result<Response<CheckConsistencyResponse>, Status> {
        let call = self.admin(&request, &request.get_ref().projection).await?;
        let (caller, aggregate_type) = (call.caller, call.aggregate_type);
        let r = request.into_inner();
        let (users_now, sessions_now) = (self.manager.users(), self.manager.sessions());
        let (key_of, changes): (Box<dyn Fn(&str) -> String + Send + Sync>, crate::consistency::Changes) =
            match aggregate_type {
                users::AGGREGATE_TYPE => (Box::new(move |id| users_now.key(id)), crate::consistency::user_changes),
                _ => (Box::new(move |id| sessions_now.key(id)), crate::consistency::session_changes),
            };
        let mut conn = self.conn.clone();
        let report = crate::consistency::check(&mut conn, aggregate_type, self.partitions, &*key_of, changes, r.repair)
            .await
            .map_err(unavailable)?;
        tracing::info!(
            by = caller.user_id,
            projection = r.projection,
            checked = report.checked,
            drifted = report.drifted.len(),
            repaired = report.repaired,
            "consistency check"
        );
        Ok(Response::new(CheckConsistencyResponse {
            checked: report.checked,
            drifted: report
                .drifted
                .into_iter()
                .map(|d| ReadModelDrift { aggregate_id: d.aggregate_id, problem: d.problem })
                .collect(),
            repaired: report.repaired,
        }))
    }

    async fn list_projections(
        &self,
        request: Request<ListProjectionsRequest>,
    ) -> Result<Response<ListProjectionsResponse>, Status> {
        self.auth.authenticate(&request).await?.require_role(ROLE_ADMIN)?;
        let mut conn = self.conn.clone();
        let mut projections = Vec::new();
        for (name, aggregate_type) in crate::ops::PROJECTIONS {
            let generation = self.manager.generation(name);
            let building = self.manager.rebuilding(name);
            let group = generation.group.as_str();
            let (mut lag, mut pending, mut dead, mut positions) = (0u64, 0u64, 0u64, Vec::new());
            for p in 0..self.partitions {
                let log = allies_store::keys::log_key(aggregate_type, p);
                let (l, pe, last) = crate::ops::group_position(&mut conn, &log, group).await;
                lag += l.max(0) as u64;
                pending += pe.max(0) as u64;
                positions.push(format!("{p}={last}"));
                let dlq = allies_store::keys::dead_letter_key(aggregate_type, p, group);
                dead += redis::cmd("XLEN").arg(&dlq).query_async::<u64>(&mut conn).await.unwrap_or(0);
            }
            let labels = allies_store::metrics::SubscriberMetrics::labels(group);
            let breaker = self
                .breakers
                .iter()
                .find(|(g, _)| *g == name)
                .map(|(_, b)| b.state())
                .unwrap_or(allies_store::breaker::BreakerState::Closed);
            let state = if !self.running.load(std::sync::atomic::Ordering::SeqCst) {
                "stopped"
            } else if building.is_some() {
                "rebuilding"
            } else if breaker == allies_store::breaker::BreakerState::Open || dead > 0 {
                "faulted"
            } else if lag > 0 || pending > 0 {
                "catching_up"
            } else {
                "running"
            };
            projections.push(ProjectionStatus {
                name: name.to_owned(),
                aggregate_type: aggregate_type.to_owned(),
                state: state.to_owned(),
                processed: self.metrics.processed.get_or_create(&labels).get(),
                failed: self.metrics.failed.get_or_create(&labels).get(),
                dead_letters: dead,
                lag,
                pending,
                positions,
                breaker: breaker.as_str().to_owned(),
                last_error: self.metrics.last_error.lock().ok().and_then(|m| m.get(group).cloned()).unwrap_or_default(),
                generation: generation.number,
                namespace: generation.namespace.clone(),
                group: generation.group.clone(),
                rebuilding_generation: building.map(|b| b.number).unwrap_or(0),
            });
        }
        Ok(Response::new(ListProjectionsResponse { projections }))
    }

    async fn rebuild_projection(
        &self,
        request: Request<RebuildProjectionRequest>,
    ) -> Result<Response<RebuildProjectionResponse>, Status> {
        let call = self.admin(&request, &request.get_ref().projection).await?;
        let name = crate::ops::PROJECTIONS
            .iter()
            .map(|(n, _)| *n)
            .find(|n| *n == request.get_ref().projection)
            .ok_or_else(|| Status::not_found("no such projection"))?;
        let next = self.manager.rebuild(name).await.map_err(Status::failed_precondition)?;
        tracing::warn!(by = call.caller.user_id, projection = name, generation = next.number, "rebuild started");
        Ok(Response::new(RebuildProjectionResponse {
            generation: next.number,
            namespace: next.namespace,
            group: next.group,
        }))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<DeadLetterSelection>,
    ) -> Result<Response<PurgeDeadLettersResponse>, Status> {
        let call = self.admin(&request, &request.get_ref().projection).await?;
        let which = selection(request.get_ref())?;
        let mut conn = self.conn.clone();
        let purged =
            subscriber::purge_dead_letters(&mut conn, call.aggregate_type, self.partitions, &call.group, &which)
                .await
                .map_err(unavailable)?;
        tracing::warn!(by = call.caller.user_id, projection = call.group, purged, "dead letters purged");
        Ok(Response::new(PurgeDeadLettersResponse { purged }))
    }
}
