//! `swarm up`'s inspector: the HTTP API, websocket and page over the running reactor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use swarm_inspector::{
    ConnectionLimits, InspectorConfig, Limits, PayloadSchemas, TlsFiles, read_tokens,
};
use swarm_reactor::ReactorHandle;
use swarm_schemas::validate_kind;

/// Where and how the inspector serves.
#[derive(Debug, Args)]
pub(crate) struct HttpArgs {
    /// Address of the inspector (HTTP API, websocket, page). Without --api-tokens it serves on
    /// loopback only, whatever the address.
    #[arg(long = "http", env = "SWARM_HTTP", default_value = "127.0.0.1:7077")]
    addr: SocketAddr,
    /// Do not serve the inspector.
    #[arg(long, conflicts_with = "addr")]
    no_http: bool,
    /// JSON file of API tokens: [{"name": "...", "token": "...", "scopes": ["read", "emit",
    /// "admin"]}]. With tokens every endpoint but the page and /v1/health needs one. The file
    /// is watched: a change takes effect without a restart.
    #[arg(long, env = "SWARM_API_TOKENS")]
    api_tokens: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM; needs --tls-key).
    #[arg(long, requires = "tls_key", env = "SWARM_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert", env = "SWARM_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Directory of payload JSON Schemas, one per signal kind, named KIND.schema.json: signals
    /// posted over HTTP with that kind must pass it.
    #[arg(long)]
    payload_schemas: Option<PathBuf>,
    /// An origin besides the inspector's own allowed to open the live websocket (repeatable).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// Requests per second per client address (bursts of twice as many).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit: u32,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    body_limit: usize,
    /// Seconds a client may take to send a request's header (and its TLS handshake).
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    header_timeout: f64,
    /// Seconds a request may take, its body included (a post's reply wait comes on top).
    #[arg(long, default_value_t = 30.0, value_parser = positive_seconds)]
    request_timeout: f64,
    /// Seconds a connection may stay idle before it is closed.
    #[arg(long, default_value_t = 75.0, value_parser = positive_seconds)]
    idle_timeout: f64,
    /// Connections open at once, in all.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Connections open at once from one client address.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_client: u32,
    /// Posts waiting for a reply (?wait) at once, in all; one client address may hold an
    /// eighth of them (at least one).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_waiting_posts: u32,
    /// Live websockets open at once, in all; one client address may hold an eighth of them
    /// (at least one).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_watchers: u32,
}

/// A number of seconds, more than zero and at most a day.
fn positive_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if seconds > 0.0 && seconds <= 86_400.0 {
        Ok(seconds)
    } else {
        Err(format!(
            "{seconds} must be more than 0 and at most 86400 seconds"
        ))
    }
}

/// An eighth of `total`, at least one: one client's share.
fn share(total: u32) -> usize {
    (total as usize / 8).max(1)
}

/// The payload schemas of a directory: `KIND.schema.json` each.
fn payload_schemas(dir: &Path) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(kind) = name.strip_suffix(".schema.json") else {
            continue;
        };
        validate_kind(kind)
            .with_context(|| format!("{}: not named after a kind", path.display()))?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let schema: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        out.insert(kind.to_owned(), schema);
    }
    Ok(out)
}

impl HttpArgs {
    /// The inspector's configuration, or `None` with --no-http.
    pub(crate) fn config(
        &self,
        stream: &str,
        group: &str,
    ) -> anyhow::Result<Option<InspectorConfig>> {
        if self.no_http {
            return Ok(None);
        }
        let mut config = InspectorConfig::new(self.addr);
        if let Some(path) = &self.api_tokens {
            config.tokens = read_tokens(path)?;
            config.tokens_file = Some(path.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(dir) = &self.payload_schemas {
            config.payload_schemas = PayloadSchemas::new(payload_schemas(dir)?)
                .with_context(|| format!("in {}", dir.display()))?;
        }
        if self.body_limit < 1024 {
            bail!("--body-limit must be at least 1024 bytes");
        }
        let rate = NonZeroU32::new(self.rate_limit).context("--rate-limit must be at least 1")?;
        config.limits = Limits {
            body_limit: self.body_limit,
            rate_per_second: rate,
            rate_burst: rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN)),
            allowed_origins: self.allow_origins.clone(),
            request_timeout: Duration::from_secs_f64(self.request_timeout),
            max_waiters: self.max_waiting_posts as usize,
            max_waiters_per_client: share(self.max_waiting_posts),
            max_watchers: self.max_watchers as usize,
            max_watchers_per_client: share(self.max_watchers),
            ..Limits::default()
        };
        config.connections = ConnectionLimits {
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            idle_timeout: Duration::from_secs_f64(self.idle_timeout),
            max_connections: self.max_connections as usize,
            max_connections_per_client: self.max_connections_per_client as usize,
        };
        config.stream = stream.to_owned();
        config.group = group.to_owned();
        Ok(Some(config))
    }
}

/// Starts the inspector over `reactor`.
pub(crate) async fn start(
    config: InspectorConfig,
    reactor: ReactorHandle,
    mesh: Arc<dyn swarm_mesh::Mesh>,
    publish: Arc<dyn swarm_mesh::Publish>,
    memory: Arc<dyn swarm_memory::Memory>,
    metrics: PrometheusHandle,
) -> anyhow::Result<swarm_inspector::Inspector> {
    let asked = config.addr;
    let inspector = swarm_inspector::Inspector::start(
        config,
        swarm_inspector::Services {
            audit: reactor.audit().clone(),
            publish,
            observe: mesh,
            memory,
            runtime: Arc::new(reactor),
            metrics: Some(metrics),
        },
    )
    .await
    .context("the inspector cannot start (pass --http ADDR or --no-http)")?;
    if inspector.loopback_only() && !asked.ip().is_loopback() {
        eprintln!("no API token configured (--api-tokens): the inspector serves on loopback only");
    }
    eprintln!("inspector on {}", inspector.url());
    Ok(inspector)
}
