//! The registry: which units are loaded, in which generation, enabled or not.
//!
//! Each unit name has a slot holding its current [`Generation`] in an `ArcSwapOption`. A call
//! takes an `Arc` of the generation it runs on, so swapping in a new generation never waits for
//! running calls and never interrupts them: they finish on the old code, and the old generation
//! (its instance, its library) is dropped when the last of them returns. Dispatch reads a
//! snapshot of the slots without locking; changes (loads, swaps, removals) are serialised.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::Utc;
use dashmap::DashMap;
use parking_lot::Mutex;
use swarm_memory::AuditTrail;
use swarm_runtime::EnableError;
use swarm_schemas::{AuditAction, UnitControl, UnitManifest, UnitState, UnitStatus};

use crate::LoadError;
use crate::isolate::{Isolation, WorkerSpec};
use crate::loader::{self, Loaded, Opened, Refusal};
use crate::resolve::resolve;
use crate::slot::{Generation, Life, UnitSlot};
use crate::status::{Change, FileFailure, LoadReport};
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

/// Lower-case hex of `bytes`.
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

    /// Opens a unit's library: in this process, or in a worker if the unit is isolated (a
    /// worker reads the name first when only some units are).
    fn open(&self, file: loader::UnitFile) -> Result<Opened, LoadError> {
        if !self.isolation.any() {
            return loader::open(file, &self.private_dir);
        }
        let source = file.source().to_owned();
        let program = self
            .isolation
            .worker_program()
            .map_err(|message| LoadError::Open {
                path: source,
                message: format!("isolated: {message}"),
            })?;
        let spec = WorkerSpec {
            program,
            library: PathBuf::new(),
            socket_dir: self.private_dir.clone(),
            channels: self.worker_channels,
            limits: self.isolation.limits.clone(),
        };
        let opened = loader::open_isolated(file, &self.private_dir, spec)?;
        if self.isolation.isolates(&opened.manifest.name) {
            Ok(opened)
        } else {
            opened.into_native()
        }
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

    /// Records what `report` changed and refused in the audit trail.
    fn audit_report(&self, report: &LoadReport) {
        let Some(audit) = &self.audit else {
            return;
        };
        let serving = |name: &str| {
            self.unit(name).and_then(|slot| slot.current()).map(|g| {
                (
                    g.manifest().version.to_string(),
                    hex::encode(g.loaded.hash()),
                )
            })
        };
        for (path, change) in &report.changes {
            let (action, name, what) = match change {
                Change::Loaded { name } => (AuditAction::Load, name, "loaded"),
                Change::Swapped { name, .. } => (AuditAction::Swap, name, "swapped in"),
                Change::Removed { name } => {
                    let detail = format!("{} is gone: unloaded", path.display());
                    audit.reactor(AuditAction::Remove, Some(name), "ok", detail);
                    continue;
                }
                Change::Unchanged => continue,
            };
            let (version, sha256) = serving(name).unwrap_or_default();
            let detail = format!(
                "version {version} {what} from {} (sha256 {sha256})",
                path.display()
            );
            audit.reactor(action, Some(name), "ok", detail);
        }
        for (path, error) in &report.failures {
            let unit = self
                .files
                .get(path)
                .map(|name| name.clone())
                .or_else(|| error.unit().map(str::to_owned));
            let still = unit.as_deref().and_then(serving);
            let (action, detail) = match still {
                Some((version, _)) => (
                    AuditAction::Rollback,
                    format!(
                        "{} refused: {error}; version {version} keeps serving",
                        path.display()
                    ),
                ),
                None => (
                    AuditAction::Refuse,
                    format!("{} refused: {error}", path.display()),
                ),
            };
            audit.reactor(action, unit.as_deref(), "refused", detail);
        }
    }

    /// After `report`, tries again the files refused only because of other units, as long as
    /// something changes.
    fn retry_dependents(&self, mut report: LoadReport) -> LoadReport {
        let mut tried: BTreeSet<PathBuf> = BTreeSet::new();
        loop {
            let progressed = report
                .changes
                .iter()
                .any(|(_, c)| !matches!(c, Change::Unchanged));
            let retry: Vec<PathBuf> = self
                .failures
                .iter()
                .filter(|f| {
                    f.value().depends_on_other_units()
                        && f.key().exists()
                        && !tried.contains(f.key())
                })
                .map(|f| f.key().clone())
                .collect();
            if !progressed || retry.is_empty() {
                break;
            }
            tried.extend(retry.iter().cloned());
            let again = self.apply_locked(retry, &BTreeSet::new());
            let retried: BTreeSet<&PathBuf> = again
                .changes
                .iter()
                .map(|(p, _)| p)
                .chain(again.failures.iter().map(|(p, _)| p))
                .collect();
            report.failures.retain(|(p, _)| !retried.contains(p));
            report.changes.extend(again.changes);
            report.failures.extend(again.failures);
        }
        self.publish_snapshot();
        report
    }

    /// Loads `paths`; those in `force` are loaded again even when their bytes are those serving
    /// or those refused last (their configuration changed).
    fn apply_locked(&self, paths: Vec<PathBuf>, force: &BTreeSet<PathBuf>) -> LoadReport {
        let started = std::time::Instant::now();
        let mut report = LoadReport::default();
        let mut opened: Vec<Opened> = Vec::new();
        for path in paths {
            if !path.exists() {
                if let Some(name) = self.remove_file(&path) {
                    report.changes.push((path, Change::Removed { name }));
                }
                continue;
            }
            let file = match loader::read(&path) {
                Ok(file) => file,
                Err(error) => {
                    report.failures.push((path, error));
                    continue;
                }
            };
            let forced = force.contains(&path);
            if !forced && self.serving_hash(&path) == Some(file.hash) {
                self.failures.remove(&path);
                report.changes.push((path, Change::Unchanged));
                continue;
            }
            if !forced
                && self
                    .failed_hashes
                    .get(&path)
                    .is_some_and(|h| *h == file.hash)
            {
                // Already refused, with the reason on record.
                continue;
            }
            let admitted = self
                .trust
                .check_owner(&path)
                .and_then(|()| self.trust.check_digest(&path, &hex::encode(file.hash)));
            if let Err(message) = admitted {
                // Not remembered as refused: the same bytes load once trusted.
                report
                    .failures
                    .push((path.clone(), LoadError::Untrusted { path, message }));
                continue;
            }
            let hash = file.hash;
            match self.open(file) {
                Ok(unit) => opened.push(unit),
                Err(error) => {
                    self.failed_hashes.insert(path.clone(), hash);
                    report.failures.push((path, error));
                }
            }
        }
        self.refuse_duplicates(&mut opened, &mut report);
        self.install(opened, &mut report, started);
        for (path, error) in &report.failures {
            tracing::warn!(file = %path.display(), %error, "unit refused; any previous version keeps serving");
            metrics::counter!("swarm_unit_load_failures_total").increment(1);
            self.failures.insert(path.clone(), error.clone());
            if let Some(name) = self.files.get(path) {
                if let Some(slot) = self.slots.get(name.as_str()) {
                    slot.set_error(Some(error.to_string()));
                }
            }
        }
        self.publish_snapshot();
        report
    }

    /// Hash of the generation serving from `path`, if any.
    fn serving_hash(&self, path: &Path) -> Option<[u8; 32]> {
        let name = self.files.get(path)?.clone();
        let slot = self.unit(&name)?;
        Some(slot.current()?.loaded.hash())
    }

    fn refuse_duplicates(&self, opened: &mut Vec<Opened>, report: &mut LoadReport) {
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        opened.retain(|unit| {
            let name = &unit.manifest.name;
            let held_elsewhere = self
                .files
                .iter()
                .find(|f| f.value() == name && f.key() != &unit.source)
                .map(|f| f.key().clone());
            let first = held_elsewhere.or_else(|| seen.get(name).cloned());
            match first {
                Some(first) => {
                    report.failures.push((
                        unit.source.clone(),
                        LoadError::DuplicateName {
                            name: name.clone(),
                            first,
                            second: unit.source.clone(),
                        },
                    ));
                    false
                }
                None => {
                    seen.insert(name.clone(), unit.source.clone());
                    true
                }
            }
        });
    }

    fn install(&self, opened: Vec<Opened>, report: &mut LoadReport, started: std::time::Instant) {
        // Resolve the new manifests together with everything already loaded that they do not
        // replace.
        let mut graph: BTreeMap<String, UnitManifest> = self
            .slots
            .iter()
            .filter_map(|slot| {
                slot.current()
                    .map(|g| (slot.name.clone(), g.manifest().clone()))
            })
            .collect();
        for unit in &opened {
            graph.insert(unit.manifest.name.clone(), unit.manifest.clone());
        }
        let resolution = resolve(graph.values());
        let mut by_name: BTreeMap<String, Opened> = opened
            .into_iter()
            .map(|unit| (unit.manifest.name.clone(), unit))
            .collect();
        for (name, error) in resolution.refused {
            if let Some(unit) = by_name.remove(&name) {
                report.failures.push((unit.source.clone(), error));
            }
        }
        for name in resolution.order {
            let Some(mut unit) = by_name.remove(&name) else {
                continue;
            };
            if let Some(host) = &self.host {
                unit.bind_host(Box::new(crate::host::UnitHost::new(host, &unit.manifest)));
            }
            let source = unit.source.clone();
            let config = self.unit_config.lock().get(&name).cloned();
            let hash = unit.hash;
            match unit
                .instantiate(config.as_ref())
                .and_then(|loaded| self.swap_in(&source, loaded, started))
            {
                Ok(change) => report.changes.push((source.clone(), change)),
                Err(error) => {
                    self.failed_hashes.insert(source.clone(), hash);
                    report.failures.push((source, error));
                }
            }
        }
    }

    /// Makes `loaded` the unit's serving generation, after its hooks: `on_load` and, when it
    /// replaces an older generation, `on_upgrade` — and, when the old one carries state, the
    /// hand-over of that state while no call runs on either. A refusal leaves the old
    /// generation serving.
    fn swap_in(
        &self,
        source: &Path,
        mut loaded: Loaded,
        started: std::time::Instant,
    ) -> Result<Change, LoadError> {
        let name = loaded.manifest().name.clone();
        let hook = |hook: &'static str| {
            let unit = name.clone();
            move |refusal: Refusal| LoadError::Hook {
                unit,
                hook,
                what: refusal.what,
                message: refusal.message,
            }
        };
        let old = self.slots.get(&name).and_then(|slot| slot.current());
        // A unit that carries state: its old generation's calls hold `life` shared, so taking it
        // exclusively waits for the running ones and holds back new ones until they can go to
        // the new generation; meanwhile the state moves.
        let mut drained = None;
        if let Some(old) = old.as_ref().filter(|g| g.manifest().carries_state) {
            match old.life.try_write_for(STATE_DRAIN_TIMEOUT) {
                Some(life) => {
                    let state = old.loaded.snapshot().map_err(hook("snapshot"))?;
                    if loaded.manifest().carries_state {
                        loaded.restore(&state).map_err(hook("restore"))?;
                    } else {
                        tracing::warn!(unit = %name, bytes = state.len(),
                            "the new version does not carry state: the old version's state is dropped");
                    }
                    drained = Some((life, state.len()));
                }
                None => tracing::warn!(unit = %name, timeout_s = STATE_DRAIN_TIMEOUT.as_secs(),
                    "a call on the old version still runs: swapping without carrying its state"),
            }
        }
        loaded.on_load().map_err(hook("on_load"))?;
        if let Some(old) = &old {
            loaded
                .on_upgrade(&old.manifest().version)
                .map_err(hook("on_upgrade"))?;
        }
        let (change, generation) = self.publish(source, loaded, old.as_deref(), started);
        if let Some((mut life, bytes)) = drained {
            *life = Life::Retired(generation);
            tracing::info!(unit = %name, bytes, "state carried to the new version");
        }
        Ok(change)
    }

    /// Stores `loaded` as the unit's new generation and records the change; returns the
    /// change and the generation.
    fn publish(
        &self,
        source: &Path,
        loaded: Loaded,
        old: Option<&Generation>,
        started: std::time::Instant,
    ) -> (Change, Arc<Generation>) {
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        let name = loaded.manifest().name.clone();
        // The file may have held another unit before.
        if let Some(previous) = self.files.insert(source.to_owned(), name.clone()) {
            if previous != name {
                self.drop_slot(&previous);
            }
        }
        self.failures.remove(source);
        self.failed_hashes.remove(source);
        let slot = self
            .slots
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(UnitSlot {
                    name: name.clone(),
                    current: ArcSwapOption::empty(),
                    enabled: AtomicBool::new(self.desired.get(&name).is_none_or(|c| c.enabled)),
                    generations: AtomicU64::new(0),
                    last_error: Mutex::new(None),
                    health: Default::default(),
                })
            })
            .clone();
        // A new version is judged afresh: the old one's timeouts and quarantine do not count,
        // unless the mesh says this very version is quarantined.
        slot.health.clear();
        let hash = hex::encode(loaded.hash());
        if self
            .desired
            .get(&name)
            .is_some_and(|c| c.quarantined.as_deref() == Some(hash.as_str()))
        {
            slot.health.quarantine();
        }
        let number = slot.generations.fetch_add(1, Ordering::AcqRel) + 1;
        let version = loaded.manifest().version.to_string();
        let generation = Arc::new(Generation {
            number,
            loaded,
            loaded_at: Utc::now(),
            life: parking_lot::RwLock::new(Life::Serving),
        });
        if let Some(listener) = &self.on_generation {
            listener(&name, &generation.manifest().version);
        }
        slot.current.store(Some(Arc::clone(&generation)));
        slot.set_error(None);
        let change = match old {
            None => {
                tracing::info!(unit = %name, %version, generation = number, file = %source.display(), took_ms, "unit loaded");
                metrics::counter!("swarm_unit_loads_total", "unit" => name.clone()).increment(1);
                Change::Loaded { name }
            }
            Some(old) => {
                tracing::info!(unit = %name, %version, generation = number, from = old.number, took_ms, "unit swapped");
                metrics::counter!("swarm_unit_swaps_total", "unit" => name.clone()).increment(1);
                Change::Swapped {
                    name,
                    generation: number,
                }
            }
        };
        (change, generation)
    }

    fn remove_file(&self, path: &Path) -> Option<String> {
        self.failures.remove(path);
        self.failed_hashes.remove(path);
        let (_, name) = self.files.remove(path)?;
        self.drop_slot(&name);
        tracing::info!(unit = %name, file = %path.display(), "unit file removed; unloading once drained");
        let dependents: Vec<String> = self
            .slots
            .iter()
            .filter(|s| {
                s.current()
                    .is_some_and(|g| g.manifest().dependencies.iter().any(|d| d.name == name))
            })
            .map(|s| s.name.clone())
            .collect();
        if !dependents.is_empty() {
            tracing::warn!(unit = %name, ?dependents, "removed a unit that loaded units depend on");
        }
        Some(name)
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

    /// Enables or disables a unit without touching its file; the state survives swaps. Enabling
    /// also lifts a quarantine (and forgets the unit's timeouts). The unit's `on_enable` runs before it takes signals again, and a refusal keeps it disabled;
    /// `on_disable` runs after it stops taking them, and cannot keep it enabled (a refusal is
    /// logged and shown as the unit's last error). Blocking: runs unit code.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), EnableError> {
        let _changing = self.changing.lock();
        let slot = self
            .unit(name)
            .ok_or_else(|| EnableError::UnknownUnit(name.to_owned()))?;
        let was = slot.enabled.load(Ordering::Acquire);
        let generation = slot.current();
        if enabled && !was {
            if let Some(generation) = &generation {
                generation.loaded.on_enabled(true).map_err(|refusal| {
                    tracing::warn!(unit = %name, what = refusal.what, error = %refusal.message,
                        "on_enable refused: the unit stays disabled");
                    EnableError::Refused {
                        unit: name.to_owned(),
                        what: refusal.what,
                        message: refusal.message,
                    }
                })?;
            }
        }
        slot.enabled.store(enabled, Ordering::Release);
        if enabled && slot.health.is_quarantined() {
            tracing::info!(unit = %name, "quarantine lifted: the unit was enabled again");
        }
        if enabled {
            slot.health.clear();
        }
        if !enabled && was {
            if let Some(generation) = &generation {
                if let Err(refusal) = generation.loaded.on_enabled(false) {
                    tracing::warn!(unit = %name, what = refusal.what, error = %refusal.message,
                        "on_disable failed; the unit is disabled anyway");
                    slot.set_error(Some(format!(
                        "on_disable {}: {}",
                        refusal.what, refusal.message
                    )));
                }
            }
        }
        tracing::info!(unit = %name, enabled, "unit {}", if enabled { "enabled" } else { "disabled" });
        Ok(())
    }

    /// Applies a unit's control from the mesh (another reactor, or this one before a restart,
    /// changed it): enables or disables the unit, and quarantines it or lifts its quarantine
    /// if the version quarantined is the one serving. Remembered for a unit not loaded yet.
    /// Blocking: runs unit hooks.
    pub fn apply_control(&self, name: &str, control: &UnitControl) -> Result<(), EnableError> {
        self.desired.insert(name.to_owned(), control.clone());
        let Some(slot) = self.unit(name) else {
            return Ok(());
        };
        if slot.is_enabled() != control.enabled {
            self.set_enabled(name, control.enabled)?;
        }
        let serving = slot.current().map(|g| hex::encode(g.loaded.hash()));
        let quarantined = serving.is_some() && control.quarantined == serving;
        if quarantined && slot.health.quarantine() {
            tracing::warn!(unit = %name, by = %control.by, "unit quarantined on the mesh");
        } else if !quarantined && slot.is_quarantined() {
            slot.health.clear();
            tracing::info!(unit = %name, by = %control.by, "quarantine lifted on the mesh");
        }
        Ok(())
    }

    /// A unit's control as this process has it: enabled, and the hash (hex) of its serving
    /// version if that is quarantined. `None` if it is not loaded.
    pub fn local_control(&self, name: &str) -> Option<(bool, Option<String>)> {
        let slot = self.unit(name)?;
        let quarantined = slot
            .is_quarantined()
            .then(|| slot.current().map(|g| hex::encode(g.loaded.hash())))
            .flatten();
        Some((slot.is_enabled(), quarantined))
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
                    name: slot.name.clone(),
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
