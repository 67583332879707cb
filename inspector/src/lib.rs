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
mod auth;
mod error;
mod guard;
mod live;
mod page;
mod topology;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use swarm_memory::Memory;
use swarm_mesh::{Observe, Publish};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use api::{BadSchema, Health, PayloadSchemas, Posted, Replied, SimilarHit, UnitProblem};
pub use auth::{MIN_TOKEN_LEN, Scope, TokenSpec, Tokens, TokensError};
pub use error::{ErrorBody, ErrorDetail};
pub use live::LiveEvent;
pub use swarm_runtime::{EnableError, Runtime};
pub use topology::{Edge, KindNode, Relation, Topology, UnitNode, WINDOW_SECONDS};

/// Limits that protect the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Requests per second per client address.
    pub rate_per_second: NonZeroU32,
    /// Requests a client may make at once before the rate applies.
    pub rate_burst: NonZeroU32,
    /// Longest wait for a reply a post may ask for.
    pub max_wait: Duration,
    /// Origins (`https://host:port`) besides the server's own allowed to open `/v1/live`.
    pub allowed_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            rate_per_second: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
            rate_burst: NonZeroU32::new(400).unwrap_or(NonZeroU32::MIN),
            max_wait: Duration::from_secs(60),
            allowed_origins: Vec::new(),
        }
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct InspectorConfig {
    /// Address to listen on. Without tokens, only its port is used, on loopback.
    pub addr: SocketAddr,
    /// Bearer tokens; none: nothing is checked and the server listens on loopback only.
    pub tokens: Tokens,
    /// Limits.
    pub limits: Limits,
    /// The stream signals flow on.
    pub stream: String,
    /// Partitions of the stream (see `swarm_mesh::partition`): the live view follows each.
    pub partitions: u32,
    /// The reactors' consumer group (for pending and lag).
    pub group: String,
    /// JSON Schemas of payloads by signal kind; posts of those kinds must pass them.
    pub payload_schemas: PayloadSchemas,
}

impl InspectorConfig {
    /// The address it serves on: `addr`, or, with no tokens configured, loopback of the same
    /// family on the same port.
    pub fn serving_addr(&self) -> SocketAddr {
        if !self.tokens.is_empty() || self.addr.ip().is_loopback() {
            return self.addr;
        }
        let ip = match self.addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, self.addr.port())
    }

    /// Defaults for serving on `addr` over the reactor's default stream and group.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            tokens: Tokens::default(),
            limits: Limits::default(),
            stream: "swarm:signals".into(),
            partitions: 1,
            group: "reactor".into(),
            payload_schemas: PayloadSchemas::default(),
        }
    }
}

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
}

/// A running inspector. Stop it with [`Inspector::stop`].
pub struct Inspector {
    addr: SocketAddr,
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
        let loopback_only = config.tokens.is_empty();
        if addr != config.addr {
            tracing::warn!(
                asked = %config.addr,
                "no API token is configured: serving on loopback only; configure tokens to serve other addresses"
            );
        }
        let schemas = Arc::new(api::SignalSchemas::new(config.payload_schemas)?);
        let mut tasks = JoinSet::new();
        let hub = live::Hub::start(
            Arc::clone(&services.observe),
            &config.stream,
            config.partitions,
            Arc::clone(&services.runtime),
            &mut tasks,
        )
        .await?;
        let limiter = Arc::new(guard::limiter(
            config.limits.rate_per_second,
            config.limits.rate_burst,
        ));
        {
            // Forget clients idle long enough to be back at a full burst.
            let limiter = Arc::clone(&limiter);
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    limiter.retain_recent();
                }
            });
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = api::AppState {
            publish: services.publish,
            observe: services.observe,
            memory: services.memory,
            runtime: services.runtime,
            hub,
            stream: config.stream,
            partitions: config.partitions,
            group: config.group,
            schemas,
            metrics: services.metrics,
            tokens: config.tokens,
            audit: services.audit,
            limits: Arc::new(config.limits),
            shutdown: shutdown_rx.clone(),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let app = api::app(state, limiter).into_make_service_with_connect_info::<SocketAddr>();
        let mut stop = shutdown_rx;
        let server = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(error) = serving.await {
                tracing::error!(%error, "the inspector stopped serving");
            }
        });
        tracing::info!(%addr, loopback_only, "inspector serving");
        Ok(Self {
            addr,
            loopback_only,
            shutdown,
            server,
            tasks,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it serves loopback only because no token is configured.
    pub fn loopback_only(&self) -> bool {
        self.loopback_only
    }

    /// Stops taking connections, closes the websockets, waits for requests in progress.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_secs(5), &mut self.server)
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
