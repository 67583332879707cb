//! Executions from memory: one by id, or those whose signals are most like a text or a signal.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use swarm_memory::{Fusion, MAX_K, MemoryError, OutcomeFilter, SearchQuery};
use swarm_schemas::{ExecutionId, ExecutionRecord, PostSignal};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::error::{ApiError, ErrorBody, Json, Path, Query};

pub(super) fn memory_error(error: MemoryError) -> ApiError {
    match error {
        MemoryError::InvalidQuery(m) => ApiError::bad_request("bad_query", m),
        MemoryError::NoEmbedder => ApiError::unavailable("search_unavailable", error.to_string()),
        MemoryError::Unavailable(_) | MemoryError::Embed(_) => {
            ApiError::unavailable("memory_unavailable", error.to_string()).retry_after(1)
        }
        MemoryError::Rejected(_) | MemoryError::Corrupt(_) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "memory_error",
            error.to_string(),
        ),
    }
}

/// One execution by id.
#[utoipa::path(
    get,
    path = "/v1/executions/{id}",
    tag = "executions",
    params(("id" = uuid::Uuid, Path, description = "The execution's id")),
    responses(
        (status = 200, body = ExecutionRecord),
        (status = 400, description = "Not an execution id", body = ErrorBody),
        (status = 404, description = "No such execution in memory", body = ErrorBody),
        (status = 503, description = "Memory cannot be reached", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<ExecutionId>,
) -> Result<Json<ExecutionRecord>, ApiError> {
    state
        .memory
        .execution(id)
        .await
        .map_err(memory_error)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found("unknown_execution", format!("no execution {id} in memory"))
        })
}

/// A similarity search, as query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimilarParams {
    /// Free text to look for.
    text: Option<String>,
    /// Or a signal, as JSON: `{"kind": "...", "payload": {...}}`.
    signal: Option<String>,
    /// Only signals of this kind.
    kind: Option<String>,
    /// Only executions by this unit.
    unit: Option<String>,
    /// Only `success` or only `failure`.
    #[param(value_type = Option<String>)]
    outcome: Option<OutcomeFilter>,
    /// How many (default 10).
    k: Option<usize>,
    /// `hybrid` (default): the vector neighbours fused with the shapes that hold every word of
    /// the probe; `vector`: by vector alone.
    #[param(value_type = Option<String>)]
    fusion: Option<Fusion>,
}

/// A similarity search, as a body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimilarBody {
    /// Free text to look for.
    text: Option<String>,
    /// Or a signal.
    signal: Option<PostSignal>,
    /// Only signals of this kind.
    kind: Option<String>,
    /// Only executions by this unit.
    unit: Option<String>,
    /// Only `success` or only `failure`.
    #[schema(value_type = Option<String>)]
    outcome: Option<OutcomeFilter>,
    /// How many (default 10).
    k: Option<usize>,
    /// `hybrid` (default): the vector neighbours fused with the shapes that hold every word of
    /// the probe; `vector`: by vector alone.
    #[schema(value_type = Option<String>)]
    fusion: Option<Fusion>,
}

/// One execution found.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SimilarHit {
    /// Cosine similarity of the probe and the execution's signal shape (1 is identical).
    pub similarity: f32,
    /// The shape's fused reciprocal-rank score, what hits are ordered by.
    pub score: f64,
    /// The signal shape that matched.
    pub shape: String,
    /// The execution.
    pub execution: ExecutionRecord,
}

async fn search(state: &AppState, body: SimilarBody) -> Result<Json<Vec<SimilarHit>>, ApiError> {
    let mut query = match (body.text, body.signal) {
        (Some(text), None) if !text.trim().is_empty() => SearchQuery::text(text),
        (None, Some(signal)) => SearchQuery::signal(signal.into_signal()),
        _ => {
            return Err(ApiError::bad_request(
                "bad_query",
                "give exactly one of `text` (not blank) and `signal`",
            ));
        }
    };
    if let Some(kind) = body.kind {
        query = query.kind(kind);
    }
    if let Some(unit) = body.unit {
        query = query.unit(unit);
    }
    if let Some(outcome) = body.outcome {
        query = query.outcome(outcome);
    }
    if let Some(fusion) = body.fusion {
        query = query.fusion(fusion);
    }
    let k = body.k.unwrap_or(10);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("k must be between 1 and {MAX_K}, not {k}"),
        ));
    }
    let hits = state
        .memory
        .search(&query.k(k))
        .await
        .map_err(memory_error)?;
    Ok(Json(
        hits.into_iter()
            .map(|hit| SimilarHit {
                similarity: hit.similarity,
                score: hit.score,
                shape: hit.shape,
                execution: hit.record,
            })
            .collect(),
    ))
}

/// Executions whose signals are most like a text or a signal, best first: the vector neighbours
/// fused by reciprocal rank with the shapes that hold every word of the probe (`fusion=vector`: by
/// vector alone).
#[utoipa::path(
    get,
    path = "/v1/executions/similar",
    tag = "executions",
    params(SimilarParams),
    responses(
        (status = 200, body = Vec<SimilarHit>),
        (status = 400, body = ErrorBody),
        (status = 503, description = "Memory cannot search now", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn similar(
    State(state): State<AppState>,
    Query(params): Query<SimilarParams>,
) -> Result<Json<Vec<SimilarHit>>, ApiError> {
    let signal = params
        .signal
        .map(|text| {
            serde_json::from_str::<PostSignal>(&text).map_err(|e| {
                ApiError::bad_request(
                    "bad_query",
                    format!("signal must be JSON {{\"kind\": ..., \"payload\": {{...}}}}: {e}"),
                )
            })
        })
        .transpose()?;
    search(
        &state,
        SimilarBody {
            text: params.text,
            signal,
            kind: params.kind,
            unit: params.unit,
            outcome: params.outcome,
            k: params.k,
            fusion: params.fusion,
        },
    )
    .await
}

/// The same search with the probe in the body (for long signals).
#[utoipa::path(
    post,
    path = "/v1/executions/similar",
    tag = "executions",
    request_body = SimilarBody,
    responses(
        (status = 200, body = Vec<SimilarHit>),
        (status = 400, body = ErrorBody),
        (status = 503, description = "Memory cannot search now", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn similar_post(
    State(state): State<AppState>,
    Json(body): Json<SimilarBody>,
) -> Result<Json<Vec<SimilarHit>>, ApiError> {
    search(&state, body).await
}
