//! Applying file changes: which libraries to open, which to refuse, which units to remove, and
//! retrying the units that wait on another.

use super::Registry;
use crate::LoadError;
use crate::isolate::WorkerSpec;
use crate::loader::{self, Opened};
use crate::status::{Change, LoadReport};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

impl Registry {
    /// After `report`, tries again the files refused only because of other units, as long as
    /// something changes.
    pub(super) fn retry_dependents(&self, mut report: LoadReport) -> LoadReport {
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
    pub(super) fn apply_locked(
        &self,
        paths: Vec<PathBuf>,
        force: &BTreeSet<PathBuf>,
    ) -> LoadReport {
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

    /// Opens a unit's library: in this process, or in a worker if the unit is isolated (a
    /// worker reads the name first when only some units are).
    pub(super) fn open(&self, file: loader::UnitFile) -> Result<Opened, LoadError> {
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

    /// Hash of the generation serving from `path`, if any.
    pub(super) fn serving_hash(&self, path: &Path) -> Option<[u8; 32]> {
        let name = self.files.get(path)?.clone();
        let slot = self.unit(&name)?;
        Some(slot.current()?.loaded.hash())
    }

    pub(super) fn refuse_duplicates(&self, opened: &mut Vec<Opened>, report: &mut LoadReport) {
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

    pub(super) fn remove_file(&self, path: &Path) -> Option<String> {
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
            .map(|s| s.name.to_string())
            .collect();
        if !dependents.is_empty() {
            tracing::warn!(unit = %name, ?dependents, "removed a unit that loaded units depend on");
        }
        Some(name)
    }
}
