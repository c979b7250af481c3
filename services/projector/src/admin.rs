//! The projector's admin API, for every registered projection: dead letters
//! (list, replay, purge), the consistency check, the projection list, the
//! blue/green rebuild. Admin only.

use std::sync::Arc;

use allies_contracts::projector::v1::projector_admin_service_server::ProjectorAdminService;
use allies_contracts::projector::v1::*;
use allies_core::{Failure, FieldViolation};
use allies_platform::OrStatus;
use allies_platform::auth::{Authenticator, Caller, ROLE_ADMIN};
use allies_store::RedisConn;
use allies_store::breaker::BreakerState;
use allies_store::metrics::SubscriberMetrics;
use allies_store::subscriber::{self, DeadLetterSelection as Selection, group_position};
use tonic::{Request, Response, Status};

use crate::error::Result;
use crate::manager::Manager;
use crate::registry::Projection;

pub struct AdminApi {
    pub metrics: Arc<SubscriberMetrics>,
    pub running: Arc<std::sync::atomic::AtomicBool>,
    pub auth: Arc<Authenticator>,
    pub conn: RedisConn,
    pub manager: Arc<Manager>,
    /// The search projection (not in the registry: its checkpoint is its
    /// index's, not a consumer group's).
    pub search: Arc<crate::search::Search>,
}

/// `search.players` / `search.games`: the search projection's names here.
fn search_kind(name: &str) -> Option<crate::search::docs::Kind> {
    crate::search::docs::Kind::ALL.into_iter().find(|k| name.strip_prefix("search.") == Some(k.name()))
}

/// The status of one search index, in the shape of the other projections'.
async fn search_status(api: &AdminApi, kind: crate::search::docs::Kind) -> Result<ProjectionStatus> {
    let live = api.search.live(kind);
    let lag = api.search.lag(kind).await?;
    let building = api.search.rebuilding(kind);
    let (status, generation, dir) = match &live {
        Some(l) => (l.status.lock().map(|s| s.clone()).unwrap_or_default(), l.generation, l.dir.display().to_string()),
        None => (Default::default(), 0, String::new()),
    };
    let state = if !api.running.load(std::sync::atomic::Ordering::SeqCst) || live.is_none() {
        "stopped"
    } else if building > 0 {
        "rebuilding"
    } else if !status.last_error.is_empty() {
        "faulted"
    } else if lag > 0 {
        "catching_up"
    } else {
        "running"
    };
    Ok(ProjectionStatus {
        name: format!("search.{}", kind.name()),
        aggregate_type: kind.source().to_owned(),
        state: state.to_owned(),
        processed: status.folded,
        failed: 0,
        dead_letters: 0,
        lag,
        pending: 0,
        positions: status.committed.iter().map(|(log, id)| format!("{log}={id}")).collect(),
        breaker: String::new(),
        last_error: status.last_error,
        generation,
        // Where this replica keeps it; no consumer group (the checkpoint is the index's commit).
        namespace: dir,
        group: String::new(),
        rebuilding_generation: building,
    })
}

fn selection(s: &DeadLetterSelection) -> Result<Selection> {
    match (s.ids.is_empty(), s.event_type.is_empty(), s.all) {
        (false, true, false) => Ok(Selection::Ids(s.ids.clone())),
        (true, false, false) => Ok(Selection::EventType(s.event_type.clone())),
        (true, true, true) => Ok(Selection::All),
        _ => Err(FieldViolation::new("selection", "give exactly one of ids, event_type or all").into()),
    }
}

/// An admin's call on a projection: who, which projection, its live group.
struct AdminCall {
    caller: Arc<Caller>,
    projection: Arc<dyn Projection>,
    group: String,
}

impl AdminApi {
    async fn admin<T>(&self, request: &Request<T>) -> Result<Arc<Caller>> {
        let caller = self.auth.authenticate(request).await?;
        caller.require_role(ROLE_ADMIN)?;
        Ok(caller)
    }

    async fn call<T>(&self, request: &Request<T>, name: &str) -> Result<AdminCall> {
        let caller = self.admin(request).await?;
        let known = self.manager.registry().names().join(", ");
        if name.is_empty() {
            return Err(FieldViolation::new("projection", format!("must not be empty ({known})")).into());
        }
        let projection = self
            .manager
            .registry()
            .get(name)
            .cloned()
            .ok_or_else(|| Failure::not_found(format!("no projection '{name}' ({known})")))?;
        let group = self.manager.generation(name).group;
        Ok(AdminCall { caller, projection, group })
    }

