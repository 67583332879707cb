//! The units: list, enable, disable.

use axum::extract::State;
use swarm_schemas::{UnitStatus, validate_unit_name};

use super::AppState;
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

fn set_enabled(state: &AppState, name: &str, enabled: bool) -> Result<Json<UnitStatus>, ApiError> {
    validate_unit_name(name).map_err(|e| ApiError::bad_request("bad_unit_name", e.to_string()))?;
    state
        .runtime
        .set_enabled(name, enabled)
        .map(Json)
        .map_err(|e| ApiError::not_found("unknown_unit", e.to_string()))
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
    ),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn enable_unit(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UnitStatus>, ApiError> {
    set_enabled(&state, &name, true)
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
    set_enabled(&state, &name, false)
}
