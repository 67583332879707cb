//! What the fuzz targets share: the inspector's application on in-process services, driven
//! one request at a time, and the checks every answer must pass.
//!
//! The targets are in `fuzz_targets/`; `ops/fuzz` runs them with the corpora in `corpus/`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use swarm_inspector::{
    EnableError, ErrorBody, InspectorConfig, PayloadSchemas, Runtime, Scope, Services, TokenSpec,
    Tokens,
};
use swarm_memory::{AuditTrail, EmbedError, Embedder, InProcAudit, InProcMemory};
use swarm_mesh::InProcMesh;
use swarm_schemas::{ExecutionRecord, UnitStatus};
use tokio::sync::broadcast;
use tower::ServiceExt as _;

/// The order-flow example's payload schema: posts of `order.placed` are checked against it.
const ORDER_PLACED_SCHEMA: &str =
    include_str!("../../../examples/order-flow/schemas/order.placed.schema.json");

/// A token with every scope, for the application that checks tokens.
pub const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789abcdef";

/// Requests one application answers before it is built afresh, so that what posts pile up in
/// the in-process mesh stays bounded however long a target runs.
const REQUESTS_PER_APPLICATION: usize = 20_000;

/// A reactor with no units, for the inspector's [`Runtime`].
struct NoUnits {
    executions: broadcast::Sender<Arc<ExecutionRecord>>,
}

impl Runtime for NoUnits {
    fn units(&self) -> Vec<UnitStatus> {
        Vec::new()
    }

    fn set_enabled(&self, unit: &str, _enabled: bool) -> Result<UnitStatus, EnableError> {
        Err(EnableError::UnknownUnit(unit.to_owned()))
    }

    fn executions(&self) -> broadcast::Receiver<Arc<ExecutionRecord>> {
        self.executions.subscribe()
    }

    fn in_flight(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// Vectors from the bytes of a text (each byte adds to one of 64 dimensions), normalised: the
/// search endpoints need an embedder, and the model's quality is not what these targets
/// test (its build would add minutes to every fuzz build).
struct ByteEmbedder;

impl Embedder for ByteEmbedder {
    fn dimensions(&self) -> usize {
        64
    }

    fn model(&self) -> &str {
        "fuzz-bytes"
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|text| {
                let mut vector = vec![0.0f32; 64];
                for (i, byte) in text.bytes().enumerate() {
                    vector[(usize::from(byte) + i) % 64] += 1.0;
                }
                let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                vector.iter_mut().for_each(|x| *x /= norm);
                vector
            })
            .collect())
    }
}

/// Whether the application checks bearer tokens or serves loopback without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No tokens: every request addressed to loopback is served.
    Loopback,
    /// [`ADMIN_TOKEN`] and a read-only token are configured.
    Tokens,
}

struct Application {
    router: axum::Router,
    // Kept so that the live view's tasks run; dropped with the application.
    _tasks: tokio::task::JoinSet<()>,
    _shutdown: tokio::sync::watch::Sender<bool>,
    answered: usize,
}

/// The inspector's application on in-process services, as `Inspector::start` builds it,
/// with the limits tightened so that no input can keep a request waiting.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    auth: Auth,
    application: RefCell<Option<Application>>,
}

impl Api {
    /// An application with `auth`; built on the first request.
    pub fn new(auth: Auth) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self {
            runtime,
            auth,
            application: RefCell::new(None),
        }
    }

    fn build(&self) -> Application {
        self.runtime.block_on(async {
            let mesh = Arc::new(InProcMesh::new());
            let (executions, _) = broadcast::channel(16);
            let services = Services {
                publish: Arc::clone(&mesh) as _,
                observe: mesh,
                memory: Arc::new(InProcMemory::new().with_embedder(Arc::new(ByteEmbedder))),
                runtime: Arc::new(NoUnits { executions }),
                metrics: Some(recorder()),
                audit: AuditTrail::spawn(Arc::new(InProcAudit::new()), "fuzz"),
            };
            let mut config = InspectorConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
            config.limits.rate_per_second = std::num::NonZeroU32::MAX;
            config.limits.rate_burst = std::num::NonZeroU32::MAX;
            config.limits.max_wait = Duration::from_millis(5);
            config.limits.request_timeout = Duration::from_secs(5);
            config.limits.body_limit = 64 * 1024;
            let schema: serde_json::Value =
                serde_json::from_str(ORDER_PLACED_SCHEMA).expect("the example's schema is JSON");
            config.payload_schemas =
                PayloadSchemas::new(BTreeMap::from([("order.placed".to_owned(), schema)]))
                    .expect("the example's schema compiles");
            if self.auth == Auth::Tokens {
                config.tokens = Tokens::new(vec![
                    token(
                        "admin",
                        ADMIN_TOKEN,
                        &[Scope::Read, Scope::Emit, Scope::Admin],
                    ),
                    token(
                        "reader",
                        "fuzz-reader-token-0123456789abcdef",
                        &[Scope::Read],
                    ),
                ])
                .expect("valid tokens");
            }
            let (router, tasks, shutdown) = swarm_inspector::fuzzing::application(config, services)
                .await
                .expect("the application builds");
            Application {
                router,
                _tasks: tasks,
                _shutdown: shutdown,
                answered: 0,
            }
        })
    }

    /// Answers `request` as the server would for a client on loopback: its status and body.
    pub fn answer(&self, mut request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let mut slot = self.application.borrow_mut();
        if slot
            .as_ref()
            .is_none_or(|app| app.answered >= REQUESTS_PER_APPLICATION)
        {
            // The old application (and what it holds) goes before the new one is built.
            *slot = None;
            *slot = Some(self.build());
        }
        let app = slot.as_mut().expect("an application was just built");
        app.answered += 1;
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        let router = app.router.clone();
        self.runtime.block_on(async move {
            let response = router
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("an answer's body reads");
            (status, body.to_vec())
        })
    }
}

/// The process's Prometheus recorder, installed once (inside the runtime, for its upkeep).
fn recorder() -> PrometheusHandle {
    static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
    RECORDER
        .get_or_init(|| swarm_inspector::install_metrics_recorder().expect("a recorder installs"))
        .clone()
}

fn token(name: &str, token: &str, scopes: &[Scope]) -> TokenSpec {
    TokenSpec {
        name: name.to_owned(),
        token: token.to_owned(),
        scopes: scopes.iter().copied().collect(),
    }
}

/// What every answer must be, whatever was asked: never a server error (bad input is the
/// client's fault, and nothing here can be unavailable) but the one a post that waited for a
/// reply gets when none came (no unit runs here), and every error in the API's one shape, with
/// its status repeated.
pub fn check_answer(status: StatusCode, body: &[u8]) {
    let text = || String::from_utf8_lossy(body);
    if status.is_client_error() || status.is_server_error() {
        let error: ErrorBody = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("a {status} without the JSON error ({e}): {}", text()));
        assert_eq!(error.error.status, status.as_u16(), "the status, repeated");
        assert!(!error.error.code.is_empty(), "an error has a code");
        let no_reply = status == StatusCode::GATEWAY_TIMEOUT && error.error.code == "no_reply";
        assert!(
            !status.is_server_error() || no_reply,
            "a server error for a client's input: {status} {}",
            text()
        );
    }
}

/// A stream entry's fields: `field` holding `bytes`, as Redis hands them back.
pub fn entry_fields(field: &str, bytes: &[u8]) -> swarm_mesh::fuzzing::Value {
    use swarm_mesh::fuzzing::Value;
    Value::Array(vec![
        Value::BulkString(field.as_bytes().to_vec()),
        Value::BulkString(bytes.to_vec()),
    ])
}
