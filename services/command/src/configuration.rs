//! `ConfigurationService`: the fleet's live configuration (admins only) —
//! the Configuration aggregate on the platform's command executor, its
//! history as the audit trail, and which instance applied which version.

use std::collections::BTreeMap;
use std::sync::Arc;

use allies_contracts::command::events::{CONFIGURATION_ID, CONFIGURATION_TYPE, ConfigurationEvent};
use allies_contracts::command::v1::configuration_service_server::ConfigurationService;
use allies_contracts::command::v1::*;
use allies_platform::RequestContext;
use allies_platform::auth::Authenticator;
use allies_platform::live::APPLIED;
use allies_platform::status::OrStatus;
use allies_store::{CommandExecutor, RedisConn, StoreError};
use command_domain::configuration::{Configuration, ConfigurationCommand, Who, defaults, schema};
use tonic::{Request, Response, Status};

pub struct ConfigurationApi {
    pub auth: Arc<Authenticator>,
    /// A retried command answers its first reply.
    pub replies: Arc<allies_platform::Replies>,
    pub executor: CommandExecutor,
    pub conn: RedisConn,
}

fn view(c: &Configuration) -> ConfigurationView {
    let mut values = defaults();
    values.extend(c.values.clone());
    ConfigurationView {
        version: c.version,
        keys: schema()
            .map(|k| ConfigurationKey {
                key: k.name.into(),
                kind: "int".into(),
                min: k.range().map_or(0, |r| r.0),
                max: k.range().map_or(0, |r| r.1),
                default_value: k.default.to_owned(),
                value: values.get(k.name).cloned().unwrap_or_default(),
                description: k.description.into(),
                applied_by: k.live.iter().map(|s| s.to_string()).collect(),
                source: if c.set.contains(k.name) { "configuration" } else { "deployment" }.into(),
            })
            .chain(values.iter().filter(|(k, _)| k.starts_with(command_domain::flags::PREFIX)).map(|(k, v)| {
                ConfigurationKey {
                    key: k.clone(),
                    kind: "flag".into(),
                    value: v.clone(),
                    description: "feature flag (JSON definition)".into(),
                    applied_by: vec!["every service (evaluated locally)".into()],
                    source: "configuration".into(),
                    ..Default::default()
                }
            }))
            .collect(),
    }
}

/// `FeatureFlagService`: a flag evaluated for the caller on the
/// configuration this instance follows.
pub struct FlagsApi {
    pub auth: Arc<Authenticator>,
    pub live: tokio::sync::watch::Receiver<Arc<allies_platform::live::LiveConfig>>,
}

#[tonic::async_trait]
impl allies_contracts::command::v1::feature_flag_service_server::FeatureFlagService for FlagsApi {
    async fn evaluate_flag(&self, request: Request<EvaluateFlagRequest>) -> Result<Response<FlagEvaluation>, Status> {
        let caller = self.auth.authenticate(&request).await.or_status()?;
        let r = request.into_inner();
        if !command_domain::flags::valid_name(&r.flag) {
            return Err(allies_platform::status::invalid_argument(
                "flag",
                "a flag name is 1 to 64 of a-z, 0-9, '.', '_', '-'",
            ));
        }
        let default = if r.default_value.is_empty() { "off".to_owned() } else { r.default_value };
        let config = self.live.borrow().clone();
        let e = command_domain::flags::evaluate(&config.values, &r.flag, &caller.user_id, &caller.roles, &default);
        Ok(Response::new(FlagEvaluation {
            flag: r.flag,
            value: e.value,
            reason: e.reason.as_str().into(),
            error_code: e.error.unwrap_or_default().into(),
            version: config.version,
        }))
    }
}

impl ConfigurationApi {
    async fn current(&self) -> Result<Configuration, Status> {
        let loaded =
            allies_store::load::<Configuration>(&**self.executor.store(), CONFIGURATION_ID).await.or_status()?;
        Ok(loaded.state)
    }

    async fn run(&self, command: ConfigurationCommand, ctx: &RequestContext) -> Result<ConfigurationView, Status> {
        let done = self
            .executor
            .execute_with::<Configuration>(CONFIGURATION_ID, &command, &ctx.command_context(), ctx.options())
            .await
            .or_status()?;
        Ok(view(&done.state))
    }
}

