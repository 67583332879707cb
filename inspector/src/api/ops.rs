//! The mesh's topology, Prometheus metrics, health.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use swarm_schemas::{UnitState, UnitStatus};
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
    if let Ok(info) = state.group_info().await {
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
    // The backlog's gauges are set as it is read.
    let _ = state.backlog().await;
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// Whether the server is up, whether its units are sound, and what it serves on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when a unit is quarantined or has calls stuck past their deadline
    /// (the process still serves; `problems` names the units).
    pub status: String,
    /// Whether API tokens are checked (with none configured the server serves loopback only).
    pub tokens: bool,
    /// What makes it degraded, one entry per unit; empty when `ok`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<UnitProblem>,
    /// How recording into memory goes, when it goes through a queue and a spool
    /// (`swarm up --postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingHealth>,
    /// The reactors' group on the stream: entries delivered and not yet settled, and entries
    /// not yet delivered (a lag that grows is a group that cannot keep up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshHealth>,
}

/// How recording into memory goes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordingHealth {
    /// Whether the last call to the memory store succeeded.
    pub store_healthy: bool,
    /// Records waiting in the spool for the store.
    pub spooled: u64,
    /// Bytes of the spool, and the most it may hold.
    pub spool_bytes: u64,
    /// The spool's cap, bytes.
    pub spool_max_bytes: u64,
    /// Records held back because the spool is full: while any are, the reactor reads no more
    /// from the mesh (the signals wait there).
    pub held: u64,
    /// Records lost (the spool could not be written, or the store refused them as invalid).
    pub lost: u64,
    /// What is wrong, in words; absent when nothing is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RecordingHealth {
    fn of(status: swarm_memory::WriterStatus) -> Self {
        let mut reason = Vec::new();
        if !status.store_healthy {
            reason.push(format!(
                "the memory store is unavailable ({})",
                status.last_error.as_deref().unwrap_or("no answer")
            ));
        }
        if status.spooled > 0 {
            reason.push(format!(
                "{} execution records wait in the spool ({} of {} bytes)",
                status.spooled, status.spool_bytes, status.spool_max_bytes
            ));
        }
        if status.held > 0 {
            reason.push(format!(
                "the spool is full: {} records are held and the reactor reads no more from the mesh until it has room",
                status.held
            ));
        }
        Self {
            store_healthy: status.store_healthy,
            spooled: status.spooled,
            spool_bytes: status.spool_bytes,
            spool_max_bytes: status.spool_max_bytes,
            held: status.held,
            lost: status.lost,
            reason: (!reason.is_empty()).then(|| reason.join("; ")),
        }
    }
}

/// The signal stream and the reactors' group on it, summed over its partitions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeshHealth {
    /// Entries delivered to a reactor and not yet settled.
    pub pending: u64,
    /// Entries not yet delivered to any reactor.
    pub lag: u64,
    /// Entries in the stream (what the slowest group still needs is kept; a length that keeps
    /// growing is a group that cannot keep up).
    pub length: u64,
    /// Dead letters kept.
    pub dead_letters: u64,
}

/// A unit that degrades the process: quarantined, or with calls stuck past their deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnitProblem {
    /// The unit.
    pub unit: String,
    /// Its state (`quarantined`, or another with stuck calls).
    pub state: UnitState,
    /// Its calls that ran past their deadline since its version loaded or it was enabled.
    pub timeouts: u64,
    /// Its calls abandoned past their deadline that still hold a thread.
    pub stuck_calls: u64,
    /// The same, in words.
    pub reason: String,
}

impl UnitProblem {
    /// The problem of `unit`, if it has one.
    pub fn of(unit: &UnitStatus) -> Option<Self> {
        let quarantined = unit.state == UnitState::Quarantined;
        if !quarantined && unit.stuck_calls == 0 {
            return None;
        }
        let mut reason = Vec::new();
        if quarantined {
            reason.push(format!(
                "quarantined after {} calls ran past their deadline",
                unit.timeouts
            ));
        }
        if unit.stuck_calls > 0 {
            reason.push(format!(
                "{} calls stuck past their deadline (their threads cannot be stopped)",
                unit.stuck_calls
            ));
        }
        Some(Self {
            unit: unit.name.clone(),
            state: unit.state,
            timeouts: unit.timeouts,
            stuck_calls: unit.stuck_calls,
            reason: reason.join("; "),
        })
    }
}

/// Liveness, and whether any unit degrades the process; needs no token.
#[utoipa::path(get, path = "/v1/health", tag = "mesh", responses((status = 200, body = Health)))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    let problems: Vec<UnitProblem> = state
        .runtime
        .units()
        .iter()
        .filter_map(UnitProblem::of)
        .collect();
    let recording = state.memory.writer_status().map(RecordingHealth::of);
    // Health answers even when the mesh does not.
    let backlog = tokio::time::timeout(std::time::Duration::from_secs(1), state.backlog()).await;
    let mesh = backlog.ok().and_then(Result::ok);
    let degraded = !problems.is_empty() || recording.as_ref().is_some_and(|r| r.reason.is_some());
    Json(Health {
        status: if degraded { "degraded" } else { "ok" }.into(),
        tokens: !state.tokens.is_empty(),
        problems,
        recording,
        mesh,
    })
}
