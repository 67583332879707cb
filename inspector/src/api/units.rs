//! The units: list, enable, disable.

use axum::extract::State;
use axum::http::StatusCode;
use swarm_schemas::{UnitStatus, validate_unit_name};

use super::AppState;
use crate::EnableError;
use crate::error::{ApiError, ErrorBody, Json, Path};

/// Every loaded unit: version, generation, state, subscriptions.
#[utoipa::path(
    get,
    path = "/v1/units",
    tag = "units",
    responses((status = 200, body = Vec<UnitStatus>)),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn list_units(State(state): State<AppState>) -> Json<Vec<UnitStatus>> {
    Json(state.runtime.units())
}

async fn set_enabled(
    state: &AppState,
    name: String,
    enabled: bool,
) -> Result<Json<UnitStatus>, ApiError> {
    validate_unit_name(&name).map_err(|e| ApiError::bad_request("bad_unit_name", e.to_string()))?;
    // The unit's on_enable / on_disable run here: unit code, off the async workers.
    let runtime = state.runtime.clone();
    let changed = tokio::task::spawn_blocking(move || runtime.set_enabled(&name, enabled))
        .await
        .map_err(|e| ApiError::unavailable("shutting_down", e.to_string()))?;
    changed.map(Json).map_err(|e| match e {
        EnableError::UnknownUnit(_) => ApiError::not_found("unknown_unit", e.to_string()),
        EnableError::Refused { .. } => {
            ApiError::new(StatusCode::CONFLICT, "enable_refused", e.to_string())
        }
    })
}

/// Enable a unit: it takes signals again.
#[utoipa::path(
    post,
    path = "/v1/units/{name}/enable",
    tag = "units",
    params(("name" = String, Path, description = "The unit's name")),
    responses(
        (status = 200, body = UnitStatus),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No unit of that name is loaded", body = ErrorBody),
        (status = 409, description = "The unit's on_enable refused: it stays disabled", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn enable_unit(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UnitStatus>, ApiError> {
    set_enabled(&state, name, true).await
}

/// Disable a unit: it keeps its place but takes no signals until enabled.
#[utoipa::path(
    post,
    path = "/v1/units/{name}/disable",
    tag = "units",
    params(("name" = String, Path, description = "The unit's name")),
    responses(
        (status = 200, body = UnitStatus),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No unit of that name is loaded", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn disable_unit(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UnitStatus>, ApiError> {
    set_enabled(&state, name, false).await
}
