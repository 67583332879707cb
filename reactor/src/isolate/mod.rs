//! Isolated units: a unit's library run in a worker process of its own.
//!
//! A unit in the reactor's process can take it down: a segfault, an abort, a stack overflow or
//! running out of memory ends the process, and a call that never returns holds its thread for
//! good. An isolated unit's library is loaded instead by `swarm-unit-worker`, a small process
//! that speaks the same ABI to the same `.so` and answers the reactor over Unix sockets. The
//! worker runs with resource limits (address space, CPU time, open files) and a seccomp filter
//! that refuses new sockets and `exec`; the unit's host capabilities (log, marks, kv, http)
//! are forwarded to the reactor and work as they do in process.
//!
//! A call past its deadline kills the worker, and so does nothing to the reactor; a worker that
//! dies fails the calls it was running (failure kind `crash`, or `timeout`) and is started
//! again, with the same configuration, at the next call. Its in-memory state does not survive
//! a restart (a swap still hands it over, as in process). Each load of the unit has its own
//! worker, so hot swap works as in process: calls finish on the old worker, new ones go to the
//! new, and the old worker exits when its last call has returned.

mod child;
mod parent;
mod sandbox;
pub(crate) mod wire;

use std::collections::BTreeSet;
use std::path::PathBuf;

pub use child::worker_main;
pub(crate) use parent::{STATUS_CRASHED, Worker, WorkerSpec};

/// The worker program's file name; looked for beside the running program.
pub const WORKER_PROGRAM: &str = "swarm-unit-worker";

/// The resource limits of a worker process. `None`: not limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Virtual memory, bytes (`RLIMIT_AS`): an allocation past it fails, and the unit aborts.
    pub address_space: Option<u64>,
    /// CPU seconds over the worker's life (`RLIMIT_CPU`): past it the kernel ends the worker,
    /// and the next call starts a new one.
    pub cpu_seconds: Option<u64>,
    /// Open files (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        Self {
            address_space: Some(4 << 30),
            cpu_seconds: Some(3600),
            open_files: Some(256),
        }
    }
}

/// Which units run in worker processes, and how.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// Units isolated by name.
    pub units: BTreeSet<String>,
    /// Every unit isolated.
    pub all: bool,
    /// The worker program; default: `swarm-unit-worker` beside the running program (or in
    /// the directory above it, where test binaries run from).
    pub worker: Option<PathBuf>,
    /// The workers' resource limits.
    pub limits: WorkerLimits,
}

impl Isolation {
    /// Whether the unit named `name` runs in a worker.
    pub fn isolates(&self, name: &str) -> bool {
        self.all || self.units.contains(name)
    }

    /// Whether any unit may run in a worker.
    pub fn any(&self) -> bool {
        self.all || !self.units.is_empty()
    }

    /// The worker program, checked to exist.
    pub fn worker_program(&self) -> Result<PathBuf, String> {
        if let Some(path) = &self.worker {
            return if path.is_file() {
                Ok(path.clone())
            } else {
                Err(format!("the unit worker {} does not exist", path.display()))
            };
        }
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the running program: {e}"))?;
        let beside = exe.parent().map(|dir| dir.join(WORKER_PROGRAM));
        let above = exe
            .parent()
            .and_then(|dir| dir.parent())
            .map(|dir| dir.join(WORKER_PROGRAM));
        beside
            .into_iter()
            .chain(above)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "cannot find {WORKER_PROGRAM} beside {}: install it there or pass --unit-worker PATH",
                    exe.display()
                )
            })
    }
}
