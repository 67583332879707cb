//! Test fixture: `hang` answers every `test.hang` signal with a `test.done` carrying the same
//! `n`, except that it never returns from one whose payload has `"hang": true` (it sleeps in a
//! loop; `"hang": "spin"` loops without sleeping). `"sleep_ms": N` makes it take N ms first.

use std::time::Duration;

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Hang;

impl Unit for Hang {
    fn manifest() -> Manifest {
        Manifest::new("hang", env!("CARGO_PKG_VERSION"))
            .subscribes(["test.hang"])
            .emits(["test.done"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        match &signal.payload["hang"] {
            Value::Bool(true) => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Value::String(how) if how == "spin" => loop {
                std::hint::spin_loop();
            },
            _ => {}
        }
        if let Some(ms) = signal.payload["sleep_ms"].as_u64() {
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(vec![Emit::new(
            "test.done",
            json!({ "n": signal.payload["n"] }),
        )])
    }
}

export_unit!(Hang);
