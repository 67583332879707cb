//! The registry: which units are loaded, in which generation, enabled or not.
//!
//! Each unit name has a slot holding its current [`Generation`] in an `ArcSwapOption`. A call
//! takes an `Arc` of the generation it runs on, so swapping in a new generation never waits for
//! running calls and never interrupts them: they finish on the old code, and the old generation
//! (its instance, its library) is dropped when the last of them returns. Dispatch reads a
//! snapshot of the slots without locking; changes (loads, swaps, removals) are serialised.
//!
//! - `apply.rs` — file changes: what to open, refuse or remove; units waiting on another.
//! - `swap.rs` — installing a unit's first generation or swapping in the next.
//! - `enable.rs` — enabling and disabling units, and the mesh's unit controls.
//! - `audit.rs` — what a load changed and refused, in the audit trail.

mod apply;
mod audit;
mod enable;
mod swap;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;
use swarm_memory::AuditTrail;
use swarm_schemas::{UnitControl, UnitState, UnitStatus};

use crate::LoadError;
use crate::isolate::Isolation;
use crate::slot::UnitSlot;
use crate::status::{FileFailure, LoadReport};
use crate::trust::TrustPolicy;

/// How long a swap of a unit that carries state waits for the calls running on the old
/// version to return before it takes the snapshot. A call still running after that (a hung
/// unit) keeps the old state: the new version starts without it, and a warning says so.
pub const STATE_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Loaded units, by name, with their files.
pub struct Registry {
    private_dir: PathBuf,
    /// The capabilities each library is bound to; none in a registry without a runtime.
    host: Option<Arc<crate::HostServices>>,
    unit_config: Mutex<BTreeMap<String, serde_json::Value>>,
    slots: DashMap<String, Arc<UnitSlot>>,
    files: DashMap<PathBuf, String>,
    failures: DashMap<PathBuf, LoadError>,
    /// Hash of the bytes whose load failed last, per file: the same bytes are not tried again
    /// (a panicking constructor is not re-run on every duplicate file event).
    failed_hashes: DashMap<PathBuf, [u8; 32]>,
    snapshot: ArcSwap<Vec<Arc<UnitSlot>>>,
    changing: Mutex<()>,
    /// Told of every new generation just before it starts serving.
    on_generation: Option<GenerationListener>,
    /// What a library must pass before it is opened.
    trust: TrustPolicy,
    /// Each unit's control as the mesh last said it: applied to a unit that loads later.
    desired: DashMap<String, UnitControl>,
    /// Where loads, swaps, refusals and removals are recorded.
    audit: Option<AuditTrail>,
    /// Which units run in worker processes, and how many calls each worker runs at once.
    isolation: Isolation,
    worker_channels: usize,
}

/// Called with a unit's name and version when a new generation of it is about to serve.
pub type GenerationListener = Arc<dyn Fn(&str, &semver::Version) + Send + Sync>;

/// Whether `path` looks like a unit library (by its file name).
pub fn is_unit_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(std::env::consts::DLL_SUFFIX) && !n.starts_with('.'))
}

impl Registry {
    /// An empty registry. Libraries are copied into `private_dir` before they are opened;
    /// `unit_config` holds each unit's configuration by name.
    pub fn new(private_dir: PathBuf, unit_config: BTreeMap<String, serde_json::Value>) -> Self {
        Self {
            private_dir,
            host: None,
            unit_config: Mutex::new(unit_config),
            slots: DashMap::new(),
            files: DashMap::new(),
            failures: DashMap::new(),
            failed_hashes: DashMap::new(),
            snapshot: ArcSwap::from_pointee(Vec::new()),
            changing: Mutex::new(()),
            on_generation: None,
            trust: TrustPolicy::default(),
            desired: DashMap::new(),
            audit: None,
            isolation: Isolation::default(),
            worker_channels: 2,
        }
    }

    /// The registry, running the units `isolation` names in worker processes, each taking
    /// `channels` calls at once.
    pub fn with_isolation(mut self, isolation: Isolation, channels: usize) -> Self {
        self.isolation = isolation;
        self.worker_channels = channels.max(1);
        self
    }

    /// The registry, recording every load, swap, refusal and removal in `audit`.
    pub fn with_audit(mut self, audit: AuditTrail) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The registry, opening only the libraries `trust` admits (see [`crate::trust`]).
    pub fn with_trust(mut self, trust: TrustPolicy) -> Self {
        self.trust = trust;
        self
    }

    /// The registry, telling `listener` of each new generation (a first load, a swap, a
    /// reload with a new configuration) just before it starts serving, with the unit's name
    /// and version. The listener runs while the change is applied: it must be quick.
    pub fn on_generation(mut self, listener: GenerationListener) -> Self {
        self.on_generation = Some(listener);
        self
    }

    /// The registry, with every library it opens bound to `host`'s capabilities. Without it,
    /// units load but every capability call of theirs fails (no host).
    pub fn with_host(mut self, host: Arc<crate::HostServices>) -> Self {
        self.host = Some(host);
        self
    }

