//! Test fixture source shared by `counter` versions 1 and 2: answers every `tick` with a
//! `tock` naming its version (the building crate's) and the tick; `sleep_ms` in the payload
//! makes it take that long.

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Counter;

impl Unit for Counter {
    fn manifest() -> Manifest {
        Manifest::new("counter", env!("CARGO_PKG_VERSION")).subscribes(["tick"]).emits(["tock"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        // Lets tests hold a call open across a swap.
        if let Some(ms) = signal.payload["sleep_ms"].as_u64() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        Ok(vec![Emit::new("tock", json!({ "of": signal.id, "version": env!("CARGO_PKG_VERSION") }))])
    }
}

export_unit!(Counter);
