//! Test fixture source shared by `tally` versions 1 and 2: keeps a running total of the `n` of
//! every `tally.add` (1 when absent) and answers each with a `tally.total` carrying the total
//! after it and the version that counted it. The total is the unit's state, carried across
//! swaps by snapshot and restore.
//!
//! Configuration (checked against the manifest's schema):
//! - `journal`: a file every hook appends a line to: `<version> <hook>[ <detail>]`.
//! - `refuse` / `panic`: hooks, as `<version>:<hook>`, that return an error / panic, so tests
//!   can make one version's hook fail and watch the host keep the other serving.
//!
//! `sleep_ms` in a signal's payload makes the call take that long.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, Version, export_unit};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The unit.
pub struct Tally {
    total: AtomicU64,
    journal: Option<File>,
    refuse: Vec<String>,
    panic: Vec<String>,
}

impl Tally {
    /// Journals `hook`, then fails or panics if the configuration says so for this version.
    fn hook(&self, hook: &str, detail: &str) -> Result<(), UnitError> {
        if let Some(mut journal) = self.journal.as_ref() {
            let line = if detail.is_empty() {
                format!("{VERSION} {hook}\n")
            } else {
                format!("{VERSION} {hook} {detail}\n")
            };
            journal.write_all(line.as_bytes())?;
        }
        let key = format!("{VERSION}:{hook}");
        if self.panic.contains(&key) {
            panic!("{hook} panics as configured");
        }
        if self.refuse.contains(&key) {
            return Err(UnitError::new(format!("{hook} refused as configured")));
        }
        Ok(())
    }
}

fn strings(config: &Value, field: &str) -> Vec<String> {
    config[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Unit for Tally {
    fn manifest() -> Manifest {
        Manifest::new("tally", VERSION)
            .subscribes(["tally.add"])
            .emits(["tally.total"])
            .carries_state()
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "journal": { "type": "string" },
                    "refuse": { "type": "array", "items": { "type": "string" } },
                    "panic": { "type": "array", "items": { "type": "string" } }
                },
                "additionalProperties": false
            }))
    }

    fn new(config: &Value) -> Result<Self, UnitError> {
        let journal = match config["journal"].as_str() {
            Some(path) => Some(File::options().create(true).append(true).open(path)?),
            None => None,
        };
        Ok(Self {
            total: AtomicU64::new(0),
            journal,
            refuse: strings(config, "refuse"),
            panic: strings(config, "panic"),
        })
    }

    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        if let Some(ms) = signal.payload["sleep_ms"].as_u64() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let n = signal.payload["n"].as_u64().unwrap_or(1);
        let total = self.total.fetch_add(n, Ordering::AcqRel) + n;
        Ok(vec![Emit::new(
            "tally.total",
            json!({ "of": signal.id, "total": total, "version": VERSION }),
        )])
    }

    fn on_load(&self) -> Result<(), UnitError> {
        self.hook("on_load", "")
    }

    fn on_upgrade(&self, from: &Version) -> Result<(), UnitError> {
        self.hook("on_upgrade", &from.to_string())
    }

    fn on_enable(&self) -> Result<(), UnitError> {
        self.hook("on_enable", "")
    }

    fn on_disable(&self) -> Result<(), UnitError> {
        self.hook("on_disable", "")
    }

    fn on_unload(&self) -> Result<(), UnitError> {
        self.hook("on_unload", "")
    }

    fn snapshot(&self) -> Result<Vec<u8>, UnitError> {
        let total = self.total.load(Ordering::Acquire);
        self.hook("snapshot", &total.to_string())?;
        Ok(total.to_string().into_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), UnitError> {
        let text = std::str::from_utf8(state).map_err(|e| UnitError::new(e.to_string()))?;
        self.hook("restore", text)?;
        let total: u64 = text
            .parse()
            .map_err(|e| UnitError::new(format!("state `{text}` is not a total: {e}")))?;
        self.total.store(total, Ordering::Release);
        Ok(())
    }
}

export_unit!(Tally);
