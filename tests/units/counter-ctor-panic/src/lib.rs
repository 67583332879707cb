//! Test fixture: a `counter` whose constructor panics; loading it must keep the old version.

use serde_json::Value;
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Counter;

impl Unit for Counter {
    fn manifest() -> Manifest {
        Manifest::new("counter", env!("CARGO_PKG_VERSION"))
            .subscribes(["tick"])
            .emits(["tock"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        panic!("counter 3 cannot start: the constructor panicked on purpose")
    }
    fn handle(&self, _: &Signal) -> Result<Vec<Emit>, UnitError> {
        Ok(vec![])
    }
}

export_unit!(Counter);
