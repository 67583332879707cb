//! The registry: which units are loaded, in which generation, enabled or not.
//!
//! Each unit name has a slot holding its current [`Generation`] in an `ArcSwapOption`. A call
//! takes an `Arc` of the generation it runs on, so swapping in a new generation never waits for
//! running calls and never interrupts them: they finish on the old code, and the old generation
//! (its instance, its library) is dropped when the last of them returns. Dispatch reads a
//! snapshot of the slots without locking; changes (loads, swaps, removals) are serialised.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::Utc;
use dashmap::DashMap;
use swarm_schemas::{UnitManifest, UnitState, UnitStatus};

use crate::LoadError;
use crate::loader::{self, Loaded, Opened};
use crate::resolve::resolve;
use crate::slot::{Generation, UnitSlot};
use crate::status::{Change, FileFailure, LoadReport};

/// Asked for a unit that is not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no unit named `{0}` is loaded")]
pub struct UnknownUnit(pub String);

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loaded units, by name, with their files.
pub struct Registry {
    private_dir: PathBuf,
    unit_config: BTreeMap<String, serde_json::Value>,
    slots: DashMap<String, Arc<UnitSlot>>,
    files: DashMap<PathBuf, String>,
    failures: DashMap<PathBuf, LoadError>,
    /// Hash of the bytes whose load failed last, per file: the same bytes are not tried again
    /// (a panicking constructor is not re-run on every duplicate file event).
    failed_hashes: DashMap<PathBuf, [u8; 32]>,
    snapshot: ArcSwap<Vec<Arc<UnitSlot>>>,
    changing: Mutex<()>,
}

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
            unit_config,
            slots: DashMap::new(),
            files: DashMap::new(),
            failures: DashMap::new(),
            failed_hashes: DashMap::new(),
            snapshot: ArcSwap::from_pointee(Vec::new()),
            changing: Mutex::new(()),
        }
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
        let _changing = lock(&self.changing);
        let mut report = self.apply_locked(paths);
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
            let again = self.apply_locked(retry);
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

    fn apply_locked(&self, paths: Vec<PathBuf>) -> LoadReport {
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
            if self.serving_hash(&path) == Some(file.hash) {
                self.failures.remove(&path);
                report.changes.push((path, Change::Unchanged));
                continue;
            }
            if self
                .failed_hashes
                .get(&path)
                .is_some_and(|h| *h == file.hash)
            {
                // Already refused, with the reason on record.
                continue;
            }
            let hash = file.hash;
            match loader::open(file, &self.private_dir) {
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
            let Some(unit) = by_name.remove(&name) else {
                continue;
            };
            let source = unit.source.clone();
            let config = self.unit_config.get(&name);
            let hash = unit.hash;
            match unit.instantiate(config) {
                Ok(loaded) => report
                    .changes
                    .push((source.clone(), self.swap_in(&source, loaded, started))),
                Err(error) => {
                    self.failed_hashes.insert(source.clone(), hash);
                    report.failures.push((source, error));
                }
            }
        }
    }

    fn swap_in(&self, source: &Path, loaded: Loaded, started: std::time::Instant) -> Change {
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
                    enabled: AtomicBool::new(true),
                    generations: AtomicU64::new(0),
                    last_error: Mutex::new(None),
                })
            })
            .clone();
        let number = slot.generations.fetch_add(1, Ordering::AcqRel) + 1;
        let version = loaded.manifest().version.to_string();
        let generation = Arc::new(Generation {
            number,
            loaded,
            loaded_at: Utc::now(),
        });
        let previous = slot.current.swap(Some(generation));
        slot.set_error(None);
        match previous {
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
        }
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

    /// Enables or disables a unit without touching its file. Survives swaps.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), UnknownUnit> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| UnknownUnit(name.to_owned()))?;
        slot.enabled.store(enabled, Ordering::Release);
        tracing::info!(unit = %name, enabled, "unit {}", if enabled { "enabled" } else { "disabled" });
        Ok(())
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
                    state: if slot.is_enabled() {
                        UnitState::Ready
                    } else {
                        UnitState::Disabled
                    },
                    subscribes: manifest.subscribes.clone(),
                    emits: manifest.emits.clone(),
                    dispatch: manifest.dispatch,
                    file: generation.loaded.source().display().to_string(),
                    last_error: lock(&slot.last_error).clone(),
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
