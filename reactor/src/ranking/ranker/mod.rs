//! The ranker: orders the units that compete for a signal by how they did on similar signals.
//!
//! Evidence is kept per context — a (kind, signal shape) pair — and per unit, as weighted
//! successes and failures ([`Evidence`]). It comes from two places: the nearest past executions
//! of the same kind in memory (refreshed in the background by [`Ranker::refresh`], weighted by
//! similarity relative to the nearest and by recency), and this process's own outcomes since
//! ([`Ranker::observe`], at once, so the ranker does not wait for memory). Both are counted once
//! (by execution id). The hot path ([`Ranker::rank`]) reads the context's sums, adds a prior
//! from the unit's decayed global rate, draws one sample per unit from its posterior sharpened by
//! the policy's concentration (Thompson sampling under top-k; under first-success, where the
//! fallbacks explore, about the order of the posterior means) and sorts: no I/O, a few
//! microseconds. From its first signal, a context also borrows the evidence of its nearest
//! contexts of the same kind by their shapes' vectors ([`Ranker::place`], `sharing.rs`), so that
//! a new phrasing of a known topic is ranked from its neighbours before memory has anything of
//! it.

//!
//! - `config.rs` — [`RankerConfig`].
//! - `context.rs` — the state per context and the posteriors cached from it.
//! - `sampling.rs` — [`Ranker::rank`], the hot path.
//! - `learning.rs` — [`Ranker::observe`]: learning from this process's outcomes.
//! - `versions.rs` — which executions count: per unit version, and after a unit changed.
//! - `refresh.rs` — [`Ranker::refresh`] from memory.
//! - `sharing.rs` — [`Ranker::place`]: neighbours by shape vector, and what a context borrows.

mod config;
mod context;
mod learning;
mod refresh;
mod sampling;
mod sharing;
mod versions;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub use config::RankerConfig;
use context::{Context, Key};
pub use refresh::Refreshed;
pub use sampling::{Choice, Order};
pub use sharing::Unplaced;
use versions::VersionStanding;

use super::breaker::{Breaker, BreakerState};
use super::change::{Cusum, UnitAlarms};
use super::evidence::Evidence;

/// Ranks competing units from memory; see the module documentation.
pub struct Ranker {
    config: RankerConfig,
    contexts: DashMap<Key, Arc<Context>>,
    /// The contexts of recently ranked signals by their shapes' fingerprints: finding a
    /// signal's context again walks its payload once instead of building its shape. Weak, so
    /// that a context evicted from `contexts` is dropped as before (and no longer lends).
    fingerprints: quick_cache::sync::Cache<u128, Weak<Context>>,
    /// The placed contexts of each kind, oldest first: where a new shape's neighbours are looked
    /// for.
    placed: DashMap<String, Vec<Weak<Context>>>,
    /// Decayed global evidence per (kind, unit): the prior.
    global: DashMap<(String, Arc<str>), (DateTime<Utc>, Evidence)>,
    breakers: DashMap<Arc<str>, Arc<Breaker>>,
    /// The version of each unit whose outcomes count, and when its first execution started.
    versions: DashMap<Arc<str>, (semver::Version, DateTime<Utc>)>,
    /// Changes detected per unit, across contexts.
    alarms: UnitAlarms,
    /// Per unit, a change detector over its outcomes in every context (`unit_pooled_threshold`).
    pooled: DashMap<Arc<str>, Cusum>,
    /// Executions of a unit started before this do not count: the unit changed then.
    changed_at: DashMap<Arc<str>, DateTime<Utc>>,
    rng: Mutex<SmallRng>,
    changes: AtomicU64,
    unit_changes: AtomicU64,
}

/// Logs and counts a change of `unit`'s circuit breaker to `state`.
fn breaker_moved(unit: &str, state: BreakerState) {
    tracing::info!(unit = %unit, state = ?state, "circuit breaker");
    let open = if state == BreakerState::Open {
        1.0
    } else {
        0.0
    };
    metrics::gauge!("swarm_breaker_open", "unit" => unit.to_owned()).set(open);
    if state == BreakerState::Open {
        metrics::counter!("swarm_breaker_opened_total", "unit" => unit.to_owned()).increment(1);
    }
}

impl Ranker {
    /// A ranker that knows nothing yet.
    pub fn new(config: RankerConfig) -> Self {
        let rng = Mutex::new(SmallRng::seed_from_u64(config.seed));
        let fingerprints = quick_cache::sync::Cache::new(config.max_contexts.clamp(16, 1 << 20));
        Self {
            config,
            contexts: DashMap::new(),
            fingerprints,
            placed: DashMap::new(),
            global: DashMap::new(),
            breakers: DashMap::new(),
            versions: DashMap::new(),
            alarms: UnitAlarms::default(),
            pooled: DashMap::new(),
            changed_at: DashMap::new(),
            rng,
            changes: AtomicU64::new(0),
            unit_changes: AtomicU64::new(0),
        }
    }

    /// Changes detected so far (each dropped a context's older evidence).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Changes of a unit itself inferred so far (each dropped what was known of the unit).
    pub fn unit_changes(&self) -> u64 {
        self.unit_changes.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &RankerConfig {
        &self.config
    }

    fn breaker(&self, unit: &Arc<str>) -> Arc<Breaker> {
        if let Some(b) = self.breakers.get(unit) {
            return Arc::clone(b.value());
        }
        Arc::clone(
            self.breakers
                .entry(Arc::clone(unit))
                .or_insert_with(|| Arc::new(Breaker::new(self.config.breaker.clone())))
                .value(),
        )
    }

    /// The state of a unit's circuit breaker.
    pub fn breaker_state(&self, unit: &str) -> BreakerState {
        self.breakers
            .get(unit)
            .map_or(BreakerState::Closed, |b| b.state())
    }

    /// A new generation of `unit`, at `version`, serves from `now`: loaded, swapped in or
    /// reconfigured. Its circuit breaker closes, and outcomes of calls started before `now` no
    /// longer move it: the failures that opened it were the old code's. With `per_version`, a
    /// version other than the one judged becomes the judged one at once, before any of its
    /// outcomes arrive, and what was known of the unit is dropped.
    pub fn unit_loaded(&self, unit: &str, version: &semver::Version, now: DateTime<Utc>) {
        let unit: Arc<str> = Arc::from(unit);
        if let Some(state) = self.breaker(&unit).reset(now) {
            breaker_moved(&unit, state);
        }
        // The load stands for the version's first execution, started now.
        if self.config.per_version && self.standing(&unit, version, now) == VersionStanding::New {
            self.new_version(&unit, version);
        }
    }

    /// Number of contexts held.
    pub fn contexts(&self) -> usize {
        self.contexts.len()
    }
}
