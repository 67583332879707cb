//! Installing opened libraries: a new unit's first generation, or a swap of the serving one
//! (state carried over, hooks run, listeners told).

use super::{Registry, STATE_DRAIN_TIMEOUT};
use crate::LoadError;
use crate::loader::{Loaded, Opened, Refusal};
use crate::resolve::resolve;
use crate::slot::{Generation, Life, UnitSlot};
use crate::status::{Change, LoadReport};
use arc_swap::ArcSwapOption;
use chrono::Utc;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use swarm_schemas::UnitManifest;

impl Registry {
    pub(super) fn install(
        &self,
        opened: Vec<Opened>,
        report: &mut LoadReport,
        started: std::time::Instant,
    ) {
        // Resolve the new manifests together with everything already loaded that they do not
        // replace.
        let mut graph: BTreeMap<String, UnitManifest> = self
            .slots
            .iter()
            .filter_map(|slot| {
                slot.current()
                    .map(|g| (slot.name.to_string(), g.manifest().clone()))
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
    pub(super) fn swap_in(
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
    pub(super) fn publish(
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
                    name: Arc::from(name.as_str()),
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
}
