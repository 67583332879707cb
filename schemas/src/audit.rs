//! The audit trail: who changed what a swarm runs, when, from where, and how it ended.
//!
//! Entries are only ever appended; no interface changes or removes one.

use serde::{Deserialize, Serialize};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A unit library loaded for the first time.
    Load,
    /// A new version of a unit replaced the serving one.
    Swap,
    /// A library was refused (untrusted, broken, a refused hook…); any old version serves.
    Refuse,
    /// A refused upgrade left the old version serving.
    Rollback,
    /// A unit's file went away and the unit was unloaded.
    Remove,
    /// A unit was enabled.
    Enable,
    /// A unit was disabled.
    Disable,
    /// A unit was quarantined for hanging.
    Quarantine,
    /// The trust file changed: digests added or removed.
    Trust,
    /// A call to an admin endpoint of the HTTP API.
    Http,
}

impl AuditAction {
    /// The action's name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Swap => "swap",
            Self::Refuse => "refuse",
            Self::Rollback => "rollback",
            Self::Remove => "remove",
            Self::Enable => "enable",
            Self::Disable => "disable",
            Self::Quarantine => "quarantine",
            Self::Trust => "trust",
            Self::Http => "http",
        }
    }
}

impl std::str::FromStr for AuditAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
            .map_err(|_| format!("`{text}` is not an audit action"))
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Its place in the trail, given by the store (0 before it is stored).
    pub seq: i64,
    /// When it happened.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The reactor process it happened in (its consumer name).
    pub process: String,
    /// Who did it: the API token's name, `anonymous` (no tokens configured), or `reactor` for
    /// what the reactor did by itself.
    pub actor: String,
    /// The client's address, for an HTTP call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// What was done.
    pub action: AuditAction,
    /// The unit it was done to, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// How it ended: `ok`, or what went wrong (for HTTP, the status code).
    pub outcome: String,
    /// More: the version and file, the request's method and path, the refusal's reason.
    pub detail: String,
}
