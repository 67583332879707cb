//! The audit trail: every admin call is recorded (who, from where, what, how it ended), and
//! admins read the trail back.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use swarm_memory::{AuditQuery, MAX_AUDIT_READ};
use swarm_schemas::{AuditAction, AuditEntry, validate_unit_name};
use utoipa::IntoParams;

use super::AppState;
use crate::auth::presented;
use crate::error::{ApiError, ErrorBody, Json, Query};

/// Entries returned when the query sets no limit.
const DEFAULT_LIMIT: usize = 100;

/// What an admin call at `path` does, and to which unit.
fn admin_action(path: &str) -> (AuditAction, Option<&str>) {
    let unit_call = path
        .strip_prefix("/v1/units/")
        .and_then(|rest| rest.split_once('/'));
    match unit_call {
        Some((unit, "enable")) => (AuditAction::Enable, Some(unit)),
        Some((unit, "disable")) => (AuditAction::Disable, Some(unit)),
        _ => (AuditAction::Http, None),
    }
}

/// Middleware on the admin routes, outside the token check: every call that changes
/// something (any method but GET) is recorded with the caller's token name, address and
/// outcome — refused ones too.
pub(crate) async fn record_admin_calls(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::GET {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let caller = state
        .tokens
        .caller(presented(&request).ok().flatten().as_deref());
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string());
    let response = next.run(request).await;
    let status = response.status();
    let (action, unit) = admin_action(&path);
    let outcome = if status.is_success() {
        "ok".to_owned()
    } else {
        format!("refused: {status}")
    };
    state.audit.record(
        &caller,
        client,
        action,
        unit,
        &outcome,
        format!("{method} {path} answered {}", status.as_u16()),
    );
    response
}

/// Which audit entries to read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Only entries before this `seq`: the next page.
    before: Option<i64>,
    /// Only entries about this unit.
    unit: Option<String>,
    /// Only entries of this action (`load`, `swap`, `refuse`, `rollback`, `remove`, `enable`,
    /// `disable`, `quarantine`, `trust`, `http`).
    #[param(value_type = Option<String>)]
    action: Option<AuditAction>,
    /// How many (default 100, at most 10,000).
    limit: Option<usize>,
}

/// The audit trail, newest first: loads, swaps, refusals and rollbacks, removals, enables and
/// disables, quarantines, trust changes, and every admin call — who, from where, when, how it
/// ended. Shared by every reactor on the same PostgreSQL.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "units",
    params(AuditParams),
    responses(
        (status = 200, body = Vec<AuditEntry>),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 503, description = "The audit trail cannot be read", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn read_audit(
    State(state): State<AppState>,
    Query(params): Query<AuditParams>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    if let Some(unit) = &params.unit {
        validate_unit_name(unit)
            .map_err(|e| ApiError::bad_request("bad_unit_name", e.to_string()))?;
    }
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_AUDIT_READ {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {MAX_AUDIT_READ}"),
        ));
    }
    let query = AuditQuery {
        before: params.before,
        unit: params.unit,
        action: params.action,
        limit,
    };
    state
        .audit
        .log()
        .read(&query)
        .await
        .map(Json)
        .map_err(super::executions::memory_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_calls_are_named_by_what_they_do() {
        assert_eq!(
            admin_action("/v1/units/echo/disable"),
            (AuditAction::Disable, Some("echo"))
        );
        assert_eq!(
            admin_action("/v1/units/echo/enable"),
            (AuditAction::Enable, Some("echo"))
        );
        assert_eq!(admin_action("/v1/units/echo"), (AuditAction::Http, None));
        assert_eq!(admin_action("/v1/other"), (AuditAction::Http, None));
    }
}
