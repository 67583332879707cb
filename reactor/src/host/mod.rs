//! Host capabilities: what the reactor does on a unit's behalf (log, marks, kv, http), handed
//! to each loaded unit library as a table of functions through the ABI.
//!
//! A unit is synchronous and has its own copy of std and of any runtime, so it cannot do I/O
//! of its own safely; it calls the host instead, which runs the work on the reactor's runtime
//! while the unit's thread waits. Each load of a unit gets its own [`UnitHost`]: the unit's
//! name and version, and what it was granted. A capability works only when the manifest
//! declares it and the configuration grants it (`log` is always granted). Every call is
//! counted per unit and capability in the metrics and in the execution's record.

mod abi;
mod account;
mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_abi::{
    HOST_HTTP, HOST_KV, HOST_LOG, HOST_MARKS, HOST_MARKS_PREFIX, HostOp, STATUS_BAD_INPUT,
    STATUS_DENIED, STATUS_ERROR, STATUS_OK, Status, capability_of,
};
use swarm_mesh::{Kv, Marks, Mesh, StoreError};
use swarm_schemas::{
    Capability, KvReply, KvRequest, LogLevel, LogRecord, MarksPrefixRequest, MarksRequest,
    UnitManifest,
};

pub(crate) use abi::HostTable;
pub(crate) use account::scoped;
pub use http::HostPattern;

/// How the host's capabilities are configured.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The capabilities each unit is granted, by unit name (`log` needs no grant).
    pub grants: BTreeMap<String, BTreeSet<Capability>>,
    /// How long a mark takes to evaporate to half its value. Every process on one mesh must
    /// use the same: the field refuses another.
    pub marks_half_life: Duration,
    /// Longest an HTTP request may take, connection included.
    pub http_timeout: Duration,
    /// Largest HTTP response body a unit gets; a larger one is cut off with an error.
    pub http_max_bytes: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            grants: BTreeMap::new(),
            marks_half_life: Duration::from_secs(60),
            http_timeout: Duration::from_secs(10),
            http_max_bytes: 1 << 20,
        }
    }
}

/// What the host's capabilities run on: the reactor's runtime, the mesh's stores, one pooled
/// HTTP client. Shared by every unit.
pub struct HostServices {
    runtime: tokio::runtime::Handle,
    marks: Arc<dyn Marks>,
    kv: Arc<dyn Kv>,
    http: reqwest::Client,
    config: HostConfig,
}

impl HostServices {
    /// Services on `mesh`'s stores, run on the current runtime. Fails outside a runtime, or
    /// if the HTTP client cannot be built.
    pub fn new(mesh: &dyn Mesh, config: HostConfig) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("host services need a tokio runtime: {e}"))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.http_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("the HTTP client cannot be built: {e}"))?;
        Ok(Self {
            runtime,
            marks: mesh.marks(config.marks_half_life),
            kv: mesh.kv(),
            http,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }
}

/// A capability call that did not succeed: its status and text.
#[derive(Debug)]
enum Failure {
    Denied(String),
    BadRequest(String),
    Failed(String),
}

impl Failure {
    fn status(&self) -> Status {
        match self {
            Self::Denied(_) => STATUS_DENIED,
            Self::BadRequest(_) => STATUS_BAD_INPUT,
            Self::Failed(_) => STATUS_ERROR,
        }
    }

    fn into_text(self) -> String {
        match self {
            Self::Denied(s) | Self::BadRequest(s) | Self::Failed(s) => s,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid(message) => Self::BadRequest(message),
            other => Self::Failed(other.to_string()),
        }
    }
}

fn bad_json(what: &str) -> impl FnOnce(serde_json::Error) -> Failure + '_ {
    move |e| Failure::BadRequest(format!("{what} is not valid: {e}"))
}

fn reply(value: &impl serde::Serialize) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value).map_err(|e| Failure::Failed(e.to_string()))
}

/// The host as one load of one unit sees it.
pub(crate) struct UnitHost {
    services: Arc<HostServices>,
    unit: Arc<str>,
    version: String,
    /// Capabilities both declared and granted.
    granted: BTreeSet<Capability>,
    /// Declared but not granted, or granted but not declared: for the error texts.
    declared: BTreeSet<Capability>,
    allow: Vec<HostPattern>,
}

/// What serves a unit library's capability calls: the host's capabilities themselves
/// ([`UnitHost`]), or, in an isolated unit's worker process, the pipe to them.
pub(crate) trait HostCall: Send + Sync {
    /// Makes one call: `STATUS_OK` and the reply bytes, or the status and error text.
    fn call(&self, op: HostOp, request: &[u8]) -> (Status, Vec<u8>);
}

