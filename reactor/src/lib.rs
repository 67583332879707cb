//! The swarm reactor: loads unit libraries, hot-swaps them when their files change, and
//! dispatches signals from the mesh to the units that subscribe to them.
//!
//! It links the unit ABI (`swarm-abi`), never the SDK. Its only `unsafe` code is in the loader and
//! in the host's capability table (`host::abi`). Units named by [`Isolation`] run in worker
//! processes of their own ([`isolate`]).
//! It takes typed configuration ([`ReactorConfig`]); only the `swarm` binary reads the
//! command line, the environment and files.

mod attempt;
mod config;
mod controls;
mod dispatch;
mod error;
mod execute;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod host;
pub mod isolate;
mod lanes;
mod letters;
mod loader;
mod policy;
mod private;
mod quarantine;
pub mod ranking;
mod reactor;
mod registry;
mod resolve;
mod slot;
mod status;
pub mod trust;
mod watcher;

pub use config::{ReactorConfig, UnitConfig, parse_unit_config};
pub use error::LoadError;
pub use host::{HostConfig, HostPattern, HostServices};
pub use isolate::{Isolation, WorkerLimits};
pub use private::private_dir;
pub use reactor::{Reactor, ReactorHandle, StartError};
pub use registry::{GenerationListener, Registry, STATE_DRAIN_TIMEOUT, is_unit_file};
pub use slot::{Generation, UnitSlot};
pub use status::{Change, FileFailure, LoadReport};
pub use swarm_runtime::EnableError;
pub use swarm_schemas::{UnitState, UnitStatus};
pub use trust::TrustPolicy;
