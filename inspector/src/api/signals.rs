//! Posting signals, with or without waiting for the reply.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use swarm_schemas::{ExecutionRecord, KindPattern, PostSignal, Signal, validate_kind};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::error::{ApiError, ErrorBody, Json, Query};

/// Options of a post.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostOptions {
    /// Wait up to this many seconds for the first signal that carries the post's correlation
    /// id (the reply, or a dead letter if the swarm gave up on it) and answer with it.
    wait: Option<f64>,
    /// With `wait`: the reply is the first signal of the conversation whose kind matches this
    /// pattern (`order.fulfilled`, `order.*`); a dead letter of the conversation still answers.
    reply: Option<String>,
}

/// A signal accepted onto the mesh.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Posted {
    /// The signal's id.
    pub id: Uuid,
    /// Its conversation; replies carry it.
    pub correlation_id: Uuid,
    /// Its mesh entry id.
    pub entry: String,
}

/// A signal accepted onto the mesh, and the first signal of its conversation that followed; or,
/// when the conversation settled without one, what ran.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Replied {
    /// The posted signal's id.
    pub id: Uuid,
    /// Its conversation.
    pub correlation_id: Uuid,
    /// Its mesh entry id.
    pub entry: String,
    /// The reply; `null` when the conversation settled without one (every signal of it was
    /// handled, and none is the reply asked for).
    pub reply: Option<Signal>,
    /// When it settled without a reply: the executions of the conversation's signals that
    /// memory has, oldest first (memory may take a moment to have the last ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executions: Vec<ExecutionRecord>,
}

/// How often a waiting post asks whether its conversation has settled.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Post a signal onto the mesh.
///
/// The body is checked against the post-signal JSON Schema (`schemas/json/post-signal.schema.json`)
/// and, when one is configured for the kind, the kind's payload schema. With `wait`, the
/// answer is the first signal of the conversation that follows (request/reply), or with
/// `reply=PATTERN` the first whose kind matches it. When the conversation settles without one
/// (every signal of it handled), the answer comes at once, with `reply` null and the
/// executions that ran.
#[utoipa::path(
    post,
    path = "/v1/signals",
    tag = "signals",
    params(PostOptions),
    request_body = PostSignal,
    responses(
        (status = 202, description = "Accepted onto the mesh", body = Posted),
        (status = 200, description = "Accepted, and this reply followed (or the conversation settled without one)", body = Replied),
        (status = 400, description = "Malformed JSON or options", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The signal breaks a schema", body = ErrorBody),
        (status = 429, description = "This client holds as many waiting posts as it may", body = ErrorBody),
        (status = 503, description = "The mesh cannot be reached, or the server holds as many waiting posts as it takes", body = ErrorBody),
        (status = 504, description = "Posted, but no reply came in time", body = ErrorBody),
    ),
    security(("bearer" = ["emit"]))
)]
pub(crate) async fn post_signal(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(options): Query<PostOptions>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let wait = match options.wait {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= state.limits.max_wait.as_secs_f64() => {
            Some(Duration::from_secs_f64(s))
        }
        Some(s) => {
            return Err(ApiError::bad_request(
                "bad_query",
                format!(
                    "wait must be more than 0 and at most {} seconds, not {s}",
                    state.limits.max_wait.as_secs_f64()
                ),
            ));
        }
    };
    let kinds = match (&options.reply, wait) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "reply names the kind to wait for: it needs wait=SECONDS too",
            ));
        }
        (Some(pattern), Some(_)) => Some(KindPattern::parse(pattern).map_err(|e| {
            ApiError::bad_request(
                "bad_query",
                format!("reply `{pattern}` is not a kind pattern: {e}"),
            )
        })?),
    };
    let signal = state.schemas.check(body)?;
    // A waiting post holds a place until its reply or its wait is over.
    let _waiting = match wait {
        Some(_) => Some(
            state
                .waiters
                .admit(peer.ip())
                .map_err(|full| full.error("waiting posts"))?,
        ),
        None => None,
    };
    let correlation_id = signal.correlation_id;
    let mut reply = wait.map(|_| state.hub.await_reply(correlation_id, signal.id, kinds));
    let entry = state
        .publish
        .publish(&state.stream, &signal)
        .await
        .map_err(|e| {
            // Written but not confirmed by the replicas asked for: posting again may deliver
            // the signal twice, which its id tells apart.
            let code = match e {
                swarm_mesh::MeshError::NotReplicated(_) => "not_replicated",
                _ => "mesh_unavailable",
            };
            ApiError::unavailable(code, e.to_string()).retry_after(1)
        })?;
    tracing::debug!(kind = %signal.kind, id = %signal.id, %entry, "signal posted");
    let (Some(reply), Some(wait)) = (reply.as_mut(), wait) else {
        let posted = Posted {
            id: signal.id,
            correlation_id,
            entry: entry.to_string(),
        };
        return Ok((StatusCode::ACCEPTED, Json(posted)).into_response());
    };
    let replied = |reply, executions| {
        Json(Replied {
            id: signal.id,
            correlation_id,
            entry: entry.to_string(),
            reply,
            executions,
        })
        .into_response()
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(answer) = reply.wait(left.min(SETTLE_POLL)).await {
            return Ok(replied(Some(answer), Vec::new()));
        }
        if left <= SETTLE_POLL {
            break;
        }
        let settled = state
            .hub
            .settled(
                state.observe.as_ref(),
                &state.group,
                correlation_id,
                signal.id,
            )
            .await;
        if let Some(signals) = settled {
            // The reply may have come with the last of them.
            if let Some(answer) = reply.wait(Duration::ZERO).await {
                return Ok(replied(Some(answer), Vec::new()));
            }
            return Ok(replied(None, ran(&state, &signals).await));
        }
    }
    Err(ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "no_reply",
        format!(
            "signal {} was posted (entry {entry}) but nothing replied within {} s",
            signal.id,
            wait.as_secs_f64()
        ),
    ))
}

