//! The mesh's topology, Prometheus metrics, health.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use crate::error::{ApiError, Json};
use crate::topology::Topology;

/// Units and signal kinds as a graph, with rates, failures and pending signals per edge.
#[utoipa::path(
    get,
    path = "/v1/mesh/topology",
    tag = "mesh",
    responses((status = 200, body = Topology)),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn topology(State(state): State<AppState>) -> Json<Topology> {
    let units = state.runtime.units();
    let in_flight = state.runtime.in_flight();
    let mut topology = state.hub.traffic().topology(&units, &in_flight);
    // The group's backlog; left out (null) when the mesh cannot be asked now.
    if let Ok(info) = state.mesh.group_info(&state.stream, &state.group).await {
        topology.pending = Some(info.pending);
        topology.lag = Some(info.lag);
    }
    Json(topology)
}

/// Metrics in the Prometheus text format: per-unit latency histograms, executions, signals in
/// and out, pending, lag, dead letters, swaps, circuit breakers.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "mesh",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(handle) = &state.metrics else {
        return Err(ApiError::not_found(
            "metrics_disabled",
            "this server was started without a metrics recorder",
        ));
    };
    if let Ok(info) = state.mesh.group_info(&state.stream, &state.group).await {
        metrics::gauge!("swarm_stream_pending").set(info.pending as f64);
        metrics::gauge!("swarm_stream_lag").set(info.lag as f64);
    }
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// Whether the server is up, and what it serves on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when answered.
    pub status: String,
    /// Whether API tokens are checked (with none configured the server serves loopback only).
    pub tokens: bool,
}

/// Liveness; needs no token.
#[utoipa::path(get, path = "/v1/health", tag = "mesh", responses((status = 200, body = Health)))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        tokens: !state.tokens.is_empty(),
    })
}
