//! One service builder for the whole fleet (model: zero2prod's
//! `Application::build` / `run_until_stopped`).
//!
//! [`ServiceBuilder::new`] takes a parsed [`ServiceConfig`] and wires what
//! every service needs: the event store (waiting up to 30 s for Redis), the
//! command executor with its metrics, the access-token verifier, a
//! Prometheus registry, gRPC health and reflection. The service adds its gRPC
//! services, readiness checks, scrape-time metrics and background tasks;
//! [`ServiceBuilder::bind`] binds the gRPC and HTTP listeners (so a test knows
//! the ports), and [`Service::run_until`] serves until shutdown:
//!
//! - `grpc.health.v1` and `/readyz` follow readiness (Redis answers, every
//!   check passes), re-evaluated every 250 ms: NOT_SERVING while Redis is
//!   unreachable, SERVING again when it is back, no restart;
//! - on shutdown health turns NOT_SERVING, background tasks are told to
//!   stop, in-flight requests get `SHUTDOWN_GRACE_SECS`, then everything
//!   still running is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allies_store::metrics::ExecutorMetrics;
use allies_store::subscriber::SubscriptionConfig;
use allies_store::{CommandExecutor, EventStore, RedisEventStore, StoreError};
use futures_util::future::BoxFuture;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::codegen::http::Request as HttpRequest;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;

