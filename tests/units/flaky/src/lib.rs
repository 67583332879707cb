//! Test fixture: `flaky` panics on jobs whose payload has `"fail": true`.

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Flaky;

impl Unit for Flaky {
    fn manifest() -> Manifest {
        Manifest::new("flaky", env!("CARGO_PKG_VERSION"))
            .subscribes(["job"])
            .emits(["job.done"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        if signal.payload["fail"] == json!(true) {
            panic!("flaky gave up on job {}", signal.payload["n"]);
        }
        Ok(vec![Emit::new(
            "job.done",
            json!({ "n": signal.payload["n"] }),
        )])
    }
}

export_unit!(Flaky);
