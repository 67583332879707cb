//! A unit name's place in the registry: the generation serving now, swapped atomically, and
//! whether the unit takes signals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use swarm_schemas::UnitManifest;

use crate::loader::{CallResult, Loaded};
use crate::quarantine::UnitHealth;

/// One load of a unit's file: an instance of one version of the unit.
pub struct Generation {
    pub(crate) number: u64,
    pub(crate) loaded: Loaded,
    pub(crate) loaded_at: DateTime<Utc>,
    /// For a unit that carries state: calls hold it shared; a swap holds it exclusively while
    /// it takes the snapshot, then marks the generation retired, and calls that were waiting
    /// run on the successor. Units without state never touch it.
    pub(crate) life: RwLock<Life>,
}

/// Whether a generation still takes calls.
pub(crate) enum Life {
    /// It serves.
    Serving,
    /// Its state went to this successor, which takes its calls.
    Retired(Arc<Generation>),
}

impl Generation {
    /// 1 for the first load of this unit, +1 on every swap.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The unit's manifest, as checked at load.
    pub fn manifest(&self) -> &UnitManifest {
        self.loaded.manifest()
    }

    /// When this generation was loaded.
    pub fn loaded_at(&self) -> DateTime<Utc> {
        self.loaded_at
    }

    /// Hands a JSON signal to the unit, on this generation or, when it was retired while the
    /// call waited, on its successor. Returns the generation that ran it. Blocking.
    pub(crate) fn call(self: &Arc<Self>, signal: &[u8]) -> (Arc<Generation>, CallResult) {
        if !self.manifest().carries_state {
            return (Arc::clone(self), self.loaded.call(signal));
        }
        let life = self.life.read();
        match &*life {
            Life::Serving => (Arc::clone(self), self.loaded.call(signal)),
            Life::Retired(next) => {
                let next = Arc::clone(next);
                drop(life);
                next.call(signal)
            }
        }
    }
}

/// A unit name's place in the registry, across generations.
pub struct UnitSlot {
    /// Shared: every signal's ranking names its candidates without a copy.
    pub(crate) name: Arc<str>,
    pub(crate) current: ArcSwapOption<Generation>,
    pub(crate) enabled: AtomicBool,
    pub(crate) generations: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Its calls past their deadline, and whether that has quarantined it.
    pub(crate) health: UnitHealth,
}

impl UnitSlot {
    /// The unit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The unit's name, shared.
    pub(crate) fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The generation serving now, if the unit is still loaded.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current.load_full()
    }

    /// Whether the unit takes signals.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Whether its calls kept running past their deadline, so that it gets no signals until a
    /// new version is swapped in or it is enabled again.
    pub fn is_quarantined(&self) -> bool {
        self.health.is_quarantined()
    }

    pub(crate) fn set_error(&self, error: Option<String>) {
        *self.last_error.lock() = error;
    }
}
