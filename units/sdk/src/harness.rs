//! An in-process harness for unit authors' tests: it calls a unit through the same ABI entry
//! points, buffers and checks the host uses, without loading a library, and drives its
//! lifecycle (load, enable and disable, a swap to another version with its state, unload) in
//! the host's order.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;

use std::time::Duration;

use parking_lot::Mutex;
use swarm_abi::{
    EVENT_DISABLE, EVENT_ENABLE, EVENT_LOAD, EVENT_UNLOAD, EVENT_UPGRADE, HostVTable,
    STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, STATUS_PANIC, UnitVTable,
};
use swarm_schemas::{Emit, Signal, UnitManifest, UnitReply};

use crate::Unit;
use crate::ffi::{self, CallResult};
use crate::harness_host::{HarnessHost, HostState};

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
    /// Whether `on_load` succeeded: only then does dropping run `on_unload`.
    loaded: bool,
    /// The host its capability calls reach; the table points into the box.
    host: Box<HarnessHost>,
    table: Box<HostVTable>,
    _unit: PhantomData<T>,
}

impl<T: Unit> std::fmt::Debug for Harness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("unit", &self.manifest.name)
            .field("version", &self.manifest.version.to_string())
            .field("loaded", &self.loaded)
            .finish()
    }
}

/// A swap the new version refused ([`Harness::upgrade`]): why, and the old version, which
/// keeps serving.
pub struct UpgradeRefused<T: Unit> {
    /// Why the swap was refused.
    pub error: HarnessError,
    /// The old version, unchanged.
    pub old: Harness<T>,
}

impl<T: Unit> std::fmt::Debug for UpgradeRefused<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upgrade refused: {}", self.error)
    }
}

/// The vtable of `T` and its manifest, checked as the host checks it.
fn checked<T: Unit>() -> Result<(UnitVTable, UnitManifest), HarnessError> {
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
    Ok((vtable, manifest))
}

impl<T: Unit> Harness<T> {
    /// Reads and checks the manifest, creates an instance with `config`, and runs its
    /// [`on_load`](Unit::on_load), as a first load in the host does.
    ///
    /// Its capability calls reach a host in memory: `log` records are kept ([`logs`]), marks
    /// and kv live in this harness (and pass to an [`upgrade`]) on a clock the test moves
    /// ([`advance`]). What the manifest declares is granted; `http` always fails.
    ///
    /// [`logs`]: Harness::logs
    /// [`upgrade`]: Harness::upgrade
    /// [`advance`]: Harness::advance
    pub fn new(config: serde_json::Value) -> Result<Self, HarnessError> {
        let mut harness = Self::created(config, Arc::default())?;
        harness.load()?;
        Ok(harness)
    }

    fn load(&mut self) -> Result<(), HarnessError> {
        self.event(EVENT_LOAD, b"")?;
        self.loaded = true;
        Ok(())
    }

    /// An instance that has not had `on_load` yet, on a host with `state`.
    fn created(
        config: serde_json::Value,
        state: Arc<Mutex<HostState>>,
    ) -> Result<Self, HarnessError> {
        let (vtable, manifest) = checked::<T>()?;
        let config =
            serde_json::to_vec(&config).map_err(|e| HarnessError::BadInput(e.to_string()))?;
        let host = Box::new(HarnessHost {
            declared: manifest.capabilities.clone(),
            state,
        });
        let table = Box::new(ffi::harness_table(&host));
        let instance =
            ffi::with_local_host(&table, || ffi::call_create(&vtable, &config)).map_err(failure)?;
        Ok(Self {
            vtable,
            instance,
            manifest,
            loaded: false,
            host,
            table,
            _unit: PhantomData,
        })
    }

    /// Runs `f` with this harness's host as the unit's.
    fn hosted<R>(&self, f: impl FnOnce() -> R) -> R {
        ffi::with_local_host(&self.table, f)
    }

