//! Test fixture: `noop` takes every `bench.noop` signal and emits nothing.

use serde_json::Value;
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Noop;

impl Unit for Noop {
    fn manifest() -> Manifest {
        Manifest::new("noop", env!("CARGO_PKG_VERSION")).subscribes(["bench.noop"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }
    fn handle(&self, _: &Signal) -> Result<Vec<Emit>, UnitError> {
        Ok(Vec::new())
    }
}

export_unit!(Noop);