    async fn list_dead_letters(&self, request: Request<ListDeadLettersRequest>) -> Result<ListDeadLettersResponse> {
        let call = self.call(&request, &request.get_ref().projection).await?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n @ 1..=1000 => n as usize,
            _ => return Err(FieldViolation::new("limit", "must be 1 to 1000").into()),
        };
        let mut conn = self.conn.clone();
        let mut dead_letters = Vec::new();
        for source in call.projection.sources() {
            let left = limit - dead_letters.len();
            let dead =
                subscriber::list_dead_letters(&mut conn, source, self.manager.partitions(), &call.group, left).await?;
            dead_letters.extend(dead.into_iter().map(|d| {
                // Decoded, upcast and redacted when intact; masked raw text otherwise.
                let payload = match allies_contracts::registry::public_json(
                    &d.aggregate_type,
                    &d.event_type,
                    d.event.as_ref().map(|e| e.envelope.schema_version).unwrap_or(1),
                    &d.content_type,
                    &d.data,
                ) {
                    Ok((json, _)) if d.damage.is_none() => json.to_string(),
                    _ => allies_contracts::registry::scrub_raw(&d.content_type, &d.data),
                };
                let error = match &d.damage {
                    Some(damage) if !d.error.contains(damage.as_str()) => {
                        format!("{} (the stored entry is damaged: {damage})", d.error)
                    }
                    _ => d.error.clone(),
                };
                DeadLetter {
                    id: d.id,
                    projection: d.group,
                    event_type: d.event_type,
                    aggregate_type: d.aggregate_type,
                    aggregate_id: d.aggregate_id,
                    version: d.version,
                    error,
                    attempts: d.attempts,
                    dead_lettered_at_ms: d.dead_lettered_at_ms,
                    log_entry: d.entry,
                    payload,
                }
            }));
        }
        Ok(ListDeadLettersResponse { dead_letters })
    }

    async fn replay_dead_letters(&self, request: Request<DeadLetterSelection>) -> Result<ReplayDeadLettersResponse> {
        let call = self.call(&request, &request.get_ref().projection).await?;
        let which = selection(request.get_ref())?;
        let applier = self
            .manager
            .applier(call.projection.name())
            .ok_or_else(|| Failure::unavailable("the projection is not running"))?;
        let (mut replayed, mut failed) = (0, 0);
        let mut conn = self.conn.clone();
        for source in call.projection.sources() {
            let (r, f) = subscriber::replay_dead_letters(
                &mut conn,
                &*applier,
                source,
                self.manager.partitions(),
                &call.group,
                &which,
            )
            .await?;
            replayed += r;
            failed += f;
        }
        tracing::info!(by = call.caller.user_id, projection = call.group, replayed, failed, "dead letters replayed");
        Ok(ReplayDeadLettersResponse { replayed, failed })
    }

    async fn purge_dead_letters(&self, request: Request<DeadLetterSelection>) -> Result<PurgeDeadLettersResponse> {
        let call = self.call(&request, &request.get_ref().projection).await?;
        let which = selection(request.get_ref())?;
        let mut purged = 0;
        let mut conn = self.conn.clone();
        for source in call.projection.sources() {
            purged += subscriber::purge_dead_letters(&mut conn, source, self.manager.partitions(), &call.group, &which)
                .await?;
        }
        tracing::warn!(by = call.caller.user_id, projection = call.group, purged, "dead letters purged");
        Ok(PurgeDeadLettersResponse { purged })
    }

    async fn check_consistency(&self, request: Request<CheckConsistencyRequest>) -> Result<CheckConsistencyResponse> {
        let call = self.call(&request, &request.get_ref().projection).await?;
        let repair = request.get_ref().repair;
        let view = self.manager.view(call.projection.name());
        let report = crate::consistency::check(&view, &*call.projection, self.manager.partitions(), repair).await?;
        tracing::info!(
            by = call.caller.user_id,
            projection = call.projection.name(),
            checked = report.checked,
            drifted = report.drifted.len(),
            repaired = report.repaired,
            "consistency check"
        );
        Ok(CheckConsistencyResponse {
            checked: report.checked,
            drifted: report
                .drifted
                .into_iter()
                .map(|d| ReadModelDrift { aggregate_id: d.model_id, problem: d.problem })
                .collect(),
            repaired: report.repaired,
        })
    }

    async fn list_projections(&self, request: Request<ListProjectionsRequest>) -> Result<ListProjectionsResponse> {
        self.admin(&request).await?;
        let mut projections = Vec::new();
        for projection in self.manager.registry().all() {
            projections.push(status(self, &**projection).await?);
        }
        for kind in crate::search::docs::Kind::ALL {
            projections.push(search_status(self, kind).await?);
        }
        Ok(ListProjectionsResponse { projections })
    }

    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<ListSubscriptionsResponse> {
        self.admin(&request).await?;
        Ok(ListSubscriptionsResponse { subscriptions: subscriptions(self).await? })
    }

    async fn rebuild_projection(
        &self,
        request: Request<RebuildProjectionRequest>,
    ) -> Result<RebuildProjectionResponse> {
        if let Some(kind) = search_kind(&request.get_ref().projection) {
            let caller = self.admin(&request).await?;
            let next = self.search.rebuild(kind).await.map_err(|e| Failure::failed_precondition(e.to_string()))?;
            tracing::warn!(
                by = caller.user_id,
                projection = request.get_ref().projection,
                generation = next,
                "search rebuild started"
            );
            return Ok(RebuildProjectionResponse { generation: next, namespace: String::new(), group: String::new() });
        }
        let call = self.call(&request, &request.get_ref().projection).await?;
        let next = self.manager.rebuild(call.projection.name()).await?;
        tracing::warn!(
            by = call.caller.user_id,
            projection = call.projection.name(),
            generation = next.number,
            "rebuild started"
        );
        Ok(RebuildProjectionResponse { generation: next.number, namespace: next.namespace, group: next.group })
    }
}