/// The executions of `signals` that memory has, oldest first.
async fn ran(state: &AppState, signals: &[swarm_schemas::SignalId]) -> Vec<ExecutionRecord> {
    let mut records = Vec::new();
    for signal in signals {
        match state.memory.executions_of(*signal).await {
            Ok(found) => records.extend(found),
            Err(error) => tracing::debug!(%error, "executions of a settled conversation"),
        }
    }
    records.sort_by_key(|r| r.started_at);
    records
}

/// JSON Schemas of signal payloads by kind, compiled: posts of those kinds must pass them.
#[derive(Clone, Default)]
pub struct PayloadSchemas {
    by_kind: Arc<BTreeMap<String, jsonschema::Validator>>,
}

impl std::fmt::Debug for PayloadSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_kind.keys()).finish()
    }
}

impl PayloadSchemas {
    /// Compiles a schema per kind; the error names the kind whose schema is not valid.
    pub fn new(schemas: BTreeMap<String, serde_json::Value>) -> Result<Self, BadSchema> {
        let by_kind = schemas
            .into_iter()
            .map(|(kind, schema)| {
                let validator = compile(&kind, &schema)?;
                Ok((kind, validator))
            })
            .collect::<Result<_, BadSchema>>()?;
        Ok(Self {
            by_kind: Arc::new(by_kind),
        })
    }

    /// The kinds that have a schema.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }
}

/// The schemas a posted signal must pass.
pub(crate) struct SignalSchemas {
    post: jsonschema::Validator,
    payloads: PayloadSchemas,
}

/// The post-signal schema, generated from `PostSignal` by the schemas crate.
const POST_SIGNAL_SCHEMA: &str = include_str!("../../../schemas/json/post-signal.schema.json");

/// Why a payload schema was refused.
#[derive(Debug, thiserror::Error)]
#[error("payload schema of `{kind}` is not a valid JSON Schema: {error}")]
pub struct BadSchema {
    /// The kind it was for.
    pub kind: String,
    /// Why.
    pub error: String,
}

fn compile(kind: &str, schema: &serde_json::Value) -> Result<jsonschema::Validator, BadSchema> {
    jsonschema::validator_for(schema).map_err(|e| BadSchema {
        kind: kind.to_owned(),
        error: e.to_string(),
    })
}

fn violations(validator: &jsonschema::Validator, instance: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() { "/" } else { path.as_str() };
            format!("{at}: {e}")
        })
        .collect()
}

impl SignalSchemas {
    /// The post-signal schema and the payload schemas.
    pub(crate) fn new(payloads: PayloadSchemas) -> Result<Self, BadSchema> {
        let post: serde_json::Value =
            serde_json::from_str(POST_SIGNAL_SCHEMA).map_err(|e| BadSchema {
                kind: "(post-signal)".into(),
                error: e.to_string(),
            })?;
        Ok(Self {
            post: compile("(post-signal)", &post)?,
            payloads,
        })
    }

    /// The signal a posted body asks for, or every way it breaks the schemas.
    pub(crate) fn check(&self, body: serde_json::Value) -> Result<Signal, ApiError> {
        let unprocessable = |code, message: String, details| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_details(details)
        };
        let found = violations(&self.post, &body);
        if !found.is_empty() {
            return Err(unprocessable(
                "schema_violation",
                "the body breaks the post-signal schema".into(),
                found,
            ));
        }
        let post: PostSignal = serde_json::from_value(body).map_err(|e| {
            unprocessable(
                "schema_violation",
                format!("the body is not a signal: {e}"),
                Vec::new(),
            )
        })?;
        validate_kind(&post.kind).map_err(|e| {
            unprocessable("bad_kind", format!("kind `{}` {e}", post.kind), Vec::new())
        })?;
        if let Some(key) = &post.partition_key {
            swarm_schemas::validate_partition_key(key)
                .map_err(|e| unprocessable("bad_partition_key", e.to_string(), Vec::new()))?;
        }
        if let Some(schema) = self.payloads.by_kind.get(&post.kind) {
            let payload = serde_json::Value::Object(post.payload.clone());
            let found = violations(schema, &payload);
            if !found.is_empty() {
                return Err(unprocessable(
                    "payload_schema_violation",
                    format!("the payload breaks the schema of `{}`", post.kind),
                    found,
                ));
            }
        }
        Ok(post.into_signal())
    }
}
