//! The inspector: an HTTP API, a websocket and a web page over a running swarm.
//!
//! People and programs post signals (and wait for replies), list, enable and disable units,
//! look executions up and search them by similarity, read the mesh's topology and Prometheus
//! metrics, and watch signals and executions live on `/v1/live`. The page at `/` shows all of
//! it. The OpenAPI document at `/v1/openapi.json` is generated from the handlers.
//!
//! The inspector depends on the mesh, memory and the wire types, never on the reactor: the
//! process that hosts it hands it a [`Runtime`] for what only the reactor knows.

mod api;
mod application;
mod auth;
mod config;
mod edge;
mod error;
mod gate;
mod guard;
mod live;
mod page;
mod serve;
mod tokens_file;
mod topology;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use swarm_memory::Memory;
use swarm_mesh::{Observe, Publish};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use api::{
    BadSchema, Conversation, ExecutionNode, Health, MeshHealth, PayloadSchemas, Posted,
    RecordingHealth, Replied, SignalNode, SimilarHit, UnitProblem,
};
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use application::fuzzing;
pub use auth::{MIN_TOKEN_LEN, Scope, TokenSpec, Tokens, TokensError};
pub use config::{InspectorConfig, Limits, TlsFiles};
pub use error::{ErrorBody, ErrorDetail};
pub use live::LiveEvent;
pub use serve::ConnectionLimits;
pub use swarm_runtime::{EnableError, Runtime};
pub use tokens_file::{TokensFileError, read_tokens};
pub use topology::{Edge, KindNode, Relation, Topology, UnitNode, WINDOW_SECONDS};

/// What the inspector serves from.
#[derive(Clone)]
pub struct Services {
    /// Where posted signals go: the mesh signals flow on.
    pub publish: Arc<dyn Publish>,
    /// The same mesh, watched: the live view tails it, health reads its group.
    pub observe: Arc<dyn Observe>,
    /// Where executions are remembered.
    pub memory: Arc<dyn Memory>,
    /// The hosting reactor.
    pub runtime: Arc<dyn Runtime>,
    /// The process's Prometheus recorder, if one is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Where admin calls are recorded and read back from.
    pub audit: swarm_memory::AuditTrail,
}

/// Why the inspector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The post-signal schema does not compile (a build defect).
    #[error(transparent)]
    Schema(#[from] BadSchema),
    /// The mesh could not be asked where its streams end.
    #[error("cannot reach the mesh: {0}")]
    Mesh(#[from] swarm_mesh::MeshError),
    /// The certificate or key cannot be used.
    #[error("TLS: {path}: {message}")]
    Tls {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The tokens file cannot be watched.
    #[error(transparent)]
    TokensFile(#[from] TokensFileError),
}

/// A running inspector. Stop it with [`Inspector::stop`].
pub struct Inspector {
    addr: SocketAddr,
    https: bool,
    loopback_only: bool,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    tasks: JoinSet<()>,
}

impl Inspector {
    /// Binds and starts serving. With no tokens configured, a non-loopback address is
    /// replaced by loopback (and a warning says so).
    pub async fn start(config: InspectorConfig, services: Services) -> Result<Self, StartError> {
        let addr = config.serving_addr();
        if addr != config.addr {
            tracing::warn!(
                asked = %config.addr,
                "no API token is configured: serving on loopback only; configure tokens to serve other addresses"
            );
        }
        let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
        let connections = config.connections.clone();
        let app = application::Application::build(config, services).await?;
        let listener = serve::listen(addr).map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let serving = serve::Serving {
            router: app.router,
            connections: gate::Gate::new(
                connections.max_connections,
                connections.max_connections_per_client,
            ),
            limits: connections,
            tls,
        };
        let https = serving.tls.is_some();
        let server = tokio::spawn(serve::serve(
            listener,
            serving,
            app.shutdown.subscribe(),
            Duration::from_secs(5),
        ));
        tracing::info!(%addr, loopback_only = app.loopback_only, https, "inspector serving");
        Ok(Self {
            addr,
            https,
            loopback_only: app.loopback_only,
            shutdown: app.shutdown,
            server,
            tasks: app.tasks,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL: `http://` or, with TLS, `https://` and the address it listens on.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// Whether it serves loopback only because no token is configured.
    pub fn loopback_only(&self) -> bool {
        self.loopback_only
    }

    /// Stops taking connections, closes the websockets, waits for requests in progress.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_secs(6), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
        self.tasks.shutdown().await;
    }
}

/// Installs the process's Prometheus metrics recorder (once per process), with histograms for
/// every `*_seconds` metric, and starts its upkeep. Call it inside a tokio runtime.
pub fn install_metrics_recorder()
-> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)?
        .install_recorder()?;
    // Without an HTTP listener of its own the exporter needs its upkeep run now and then.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
