//! Test fixture: a unit as a library built against ABI 1.0 exports it. Its table says it is
//! `VTABLE_SIZE_1_0` bytes long, so a host must treat the lifecycle, snapshot and restore
//! entries appended since as absent and never call them: this unit's `on_load` refuses, so it
//! loads only if the host honours the size.

#![allow(unsafe_code)]

use serde_json::{Value, json};
use swarm_abi::{UnitVTable, VTABLE_SIZE_1_0, VTableHeader};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError};

/// The unit.
pub struct Legacy;

impl Unit for Legacy {
    fn manifest() -> Manifest {
        Manifest::new("legacy", "1.0.0")
            .subscribes(["legacy.ping"])
            .emits(["legacy.pong"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Legacy)
    }
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        Ok(vec![Emit::new("legacy.pong", json!({ "of": signal.id }))])
    }
    fn on_load(&self) -> Result<(), UnitError> {
        Err(UnitError::new(
            "on_load is not in an ABI 1.0 table: a host must not call it",
        ))
    }
}

static VTABLE: UnitVTable = {
    let mut vtable = swarm_sdk::ffi::vtable::<Legacy>();
    vtable.header.vtable_size = VTABLE_SIZE_1_0;
    vtable
};

/// The entry symbol, returning a table of the 1.0 size.
#[unsafe(no_mangle)]
pub extern "C" fn swarm_unit_entry_v1() -> *const VTableHeader {
    &VTABLE.header
}
