//! A unit name's place in the registry: the generation serving now, swapped atomically, and
//! whether the unit takes signals.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use swarm_schemas::UnitManifest;

use crate::loader::{CallResult, Loaded};
use crate::registry::lock;

/// One load of a unit's file: an instance of one version of the unit.
pub struct Generation {
    pub(crate) number: u64,
    pub(crate) loaded: Loaded,
    pub(crate) loaded_at: DateTime<Utc>,
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

    pub(crate) fn call(&self, signal: &[u8]) -> CallResult {
        self.loaded.call(signal)
    }
}

/// A unit name's place in the registry, across generations.
pub struct UnitSlot {
    pub(crate) name: String,
    pub(crate) current: ArcSwapOption<Generation>,
    pub(crate) enabled: AtomicBool,
    pub(crate) generations: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl UnitSlot {
    /// The unit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The generation serving now, if the unit is still loaded.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current.load_full()
    }

    /// Whether the unit takes signals.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    pub(crate) fn set_error(&self, error: Option<String>) {
        *lock(&self.last_error) = error;
    }
}
