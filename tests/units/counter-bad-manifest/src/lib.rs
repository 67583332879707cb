//! Test fixture: a `counter` replacement whose manifest breaks the naming rule.

use serde_json::Value;
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Counter;

impl Unit for Counter {
    fn manifest() -> Manifest {
        Manifest::new("Counter!", env!("CARGO_PKG_VERSION")).subscribes(["tick"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }
    fn handle(&self, _: &Signal) -> Result<Vec<Emit>, UnitError> {
        Ok(vec![])
    }
}

export_unit!(Counter);
