//! Test fixture: `needs-ghost` depends on `ghost`.

use serde_json::Value;
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Fixture;

impl Unit for Fixture {
    fn manifest() -> Manifest {
        Manifest::new("needs-ghost", "1.0.0")
            .subscribes(["needs-ghost.in"])
            .depends_on("ghost", "*")
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }
    fn handle(&self, _: &Signal) -> Result<Vec<Emit>, UnitError> {
        Ok(vec![])
    }
}

export_unit!(Fixture);