impl HostCall for UnitHost {
    fn call(&self, op: HostOp, request: &[u8]) -> (Status, Vec<u8>) {
        UnitHost::call(self, op, request)
    }
}

impl UnitHost {
    /// The host for a load of the unit with `manifest`. Logs what is declared and not granted,
    /// and what is granted and not declared.
    pub(crate) fn new(services: &Arc<HostServices>, manifest: &UnitManifest) -> Self {
        let declared: BTreeSet<Capability> = Capability::ALL
            .into_iter()
            .filter(|c| manifest.capabilities.declares(*c))
            .collect();
        let granted_by_config = services
            .config
            .grants
            .get(&manifest.name)
            .cloned()
            .unwrap_or_default();
        let mut granted: BTreeSet<Capability> =
            declared.intersection(&granted_by_config).copied().collect();
        granted.insert(Capability::Log);
        for c in declared.difference(&granted) {
            tracing::info!(unit = %manifest.name, capability = %c,
                "the unit declares a capability it is not granted: its calls will be denied");
        }
        for c in granted_by_config.difference(&declared) {
            tracing::warn!(unit = %manifest.name, capability = %c,
                "a capability is granted to a unit whose manifest does not declare it: not given");
        }
        let allow = manifest
            .capabilities
            .http
            .iter()
            .flat_map(|h| h.allow.iter())
            .filter_map(|p| HostPattern::parse(p).ok())
            .collect();
        Self {
            services: Arc::clone(services),
            unit: Arc::from(manifest.name.as_str()),
            version: manifest.version.to_string(),
            granted,
            declared,
            allow,
        }
    }

    /// Makes one call: the reply bytes, or the status and error text.
    pub(crate) fn call(&self, op: HostOp, request: &[u8]) -> (Status, Vec<u8>) {
        let Some(capability) = capability_of(op).and_then(|c| c.parse::<Capability>().ok()) else {
            return (
                STATUS_BAD_INPUT,
                format!("unknown host operation {op}: this host is older than the unit")
                    .into_bytes(),
            );
        };
        let started = Instant::now();
        let result = self.check(capability).and_then(|()| self.run(op, request));
        account::record(&self.unit, capability, &result, started.elapsed());
        match result {
            Ok(bytes) => (STATUS_OK, bytes),
            Err(failure) => {
                if let Failure::Denied(why) = &failure {
                    tracing::warn!(unit = %self.unit, capability = %capability,
                        signal = %account::current_signal(), "capability denied: {why}");
                }
                (failure.status(), failure.into_text().into_bytes())
            }
        }
    }

    fn check(&self, capability: Capability) -> Result<(), Failure> {
        if self.granted.contains(&capability) {
            return Ok(());
        }
        let unit = &self.unit;
        Err(Failure::Denied(if self.declared.contains(&capability) {
            format!(
                "unit `{unit}` is not granted the `{capability}` capability (the reactor grants it with --grant {unit}={capability})"
            )
        } else {
            format!(
                "unit `{unit}` does not declare the `{capability}` capability in its manifest, so it is not granted"
            )
        }))
    }

    fn run(&self, op: HostOp, request: &[u8]) -> Result<Vec<u8>, Failure> {
        let services = &self.services;
        match op {
            HOST_LOG => {
                let record: LogRecord =
                    serde_json::from_slice(request).map_err(bad_json("a log record"))?;
                self.log(&record);
                Ok(Vec::new())
            }
            HOST_MARKS => {
                let request: MarksRequest =
                    serde_json::from_slice(request).map_err(bad_json("a marks request"))?;
                let answer = self.block_on(services.marks.apply(&request.ops))?;
                reply(&answer?)
            }
            HOST_MARKS_PREFIX => {
                let request: MarksPrefixRequest =
                    serde_json::from_slice(request).map_err(bad_json("a marks request"))?;
                let answer = self.block_on(services.marks.sense_prefix(&request.prefix))?;
                reply(&answer?)
            }
            HOST_KV => {
                let request: KvRequest =
                    serde_json::from_slice(request).map_err(bad_json("a kv request"))?;
                let (kv, unit) = (&services.kv, &*self.unit);
                let answer = self.block_on(async move {
                    match request {
                        KvRequest::Get { key } => kv.get(unit, &key).await.map(|value| KvReply {
                            value,
                            removed: false,
                        }),
                        KvRequest::Set { key, value, ttl_ms } => kv
                            .set(unit, &key, &value, ttl_ms.map(Duration::from_millis))
                            .await
                            .map(|()| KvReply::default()),
                        KvRequest::Delete { key } => {
                            kv.delete(unit, &key).await.map(|removed| KvReply {
                                value: None,
                                removed,
                            })
                        }
                    }
                })?;
                reply(&answer?)
            }
            HOST_HTTP => {
                let limits = http::Limits {
                    timeout: services.config.http_timeout,
                    max_bytes: services.config.http_max_bytes,
                };
                self.block_on(http::request(
                    &services.http,
                    &limits,
                    &self.allow,
                    &self.unit,
                    request,
                ))?
            }
            _ => Err(Failure::BadRequest(format!("unknown host operation {op}"))),
        }
    }

