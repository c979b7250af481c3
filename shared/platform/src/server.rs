//! gRPC server bootstrap: health, reflection, bounded graceful shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// What a service registers its gRPC services on. Comes with
/// `grpc.health.v1.Health` and server reflection (v1 and v1alpha).
pub struct GrpcServer {
    pub routes: RoutesBuilder,
    pub health: HealthReporter,
    names: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

impl GrpcServer {
    pub fn new() -> Result<Self, ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = |b: tonic_reflection::server::Builder<'static>| {
            b.register_encoded_file_descriptor_set(allies_contracts::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let v1 = reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
        let v1alpha = reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service).add_service(v1).add_service(v1alpha);
        Ok(Self { routes, health, names: Vec::new() })
    }

    /// Reports the named service (its `NamedService::NAME`, for example
    /// `GuardianServiceServer::<Api>::NAME`) in health once the server runs.
    /// Register the service itself on [`routes`](Self::routes).
    pub fn report_health(&mut self, name: &'static str) -> &mut Self {
        self.names.push(name);
        self
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops
    /// accepting, and gives in-flight requests up to `grace` to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        grace: Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr()?;
        for name in &self.names {
            self.health.set_service_status(*name, ServingStatus::Serving).await;
        }
        self.health.set_service_status("", ServingStatus::Serving).await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder().add_routes(self.routes.routes()).serve_with_incoming_shutdown(
            incoming(listener),
            async {
                let _ = stop_rx.await;
            },
        );
        let mut server = std::pin::pin!(server);
        tracing::info!(%addr, services = ?self.names, "serving gRPC");
        tokio::select! {
            r = &mut server => return r.map_err(Into::into),
            () = shutdown => {}
        }
        tracing::info!(grace_secs = grace.as_secs_f32(), "shutdown requested; draining in-flight requests");
        for name in &self.names {
            self.health.set_service_status(*name, ServingStatus::NotServing).await;
        }
        self.health.set_service_status("", ServingStatus::NotServing).await;
        let _ = stop_tx.send(());
        match tokio::time::timeout(grace, server).await {
            Ok(r) => r?,
            Err(_) => tracing::warn!("in-flight requests did not finish within the grace period; closing them"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Accepted connections with TCP_NODELAY: a gRPC response is several small
/// HTTP/2 frames, and with Nagle's algorithm against the client's delayed ACK
/// each unary call waited ~40 ms (measured: login p50 84 ms → see README).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        if let Err(e) = conn.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        Ok(conn)
    })
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; only ctrl-c stops this process");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
