//! An in-process harness for unit authors' tests: it calls a unit through the same ABI entry
//! points, buffers and checks the host uses, without loading a library.

use std::ffi::c_void;
use std::marker::PhantomData;

use swarm_abi::{STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, STATUS_PANIC, UnitVTable};
use swarm_schemas::{Emit, Signal, UnitManifest, UnitReply};

use crate::Unit;
use crate::ffi::{self, CallResult};

/// Why a harness call failed; mirrors the failures the host records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HarnessError {
    /// The manifest is not one the host would accept.
    BadManifest(String),
    /// The unit returned an error.
    Error(String),
    /// The unit panicked (caught at the ABI boundary, as in the host).
    Panic(String),
    /// The unit refused its input as undecodable.
    BadInput(String),
    /// The unit returned output the host would refuse (bad JSON, an undeclared kind).
    BadOutput(String),
}

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadManifest(m) => write!(f, "bad manifest: {m}"),
            Self::Error(m) => write!(f, "unit error: {m}"),
            Self::Panic(m) => write!(f, "unit panicked: {m}"),
            Self::BadInput(m) => write!(f, "unit refused its input: {m}"),
            Self::BadOutput(m) => write!(f, "unit returned bad output: {m}"),
        }
    }
}

impl std::error::Error for HarnessError {}

fn failure(result: CallResult) -> HarnessError {
    let text = String::from_utf8_lossy(&result.bytes).into_owned();
    match result.status {
        STATUS_PANIC => HarnessError::Panic(text),
        STATUS_BAD_INPUT => HarnessError::BadInput(text),
        STATUS_ERROR => HarnessError::Error(text),
        other => HarnessError::BadOutput(format!("unknown status {other}: {text}")),
    }
}

/// A unit instance driven through the ABI.
pub struct Harness<T: Unit> {
    vtable: UnitVTable,
    instance: *mut c_void,
    manifest: UnitManifest,
    _unit: PhantomData<T>,
}

impl<T: Unit> Harness<T> {
    /// Reads and checks the manifest, then creates an instance with `config`.
    pub fn new(config: serde_json::Value) -> Result<Self, HarnessError> {
        let vtable = ffi::vtable::<T>();
        let result = ffi::call_manifest(&vtable);
        if result.status != STATUS_OK {
            return Err(failure(result));
        }
        let manifest: UnitManifest = serde_json::from_slice(&result.bytes)
            .map_err(|e| HarnessError::BadManifest(e.to_string()))?;
        manifest
            .validate()
            .map_err(|e| HarnessError::BadManifest(e.to_string()))?;
        let config =
            serde_json::to_vec(&config).map_err(|e| HarnessError::BadInput(e.to_string()))?;
        let instance = ffi::call_create(&vtable, &config).map_err(failure)?;
        Ok(Self {
            vtable,
            instance,
            manifest,
            _unit: PhantomData,
        })
    }

    /// The checked manifest.
    pub fn manifest(&self) -> &UnitManifest {
        &self.manifest
    }

    /// Hands `signal` to the unit and returns what it emits, checked as the host checks it.
    pub fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, HarnessError> {
        let bytes =
            serde_json::to_vec(signal).map_err(|e| HarnessError::BadInput(e.to_string()))?;
        let result = ffi::call_handle(&self.vtable, self.instance, &bytes);
        if result.status != STATUS_OK {
            return Err(failure(result));
        }
        let reply: UnitReply = serde_json::from_slice(&result.bytes)
            .map_err(|e| HarnessError::BadOutput(e.to_string()))?;
        for emit in &reply.emits {
            if !self.manifest.may_emit(&emit.kind) {
                return Err(HarnessError::BadOutput(format!(
                    "emitted `{}`, which the manifest does not declare in `emits`",
                    emit.kind
                )));
            }
        }
        Ok(reply.emits)
    }

    /// Shorthand: a new root signal of `kind` with `payload`, handed to the unit.
    pub fn send(&self, kind: &str, payload: serde_json::Value) -> Result<Vec<Emit>, HarnessError> {
        self.handle(&Signal::new(kind, payload))
    }
}

impl<T: Unit> Drop for Harness<T> {
    fn drop(&mut self) {
        ffi::call_destroy(&self.vtable, self.instance);
    }
}
