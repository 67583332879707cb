//! What a loaded unit looks like from outside: `swarm units`, the HTTP API, the inspector.

use serde::{Deserialize, Serialize};

use crate::{DispatchPolicy, KindPattern};

/// Whether a loaded unit takes signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Loaded and enabled: it gets the signals it subscribes to.
    Ready,
    /// Loaded but disabled: it gets nothing until enabled again.
    Disabled,
    /// Its calls ran past their deadline too often: it gets no signals (they are dead-lettered
    /// for it) until a new version is swapped in or it is enabled again.
    Quarantined,
}

impl UnitState {
    /// The state's name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Disabled => "disabled",
            Self::Quarantined => "quarantined",
        }
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A loaded unit: what serves, since when, and the last load that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitStatus {
    /// Manifest name.
    pub name: String,
    /// Version serving.
    pub version: String,
    /// Generation serving: 1 for the first load of the unit, +1 on every swap.
    pub generation: u64,
    /// Whether it takes signals.
    pub state: UnitState,
    /// Kind patterns of the signals it reacts to.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub subscribes: Vec<KindPattern>,
    /// Kind patterns of the signals it may emit.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub emits: Vec<KindPattern>,
    /// Its manifest's default dispatch policy.
    pub dispatch: DispatchPolicy,
    /// The file it was loaded from.
    pub file: String,
    /// Why the last attempt to load a new version of it failed, if it did (the previous
    /// version keeps serving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Calls abandoned past their deadline since this version was loaded or last enabled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeouts: u64,
    /// Calls abandoned past their deadline that are still running on a thread of the
    /// process (they cannot be stopped; their library is never unloaded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stuck_calls: u64,
    /// Whether it runs in a worker process of its own (`--isolate`), where a crash or a hang
    /// fails its calls and not the reactor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether a unit may take signals, as every reactor on one mesh applies it: kept on the
/// mesh's medium (Redis, or in-process), applied at start and as it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UnitControl {
    /// Enabled (takes signals) or disabled by an operator.
    pub enabled: bool,
    /// The version quarantined for hanging, by its library's SHA-256 digest (hex); a reactor
    /// serving that version keeps it from signals. A new version is not quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    /// Who made the change: the reactor process (its consumer name).
    pub by: String,
    /// When, on the changing process's clock; a newer change replaces an older one.
    pub at: chrono::DateTime<chrono::Utc>,
}