    /// Loads every unit file in `dir`, in dependency order.
    pub fn load_dir(&self, dir: &Path) -> std::io::Result<LoadReport> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| is_unit_file(p) && p.is_file())
            .collect();
        paths.sort();
        Ok(self.apply(paths))
    }

    /// Applies changes to unit files: each path that exists is loaded (or swapped in, or found
    /// unchanged); each that does not is removed. A refused file leaves its old version serving.
    ///
    /// When something loads, files refused only because of other units (a missing or
    /// mismatched dependency, a cycle, a duplicate name) are tried again.
    pub fn apply(&self, paths: Vec<PathBuf>) -> LoadReport {
        let _changing = self.changing.lock();
        let report = self.apply_locked(paths, &BTreeSet::new());
        let report = self.retry_dependents(report);
        self.audit_report(&report);
        report
    }

    /// Replaces the units' configuration (a config file changed). Each loaded unit whose
    /// section changed is loaded again from its file with the new section — a swap, with its
    /// hooks and its state — and each file refused for its configuration is tried again. A
    /// section its unit's config schema refuses refuses that load, with the offending fields,
    /// and the unit keeps serving with the configuration it has.
    pub fn set_unit_config(&self, config: BTreeMap<String, serde_json::Value>) -> LoadReport {
        let _changing = self.changing.lock();
        let old = std::mem::replace(&mut *self.unit_config.lock(), config.clone());
        let changed = |unit: &str| old.get(unit) != config.get(unit);
        let mut reload: BTreeSet<PathBuf> = self
            .files
            .iter()
            .filter(|f| changed(f.value()))
            .map(|f| f.key().clone())
            .collect();
        reload.extend(
            self.failures
                .iter()
                .filter(|f| f.value().unit().is_some_and(changed))
                .map(|f| f.key().clone()),
        );
        if reload.is_empty() {
            return LoadReport::default();
        }
        tracing::info!(
            files = reload.len(),
            "unit configuration changed: reloading"
        );
        let report = self.apply_locked(reload.iter().cloned().collect(), &reload);
        let report = self.retry_dependents(report);
        self.audit_report(&report);
        report
    }

    fn drop_slot(&self, name: &str) {
        if let Some((_, slot)) = self.slots.remove(name) {
            // Running calls hold their own `Arc<Generation>`; this only stops new ones.
            slot.current.store(None);
        }
    }

    fn publish_snapshot(&self) {
        let mut slots: Vec<Arc<UnitSlot>> =
            self.slots.iter().map(|s| Arc::clone(s.value())).collect();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        self.snapshot.store(Arc::new(slots));
    }

    /// The enabled units subscribed to `kind`, by name.
    pub fn candidates(&self, kind: &str) -> Vec<Arc<UnitSlot>> {
        self.snapshot
            .load()
            .iter()
            .filter(|slot| {
                slot.is_enabled()
                    && slot
                        .current
                        .load()
                        .as_ref()
                        .is_some_and(|g| g.manifest().subscribes_to(kind))
            })
            .cloned()
            .collect()
    }

    /// The hash (hex) of a unit's serving version.
    pub fn serving_version(&self, name: &str) -> Option<String> {
        Some(hex::encode(self.unit(name)?.current()?.loaded.hash()))
    }

    /// The names of the loaded units.
    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.key().clone()).collect()
    }

    /// The slot of a loaded unit.
    pub fn unit(&self, name: &str) -> Option<Arc<UnitSlot>> {
        self.slots.get(name).map(|s| Arc::clone(s.value()))
    }

    /// Every loaded unit, by name.
    pub fn status(&self) -> Vec<UnitStatus> {
        let mut out: Vec<UnitStatus> = self
            .snapshot
            .load()
            .iter()
            .filter_map(|slot| {
                let generation = slot.current()?;
                let manifest = generation.manifest();
                Some(UnitStatus {
                    name: slot.name.to_string(),
                    version: manifest.version.to_string(),
                    generation: generation.number,
                    state: if !slot.is_enabled() {
                        UnitState::Disabled
                    } else if slot.is_quarantined() {
                        UnitState::Quarantined
                    } else {
                        UnitState::Ready
                    },
                    subscribes: manifest.subscribes.clone(),
                    emits: manifest.emits.clone(),
                    dispatch: manifest.dispatch,
                    file: generation.loaded.source().display().to_string(),
                    last_error: slot.last_error.lock().clone(),
                    timeouts: slot.health.timeouts(),
                    stuck_calls: slot.health.stuck(),
                    isolated: generation.loaded.worker().is_some(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Files whose last load failed and that serve no unit.
    pub fn failures(&self) -> Vec<FileFailure> {
        let mut out: Vec<FileFailure> = self
            .failures
            .iter()
            .filter(|f| !self.files.contains_key(f.key()))
            .map(|f| FileFailure {
                file: f.key().clone(),
                error: f.value().to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.file.cmp(&b.file));
        out
    }
}
