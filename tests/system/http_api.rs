//! The HTTP API of the inspector over a real reactor running the example order flow (real
//! unit libraries), the in-process mesh, and an in-process memory with the real embedding
//! model: every endpoint, with good and bad input, tokens and scopes, limits, the websocket.

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use swarm_inspector::{
    ErrorBody, Inspector, InspectorConfig, Limits, PayloadSchemas, Posted, Replied, Services,
    SimilarHit, Tokens, Topology,
};
use swarm_memory::InProcMemory;
use swarm_reactor::Reactor;
use swarm_schemas::{ExecutionRecord, UnitState, UnitStatus};
use swarm_tests::{ORDER_FLOW, TestSwarm, wait_for_async, workspace_root};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

const READ: &str = "reader-token-0123456789";
const EMIT: &str = "emitter-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn tokens() -> Tokens {
    Tokens::from_json(&format!(
        r#"[{{"name": "reader", "token": "{READ}", "scopes": ["read"]}},
            {{"name": "emitter", "token": "{EMIT}", "scopes": ["emit"]}},
            {{"name": "ops", "token": "{ADMIN}", "scopes": ["read", "emit", "admin"]}}]"#
    ))
    .expect("tokens")
}

fn recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| swarm_inspector::install_metrics_recorder().expect("recorder"))
        .clone()
}

struct Served {
    swarm: TestSwarm,
    reactor: Option<Reactor>,
    inspector: Option<Inspector>,
    base: String,
    http: reqwest::Client,
}

impl Served {
    /// The example order flow behind an inspector with the test tokens (or none) and limits.
    async fn start(tokens: Tokens, limits: Limits) -> Self {
        let mut swarm = TestSwarm::new();
        swarm.memory =
            Arc::new(InProcMemory::new().with_embedder(swarm_memory::testkit::embedder()));
        for unit in ORDER_FLOW {
            swarm.deploy(unit, &format!("{unit}.so"));
        }
        let (reactor, report) = swarm.start().await;
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let mut config = InspectorConfig::new("127.0.0.1:0".parse().expect("addr"));
        config.tokens = tokens;
        config.limits = limits;
        config.stream.clone_from(&swarm.config.stream);
        config.group.clone_from(&swarm.config.group);
        let schema = std::fs::read_to_string(
            workspace_root().join("examples/order-flow/schemas/order.placed.schema.json"),
        )
        .expect("example schema");
        config.payload_schemas = PayloadSchemas::new(
            [(
                "order.placed".to_owned(),
                serde_json::from_str(&schema).expect("schema is JSON"),
            )]
            .into(),
        )
        .expect("the example's schema compiles");
        let inspector = Inspector::start(
            config,
            Services {
                publish: Arc::clone(&swarm.mesh) as _,
                observe: Arc::clone(&swarm.mesh) as _,
                memory: Arc::clone(&swarm.memory) as _,
                runtime: Arc::new(reactor.handle()),
                metrics: Some(recorder()),
                audit: reactor.handle().audit().clone(),
            },
        )
        .await
        .expect("inspector starts");
        let base = format!("http://{}", inspector.local_addr());
        Self {
            swarm,
            reactor: Some(reactor),
            inspector: Some(inspector),
            base,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(token)
    }

    fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(token)
    }

    /// Stops the reactor alone: the inspector keeps serving, and nothing reads the mesh.
    async fn stop_reactor(&mut self) {
        if let Some(reactor) = self.reactor.take() {
            reactor.stop().await;
        }
    }

