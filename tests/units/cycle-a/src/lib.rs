//! Test fixture: `cycle-a` depends on `cycle-b`.

use serde_json::Value;
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Fixture;

impl Unit for Fixture {
    fn manifest() -> Manifest {
        Manifest::new("cycle-a", "1.0.0")
            .subscribes(["cycle-a.in"])
            .depends_on("cycle-b", "*")
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }
    fn handle(&self, _: &Signal) -> Result<Vec<Emit>, UnitError> {
        Ok(vec![])
    }
}

export_unit!(Fixture);