impl AdminApi {
    async fn delete_generation(&self, request: Request<DeleteGenerationRequest>) -> Result<DeleteGenerationResponse> {
        let call = self.call(&request, &request.get_ref().projection).await?;
        let number = request.get_ref().generation;
        let d = self.manager.delete_generation(call.projection.name(), number).await?;
        tracing::warn!(
            by = call.caller.user_id,
            projection = call.projection.name(),
            generation = number,
            keys = d.keys,
            "retired generation deleted"
        );
        Ok(DeleteGenerationResponse {
            namespace: d.generation.namespace,
            group: d.generation.group,
            keys_deleted: d.keys,
            groups_deleted: d.groups,
        })
    }
}

/// Every consumer group on the partition logs of every category and on
/// every topic's priority streams, summed per group.
pub async fn subscriptions(api: &AdminApi) -> Result<Vec<SubscriptionStatus>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut conn = api.conn.clone();
    let mut by_group: BTreeMap<(String, String, String), SubscriptionStatus> = BTreeMap::new();
    let mut sources: Vec<(&str, &str)> = allies_contracts::registry::CATEGORIES.iter().map(|c| (*c, "")).collect();
    sources.extend(allies_contracts::registry::TOPICS.iter().copied());
    for (category, topic) in sources {
        for p in 0..api.manager.partitions() {
            let streams: Vec<String> = if topic.is_empty() {
                vec![allies_store::keys::log_key(category, p)]
            } else {
                allies_store::Priority::ALL
                    .iter()
                    .map(|pr| allies_store::keys::integration_key(topic, category, p, *pr))
                    .collect()
            };
            let mut here = BTreeSet::new();
            for stream in &streams {
                for (group, pos) in subscriber::group_positions(&mut conn, stream).await? {
                    let key = (group.clone(), category.to_owned(), topic.to_owned());
                    let entry = by_group.entry(key).or_insert_with(|| SubscriptionStatus {
                        group: group.clone(),
                        aggregate_type: category.to_owned(),
                        topic: topic.to_owned(),
                        ..Default::default()
                    });
                    entry.lag += pos.lag;
                    entry.pending += pos.pending;
                    entry.streams += 1;
                    here.insert(group);
                }
            }
            // One dead-letter stream per group and partition.
            for group in here {
                let dlq = allies_store::keys::dead_letter_key(category, p, &group);
                let dead = redis::cmd("XLEN").arg(&dlq).query_async::<u64>(&mut conn).await?;
                if let Some(e) = by_group.get_mut(&(group, category.to_owned(), topic.to_owned())) {
                    e.dead_letters += dead;
                }
            }
        }
    }
    Ok(by_group.into_values().collect())
}

