//! `swarm up`'s inspector: the HTTP API, websocket and page over the running reactor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use swarm_inspector::{InspectorConfig, Limits, PayloadSchemas, Tokens};
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
    /// "admin"]}]. With tokens every endpoint but the page and /v1/health needs one.
    #[arg(long, env = "SWARM_API_TOKENS")]
    api_tokens: Option<PathBuf>,
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
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            config.tokens =
                Tokens::from_json(&text).with_context(|| format!("{}", path.display()))?;
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
            ..Limits::default()
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
    memory: Arc<dyn swarm_memory::Memory>,
    metrics: PrometheusHandle,
) -> anyhow::Result<swarm_inspector::Inspector> {
    let asked = config.addr;
    let inspector = swarm_inspector::Inspector::start(
        config,
        swarm_inspector::Services {
            audit: reactor.audit().clone(),
            publish: Arc::clone(&mesh) as Arc<dyn swarm_mesh::Publish>,
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
    eprintln!("inspector on http://{}/", inspector.local_addr());
    Ok(inspector)
}
