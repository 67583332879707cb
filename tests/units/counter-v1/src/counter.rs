//! Test fixture source shared by `counter` versions 1 and 2: answers every `tick` with a
//! `tock` naming its version (the building crate's), the tick and the process that ran it.
//! `sleep_ms` in the payload makes it take that long. When `COUNTER_LOG` names a file, every
//! execution appends `<tick id> <pid>` to it, so tests can count executions across processes
//! (a side effect no real unit should have).

use std::fs::File;
use std::io::Write;

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Counter {
    log: Option<File>,
}

impl Unit for Counter {
    fn manifest() -> Manifest {
        Manifest::new("counter", env!("CARGO_PKG_VERSION"))
            .subscribes(["tick"])
            .emits(["tock"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        let log = match std::env::var_os("COUNTER_LOG") {
            Some(path) => Some(File::options().create(true).append(true).open(path)?),
            None => None,
        };
        Ok(Self { log })
    }
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        if let Some(ms) = signal.payload["sleep_ms"].as_u64() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let pid = std::process::id();
        if let Some(mut log) = self.log.as_ref() {
            // One short write with O_APPEND: lines from several processes never interleave.
            log.write_all(format!("{} {pid}\n", signal.id).as_bytes())?;
        }
        Ok(vec![Emit::new(
            "tock",
            json!({ "of": signal.id, "version": env!("CARGO_PKG_VERSION"), "pid": pid }),
        )])
    }
}

export_unit!(Counter);
