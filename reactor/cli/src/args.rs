//! Arguments and values several subcommands share: the units directory, the mesh, and the
//! parsers of checked values.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use swarm_mesh::{RedisMesh, RedisMeshConfig, WaitForReplicas};
use swarm_reactor::trust::{TrustFile, TrustPolicy};
use swarm_schemas::{DispatchPolicy, KindPattern};

#[derive(Debug, Args)]
pub(crate) struct UnitsDir {
    /// Directory of unit libraries.
    #[arg(long = "units", env = "SWARM_UNITS_DIR", default_value = "units")]
    pub(crate) dir: PathBuf,
    /// Load only libraries whose SHA-256 digest is in this file (one `<digest>  <name>` line
    /// each, as `sha256sum` prints; add with `swarm trust add LIB`). Read again at every load.
    #[arg(long = "trust", env = "SWARM_TRUST_FILE", value_name = "FILE")]
    pub(crate) trust: Option<PathBuf>,
    /// Load from a units directory or library that another user owns or that group or others
    /// can write, with a warning instead of a refusal. Anyone who can write there can run code
    /// in the reactor.
    #[arg(long)]
    pub(crate) insecure_units_dir: bool,
}

impl UnitsDir {
    /// What libraries must pass before they are opened; the trust file must be readable.
    pub(crate) fn policy(&self) -> anyhow::Result<TrustPolicy> {
        if let Some(file) = &self.trust {
            TrustFile::read(file)?;
        }
        if self.insecure_units_dir {
            tracing::warn!(
                dir = %self.dir.display(),
                "--insecure-units-dir: libraries load even where other users can write them"
            );
        }
        Ok(TrustPolicy {
            trust_file: self.trust.clone(),
            insecure_units_dir: self.insecure_units_dir,
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct MeshArgs {
    /// Redis URL of a shared mesh (`redis://host:port/db`, or a Redis Cluster as
    /// `redis+cluster://host:port,host:port/`); without it the mesh is in-process.
    #[arg(long = "redis", env = "SWARM_REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// Hash tag shared by every Redis key of this mesh.
    #[arg(long, env = "SWARM_REDIS_PREFIX", default_value = "swarm")]
    redis_prefix: String,
    /// Replicas that must have each publish and each settle before it is answered (Redis
    /// `WAIT`), so that what was answered survives a failover to one of them; 0 answers once
    /// the master has it.
    #[arg(long, env = "SWARM_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    redis_wait_replicas: u32,
    /// Longest wait for those replicas, in seconds; past it the write stands on the master
    /// alone (logged, and counted in `swarm_mesh_replication_short_total`).
    #[arg(long, env = "SWARM_REDIS_WAIT_TIMEOUT", default_value = "1", value_parser = parse_seconds)]
    redis_wait_timeout: f64,
}

impl MeshArgs {
    pub(crate) async fn redis(&self) -> anyhow::Result<Option<Arc<RedisMesh>>> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        let mut config = RedisMeshConfig::new(url.clone());
        config.key_prefix.clone_from(&self.redis_prefix);
        config.wait_for_replicas = (self.redis_wait_replicas > 0).then(|| WaitForReplicas {
            replicas: self.redis_wait_replicas,
            timeout: std::time::Duration::from_secs_f64(self.redis_wait_timeout),
        });
        Ok(Some(Arc::new(RedisMesh::connect(config).await?)))
    }
}

/// This machine's name, for a default consumer name that stays the same across restarts.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "reactor".to_owned())
}

pub(crate) fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!(
            "units directory {} does not exist (pass --units DIR or set SWARM_UNITS_DIR)",
            dir.display()
        );
    }
    Ok(())
}

pub(crate) fn private_dir() -> anyhow::Result<tempfile::TempDir> {
    swarm_reactor::private_dir().context("cannot create a private directory for unit copies")
}

/// `PATTERN=POLICY` of `--dispatch`.
pub(crate) fn parse_dispatch(text: &str) -> Result<(KindPattern, DispatchPolicy), String> {
    let (pattern, policy) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not PATTERN=POLICY"))?;
    let pattern = KindPattern::parse(pattern).map_err(|e| format!("pattern `{pattern}` {e}"))?;
    let policy = match policy.split_once(':') {
        None if policy == "fan_out" => DispatchPolicy::FanOut,
        None if policy == "first_success" => DispatchPolicy::FirstSuccess,
        Some(("top_k", k)) => match k.parse::<u32>() {
            Ok(k) if k >= 1 => DispatchPolicy::TopK { k },
            _ => return Err(format!("top_k needs a count of at least 1, not `{k}`")),
        },
        _ => {
            return Err(format!(
                "unknown policy `{policy}`: use fan_out, first_success or top_k:N"
            ));
        }
    };
    Ok((pattern, policy))
}

/// A duration in seconds, more than 0 and at most a day.
pub(crate) fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "`{text}` is not a number of seconds above 0 (at most 86400)"
        )),
    }
}

pub(crate) fn parse_concentration(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(format!("`{text}` is not a positive number")),
    }
}

pub(crate) fn parse_probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a probability between 0 and 1")),
    }
}

/// The settings of every HTTPS client of the command (the model fetch, the OTLP exporter): ureq
/// on its own rustls (ring, the platform's certificates), named as swarm. Each adds its own
/// timeouts.
pub(crate) fn https_client() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .user_agent(concat!("swarm/", env!("CARGO_PKG_VERSION")))
}
