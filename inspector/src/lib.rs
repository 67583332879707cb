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
mod edge;
mod error;
mod gate;
mod guard;
mod live;
mod page;
mod serve;
mod tokens_file;
mod topology;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use swarm_memory::Memory;
use swarm_mesh::{Observe, Publish};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use api::{
    BadSchema, Health, MeshHealth, PayloadSchemas, Posted, RecordingHealth, Replied, SimilarHit,
    UnitProblem,
};
pub use auth::{MIN_TOKEN_LEN, Scope, TokenSpec, Tokens, TokensError};
pub use error::{ErrorBody, ErrorDetail};
pub use live::LiveEvent;
pub use serve::ConnectionLimits;
pub use swarm_runtime::{EnableError, Runtime};
pub use tokens_file::{TokensFileError, read_tokens};
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
    /// Longest a request may take, its body read included (a post that waits for a reply
    /// gets its wait on top; the live websocket, once open, is not bound by it).
    pub request_timeout: Duration,
    /// Origins (`https://host:port`) besides the server's own allowed to open `/v1/live`.
    pub allowed_origins: Vec<String>,
    /// Posts waiting for a reply at once, in all.
    pub max_waiters: usize,
    /// Posts one client address may have waiting at once.
    pub max_waiters_per_client: usize,
    /// Live websockets open at once, in all.
    pub max_watchers: usize,
    /// Live websockets one client address may have open at once.
    pub max_watchers_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            rate_per_second: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
            rate_burst: NonZeroU32::new(400).unwrap_or(NonZeroU32::MIN),
            max_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            max_waiters: 1024,
            max_waiters_per_client: 128,
            max_watchers: 256,
            max_watchers_per_client: 16,
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
    /// The file `tokens` were read from: watched, and read again when it changes.
    pub tokens_file: Option<PathBuf>,
    /// Limits on requests.
    pub limits: Limits,
    /// Limits on connections.
    pub connections: ConnectionLimits,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
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
            tokens_file: None,
            limits: Limits::default(),
            connections: ConnectionLimits::default(),
            tls: None,
            stream: "swarm:signals".into(),
            partitions: 1,
            group: "reactor".into(),
            payload_schemas: PayloadSchemas::default(),
        }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The TLS acceptor of these files (HTTP/1.1 over TLS 1.2 and 1.3).
    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, StartError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |path: &Path, error: &dyn std::fmt::Display| StartError::Tls {
            path: path.to_owned(),
            message: error.to_string(),
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(&self.cert, &e))?;
        if certs.is_empty() {
            return Err(bad(&self.cert, &"no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad(&self.key, &e))?;
        // ring, not aws-lc (which adds minutes of C to a fresh build); it has no post-quantum
        // key exchange, which rustls now flags.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&self.cert, &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(&self.key, &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
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
        let app = Application::build(config, services).await?;
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

/// The application (API, page, guards) and what runs beside it: what [`Inspector::start`]
/// serves on its listener.
struct Application {
    router: axum::Router,
    loopback_only: bool,
    /// Sent `true` to close the websockets and stop the tasks.
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Application {
    async fn build(config: InspectorConfig, services: Services) -> Result<Self, StartError> {
        let loopback_only = config.tokens.is_empty();
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
        if let Some(path) = config.tokens_file {
            tokens_file::watch_tokens(
                path,
                config.tokens.clone(),
                shutdown_rx.clone(),
                &mut tasks,
            )?;
        }
        let limits = Arc::new(config.limits);
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
            waiters: gate::Gate::new(limits.max_waiters, limits.max_waiters_per_client),
            watchers: gate::Gate::new(limits.max_watchers, limits.max_watchers_per_client),
            limits: Arc::clone(&limits),
            shutdown: shutdown_rx,
        };
        let edge = edge::Edge {
            limits,
            loopback_only,
        };
        Ok(Self {
            router: api::app(state, limiter, edge),
            loopback_only,
            shutdown,
            tasks,
        })
    }
}

/// The application without a listener, public for the fuzz targets (`tests/fuzz`), which
/// drive it with `tower::ServiceExt::oneshot`: requests need a `ConnectInfo<SocketAddr>`
/// extension, as the server adds.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// The router [`Inspector::start`] serves, the tasks beside it (they run while the set is
    /// kept) and the sender that stops them.
    pub async fn application(
        config: InspectorConfig,
        services: Services,
    ) -> Result<(axum::Router, JoinSet<()>, watch::Sender<bool>), StartError> {
        let app = Application::build(config, services).await?;
        Ok((app.router, app.tasks, app.shutdown))
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