    /// The log records the unit has sent, oldest first.
    pub fn logs(&self) -> Vec<crate::log::Record> {
        self.host.state.lock().logs.clone()
    }

    /// The value of the mark at `key` now, on the harness's clock.
    pub fn mark(&self, key: &str) -> f64 {
        self.host.state.lock().mark(key)
    }

    /// The value at `key` in the unit's key-value store, unless it has expired.
    pub fn kv(&self, key: &str) -> Option<serde_json::Value> {
        self.host.state.lock().kv(key).cloned()
    }

    /// Moves the harness's clock on: marks evaporate, kv entries expire.
    pub fn advance(&self, by: Duration) {
        self.host.state.lock().now_ms += by.as_secs_f64() * 1000.0;
    }

    /// Sets the half-life marks evaporate with (60 s unless set).
    pub fn set_half_life(&self, half_life: Duration) {
        self.host.state.lock().half_life_ms = (half_life.as_secs_f64() * 1000.0).max(1e-3);
    }

    fn event(&self, event: u32, arg: &[u8]) -> Result<(), HarnessError> {
        let result = self.hosted(|| ffi::call_lifecycle(&self.vtable, self.instance, event, arg));
        if result.status == STATUS_OK {
            Ok(())
        } else {
            Err(failure(result))
        }
    }

    /// Disables the unit: runs [`on_disable`](Unit::on_disable). The host disables the unit
    /// whatever it returns and logs an error.
    pub fn disable(&self) -> Result<(), HarnessError> {
        self.event(EVENT_DISABLE, b"")
    }

    /// Enables the unit again: runs [`on_enable`](Unit::on_enable); on an error the host keeps
    /// the unit disabled.
    pub fn enable(&self) -> Result<(), HarnessError> {
        self.event(EVENT_ENABLE, b"")
    }

    /// Swaps this version for a new instance of `U` with `config`, in the host's order: create;
    /// when this version carries state, its [`snapshot`](Unit::snapshot) and, when `U` carries
    /// state too, `U`'s [`restore`](Unit::restore); `U`'s [`on_load`](Unit::on_load), then its
    /// [`on_upgrade`](Unit::on_upgrade) from this version. Any refusal returns this version,
    /// which keeps serving; on success this version's `on_unload` runs.
    pub fn upgrade<U: Unit>(
        self,
        config: serde_json::Value,
    ) -> Result<Harness<U>, Box<UpgradeRefused<T>>> {
        let mut new = match Harness::<U>::created(config, Arc::clone(&self.host.state)) {
            Ok(new) => new,
            Err(error) => return Err(Box::new(UpgradeRefused { error, old: self })),
        };
        let swapped = (|| {
            if self.manifest.carries_state {
                let state = self.hosted(|| ffi::call_snapshot(&self.vtable, self.instance));
                if state.status != STATUS_OK {
                    return Err(failure(state));
                }
                if new.manifest.carries_state {
                    let restored =
                        new.hosted(|| ffi::call_restore(&new.vtable, new.instance, &state.bytes));
                    if restored.status != STATUS_OK {
                        return Err(failure(restored));
                    }
                }
            }
            new.load()?;
            new.event(EVENT_UPGRADE, self.manifest.version.to_string().as_bytes())
        })();
        match swapped {
            Ok(()) => Ok(new),
            Err(error) => Err(Box::new(UpgradeRefused { error, old: self })),
        }
    }

    /// The checked manifest.
    pub fn manifest(&self) -> &UnitManifest {
        &self.manifest
    }

    /// Hands `signal` to the unit and returns what it emits, checked as the host checks it.
    pub fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, HarnessError> {
        let bytes =
            serde_json::to_vec(signal).map_err(|e| HarnessError::BadInput(e.to_string()))?;
        let result = self.hosted(|| ffi::call_handle(&self.vtable, self.instance, &bytes));
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
        if self.loaded {
            let _ = self.event(EVENT_UNLOAD, b"");
        }
        self.hosted(|| ffi::call_destroy(&self.vtable, self.instance));
    }
}