    /// Runs `work` on the reactor's runtime and waits for it. On the blocking pool (a unit
    /// handling a signal) it blocks this thread directly; anywhere else (a lifecycle hook,
    /// which may run on an async worker) on a thread of its own, so no worker is blocked in a
    /// way the runtime forbids.
    fn block_on<F>(&self, work: F) -> Result<F::Output, Failure>
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let runtime = &self.services.runtime;
        if account::in_call() {
            return Ok(runtime.block_on(work));
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work))
                .join()
                .map_err(|_| Failure::Failed("the host's call panicked".into()))
        })
    }

    fn log(&self, record: &LogRecord) {
        let unit = &*self.unit;
        let version = self.version.as_str();
        let signal = account::current_signal();
        let message = record.message.as_str();
        let fields = if record.fields.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&record.fields).unwrap_or_default()
        };
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(target: "swarm::unit", $level, unit, version, %signal,
                    fields = %fields, "{message}")
            };
        }
        match record.level {
            LogLevel::Error => event!(tracing::Level::ERROR),
            LogLevel::Warn => event!(tracing::Level::WARN),
            LogLevel::Info => event!(tracing::Level::INFO),
            LogLevel::Debug => event!(tracing::Level::DEBUG),
            LogLevel::Trace => event!(tracing::Level::TRACE),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn host(manifest: serde_json::Value, grants: &[Capability]) -> UnitHost {
        let mut config = HostConfig::default();
        config
            .grants
            .insert("u".into(), grants.iter().copied().collect());
        let services = HostServices::new(&swarm_mesh::InProcMesh::new(), config).expect("host");
        let manifest: UnitManifest = serde_json::from_value(manifest).expect("manifest");
        UnitHost::new(&Arc::new(services), &manifest)
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    // Outside a unit call (as in a lifecycle hook on an async worker) the work runs on a
    // thread of its own: this test calls from a runtime worker and must not panic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_refusal_says_why() {
        let host = host(
            json!({"name": "u", "version": "1.0.0", "subscribes": ["a"],
                   "capabilities": {"marks": true, "kv": true}}),
            &[Capability::Marks, Capability::Http],
        );
        let sense = br#"{"ops": [{"op": "sense", "key": "k"}]}"#;
        let (status, bytes) = host.call(HOST_MARKS, sense);
        assert_eq!(status, STATUS_OK, "{}", text(&bytes));
        let reply: swarm_schemas::MarksReply = serde_json::from_slice(&bytes).expect("reply");
        assert_eq!(reply.values, vec![0.0]);

        let (status, bytes) = host.call(HOST_KV, br#"{"op": "get", "key": "k"}"#);
        assert_eq!(status, STATUS_DENIED);
        assert!(text(&bytes).contains("--grant u=kv"), "{}", text(&bytes));

        let http = br#"{"method": "GET", "url": "http://127.0.0.1:9/"}"#;
        let (status, bytes) = host.call(HOST_HTTP, http);
        assert_eq!(status, STATUS_DENIED);
        assert!(
            text(&bytes).contains("does not declare the `http` capability"),
            "{}",
            text(&bytes)
        );

        let (status, _) = host.call(HOST_LOG, br#"{"level": "info", "message": "hi"}"#);
        assert_eq!(status, STATUS_OK, "log needs no grant");

        let (status, bytes) = host.call(HOST_MARKS, b"{not json");
        assert_eq!(status, STATUS_BAD_INPUT);
        assert!(text(&bytes).contains("a marks request is not valid"));
        let nan = br#"{"ops": [{"op": "deposit", "key": "k", "amount": 1e999}]}"#;
        let (status, _) = host.call(HOST_MARKS, nan);
        assert_eq!(
            status, STATUS_BAD_INPUT,
            "an amount out of range is refused"
        );

        let (status, bytes) = host.call(99, b"");
        assert_eq!(status, STATUS_BAD_INPUT);
        assert!(text(&bytes).contains("unknown host operation 99"));
    }
}