    /// Posts `body` to `/v1/signals?{query}` with the emit token; the answer, which must be 200
    /// with a `Replied` body.
    async fn replied(&self, query: &str, body: &Value) -> Replied {
        let response = self
            .post(&format!("/v1/signals?{query}"), EMIT)
            .json(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("replied")
    }

    async fn stop(mut self) {
        if let Some(inspector) = self.inspector.take() {
            inspector.stop().await;
        }
        if let Some(reactor) = self.reactor.take() {
            reactor.stop().await;
        }
    }
}

fn order(id: u64) -> Value {
    json!({"kind": "order.placed", "payload": {"id": id, "items": [{"sku": "tea", "qty": 2}]}})
}

/// Sends a request and checks it is answered with `status` and a JSON error of `code`.
/// [`expect_error`] with 422 and `code`, whose details name a place at or below `pointer` (a
/// JSON pointer).
async fn expect_violation_at(
    request: reqwest::RequestBuilder,
    code: &str,
    pointer: &str,
) -> ErrorBody {
    let body = expect_error(request, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    assert!(
        body.error.details.iter().any(|d| d.starts_with(pointer)),
        "{pointer}: {:?}",
        body.error.details
    );
    body
}

async fn expect_error(
    request: reqwest::RequestBuilder,
    status: StatusCode,
    code: &str,
) -> ErrorBody {
    let response = request.send().await.expect("answered");
    assert_eq!(response.status(), status, "status for code {code}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: ErrorBody = response.json().await.expect("a JSON error");
    assert_eq!(body.error.code, code, "{}", body.error.message);
    assert_eq!(body.error.status, status.as_u16());
    assert!(!body.error.message.is_empty());
    body
}

async fn healthy(served: &Served) {
    let response = served
        .http
        .get(served.url("/v1/health"))
        .send()
        .await
        .expect("health answers");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posted_signals_run_and_are_found_by_id_and_similarity() {
    let served = Served::start(tokens(), Limits::default()).await;
    let response = served
        .post("/v1/signals", EMIT)
        .json(&order(1))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let posted: Posted = response.json().await.expect("posted");
    assert_eq!(posted.correlation_id, posted.id);
    assert!(served.swarm.settled(Duration::from_secs(10)).await);

    // Every execution of the posted order is in memory; find one by similarity, then by id.
    let hits: Vec<SimilarHit> = wait_for_async(Duration::from_secs(10), async || {
        let hits: Vec<SimilarHit> = served
            .get(
                "/v1/executions/similar?text=a+customer+placed+an+order&k=5",
                READ,
            )
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        hits.iter()
            .any(|h| h.execution.signal.id == posted.id)
            .then_some(hits)
    })
    .await
    .expect("the posted order is found by similarity");
    assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
    let hit = hits
        .iter()
        .find(|h| h.execution.signal.id == posted.id)
        .expect("hit");
    assert_eq!(hit.execution.unit, "order-validate");
    let response = served
        .get(&format!("/v1/executions/{}", hit.execution.id), READ)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let record: ExecutionRecord = response.json().await.expect("record");
    assert_eq!(record.id, hit.execution.id);

    // By a signal, in the query and in a body; with filters.
    let probe = serde_json::to_string(&order(99)).expect("probe");
    let by_signal: Vec<SimilarHit> = served
        .get("/v1/executions/similar", READ)
        .query(&[
            ("signal", probe.as_str()),
            ("kind", "order.placed"),
            ("k", "3"),
        ])
        .send()
        .await
        .expect("similar")
        .json()
        .await
        .expect("hits");
    assert!(!by_signal.is_empty() && by_signal.len() <= 3);
    assert!(
        by_signal
            .iter()
            .all(|h| h.execution.signal.kind == "order.placed")
    );
    let by_body: Vec<SimilarHit> = served
        .post("/v1/executions/similar", READ)
        .json(&json!({"signal": order(99), "unit": "order-price", "outcome": "success"}))
        .send()
        .await
        .expect("similar")
        .json()
        .await
        .expect("hits");
    assert!(!by_body.is_empty());
    assert!(by_body.iter().all(|h| h.execution.unit == "order-price"));

    // Bad questions.
    let unknown = uuid::Uuid::now_v7();
    expect_error(
        served.get(&format!("/v1/executions/{unknown}"), READ),
        StatusCode::NOT_FOUND,
        "unknown_execution",
    )
    .await;
    expect_error(
        served.get("/v1/executions/not-a-uuid", READ),
        StatusCode::BAD_REQUEST,
        "bad_path",
    )
    .await;
    expect_error(
        served.get("/v1/executions/similar", READ),
        StatusCode::BAD_REQUEST,
        "bad_query",
    )
    .await;
    expect_error(
        served.get("/v1/executions/similar?text=x&k=0", READ),
        StatusCode::BAD_REQUEST,
        "bad_query",
    )
    .await;
    expect_error(
        served.get("/v1/executions/similar?text=x&k=many", READ),
        StatusCode::BAD_REQUEST,
        "bad_query",
    )
    .await;
    expect_error(
        served.get("/v1/executions/similar?text=x&outcome=maybe", READ),
        StatusCode::BAD_REQUEST,
        "bad_query",
    )
    .await;
    expect_error(
        served.get("/v1/executions/similar?signal=%7Boops", READ),
        StatusCode::BAD_REQUEST,
        "bad_query",
    )
    .await;
    expect_error(
        served.get("/v1/executions/similar?text=x&surprise=1", READ),
        StatusCode::BAD_REQUEST,
        "bad_query",
    )
    .await;
    expect_error(
        served
            .post("/v1/executions/similar", READ)
            .json(&json!({"text": "x", "signal": order(1)})),
        StatusCode::BAD_REQUEST,
        "bad_query",
    )
    .await;
    healthy(&served).await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_can_wait_for_its_reply() {
    let served = Served::start(tokens(), Limits::default()).await;
    let replied = served.replied("wait=10", &order(7)).await;
    assert_eq!(
        replied.reply.as_ref().expect("a reply").kind,
        "order.validated"
    );
    assert_eq!(
        replied.reply.as_ref().expect("a reply").correlation_id,
        replied.correlation_id
    );
    assert_ne!(replied.reply.as_ref().expect("a reply").id, replied.id);

    // Joining a conversation: the reply carries the given correlation id.
    let conversation = uuid::Uuid::now_v7();
    let mut joined = order(8);
    joined["correlation_id"] = json!(conversation);
    let replied = served.replied("wait=10", &joined).await;
    assert_eq!(replied.correlation_id, conversation);
    assert_eq!(
        replied.reply.as_ref().expect("a reply").correlation_id,
        conversation
    );

    // Asked to travel in MessagePack: the signal and its reply do; the units answer as ever.
    let mut packed = order(9);
    packed["encoding"] = json!("msgpack");
    let replied = served.replied("wait=10", &packed).await;
    assert_eq!(
        replied.reply.as_ref().expect("a reply").kind,
        "order.validated"
    );
    let on_mesh = served.swarm.signals(&served.swarm.config.stream).await;
    let encoding_of = |id: uuid::Uuid| {
        on_mesh
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.encoding)
            .expect("on the mesh")
    };
    assert_eq!(
        encoding_of(replied.id),
        swarm_schemas::Encoding::MessagePack
    );
    assert_eq!(
        encoding_of(replied.reply.as_ref().expect("a reply").id),
        swarm_schemas::Encoding::MessagePack
    );

    // Waiting for a kind: the answer is the conversation's first signal of that kind, however
    // many came before it; a pattern takes the first that matches.
    let fulfilled = served
        .replied("wait=10&reply=order.fulfilled", &order(10))
        .await;
    assert_eq!(
        fulfilled.reply.as_ref().expect("a reply").kind,
        "order.fulfilled"
    );
    assert_eq!(
        fulfilled.reply.as_ref().expect("a reply").correlation_id,
        fulfilled.correlation_id
    );
    let any_order = served.replied("wait=10&reply=order.*", &order(11)).await;
    assert_eq!(
        any_order.reply.as_ref().expect("a reply").kind,
        "order.validated",
        "not the request itself"
    );
    // Waits out of range, and a reply kind without a wait or that is not a pattern.
    for query in [
        "wait=0",
        "wait=-1",
        "wait=61",
        "wait=soon",
        "wait=NaN",
        "reply=order.fulfilled",
        "wait=5&reply=Order..x",
        "wait=5&reply=",
    ] {
        expect_error(
            served
                .post(&format!("/v1/signals?{query}"), EMIT)
                .json(&order(1)),
            StatusCode::BAD_REQUEST,
            "bad_query",
        )
        .await;
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_whose_conversation_settles_without_its_reply_is_answered_at_once() {
    let mut served = Served::start(tokens(), Limits::default()).await;
    // The order flow ends at order.fulfilled: nothing ever sends order.shipped.
    let started = std::time::Instant::now();
    let settled = served
        .replied("wait=30&reply=order.shipped", &order(21))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered when the conversation settled, not after the wait: {:?}",
        started.elapsed()
    );
    assert!(settled.reply.is_none(), "{:?}", settled.reply);
    let units: Vec<&str> = settled.executions.iter().map(|r| r.unit.as_str()).collect();
    assert!(units.contains(&"order-validate"), "{units:?}");
    assert!(
        settled
            .executions
            .iter()
            .all(|r| r.signal.correlation_id == settled.correlation_id),
        "only the conversation's executions"
    );
    assert!(
        settled
            .executions
            .windows(2)
            .all(|w| w[0].started_at <= w[1].started_at)
    );

    // Nobody takes this kind: it is read and acknowledged, nothing runs, and the post is
    // answered with no reply and no executions.
    let settled = served
        .replied("wait=30", &json!({"kind": "nobody.listens", "payload": {}}))
        .await;
    assert!(settled.reply.is_none() && settled.executions.is_empty());

    // With no reactor reading, nothing settles: the post times out with the signal's id, and
    // the signal is on the mesh.
    served.stop_reactor().await;
    let body = expect_error(
        served
            .post("/v1/signals?wait=0.5", EMIT)
            .json(&json!({"kind": "nobody.listens", "payload": {"n": 2}})),
        StatusCode::GATEWAY_TIMEOUT,
        "no_reply",
    )
    .await;
    assert!(
        body.error.message.contains("was posted"),
        "{}",
        body.error.message
    );
    let kinds: Vec<String> = served
        .swarm
        .signals(&served.swarm.config.stream)
        .await
        .into_iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "nobody.listens").count(), 2);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_posts_get_clear_json_errors_and_the_server_keeps_serving() {
    let limits = Limits {
        body_limit: 64 * 1024,
        ..Limits::default()
    };
    let served = Served::start(tokens(), limits).await;
    let post = || served.post("/v1/signals", EMIT);
    expect_error(
        post()
            .header("content-type", "application/json")
            .body("{\"kind\": "),
        StatusCode::BAD_REQUEST,
        "bad_json",
    )
    .await;
    expect_error(
        post().body("{}"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect_violation_at(
        post().json(&json!({"kind": "order.placed", "payload": "not an object"})),
        "schema_violation",
        "/payload",
    )
    .await;
    expect_error(
        post().json(&json!({"kind": "order.placed", "payload": {}, "surprise": 1})),
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_violation",
    )
    .await;
    expect_error(
        post().json(&json!({"payload": {}})),
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_violation",
    )
    .await;
    expect_violation_at(
        post().json(&json!({"kind": "blob.put", "payload": {}, "encoding": "xml"})),
        "schema_violation",
        "/encoding",
    )
    .await;
    expect_error(
        post().json(&json!({"kind": "Order Placed!", "payload": {}})),
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_kind",
    )
    .await;
    // A partition key: not empty, at most 255 bytes (200 two-byte characters are 400).
    expect_violation_at(
        post().json(&json!({"kind": "blob.put", "payload": {}, "partition_key": ""})),
        "schema_violation",
        "/partition_key",
    )
    .await;
    let body = expect_error(
        post().json(&json!({"kind": "blob.put", "payload": {}, "partition_key": "é".repeat(200)})),
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_partition_key",
    )
    .await;
    assert!(
        body.error.message.contains("255 bytes"),
        "{}",
        body.error.message
    );
    // The kind's payload schema: qty must be a positive integer, and nothing extra.
    let body = expect_violation_at(
        post().json(&json!({"kind": "order.placed", "payload": {"id": 1, "items": [{"sku": "tea", "qty": 0}], "x": 1}})),
        "payload_schema_violation",
        "/items/0/qty",
    )
    .await;
    assert!(body.error.details.len() >= 2, "{:?}", body.error.details);
    // Too big: refused before it is read whole.
    let huge = json!({"kind": "blob.put", "payload": {"data": "x".repeat(200 * 1024)}});
    expect_error(
        post().json(&huge),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    // Unknown endpoints and methods.
    expect_error(
        served.get("/v1/nothing", READ),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        served.get("/v1/signals", READ),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    // None of it reached the mesh; the server still serves and good posts still work.
    assert!(
        served
            .swarm
            .signals(&served.swarm.config.stream)
            .await
            .is_empty()
    );
    healthy(&served).await;
    // A post with a partition key is taken.
    let accepted = post()
        .json(&json!({"kind": "blob.put", "payload": {}, "partition_key": "customer-7"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let response = post().json(&order(3)).send().await.expect("post");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let posted = served.swarm.signals(&served.swarm.config.stream).await;
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[0].partition_key.as_deref(), Some("customer-7"));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_and_scopes_guard_every_endpoint() {
    let served = Served::start(tokens(), Limits::default()).await;
    let unit = "order-price";
    let cases: Vec<(reqwest::Method, String, &str)> = vec![
        (reqwest::Method::GET, "/v1/units".into(), "read"),
        (reqwest::Method::GET, "/v1/mesh/topology".into(), "read"),
        (reqwest::Method::GET, "/metrics".into(), "read"),
        (
            reqwest::Method::GET,
            "/v1/executions/similar?text=x".into(),
            "read",
        ),
        (
            reqwest::Method::GET,
            format!("/v1/executions/{}", uuid::Uuid::now_v7()),
            "read",
        ),
        (reqwest::Method::POST, "/v1/signals".into(), "emit"),
        (
            reqwest::Method::POST,
            format!("/v1/units/{unit}/disable"),
            "admin",
        ),
        (
            reqwest::Method::POST,
            format!("/v1/units/{unit}/enable"),
            "admin",
        ),
    ];
    for (method, path, scope) in &cases {
        let request = || {
            served
                .http
                .request(method.clone(), served.url(path))
                .json(&order(1))
        };
        expect_error(request(), StatusCode::UNAUTHORIZED, "missing_token").await;
        expect_error(
            request().bearer_auth("wrong-token-0123456789"),
            StatusCode::UNAUTHORIZED,
            "bad_token",
        )
        .await;
        expect_error(
            request().header("authorization", "Basic abc"),
            StatusCode::UNAUTHORIZED,
            "bad_token",
        )
        .await;
        // A token without the scope is forbidden; one with it gets through.
        let (without, with) = match *scope {
            "read" => (EMIT, READ),
            "emit" => (READ, EMIT),
            _ => (READ, ADMIN),
        };
        expect_error(
            request().bearer_auth(without),
            StatusCode::FORBIDDEN,
            "missing_scope",
        )
        .await;
        let status = request()
            .bearer_auth(with)
            .send()
            .await
            .expect("answered")
            .status();
        assert!(
            status.is_success() || status == StatusCode::NOT_FOUND,
            "{method} {path} with a `{scope}` token: {status}"
        );
    }
    // The page, the document and health need no token.
    for path in ["/", "/v1/openapi.json", "/v1/health", "/assets/app.js"] {
        let response = served
            .http
            .get(served.url(path))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn units_are_listed_disabled_and_enabled() {
    let served = Served::start(tokens(), Limits::default()).await;
    let units: Vec<UnitStatus> = served
        .get("/v1/units", READ)
        .send()
        .await
        .expect("units")
        .json()
        .await
        .expect("list");
    let mut names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
    names.sort_unstable();
    let mut expected = ORDER_FLOW.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(
        units
            .iter()
            .all(|u| u.generation == 1 && u.state == UnitState::Ready)
    );
    let validate = units
        .iter()
        .find(|u| u.name == "order-validate")
        .expect("validate");
    assert_eq!(validate.version, "1.0.0");
    assert_eq!(validate.subscribes[0].as_str(), "order.placed");

    let disabled: UnitStatus = served
        .post("/v1/units/order-validate/disable", ADMIN)
        .send()
        .await
        .expect("disable")
        .json()
        .await
        .expect("status");
    assert_eq!(disabled.state, UnitState::Disabled);
    // A disabled unit takes nothing: the order settles with no reply and nothing run, and the
    // post is told so at once.
    let settled = served.replied("wait=30", &order(1)).await;
    assert!(
        settled.reply.is_none() && settled.executions.is_empty(),
        "{settled:?}"
    );
    let enabled: UnitStatus = served
        .post("/v1/units/order-validate/enable", ADMIN)
        .send()
        .await
        .expect("enable")
        .json()
        .await
        .expect("status");
    assert_eq!(enabled.state, UnitState::Ready);
    let response = served
        .post("/v1/signals?wait=10", EMIT)
        .json(&order(2))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);

    expect_error(
        served.post("/v1/units/no-such-unit/enable", ADMIN),
        StatusCode::NOT_FOUND,
        "unknown_unit",
    )
    .await;
    expect_error(
        served.post("/v1/units/Bad_Name/disable", ADMIN),
        StatusCode::BAD_REQUEST,
        "bad_unit_name",
    )
    .await;
    expect_error(
        served.get("/v1/units/order-validate/enable", ADMIN),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topology_metrics_and_the_openapi_document() {
    let served = Served::start(tokens(), Limits::default()).await;
    for id in 0..5 {
        let response = served
            .post("/v1/signals", EMIT)
            .json(&order(id))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    assert!(served.swarm.settled(Duration::from_secs(10)).await);
    let topology: Topology = wait_for_async(Duration::from_secs(5), async || {
        let t: Topology = served
            .get("/v1/mesh/topology", READ)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        t.edges
            .iter()
            .any(|e| {
                e.source == "unit:order-price" && e.target == "kind:order.priced" && e.count == 5
            })
            .then_some(t)
    })
    .await
    .expect("the emitted signals reach the topology");
    let edge = |source: &str, target: &str| {
        topology
            .edges
            .iter()
            .find(|e| e.source == source && e.target == target)
            .unwrap_or_else(|| panic!("no edge {source} -> {target}: {:?}", topology.edges))
    };
    let takes = edge("kind:order.placed", "unit:order-validate");
    assert_eq!((takes.count, takes.failures), (5, 0));
    assert!(takes.rate > 0.0);
    assert_eq!(edge("unit:order-validate", "kind:order.validated").count, 5);
    // The competing fulfilment units: each order ships once, by one of them.
    let shipped = edge("kind:order.priced", "unit:fulfil-express").count
        + edge("kind:order.priced", "unit:fulfil-standard").count;
    assert!(shipped >= 5, "{shipped}");
    assert_eq!(topology.units.len(), 4);
    assert_eq!(topology.pending, Some(0));
    assert_eq!(topology.lag, Some(0));
    let placed = topology
        .kinds
        .iter()
        .find(|k| k.kind == "order.placed")
        .expect("kind");
    assert_eq!(placed.signals, 5);

    let metrics = served.get("/metrics", READ).send().await.expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.expect("text");
    for needle in [
        "swarm_executions_total{unit=\"order-validate\",outcome=\"success\"}",
        "swarm_unit_latency_seconds_bucket{unit=\"order-price\"",
        "swarm_signals_in_total",
        "swarm_signals_out_total",
        "swarm_stream_pending",
        "swarm_stream_lag",
        "swarm_stream_length",
        "swarm_dead_letters_kept",
        "swarm_unit_loads_total",
    ] {
        assert!(text.contains(needle), "no {needle} in\n{text}");
    }

    let document: Value = served
        .http
        .get(served.url("/v1/openapi.json"))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    for (path, method) in [
        ("/v1/signals", "post"),
        ("/v1/units", "get"),
        ("/v1/units/{name}/enable", "post"),
        ("/v1/units/{name}/disable", "post"),
        ("/v1/executions/{id}", "get"),
        ("/v1/executions/similar", "get"),
        ("/v1/executions/similar", "post"),
        ("/v1/mesh/topology", "get"),
        ("/v1/live", "get"),
        ("/metrics", "get"),
        ("/v1/health", "get"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    for schema in [
        "Signal",
        "PostSignal",
        "ExecutionRecord",
        "UnitStatus",
        "Topology",
        "ErrorBody",
        "LiveEvent",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "no schema {schema}"
        );
    }
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_security_headers_and_loopback_without_tokens() {
    let limits = Limits {
        rate_per_second: NonZeroU32::new(2).expect("2"),
        rate_burst: NonZeroU32::new(3).expect("3"),
        ..Limits::default()
    };
    let served = Served::start(tokens(), limits).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            served
                .get("/v1/units", READ)
                .send()
                .await
                .expect("answered")
                .status(),
        );
    }
    assert!(
        statuses[..3].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let limited = served
        .get("/v1/units", READ)
        .send()
        .await
        .expect("answered");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let response = served
        .get("/v1/units", READ)
        .send()
        .await
        .expect("answered");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "served again after a pause"
    );
    for (header, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(response.headers()[header], value);
    }
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .is_ok_and(|csp| csp.contains("default-src 'self'"))
    );
    served.stop().await;

    // With no token configured, an address on every interface becomes loopback.
    let mesh = Arc::new(swarm_mesh::InProcMesh::new());
    let swarm = TestSwarm::new();
    let (reactor, _) = swarm.start().await;
    let services = Services {
        publish: Arc::clone(&mesh) as _,
        observe: mesh,
        memory: Arc::new(InProcMemory::new()),
        runtime: Arc::new(reactor.handle()),
        metrics: None,
        audit: reactor.handle().audit().clone(),
    };
    let open = Inspector::start(
        InspectorConfig::new("0.0.0.0:0".parse().expect("addr")),
        services.clone(),
    )
    .await
    .expect("starts");
    assert!(open.loopback_only());
    assert!(open.local_addr().ip().is_loopback());
    open.stop().await;
    let mut guarded = InspectorConfig::new("0.0.0.0:0".parse().expect("addr"));
    guarded.tokens = tokens();
    let guarded = Inspector::start(guarded, services).await.expect("starts");
    assert!(!guarded.loopback_only());
    assert!(guarded.local_addr().ip().is_unspecified());
    guarded.stop().await;
    reactor.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    served: &Served,
    query: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> Result<Socket, tungstenite::Error> {
    let url = format!(
        "ws://{}/v1/live{query}",
        served.base.trim_start_matches("http://")
    );
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next event on `socket` that `wanted` accepts, within 10 s.
async fn next_event(socket: &mut Socket, mut wanted: impl FnMut(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let message = socket.next().await.expect("open").expect("message");
            if let tungstenite::Message::Text(text) = message {
                let event: Value = serde_json::from_str(&text).expect("JSON event");
                if wanted(&event) {
                    return event;
                }
            }
        }
    })
    .await
    .expect("the event arrives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signals_posted_over_http_show_up_on_the_live_websocket() {
    let served = Served::start(tokens(), Limits::default()).await;
    let mut all = connect(&served, "", Some(READ), None)
        .await
        .expect("connects");
    let mut prices = connect(
        &served,
        "?events=executions&unit=order-price",
        Some(READ),
        None,
    )
    .await
    .expect("connects");
    // A browser passes the token in the query and sends its own origin.
    let origin = served.base.clone();
    let mut browser = connect(
        &served,
        &format!("?kind=order.*&access_token={READ}"),
        None,
        Some(&origin),
    )
    .await
    .expect("connects");

    let posted: Posted = served
        .post("/v1/signals", EMIT)
        .json(&order(42))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("posted");
    let id = posted.id.to_string();
    let event = next_event(&mut all, |e| {
        e["type"] == "signal" && e["signal"]["id"] == id.as_str()
    })
    .await;
    assert_eq!(event["signal"]["kind"], "order.placed");
    assert_eq!(event["dead_letter"], false);
    let execution = next_event(&mut all, |e| {
        e["type"] == "execution" && e["execution"]["signal"]["id"] == id.as_str()
    })
    .await;
    assert_eq!(execution["execution"]["unit"], "order-validate");
    next_event(&mut browser, |e| {
        e["type"] == "signal" && e["signal"]["id"] == id.as_str()
    })
    .await;
    // The filtered watcher sees order-price's execution and nothing else.
    let priced = next_event(&mut prices, |_| true).await;
    assert_eq!(priced["type"], "execution");
    assert_eq!(priced["execution"]["unit"], "order-price");

    // Refused upgrades: no token, another site's origin, a bad filter.
    for (query, token, origin, status) in [
        ("", None, None, 401),
        ("", Some(EMIT), None, 403),
        ("", Some(READ), Some("https://evil.example"), 403),
        ("?kind=Bad%20Kind", Some(READ), None, 400),
        ("?events=everything", Some(READ), None, 400),
    ] {
        match connect(&served, query, token, origin).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(
                    response.status().as_u16(),
                    status,
                    "{query} {token:?} {origin:?}"
                );
                let body: ErrorBody =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                        .expect("a JSON error");
                assert_eq!(body.error.status, status);
            }
            Ok(_) => panic!("{query} {token:?} {origin:?} was let in"),
            Err(other) => panic!("{query}: {other}"),
        }
    }
    healthy(&served).await;
    served.stop().await;
}
