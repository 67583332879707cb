//! The seam between a running reactor and what serves it: what the process offers about its
//! units. The reactor implements [`Runtime`]; the inspector serves it and never links the
//! reactor, and this crate links neither.

use std::collections::BTreeMap;
use std::sync::Arc;

use swarm_schemas::{ExecutionRecord, UnitStatus};
use tokio::sync::broadcast;

/// Why a unit could not be enabled or disabled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnableError {
    /// No unit of that name is loaded.
    #[error("no unit named `{0}` is loaded")]
    UnknownUnit(String),
    /// The unit's `on_enable` returned an error or panicked: it stays disabled.
    #[error("unit `{unit}` refused to be enabled: on_enable {what}: {message}")]
    Refused {
        /// The unit.
        unit: String,
        /// "failed" or "panicked".
        what: &'static str,
        /// The error or panic text.
        message: String,
    },
}

/// The units of a running reactor, and what they do as it happens.
pub trait Runtime: Send + Sync + 'static {
    /// Every loaded unit, by name.
    fn units(&self) -> Vec<UnitStatus>;

    /// Enables or disables a unit; returns its status after the change. Blocking: it runs the
    /// unit's `on_enable` or `on_disable`.
    fn set_enabled(&self, unit: &str, enabled: bool) -> Result<UnitStatus, EnableError>;

    /// Every execution from now on, as soon as it is recorded. A receiver that falls behind
    /// loses the oldest (and is told how many).
    fn executions(&self) -> broadcast::Receiver<Arc<ExecutionRecord>>;

    /// Signals read from the mesh and not yet settled, by kind.
    fn in_flight(&self) -> BTreeMap<String, u64>;
}
