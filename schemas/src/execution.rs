//! Execution records: what happened when one unit handled one signal once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Signal, SignalId};

/// Identity of one execution; a UUIDv7.
pub type ExecutionId = Uuid;

/// Why an execution failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The unit returned an error.
    Error,
    /// The unit panicked; the panic was caught at the ABI boundary.
    Panic,
    /// The unit returned something the host could not accept (bad JSON, an undeclared kind…).
    BadOutput,
    /// The unit could not be called (unloaded, disabled, instance missing).
    Unavailable,
    /// The call ran past its deadline and was abandoned (the unit's thread may still be
    /// running it: native code cannot be stopped from outside).
    Timeout,
    /// The isolated unit's worker process died during the call (a segmentation fault, an
    /// abort, a stack overflow, memory or CPU time past its limits); the reactor was not
    /// affected and starts the worker again.
    Crash,
}

/// The result of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The unit handled the signal.
    Success,
    /// The unit did not handle the signal.
    Failure {
        /// What kind of failure.
        kind: FailureKind,
        /// Readable text of the error or panic.
        error: String,
    },
}

impl Outcome {
    /// Whether this outcome is a success.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success)
    }
}

/// One unit handling one signal once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionRecord {
    /// Id of this execution; emitted signals name it as their parent.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: ExecutionId,
    /// The signal handled, as the unit saw it (`attempt` included).
    pub signal: Signal,
    /// The unit's manifest name.
    pub unit: String,
    /// The unit's manifest version.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub unit_version: semver::Version,
    /// Which load of the unit's file ran (1 for the first, +1 on every swap).
    pub generation: u64,
    /// 0 for the first try of this signal by this unit.
    pub attempt: u32,
    /// Success or failure, with the error text.
    pub outcome: Outcome,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// How long the call took, in microseconds.
    pub latency_us: u64,
    /// Ids of the signals this execution emitted.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub emitted: Vec<SignalId>,
    /// Name of the dispatch policy that chose this unit.
    pub policy: String,
    /// Probability the policy had of choosing this unit (1.0 when every candidate fires).
    pub propensity: f64,
    /// The host capabilities the call used, one entry per capability used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_calls: Vec<crate::HostCalls>,
}
