//! Dead letters: signals the swarm gave up on, with the reason.
//!
//! A dead letter travels on the mesh as an ordinary [`Signal`](crate::Signal) of kind
//! [`DEAD_LETTER_KIND`] whose payload is a [`DeadLetter`], so every tool that reads signals can
//! read dead letters too.

use serde::{Deserialize, Serialize};

/// Kind of the signals that carry a [`DeadLetter`].
pub const DEAD_LETTER_KIND: &str = "swarm.dead_letter";

/// Why a signal was given up on, and the signal itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// Readable reason.
    pub reason: String,
    /// The unit that failed it, when one unit did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// How many times it was tried (by the unit) or delivered (by the mesh).
    pub attempts: u32,
    /// What kind of failure the last try ended in (`timeout`, `panic`…), when a unit's tries
    /// failed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<crate::FailureKind>,
    /// The mesh entry id it came from.
    pub entry_id: String,
    /// The signal, or, when it could not be decoded, the raw entry as text.
    pub original: serde_json::Value,
}
