//! The SDK for writing swarm units.
//!
//! A unit is a synchronous, pure function from a signal to the signals it emits. Implement
//! [`Unit`] and call [`export_unit!`]; build the crate as a `cdylib` and drop the library into a
//! reactor's units directory:
//!
//! ```
//! use swarm_sdk::{export_unit, Emit, Manifest, Signal, Unit, UnitError};
//!
//! pub struct Greeter;
//!
//! impl Unit for Greeter {
//!     fn manifest() -> Manifest {
//!         Manifest::new("greeter", "1.0.0").subscribes(["person.arrived"]).emits(["person.greeted"])
//!     }
//!     fn new(_config: &serde_json::Value) -> Result<Self, UnitError> {
//!         Ok(Greeter)
//!     }
//!     fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
//!         let name = signal.payload["name"].as_str().ok_or_else(|| UnitError::new("no name"))?;
//!         Ok(vec![Emit::new("person.greeted", serde_json::json!({ "greeting": format!("hello {name}") }))])
//!     }
//! }
//!
//! export_unit!(Greeter);
//! ```
//!
//! What this crate is not: it does no I/O and starts no runtime. A unit has its own copy of std
//! (and of tokio, if it links it); `tokio::spawn` inside a unit panics. I/O belongs to the host,
//! which offers it as capabilities: [`log`], [`marks`] (the shared field units coordinate
//! through), [`kv`] and [`http`]. A unit declares those it uses in its manifest, and the
//! reactor's configuration grants them.
//!
//! Units must be built with `panic = "unwind"` (the default): a panic is caught at the ABI
//! boundary and becomes a failure record. With `panic = "abort"` one panic would take the whole
//! reactor down, so this crate refuses to build that way.

#[cfg(panic = "abort")]
compile_error!(
    "swarm units must be built with panic = \"unwind\": a panic inside a unit is caught and \
     recorded as a failure; with panic = \"abort\" it would kill the reactor. Remove \
     `panic = \"abort\"` from your Cargo profile."
);

mod error;
#[doc(hidden)]
pub mod ffi;
mod harness;
mod harness_host;
mod host;
mod manifest;

pub use error::UnitError;
pub use harness::{Harness, HarnessError, UpgradeRefused};
pub use host::http;
pub use host::kv;
pub use host::log;
pub use host::marks;
pub use host::{HostError, HostErrorKind};
pub use manifest::Manifest;
/// Versions of units, as [`Unit::on_upgrade`] gets them.
pub use swarm_schemas::semver::Version;
pub use swarm_schemas::{DispatchPolicy, Emit, Signal, UnitManifest, UnitReply};

/// The ABI types, for the export macro.
#[doc(hidden)]
pub use swarm_abi as abi;

/// A unit: a synchronous, pure reaction to signals.
///
/// One instance serves every signal of a loaded generation and may be called from several
/// threads at once, hence `Send + Sync`.
pub trait Unit: Send + Sync + Sized + 'static {
    /// What the unit is, what it subscribes to and what it emits. Called before anything else.
    fn manifest() -> Manifest;

    /// Makes the instance from its configuration (`null` when none is configured). A unit
    /// without configuration returns `Ok(Self)`; an error or a panic here refuses the load.
    fn new(config: &serde_json::Value) -> Result<Self, UnitError>;

    /// Handles one signal, returning the signals to emit. An `Err` or a panic is recorded as a
    /// failure and the signal is retried, then dead-lettered.
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError>;

    /// Called once the instance exists, before its first signal, on a first load and on every
    /// swap. An `Err` or a panic refuses the load: an older version, if any, keeps serving.
    fn on_load(&self) -> Result<(), UnitError> {
        Ok(())
    }

    /// Called when this instance replaces `from`, an older (or the same) version of the unit,
    /// after [`on_load`](Unit::on_load) and [`restore`](Unit::restore) and before its first
    /// signal. An `Err` or a panic refuses the swap: the old version keeps serving.
    fn on_upgrade(&self, from: &Version) -> Result<(), UnitError> {
        let _ = from;
        Ok(())
    }

    /// Called when the unit is enabled again after being disabled. An `Err` or a panic keeps
    /// it disabled.
    fn on_enable(&self) -> Result<(), UnitError> {
        Ok(())
    }

    /// Called when the unit is disabled. It is disabled whatever this returns; an error is
    /// logged.
    fn on_disable(&self) -> Result<(), UnitError> {
        Ok(())
    }

    /// Called before the instance is destroyed, after its last call has returned (the unit was
    /// swapped out, removed, or the reactor is stopping). An error is logged.
    fn on_unload(&self) -> Result<(), UnitError> {
        Ok(())
    }

    /// The state to hand to the next version across a swap, as bytes of the unit's choosing
    /// (serialise with serde). Called only when the manifest says
    /// [`carries_state`](Manifest::carries_state), once no call is running on this instance.
    /// An `Err` or a panic refuses the swap: this version keeps serving.
    fn snapshot(&self) -> Result<Vec<u8>, UnitError> {
        Ok(Vec::new())
    }

    /// Takes the state the previous version's [`snapshot`](Unit::snapshot) returned, before
    /// the first signal. Called only when both versions carry state. An `Err` or a panic
    /// refuses the swap: the old version keeps serving.
    fn restore(&mut self, state: &[u8]) -> Result<(), UnitError> {
        let _ = state;
        Ok(())
    }
}

/// Exports a [`Unit`] type as this library's unit: defines the ABI entry symbol.
///
/// Use it once per `cdylib` crate.
#[macro_export]
macro_rules! export_unit {
    ($unit:ty) => {
        #[doc(hidden)]
        pub static __SWARM_UNIT_VTABLE: $crate::abi::UnitVTable = $crate::ffi::vtable::<$unit>();

        /// The unit's ABI entry point, found by the host with `dlsym`.
        #[unsafe(no_mangle)]
        pub extern "C" fn swarm_unit_entry_v1() -> *const $crate::abi::VTableHeader {
            &__SWARM_UNIT_VTABLE.header
        }
    };
}