impl ConfigurationApi {
    /// What the schema cannot say: `maintenance.*` changes only through
    /// PerformMaintenance (recorded, with its reason and result), and
    /// `game.rules_version` names a version timesquare can run (uploaded or
    /// built in).
    async fn check_changes(&self, changes: &BTreeMap<String, String>) -> Result<(), Status> {
        if let Some(k) = changes.keys().find(|k| k.starts_with("maintenance.")) {
            return Err(allies_platform::status::to_status(&allies_core::Failure::failed_precondition(format!(
                "{k} changes only through PerformMaintenance (operation maintenance_mode), which records who, why and the result"
            ))));
        }
        if let Some(v) = changes.get("game.rules_version") {
            let mut conn = self.conn.clone();
            let known: Vec<bool> = redis::pipe()
                .cmd("HEXISTS")
                .arg(RULES)
                .arg(v.trim())
                .cmd("HEXISTS")
                .arg(allies_contracts::command::events::BUILTIN_RULES)
                .arg(v.trim())
                .query_async(&mut conn)
                .await
                .map_err(StoreError::from)
                .or_status()?;
            if !known.iter().any(|k| *k) {
                return Err(allies_platform::status::invalid_argument(
                    "changes.game.rules_version",
                    &format!(
                        "rules version {} was never uploaded nor shipped: upload it first (UploadRules)",
                        v.trim()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The admin acting, with the username the token carries (the id stands
/// in for a token issued before names were carried).
fn who(ctx: &RequestContext) -> Who {
    let (id, name) = ctx.caller().map(|c| (c.user_id.clone(), c.name.clone())).unwrap_or_default();
    Who { name: if name.is_empty() { id.clone() } else { name }, user_id: id }
}

/// Uploaded game rules, by version (timesquare installs them from here).
pub const RULES: &str = allies_contracts::command::events::UPLOADED_RULES;

#[tonic::async_trait]
impl ConfigurationService for ConfigurationApi {
    async fn upload_rules(
        &self,
        request: Request<UploadRulesRequest>,
    ) -> Result<Response<UploadRulesResponse>, Status> {
        let ctx = self.auth.admin_context(&request).await?;
        self.replies
            .once(&ctx, async {
                let r = request.into_inner();
                let rules = timesquare_domain::rules::Rules::parse(&r.yaml).map_err(|e| {
                    allies_platform::status::invalid_argument("yaml", &format!("at {}: {}", e.key, e.reason))
                })?;
                let version = rules.rules_version;
                let current = self.current().await?;
                let in_force = command_domain::configuration::int(
                    &current.values.clone().into_iter().collect(),
                    &allies_core::settings::RULES_VERSION,
                ) as u32;
                let mut conn = self.conn.clone();
                let existing: Option<String> = redis::cmd("HGET")
                    .arg(RULES)
                    .arg(version)
                    .query_async(&mut conn)
                    .await
                    .map_err(StoreError::from)
                    .or_status()?;
                match existing {
                    Some(text) if text != r.yaml => {
                        return Err(allies_platform::status::invalid_argument(
                            "yaml",
                            &format!("at rules_version: version {version} was uploaded with a different content"),
                        ));
                    }
                    Some(_) => {}
                    None if version <= in_force => {
                        return Err(allies_platform::status::invalid_argument(
                            "yaml",
                            &format!("at rules_version: {version} must be above the version in force ({in_force})"),
                        ));
                    }
                    None => {
                        let _: bool = redis::cmd("HSETNX")
                            .arg(RULES)
                            .arg(version)
                            .arg(&r.yaml)
                            .query_async(&mut conn)
                            .await
                            .map_err(StoreError::from)
                            .or_status()?;
                    }
                }
                let mut configuration_version = 0;
                if r.activate {
                    let command = ConfigurationCommand::Update {
                        expected_version: r.expected_version,
                        changes: BTreeMap::from([("game.rules_version".to_owned(), version.to_string())]),
                        reason: r.reason,
                        by: who(&ctx),
                        now_ms: ctx.now_ms,
                    };
                    configuration_version = self.run(command, &ctx).await?.version;
                }
                Ok(Response::new(UploadRulesResponse { rules_version: version, configuration_version }))
            })
            .await
    }

    async fn kill_flag(&self, request: Request<KillFlagRequest>) -> Result<Response<ConfigurationView>, Status> {
        let ctx = self.auth.admin_context(&request).await?;
        self.replies
            .once(&ctx, async {
                let r = request.get_ref();
                let key = format!("{}{}", command_domain::flags::PREFIX, r.flag);
                // Against whatever version is current: a concurrent change
                // only makes the kill try again on top of it.
                for _ in 0..5 {
                    let current = self.current().await?;
                    let Some(def) = current.values.get(&key) else {
                        return Err(Status::not_found(format!("no flag '{}'", r.flag)));
                    };
                    let mut json: serde_json::Value = serde_json::from_str(def)
                        .map_err(|e| Status::failed_precondition(format!("flag '{}' is unreadable: {e}", r.flag)))?;
                    if json["enabled"] == serde_json::Value::Bool(false) {
                        return Ok(Response::new(view(&current)));
                    }
                    json["enabled"] = serde_json::Value::Bool(false);
                    let command = ConfigurationCommand::Update {
                        expected_version: current.version,
                        changes: BTreeMap::from([(key.clone(), json.to_string())]),
                        reason: r.reason.clone(),
                        by: who(&ctx),
                        now_ms: ctx.now_ms,
                    };
                    match self.run(command, &ctx).await {
                        Err(s) if s.code() == tonic::Code::Aborted => continue,
                        other => return other.map(Response::new),
                    }
                }
                Err(Status::aborted("the configuration kept changing: kill the flag again"))
            })
            .await
    }

    async fn get_configuration(
        &self,
        request: Request<GetConfigurationRequest>,
    ) -> Result<Response<ConfigurationView>, Status> {
        self.auth.admin_context(&request).await?;
        Ok(Response::new(view(&self.current().await?)))
    }

    async fn update_configuration(
        &self,
        request: Request<UpdateConfigurationRequest>,
    ) -> Result<Response<ConfigurationView>, Status> {
        let ctx = self.auth.admin_context(&request).await?;
        self.replies
            .once(&ctx, async {
                let r = request.into_inner();
                self.check_changes(&r.changes).await?;
                let command = ConfigurationCommand::Update {
                    expected_version: r.expected_version,
                    changes: r.changes.into_iter().collect::<BTreeMap<_, _>>(),
                    reason: r.reason,
                    by: who(&ctx),
                    now_ms: ctx.now_ms,
                };
                Ok(Response::new(self.run(command, &ctx).await?))
            })
            .await
    }

    async fn rollback_configuration(
        &self,
        request: Request<RollbackConfigurationRequest>,
    ) -> Result<Response<ConfigurationView>, Status> {
        let ctx = self.auth.admin_context(&request).await?;
        self.replies
            .once(&ctx, async {
                let r = request.into_inner();
                let command = ConfigurationCommand::Rollback {
                    expected_version: r.expected_version,
                    to_version: r.to_version,
                    reason: r.reason,
                    by: who(&ctx),
                    now_ms: ctx.now_ms,
                };
                Ok(Response::new(self.run(command, &ctx).await?))
            })
            .await
    }

    async fn list_configuration_history(
        &self,
        request: Request<ListConfigurationHistoryRequest>,
    ) -> Result<Response<ListConfigurationHistoryResponse>, Status> {
        self.auth.admin_context(&request).await?;
        let store = self.executor.store();
        let records = store.read(CONFIGURATION_TYPE, CONFIGURATION_ID, 1, usize::MAX).await.or_status()?;
        let mut out = Vec::new();
        for r in records.iter().rev() {
            let e = r.typed::<ConfigurationEvent>().or_status()?;
            let changes = |c: &[allies_contracts::command::events::v1::ConfigurationChange]| {
                c.iter()
                    .map(|c| ConfigurationChangeView {
                        key: c.key.clone(),
                        old_value: c.old_value.clone(),
                        new_value: c.new_value.clone(),
                    })
                    .collect()
            };
            out.push(match &e.payload {
                ConfigurationEvent::Updated(u) => ConfigurationRecord {
                    version: r.envelope.version,
                    kind: "update".into(),
                    rolled_back_to: 0,
                    reason: u.reason.clone(),
                    by: u.by.clone(),
                    by_name: u.by_name.clone(),
                    at_ms: u.at_ms,
                    changes: changes(&u.changes),
                },
                ConfigurationEvent::RolledBack(b) => ConfigurationRecord {
                    version: r.envelope.version,
                    kind: "rollback".into(),
                    rolled_back_to: b.to_version,
                    reason: b.reason.clone(),
                    by: b.by.clone(),
                    by_name: b.by_name.clone(),
                    at_ms: b.at_ms,
                    changes: changes(&b.changes),
                },
            });
        }
        Ok(Response::new(ListConfigurationHistoryResponse { records: out }))
    }

    async fn get_configuration_status(
        &self,
        request: Request<GetConfigurationStatusRequest>,
    ) -> Result<Response<GetConfigurationStatusResponse>, Status> {
        self.auth.admin_context(&request).await?;
        let version = self.current().await?.version;
        let mut conn = self.conn.clone();
        let applied: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(APPLIED).query_async(&mut conn).await.map_err(StoreError::from).or_status()?;
        let seen: BTreeMap<String, i64> = redis::cmd("HGETALL")
            .arg(allies_platform::live::ALIVE)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)
            .or_status()?;
        let now = allies_platform::context::now_ms();
        let mut instances = Vec::new();
        for (who, v) in applied {
            let last_seen_ms = seen.get(&who).copied().unwrap_or(0);
            if now - last_seen_ms > allies_platform::live::DEPARTED_AFTER_MS {
                // Departed without a word (killed): dropped from the fleet's lists.
                for key in [APPLIED, allies_platform::live::INSTANCES, allies_platform::live::ALIVE] {
                    let _: redis::RedisResult<()> = redis::cmd("HDEL").arg(key).arg(&who).query_async(&mut conn).await;
                }
                continue;
            }
            let mut parts = v.splitn(3, ':');
            let (Some((service, instance)), Some(version), Some(at)) =
                (who.split_once('/'), parts.next(), parts.next())
            else {
                continue;
            };
            let not_applied = parts.next().unwrap_or_default().to_owned();
            instances.push(InstanceStatus {
                service: service.into(),
                instance: instance.into(),
                version: version.parse().unwrap_or_default(),
                applied_at_ms: at.parse().unwrap_or_default(),
                last_seen_ms,
                alive: now - last_seen_ms <= allies_platform::live::ALIVE_WITHIN_MS,
                not_applied,
            });
        }
        Ok(Response::new(GetConfigurationStatusResponse { version, instances }))
    }
}