/// One projection's state, counts, position, lag and last error.
pub async fn status(api: &AdminApi, projection: &dyn Projection) -> Result<ProjectionStatus> {
    let name = projection.name();
    let generation = api.manager.generation(name);
    let building = api.manager.rebuilding(name);
    let group = generation.group.as_str();
    let mut conn = api.conn.clone();
    let (mut lag, mut pending, mut dead, mut positions) = (0u64, 0u64, 0u64, Vec::new());
    for source in projection.sources() {
        for p in 0..api.manager.partitions() {
            let log = allies_store::keys::log_key(source, p);
            let pos = group_position(&mut conn, &log, group).await?.unwrap_or_default();
            lag += pos.lag;
            pending += pos.pending;
            let last = if pos.last_delivered.is_empty() { "0-0".to_owned() } else { pos.last_delivered };
            positions.push(if projection.sources().len() == 1 {
                format!("{p}={last}")
            } else {
                format!("{source}.{p}={last}")
            });
            let dlq = allies_store::keys::dead_letter_key(source, p, group);
            dead += redis::cmd("XLEN").arg(&dlq).query_async::<u64>(&mut conn).await?;
        }
    }
    let labels = SubscriberMetrics::labels(group);
    let breaker = api.manager.breaker(name).map(|b| b.state()).unwrap_or(BreakerState::Closed);
    let state = if !api.running.load(std::sync::atomic::Ordering::SeqCst) {
        "stopped"
    } else if building.is_some() {
        "rebuilding"
    } else if breaker == BreakerState::Open || dead > 0 {
        "faulted"
    } else if lag > 0 || pending > 0 {
        "catching_up"
    } else {
        "running"
    };
    Ok(ProjectionStatus {
        name: name.to_owned(),
        aggregate_type: projection.sources().join(","),
        state: state.to_owned(),
        processed: api.metrics.processed.get_or_create(&labels).get(),
        failed: api.metrics.failed.get_or_create(&labels).get(),
        dead_letters: dead,
        lag,
        pending,
        positions,
        breaker: breaker.as_str().to_owned(),
        last_error: api.metrics.last_error.lock().ok().and_then(|m| m.get(group).cloned()).unwrap_or_default(),
        generation: generation.number,
        namespace: generation.namespace.clone(),
        group: generation.group.clone(),
        rebuilding_generation: building.map(|b| b.number).unwrap_or(0),
    })
}

#[tonic::async_trait]
impl ProjectorAdminService for AdminApi {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> std::result::Result<Response<ListDeadLettersResponse>, Status> {
        AdminApi::list_dead_letters(self, request).await.map(Response::new).or_status()
    }

    async fn replay_dead_letters(
        &self,
        request: Request<DeadLetterSelection>,
    ) -> std::result::Result<Response<ReplayDeadLettersResponse>, Status> {
        AdminApi::replay_dead_letters(self, request).await.map(Response::new).or_status()
    }

    async fn purge_dead_letters(
        &self,
        request: Request<DeadLetterSelection>,
    ) -> std::result::Result<Response<PurgeDeadLettersResponse>, Status> {
        AdminApi::purge_dead_letters(self, request).await.map(Response::new).or_status()
    }

    async fn check_consistency(
        &self,
        request: Request<CheckConsistencyRequest>,
    ) -> std::result::Result<Response<CheckConsistencyResponse>, Status> {
        AdminApi::check_consistency(self, request).await.map(Response::new).or_status()
    }

    async fn list_projections(
        &self,
        request: Request<ListProjectionsRequest>,
    ) -> std::result::Result<Response<ListProjectionsResponse>, Status> {
        AdminApi::list_projections(self, request).await.map(Response::new).or_status()
    }

    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> std::result::Result<Response<ListSubscriptionsResponse>, Status> {
        AdminApi::list_subscriptions(self, request).await.map(Response::new).or_status()
    }

    async fn rebuild_projection(
        &self,
        request: Request<RebuildProjectionRequest>,
    ) -> std::result::Result<Response<RebuildProjectionResponse>, Status> {
        AdminApi::rebuild_projection(self, request).await.map(Response::new).or_status()
    }

    async fn delete_generation(
        &self,
        request: Request<DeleteGenerationRequest>,
    ) -> std::result::Result<Response<DeleteGenerationResponse>, Status> {
        AdminApi::delete_generation(self, request).await.map(Response::new).or_status()
    }
}
