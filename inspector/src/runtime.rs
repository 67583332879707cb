//! What the process hosting the inspector offers about its units. The reactor implements it;
//! the inspector never links the reactor.

use std::collections::BTreeMap;
use std::sync::Arc;

use swarm_schemas::{ExecutionRecord, UnitStatus};
use tokio::sync::broadcast;

/// A unit name that no loaded unit has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no unit named `{0}` is loaded")]
pub struct NoSuchUnit(pub String);

/// The units of a running reactor, and what they do as it happens.
pub trait Runtime: Send + Sync + 'static {
    /// Every loaded unit, by name.
    fn units(&self) -> Vec<UnitStatus>;

    /// Enables or disables a unit; returns its status after the change.
    fn set_enabled(&self, unit: &str, enabled: bool) -> Result<UnitStatus, NoSuchUnit>;

    /// Every execution from now on, as soon as it is recorded. A receiver that falls behind
    /// loses the oldest (and is told how many).
    fn executions(&self) -> broadcast::Receiver<Arc<ExecutionRecord>>;

    /// Signals read from the mesh and not yet settled, by kind.
    fn in_flight(&self) -> BTreeMap<String, u64>;
}