use crate::auth::{Authenticator, KeySource};
use crate::config::ServiceConfig;
use crate::ops::{self, Readiness, ReadinessCheck, Scrape};

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("Redis at {url} is unreachable: {source}")]
    Redis {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "Redis at {url} refused this service's credentials (user `{user}`): {source} — set REDIS_USERNAME and REDIS_PASSWORD to the service's ACL user (configs/redis/users.acl)"
    )]
    RedisCredentials {
        url: String,
        user: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(
        "TLS to Redis at {url} failed: {source} — REDIS_TLS_CA_FILE must name the CA that signed Redis's certificate (empty: the system's roots), and REDIS_TLS_CERT_FILE / REDIS_TLS_KEY_FILE this service's client certificate when Redis requires one"
    )]
    RedisTls {
        url: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen on {addr} ({var}): {source}")]
    Listen {
        addr: SocketAddr,
        var: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

type Task = Box<dyn FnOnce(watch::Receiver<bool>) -> BoxFuture<'static, ()> + Send>;

/// See the module documentation.
pub struct ServiceBuilder {
    config: ServiceConfig,
    store: RedisEventStore,
    executor: CommandExecutor,
    auth: Arc<Authenticator>,
    registry: Registry,
    grpc_metrics: Arc<crate::grpc_metrics::GrpcMetrics>,
    routes: RoutesBuilder,
    health_names: Vec<&'static str>,
    checks: Vec<(&'static str, ReadinessCheck)>,
    scrapes: Vec<Scrape>,
    tasks: Vec<(&'static str, Task)>,
    stop: watch::Sender<bool>,
    subscriber_metrics: Option<Arc<allies_store::metrics::SubscriberMetrics>>,
    live: Arc<watch::Sender<Arc<crate::live::LiveConfig>>>,
    /// Maintenance mode's switch, shared by the executor and its handles.
    gate: allies_store::WritesGate,
    /// What this instance could not apply of the configuration in force.
    not_applied: crate::live::NotApplied,
}

/// Connects the event store, retrying with backoff for up to 30 s so that a
/// service started together with Redis waits for it instead of failing.
pub async fn connect_store(config: &ServiceConfig) -> Result<RedisEventStore, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = match RedisEventStore::connect(&config.redis_url, config.partitions).await {
            // Signed in, or no AUTH was asked for: a PING says whether this
            // user may talk at all (NOAUTH, NOPERM).
            Ok(store) => redis::cmd("PING")
                .query_async::<String>(&mut store.connection())
                .await
                .map(|_| store)
                .map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match connected {
            Err(e) if credentials_refused(&e) || tls_refused(&e) => return Err(e),
            Ok(store) => {
                return Ok(store
                    .with_format(config.event_format)
                    .with_snapshot_compression(config.snapshot_compression)
                    .with_snapshot_policy(config.cqrs.snapshots)
                    .with_replica_acks(config.cqrs.replica_acks)
                    .with_storage(config.cqrs.storage.clone(), config.cqrs.default_storage));
            }
            Err(e) if Instant::now() < deadline => {
                let redis = allies_store::RedisTarget::redacted(&config.redis_url);
                tracing::warn!(error = %e, %redis, "Redis not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether TLS to Redis failed on certificates (Redis's not trusted, ours
/// refused or missing): retrying cannot help either.
pub fn tls_refused(e: &StoreError) -> bool {
    let StoreError::Unavailable(e) = e else { return false };
    let text = e.to_string().to_lowercase();
    e.kind() == redis::ErrorKind::InvalidClientConfig || text.contains("certificate") || text.contains("handshake")
}

/// Whether Redis refused who this service is (a wrong password, no
/// password where one is needed, a user without the rights): retrying
/// cannot help, the operator must fix the credentials.
pub fn credentials_refused(e: &StoreError) -> bool {
    let StoreError::Unavailable(e) = e else { return false };
    e.kind() == redis::ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

impl ServiceBuilder {
    /// Wires the platform for a service (see the module documentation).
    pub async fn new(config: ServiceConfig) -> Result<Self, ServeError> {
        crate::proxies::trust_proxies(config.trusted_proxies.clone());
        let store = connect_store(&config).await.map_err(|source| {
            let url = allies_store::RedisTarget::redacted(&config.redis_url);
            if credentials_refused(&source) {
                ServeError::RedisCredentials { url, user: config.cqrs.redis_user.clone(), source: Box::new(source) }
            } else if tls_refused(&source) {
                ServeError::RedisTls { url, source: Box::new(source) }
            } else {
                ServeError::Redis { url, source }
            }
        })?;
        // No service label: Prometheus adds `job` and `instance` per scrape target.
        let mut registry = Registry::default();
        let executor_metrics = ExecutorMetrics::register(&mut registry);
        let grpc_metrics = crate::grpc_metrics::GrpcMetrics::register(&mut registry);
        let dyn_store: Arc<dyn EventStore> = Arc::new(store.clone());
        let gate = allies_store::WritesGate::default();
        let executor = CommandExecutor::new(dyn_store)
            .with_idempotency_ttl(config.cqrs.idempotency_ttl)
            .with_metrics(executor_metrics)
            .with_gate(gate.clone());
        let auth = Arc::new(Authenticator::new(
            config.auth.clone(),
            KeySource::Guardian(config.auth.guardian_url.clone()),
            store.clone(),
        ));
        let (stop, _) = watch::channel(false);
        // The live configuration in force now, read before serving; a task
        // follows it from here (see `live`).
        let initial = match crate::live::load(&store).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live configuration; starting from the defaults");
                Default::default()
            }
        };
        let live = Arc::new(watch::channel(Arc::new(initial)).0);
        let mut builder = Self {
            config,
            store,
            executor,
            auth,
            registry,
            grpc_metrics,
            routes: RoutesBuilder::default(),
            health_names: Vec::new(),
            checks: Vec::new(),
            scrapes: Vec::new(),
            tasks: Vec::new(),
            stop,
            subscriber_metrics: None,
            live,
            gate,
            not_applied: Default::default(),
        };
        let (store, tx) = (builder.store.clone(), builder.live.clone());
        let (service, instance) = (builder.config.name.clone(), builder.config.instance.clone());
        let http = builder.config.http_listen.to_string();
        let not_applied = builder.not_applied.clone();
        let target =
            allies_store::RedisTarget::parse(&builder.config.redis_url).map_err(|source| ServeError::Redis {
                url: allies_store::RedisTarget::redacted(&builder.config.redis_url),
                source: allies_store::StoreError::Unavailable(source),
            })?;
        builder.background("live configuration", move |stop| {
            crate::live::follow(store, target, (service, instance, http), tx, not_applied, stop)
        });
        // Maintenance mode (`maintenance.writes_paused`), applied with the
        // version that sets it: within a second on every instance.
        let gate = builder.gate.clone();
        builder.on_live_config("maintenance mode", move |c| {
            let gate = gate.clone();
            async move {
                match crate::live::maintenance(&c.values) {
                    Some(retry_after) => gate.pause(retry_after),
                    None => gate.resume(),
                }
            }
        });
        Ok(builder)
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The Redis event store (for Redis-only operations; prefer [`executor`](Self::executor)).
    pub fn store(&self) -> RedisEventStore {
        self.store.clone()
    }

    /// The command loop on the store, with the service's metrics and idempotency TTL.
    pub fn executor(&self) -> CommandExecutor {
        self.executor.clone()
    }

    /// Keeps this service's commands going in maintenance mode (the
    /// operations service: it must be able to end it).
    pub fn exempt_from_maintenance(&mut self) {
        self.executor = self.executor.clone().with_gate(allies_store::WritesGate::default());
    }

    /// The reply records that make a client's retry safe (see
    /// [`replies`](crate::replies)), kept for the idempotency TTL.
    pub fn replies(&self) -> Arc<crate::replies::Replies> {
        Arc::new(crate::replies::Replies::redis(self.store.connection(), self.config.cqrs.idempotency_ttl))
    }

    /// Where a service says what of the configuration in force it could not
    /// apply (reported with its applied version).
    pub fn not_applied(&self) -> crate::live::NotApplied {
        self.not_applied.clone()
    }

    /// The access-token verifier.
    pub fn auth(&self) -> Arc<Authenticator> {
        self.auth.clone()
    }

    /// Verifies tokens with these keys instead of fetching Guardian's (Guardian itself).
    pub fn set_key_source(&mut self, source: KeySource) {
        self.auth = Arc::new(Authenticator::new(self.config.auth.clone(), source, self.store.clone()));
    }

    /// The Prometheus registry of the service's metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Serves a gRPC service and reports it in `grpc.health.v1`.
    pub fn add_service<S>(&mut self, svc: S) -> &mut Self
    where
        S: tonic::codegen::Service<HttpRequest<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.health_names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// A condition of readiness besides Redis answering.
    pub fn readiness<F, Fut>(&mut self, name: &'static str, check: F) -> &mut Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Metrics text read at scrape time (Prometheus exposition lines).
    pub fn scrape<F, Fut>(&mut self, f: F) -> &mut Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        self.scrapes.push(Arc::new(move || Box::pin(f())));
        self
    }

    /// A task that runs while the service runs; its argument turns true on
    /// shutdown, and it must then return (it gets the grace period).
    pub fn background<F, Fut>(&mut self, name: &'static str, task: F) -> &mut Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push((name, Box::new(move |stop| Box::pin(task(stop)))));
        self
    }

    /// The subscription settings of the fleet (batch, blocking, claims,
    /// retries, the circuit breaker, metrics) for consumer group `group` on
    /// `aggregate_type`'s partition logs; set `source` for a topic.
    pub fn subscription(&mut self, group: &str, aggregate_type: &str) -> SubscriptionConfig {
        let metrics = match &self.subscriber_metrics {
            Some(m) => m.clone(),
            None => {
                let m = allies_store::metrics::SubscriberMetrics::register(&mut self.registry);
                self.subscriber_metrics = Some(m.clone());
                m
            }
        };
        let c = &self.config;
        let mut s = SubscriptionConfig::new(group, &c.instance, aggregate_type, c.partitions);
        s.metrics = Some(metrics);
        s.batch = c.cqrs.subscriber_batch;
        s.block = c.cqrs.subscriber_block;
        s.claim_idle = c.cqrs.claim_idle;
        s.retry = allies_store::Tunable::new(allies_store::subscriber::RetryPolicy {
            max_attempts: c.cqrs.retry_max_attempts,
            base: c.cqrs.retry_base,
            ..Default::default()
        });
        s.breaker = Arc::new(allies_store::breaker::CircuitBreaker::new(c.breaker()));
        s
    }

    /// Runs `handler` as consumer group `group` on `aggregate_type`'s
    /// partition logs — or, with `topic`, on that integration topic — until
    /// shutdown: at least once, with retries, dead letters and the breaker.
    pub fn subscribe<H: allies_store::subscriber::Handler>(
        &mut self,
        group: &'static str,
        aggregate_type: &str,
        topic: Option<&str>,
        handler: Arc<H>,
    ) -> Result<&mut Self, ServeError> {
        let mut config = self.subscription(group, aggregate_type);
        if let Some(t) = topic {
            config.source = allies_store::subscriber::Source::Topic(t.to_owned());
        }
        let target = allies_store::RedisTarget::parse(&self.config.redis_url).map_err(|source| ServeError::Redis {
            url: allies_store::RedisTarget::redacted(&self.config.redis_url),
            source: allies_store::StoreError::Unavailable(source),
        })?;
        Ok(self.background(group, move |stop| allies_store::subscriber::run(target, config, handler, stop)))
    }

    /// The fleet's live configuration: the version in force now, and every
    /// new one as it is applied (within a second of its write).
    pub fn live_config(&self) -> watch::Receiver<Arc<crate::live::LiveConfig>> {
        self.live.subscribe()
    }

    /// Runs `apply` on the live configuration in force when the service
    /// starts and then on every new version, one at a time, in order.
    pub fn on_live_config<F, Fut>(&mut self, name: &'static str, apply: F) -> &mut Self
    where
        F: Fn(Arc<crate::live::LiveConfig>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let mut live = self.live_config();
        let progress = self.not_applied.clone();
        progress.applier(name);
        self.background(name, move |mut stop| async move {
            loop {
                let now = live.borrow_and_update().clone();
                let version = now.version;
                apply(now).await;
                progress.finished(name, version);
                let go_on = tokio::select! {
                    changed = live.changed() => changed.is_ok(),
                    _ = stop.wait_for(|s| *s) => false,
                };
                if !go_on {
                    return;
                }
            }
        })
    }

    /// A setting that follows the live configuration: `from_env` until a
    /// configuration version exists, then `derive` of each version,
    /// replaced whole when the version is applied (readers `get()` a copy).
    pub fn live_setting<T, F>(&mut self, name: &'static str, from_env: T, derive: F) -> allies_store::Tunable<T>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(&crate::live::LiveConfig) -> T + Send + Sync + 'static,
    {
        let pick = move |c: &crate::live::LiveConfig| if c.version == 0 { from_env.clone() } else { derive(c) };
        let setting = allies_store::Tunable::new(pick(&self.live_config().borrow()));
        let s = setting.clone();
        self.on_live_config(name, move |c| {
            s.set(pick(&c));
            std::future::ready(())
        });
        setting
    }

    /// Turns true when the service shuts down (for tasks started during build).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Binds the gRPC and HTTP listeners.
    pub async fn bind(self) -> Result<Service, ServeError> {
        let name = self.config.name.clone();
        let bind = |addr: SocketAddr, var: String| async move {
            TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, var, source })
        };
        let grpc = bind(self.config.listen, crate::config::listen_var(&name)).await?;
        let http = bind(self.config.http_listen, format!("{}_HTTP_ADDR", name.to_uppercase())).await?;
        Ok(Service { builder: self, grpc, http })
    }
}

/// A bound service, ready to run.
pub struct Service {
    builder: ServiceBuilder,
    grpc: TcpListener,
    http: TcpListener,
}

impl Service {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.builder.config.listen)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.builder.config.http_listen)
    }

    /// Serves until `shutdown` resolves (see the module documentation).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let Service { builder, grpc, http } = self;
        let ServiceBuilder {
            config,
            store,
            registry,
            grpc_metrics,
            mut routes,
            health_names,
            checks,
            scrapes,
            tasks,
            stop,
            ..
        } = builder;
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = |b: tonic_reflection::server::Builder<'static>| {
            b.register_encoded_file_descriptor_set(allies_contracts::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let v1 = reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
        let v1alpha = reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;
        routes.add_service(health_service).add_service(v1).add_service(v1alpha);

        let readiness = Readiness { redis: store.connection(), checks };
        let ops = Arc::new(ops::Ops { registry, readiness: readiness.clone(), scrapes });
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;

        let mut background = JoinSet::new();
        // The operations endpoint.
        let mut http_stop = stop.subscribe();
        background.spawn(async move {
            let stopped = async move {
                let _ = http_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(http, ops::router(ops)).with_graceful_shutdown(stopped).await {
                tracing::error!(error = %e, "operations endpoint failed");
            }
        });
        // gRPC health follows readiness.
        let names: Vec<&'static str> = std::iter::once("").chain(health_names.iter().copied()).collect();
        for n in &names {
            health.set_service_status(*n, ServingStatus::Serving).await;
        }
        let mut health_stop = stop.subscribe();
        let reporter = health.clone();
        let probe = readiness.clone();
        let health_names_for_task = names.clone();
        background.spawn(async move {
            let mut serving = true;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(crate::ops::HEALTH_EVERY) => {}
                    _ = health_stop.wait_for(|s| *s) => return,
                }
                let ready = probe.check().await;
                if ready.is_ok() != serving {
                    serving = ready.is_ok();
                    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
                    match &ready {
                        Ok(()) => tracing::info!("ready again: serving"),
                        Err(why) => tracing::warn!(%why, "not ready: not serving"),
                    }
                    for n in &health_names_for_task {
                        reporter.set_service_status(*n, status).await;
                    }
                }
            }
        });
        for (task_name, task) in tasks {
            let stopped = stop.subscribe();
            background.spawn(async move {
                task(stopped).await;
                tracing::debug!(task = task_name, "background task finished");
            });
        }

        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        // gRPC-Web too (browsers, through the edge): HTTP/1.1 accepted, and
        // the translation outermost so every other layer sees plain gRPC.
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(
                tower::ServiceBuilder::new()
                    .layer(tonic_web::GrpcWebLayer::new())
                    .layer(crate::grpc_metrics::MetricsLayer(grpc_metrics))
                    .layer(crate::limits::LimitsLayer(Arc::new(crate::limits::Limits::of_contracts()))),
            )
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(crate::server::incoming(grpc), async {
                let _ = drain_rx.await;
            });
        let mut server = std::pin::pin!(server);
        tracing::info!(service = %config.name, %grpc_addr, %http_addr, services = ?health_names, "serving");
        let early = tokio::select! {
            r = &mut server => Some(r),
            () = shutdown => None,
        };
        if let Some(r) = early {
            let _ = stop.send(true);
            return r.map_err(Into::into);
        }
        let grace = config.shutdown_grace;
        tracing::info!(grace_secs = grace.as_secs_f32(), "shutdown requested; draining in-flight requests");
        for n in &names {
            health.set_service_status(*n, ServingStatus::NotServing).await;
        }
        // Stopping first: open streams end with UNAVAILABLE (see `drain`)
        // before the server stops taking requests and waits for the rest.
        let _ = stop.send(true);
        let _ = drain_tx.send(());
        let deadline = tokio::time::Instant::now() + grace;
        let served = match tokio::time::timeout_at(deadline, server).await {
            Ok(r) => r.map_err(ServeError::from),
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the grace period; closing them");
                Ok(())
            }
        };
        if tokio::time::timeout_at(deadline + Duration::from_millis(500), async {
            while background.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("background work did not stop within the grace period; dropping it");
        }
        tracing::info!("stopped");
        served
    }
}
