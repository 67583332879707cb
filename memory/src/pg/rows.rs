//! Reading execution rows back into records.

use sqlx::Row;
use sqlx::postgres::PgRow;
use swarm_schemas::{ExecutionRecord, FailureKind, Outcome, Signal};

use crate::MemoryError;

/// Columns every read selects from `executions e`.
pub(super) const COLUMNS: &str = "e.id, e.signal::text AS signal_text, e.unit, e.unit_version, e.generation, e.attempt, \
    e.success, e.failure_kind, e.error, e.started_at, e.latency_us, e.emitted, e.policy, e.propensity, e.host_calls::text AS host_calls_text";

/// The filters of a search, on `executions e` (parameters $3..$6).
pub(super) const FILTERS: &str = "($3::text IS NULL OR e.unit = $3) AND ($4::boolean IS NULL OR e.success = $4) \
    AND ($5::timestamptz IS NULL OR e.started_at >= $5) AND ($6::timestamptz IS NULL OR e.started_at < $6)";

pub(super) fn corrupt(error: sqlx::Error) -> MemoryError {
    MemoryError::Corrupt(error.to_string())
}

pub(super) fn decode(row: &PgRow) -> Result<ExecutionRecord, MemoryError> {
    let text: String = row.try_get("signal_text").map_err(corrupt)?;
    let signal: Signal =
        serde_json::from_str(&text).map_err(|e| MemoryError::Corrupt(format!("signal: {e}")))?;
    let version: String = row.try_get("unit_version").map_err(corrupt)?;
    let outcome = if row.try_get::<bool, _>("success").map_err(corrupt)? {
        Outcome::Success
    } else {
        let kind: Option<String> = row.try_get("failure_kind").map_err(corrupt)?;
        let kind: FailureKind =
            serde_json::from_value(serde_json::Value::String(kind.unwrap_or_default()))
                .map_err(|e| MemoryError::Corrupt(format!("failure kind: {e}")))?;
        let error: Option<String> = row.try_get("error").map_err(corrupt)?;
        Outcome::Failure {
            kind,
            error: error.unwrap_or_default(),
        }
    };
    let non_negative = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(ExecutionRecord {
        id: row.try_get("id").map_err(corrupt)?,
        signal,
        unit: row.try_get("unit").map_err(corrupt)?,
        unit_version: version
            .parse()
            .map_err(|e| MemoryError::Corrupt(format!("unit version {version:?}: {e}")))?,
        generation: non_negative(row.try_get("generation").map_err(corrupt)?),
        attempt: u32::try_from(row.try_get::<i32, _>("attempt").map_err(corrupt)?).unwrap_or(0),
        outcome,
        started_at: row.try_get("started_at").map_err(corrupt)?,
        latency_us: non_negative(row.try_get("latency_us").map_err(corrupt)?),
        emitted: row.try_get("emitted").map_err(corrupt)?,
        policy: row.try_get("policy").map_err(corrupt)?,
        propensity: row.try_get("propensity").map_err(corrupt)?,
        host_calls: serde_json::from_str(
            &row.try_get::<String, _>("host_calls_text")
                .map_err(corrupt)?,
        )
        .map_err(|e| MemoryError::Corrupt(format!("host calls: {e}")))?,
    })
}
