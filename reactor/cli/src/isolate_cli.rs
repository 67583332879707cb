//! `swarm up`'s isolation flags: which units run in worker processes, and their limits.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use swarm_reactor::{Isolation, WorkerLimits};
use swarm_schemas::validate_unit_name;

#[derive(Debug, Args)]
pub(crate) struct IsolateArgs {
    /// Run this unit's library in a worker process of its own: a segfault, abort, stack
    /// overflow, runaway allocation or hang there fails its calls, not the reactor
    /// (repeatable).
    #[arg(long = "isolate", value_name = "UNIT")]
    units: Vec<String>,
    /// Run every unit in a worker process of its own.
    #[arg(long)]
    isolate_all: bool,
    /// The worker program (default: swarm-unit-worker beside swarm).
    #[arg(long, env = "SWARM_UNIT_WORKER", value_name = "PATH")]
    unit_worker: Option<PathBuf>,
    /// Virtual memory of one worker, MiB; an allocation past it fails the call (0: no limit).
    #[arg(long, default_value_t = 4096)]
    worker_memory_mb: u64,
    /// CPU seconds over one worker's life; past them the worker is ended and the next call
    /// starts a new one (0: no limit).
    #[arg(long, default_value_t = 3600)]
    worker_cpu_seconds: u64,
    /// Files one worker may have open (0: no limit).
    #[arg(long, default_value_t = 256)]
    worker_open_files: u64,
}

impl IsolateArgs {
    /// The reactor's isolation.
    pub(crate) fn isolation(&self) -> anyhow::Result<Isolation> {
        for unit in &self.units {
            validate_unit_name(unit).with_context(|| format!("--isolate {unit}"))?;
        }
        let limit = |n: u64| (n > 0).then_some(n);
        let isolation = Isolation {
            units: self.units.iter().cloned().collect(),
            all: self.isolate_all,
            worker: self.unit_worker.clone(),
            limits: WorkerLimits {
                address_space: limit(self.worker_memory_mb.saturating_mul(1 << 20)),
                cpu_seconds: limit(self.worker_cpu_seconds),
                open_files: limit(self.worker_open_files),
            },
        };
        if isolation.any() {
            // Found now, not at the first load: a missing worker program is a start-up error.
            isolation
                .worker_program()
                .map_err(anyhow::Error::msg)
                .context("isolated units need the unit worker")?;
        }
        Ok(isolation)
    }
}
