//! The ranker: orders the units that compete for a signal by how they did on similar signals.
//!
//! Evidence is kept per context — a (kind, signal shape) pair — and per unit, as weighted
//! successes and failures ([`Evidence`]). It comes from two places: the nearest past executions
//! of the same kind in memory (refreshed in the background by [`Ranker::refresh`], weighted by
//! similarity relative to the nearest and by recency), and this process's own outcomes since
//! ([`Ranker::observe`], at once, so the ranker does not wait for memory). Both are counted once
//! (by execution id). The hot path ([`Ranker::rank`]) reads the context's sums, adds a prior
//! from the unit's decayed global rate, draws one Thompson sample per unit and sorts: no I/O, a
//! few microseconds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution};
use swarm_memory::{Memory, MemoryError, SearchQuery, Shape};
use swarm_schemas::{DispatchPolicy, ExecutionId, ExecutionRecord, Signal};

use super::breaker::{Breaker, BreakerConfig, BreakerState};
use super::change::{Cusum, Shift, UnitAlarms};
use super::evidence::{Evidence, Weighed, Weighing, weigh};
use super::propensity::{beta_moments, matrix};

/// How the ranker weighs, explores and forgets.
#[derive(Debug, Clone)]
pub struct RankerConfig {
    /// Similarity, recency and latency weighting of past executions.
    pub weighing: Weighing,
    /// Past executions asked of memory per context (K).
    pub neighbours: usize,
    /// At most this many of them from any one signal shape (the newest), so that similar
    /// shapes are heard too and not only the context's own.
    pub per_shape: usize,
    /// Weight of the prior drawn from a unit's global rate (in executions).
    pub prior_strength: f64,
    /// A unit's evidence in one context is scaled down to at most this weight, so that new
    /// outcomes always move it.
    pub max_evidence: f64,
    /// Probability of a uniformly random order instead of the sampled one (exploration that
    /// never switches off, however sure the posteriors are).
    pub exploration: f64,
    /// Each posterior Beta(a, b) is sampled as Beta(c·a, c·b): the same mean, about 1/c of
    /// the variance. 1 is plain Thompson sampling; above 1 the ranker settles sooner on what
    /// little evidence says, and explores less. The README's ranking benchmark says why the
    /// default is 4.
    pub concentration: f64,
    /// Change detector threshold (log-likelihood ratio); 0 turns detection off. A change of
    /// any unit in a context drops that unit's older evidence there and all but `change_keep`
    /// of the others': what made one unit change has likely changed the others' odds too. Each
    /// false alarm costs a context its evidence; the README's ranking benchmark says why the
    /// default is 6.
    pub change_threshold: f64,
    /// Smallest change of success rate the detector looks for.
    pub change_delta: f64,
    /// Evidence a unit needs in a context before its outcomes there are watched for change.
    pub change_evidence: f64,
    /// Share of the other units' evidence kept when a change is detected (the changed unit's
    /// is dropped); 0 explores every unit afresh.
    pub change_keep: f64,
    /// A unit seen to change the same way in this many contexts within `unit_change_window`
    /// has changed itself (a dependency broke, a service it calls moved): what was known of it
    /// is dropped everywhere, as for a new version, and its executions from before no longer
    /// count. 0 keeps every change to its context.
    pub unit_change_contexts: usize,
    /// How close together those changes must be.
    pub unit_change_window: Duration,
    /// A unit's evidence counts only for the version of the unit it was gathered on: when a
    /// unit's outcomes start coming from another version (a hot swap, a deploy, a rollback),
    /// what was known of it is dropped everywhere and the new version is judged from its prior
    /// and its own outcomes. Off, versions are not told apart and only the change detector
    /// notices.
    pub per_version: bool,
    /// A context with new outcomes is refreshed from memory at most this often (each refresh
    /// is one similarity search per competing unit; between refreshes the ranker learns from
    /// this process's own outcomes).
    pub refresh_every: Duration,
    /// This process's recent outcomes kept per context (until memory has them).
    pub local_window: usize,
    /// Contexts kept; the least recently used go first.
    pub max_contexts: usize,
    /// The circuit breaker of every unit.
    pub breaker: BreakerConfig,
    /// Seed of the sampling (fixed for reproducible runs).
    pub seed: u64,
}

impl Default for RankerConfig {
    fn default() -> Self {
        Self {
            weighing: Weighing::default(),
            neighbours: 100,
            per_shape: 50,
            prior_strength: 2.0,
            max_evidence: 100.0,
            exploration: 0.02,
            concentration: 4.0,
            change_threshold: 6.0,
            change_delta: 0.4,
            change_evidence: 10.0,
            change_keep: 0.0,
            unit_change_contexts: 2,
            unit_change_window: Duration::from_secs(600),
            per_version: true,
            refresh_every: Duration::from_secs(5),
            local_window: 256,
            max_contexts: 100_000,
            breaker: BreakerConfig::default(),
            seed: 0x5eed,
        }
    }
}

/// One unit in an order.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The unit.
    pub unit: Arc<str>,
    /// Probability that the policy puts this unit at least as high as it did: for the first
    /// unit, that it is chosen first; 1.0 under fan-out.
    pub propensity: f64,
    /// The sampled score it was ordered by (posterior mean for fan-out).
    pub score: f64,
}

/// The units to try for one signal, in order, under a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The policy that made it.
    pub policy: DispatchPolicy,
    /// Every admitted unit, best first.
    pub ranked: Vec<Choice>,
    /// Units left out because their circuit breaker is open.
    pub skipped: Vec<Arc<str>>,
}

impl Order {
    /// The units that fire at once: all under fan-out, the first k under top-k, the first
    /// under first-success (the rest are its fallbacks, in order).
    pub fn first_wave(&self) -> &[Choice] {
        let n = match self.policy {
            DispatchPolicy::FanOut => self.ranked.len(),
            DispatchPolicy::TopK { k } => (k as usize).min(self.ranked.len()),
            DispatchPolicy::FirstSuccess => self.ranked.len().min(1),
        };
        &self.ranked[..n]
    }
}

/// One outcome this process saw, kept until a refresh finds it in memory.
#[derive(Debug, Clone)]
struct Observed {
    id: ExecutionId,
    unit: Arc<str>,
    reward: f64,
    at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct ContextState {
    /// The time `evidence` refers to; it decays from there.
    at: Option<DateTime<Utc>>,
    evidence: HashMap<Arc<str>, Evidence>,
    local: VecDeque<Observed>,
    /// Evidence older than this is ignored (a change was detected then)...
    cutoff: Option<DateTime<Utc>>,
    /// ...but for this share of the other units' evidence at that moment, kept as of `cutoff`.
    carried: HashMap<Arc<str>, Evidence>,
    detectors: HashMap<Arc<str>, Cusum>,
    refreshed: Option<DateTime<Utc>>,
    dirty: bool,
    used: Option<DateTime<Utc>>,
    /// Posteriors and propensities of the units last ranked here, kept up to date by observe
    /// and refresh so that ranking only samples.
    cached: Option<Cached>,
}

/// What ranking a given set of units in a context needs, computed ahead.
#[derive(Debug, Clone)]
struct Cached {
    units: Vec<Arc<str>>,
    posteriors: Vec<(f64, f64)>,
    /// `top[k - 1][i]`: probability that Thompson sampling puts unit i among the first k.
    top: Vec<Vec<f64>>,
}

/// A (kind, shape) the ranker has seen.
#[derive(Debug)]
struct Context {
    /// The shape (bounded in size, unlike a signal): the probe of refreshes.
    shape: Shape,
    state: Mutex<ContextState>,
}

impl Context {
    fn lock(&self) -> parking_lot::MutexGuard<'_, ContextState> {
        self.state.lock()
    }
}

/// What a refresh did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Contexts refreshed from memory.
    pub contexts: usize,
    /// Contexts still due (the refresh stopped at its limit or at an error).
    pub pending: usize,
}

/// A context: the signal's kind and the id of its shape.
type Key = (String, i64);

/// Ranks competing units from memory; see the module documentation.
pub struct Ranker {
    config: RankerConfig,
    contexts: DashMap<Key, Arc<Context>>,
    /// Decayed global evidence per (kind, unit): the prior.
    global: DashMap<(String, Arc<str>), (DateTime<Utc>, Evidence)>,
    breakers: DashMap<Arc<str>, Arc<Breaker>>,
    /// The version of each unit whose outcomes count, and when its first execution started.
    versions: DashMap<Arc<str>, (semver::Version, DateTime<Utc>)>,
    /// Changes detected per unit, across contexts.
    alarms: UnitAlarms,
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

/// Where an execution's unit version stands against the version the ranker judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionStanding {
    /// The version whose outcomes count (or the first one seen).
    Current,
    /// Another version, started after the current one was first seen: it replaces it.
    New,
    /// Another version, started before: an execution of a replaced version that finished late.
    Replaced,
}

impl Ranker {
    /// A ranker that knows nothing yet.
    pub fn new(config: RankerConfig) -> Self {
        let rng = Mutex::new(SmallRng::seed_from_u64(config.seed));
        Self {
            config,
            contexts: DashMap::new(),
            global: DashMap::new(),
            breakers: DashMap::new(),
            versions: DashMap::new(),
            alarms: UnitAlarms::default(),
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
            self.new_version(&unit, version, now);
        }
    }

    fn context(&self, signal: &Signal, now: DateTime<Utc>) -> Arc<Context> {
        let shape = Shape::of(signal);
        let key = (shape.kind.clone(), shape.id);
        if let Some(found) = self.contexts.get(&key) {
            return Arc::clone(found.value());
        }
        if self.contexts.len() >= self.config.max_contexts {
            self.evict();
        }
        Arc::clone(
            self.contexts
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(Context {
                        shape,
                        state: Mutex::new(ContextState {
                            dirty: true,
                            used: Some(now),
                            ..ContextState::default()
                        }),
                    })
                })
                .value(),
        )
    }

    /// Drops the least recently used tenth of the contexts.
    fn evict(&self) {
        let mut used: Vec<(Key, Option<DateTime<Utc>>)> = self
            .contexts
            .iter()
            .map(|e| (e.key().clone(), e.value().lock().used))
            .collect();
        used.sort_by_key(|(_, u)| *u);
        for (key, _) in used.iter().take((used.len() / 10).max(1)) {
            self.contexts.remove(key);
        }
    }

    /// The prior of `unit` for `kind`: Beta(m·g, m·(1-g)) with g its decayed global reward rate
    /// (0.5 before anything is known).
    fn prior(&self, kind: &str, unit: &Arc<str>, now: DateTime<Utc>) -> (f64, f64) {
        let rate = self
            .global
            .get(&(kind.to_owned(), Arc::clone(unit)))
            .map_or(0.5, |g| {
                let (at, e) = *g.value();
                let e = e.scaled(self.config.weighing.recency(at, now));
                (e.wins + 0.5) / (e.weight() + 1.0)
            });
        let m = self.config.prior_strength;
        (m * rate, m * (1.0 - rate))
    }

    /// Posterior (a, b) of each unit in a context, at `now`.
    fn posteriors(
        &self,
        kind: &str,
        state: &ContextState,
        units: &[Arc<str>],
        now: DateTime<Utc>,
    ) -> Vec<(f64, f64)> {
        let decay = state
            .at
            .map_or(1.0, |at| self.config.weighing.recency(at, now));
        units
            .iter()
            .map(|unit| {
                let e = state.evidence.get(unit).copied().unwrap_or_default();
                self.posterior(kind, unit, e.scaled(decay), now)
            })
            .collect()
    }

    /// Posterior (a, b) of `unit` with `evidence` (as of `now`): the prior plus the evidence,
    /// capped, times the concentration.
    pub(super) fn posterior(
        &self,
        kind: &str,
        unit: &Arc<str>,
        evidence: Evidence,
        now: DateTime<Utc>,
    ) -> (f64, f64) {
        let (pa, pb) = self.prior(kind, unit, now);
        let e = evidence.capped(self.config.max_evidence);
        let c = self.config.concentration.max(f64::MIN_POSITIVE);
        (c * (pa + e.wins), c * (pb + e.losses))
    }

    /// Posteriors and propensities of `units` in a context, at `now`.
    fn cache(
        &self,
        kind: &str,
        state: &ContextState,
        units: Vec<Arc<str>>,
        now: DateTime<Utc>,
    ) -> Cached {
        let posteriors = self.posteriors(kind, state, &units, now);
        let moments: Vec<(f64, f64)> = posteriors
            .iter()
            .map(|&(a, b)| beta_moments(a, b))
            .collect();
        Cached {
            units,
            posteriors,
            top: matrix(&moments),
        }
    }

    /// Recomputes the cached ranking of a context after its evidence changed.
    fn recache(&self, kind: &str, state: &mut ContextState, now: DateTime<Utc>) {
        if let Some(units) = state.cached.take().map(|c| c.units) {
            state.cached = Some(self.cache(kind, state, units, now));
        }
    }

    /// Orders `candidates` for `signal` under `policy`. Units whose breaker is open are left
    /// out (`skipped`); a half-open unit is admitted for one probe at a time.
    pub fn rank(
        &self,
        signal: &Signal,
        candidates: &[Arc<str>],
        policy: DispatchPolicy,
        now: DateTime<Utc>,
    ) -> Order {
        let mut admitted = Vec::with_capacity(candidates.len());
        let mut skipped = Vec::new();
        for unit in candidates {
            if self.breaker(unit).admit(now) {
                admitted.push(Arc::clone(unit));
            } else {
                skipped.push(Arc::clone(unit));
            }
        }
        if admitted.len() <= 1 || policy == DispatchPolicy::FanOut {
            return Order {
                policy,
                ranked: admitted
                    .into_iter()
                    .map(|unit| Choice {
                        unit,
                        propensity: 1.0,
                        score: 1.0,
                    })
                    .collect(),
                skipped,
            };
        }
        let context = self.context(signal, now);
        let cached = {
            let mut state = context.lock();
            state.used = Some(now);
            match &state.cached {
                Some(c) if c.units == admitted => c.clone(),
                _ => {
                    let fresh = self.cache(&signal.kind, &state, admitted, now);
                    state.cached = Some(fresh.clone());
                    fresh
                }
            }
        };
        let n = cached.units.len();
        let mut scored: Vec<(usize, f64)> = {
            let mut rng = self.rng.lock();
            let explore = rng.random::<f64>() < self.config.exploration;
            (0..n)
                .map(|i| {
                    let (a, b) = cached.posteriors[i];
                    let score = if explore {
                        rng.random::<f64>()
                    } else {
                        Beta::new(a, b).map_or(a / (a + b), |d| d.sample(&mut *rng))
                    };
                    (i, score)
                })
                .collect()
        };
        scored.sort_by(|x, y| y.1.total_cmp(&x.1));
        // The propensity of the unit at position j: P(among the first max(j + 1, wave)), with
        // the uniformly random order mixed in.
        let wave = match policy {
            DispatchPolicy::TopK { k } => (k as usize).clamp(1, n),
            _ => 1,
        };
        let eps = self.config.exploration;
        let ranked = scored
            .into_iter()
            .enumerate()
            .map(|(position, (i, score))| {
                let k = (position + 1).max(wave);
                Choice {
                    unit: Arc::clone(&cached.units[i]),
                    propensity: (1.0 - eps) * cached.top[k - 1][i] + eps * k as f64 / n as f64,
                    score,
                }
            })
            .collect();
        Order {
            policy,
            ranked,
            skipped,
        }
    }

    /// Learns from one execution this process ran: the unit's breaker and, when the unit was
    /// chosen among competitors, its global rate and the evidence of the signal's context (with
    /// change detection).
    pub fn observe(&self, record: &ExecutionRecord) {
        let unit: Arc<str> = Arc::from(record.unit.as_str());
        let now = record.started_at;
        let success = record.outcome.is_success();
        if let Some(state) = self.breaker(&unit).record(success, now) {
            breaker_moved(&unit, state);
        }
        if record.policy == DispatchPolicy::FanOut.name() {
            // Nothing competed: only the breaker needs to know.
            return;
        }
        if self.config.per_version {
            match self.standing(&unit, &record.unit_version, now) {
                VersionStanding::Current => {}
                VersionStanding::New => self.new_version(&unit, &record.unit_version, now),
                VersionStanding::Replaced => return,
            }
        }
        if self.changed_before(&unit, now) {
            // Started before the unit itself changed: it speaks of what the unit was.
            return;
        }
        let w = &self.config.weighing;
        let reward = w.reward(success, record.latency_us);
        {
            let mut global = self
                .global
                .entry((record.signal.kind.clone(), Arc::clone(&unit)))
                .or_insert((now, Evidence::default()));
            let (at, e) = *global;
            let mut e = e.scaled(w.recency(at, now));
            e.add(reward, 1.0);
            *global = (now.max(at), e);
        }
        let context = self.context(&record.signal, now);
        let shift = self.learn(&context, &unit, record, reward, now);
        if let Some(shift) = shift {
            let c = &self.config;
            let of_unit = self.alarms.raise(
                &unit,
                context.shape.id,
                shift,
                now,
                c.unit_change_contexts,
                c.unit_change_window,
            );
            if of_unit {
                self.unit_changed(&unit, shift, now);
            }
        }
    }

    /// Adds one outcome of `unit` to a context's evidence, watching for a change there; the
    /// shift when one was detected (the context's older evidence is then dropped).
    fn learn(
        &self,
        context: &Context,
        unit: &Arc<str>,
        record: &ExecutionRecord,
        reward: f64,
        now: DateTime<Utc>,
    ) -> Option<Shift> {
        let w = &self.config.weighing;
        let mut state = context.lock();
        let decay = state.at.map_or(1.0, |at| w.recency(at, now));
        let known = state.evidence.get(unit).map_or(0.0, Evidence::weight) * decay;
        let expected = {
            let (a, b) =
                self.posteriors(&record.signal.kind, &state, std::slice::from_ref(unit), now)[0];
            a / (a + b)
        };
        // Bring the sums to now, then add.
        if decay != 1.0 {
            for e in state.evidence.values_mut() {
                *e = e.scaled(decay);
            }
        }
        state.at = Some(state.at.map_or(now, |at| at.max(now)));
        // Only a unit whose odds here are known can surprise: one still being learned is not
        // changing, it is being found out.
        let mut shift = None;
        if self.config.change_threshold > 0.0 && known >= self.config.change_evidence {
            shift = state
                .detectors
                .entry(Arc::clone(unit))
                .or_default()
                .observe(
                    reward,
                    expected,
                    self.config.change_delta,
                    self.config.change_threshold,
                );
            if shift.is_some() {
                tracing::debug!(unit = %unit, kind = %record.signal.kind, expected, "change detected: older evidence dropped");
                self.changes.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("swarm_ranker_changes_total").increment(1);
                state.cutoff = Some(now);
                let keep = self.config.change_keep;
                state.evidence.remove(unit);
                state.carried = state
                    .evidence
                    .drain()
                    .map(|(u, e)| (u, e.scaled(keep)))
                    .filter(|(_, e)| e.weight() > 0.0)
                    .collect();
                state.evidence = state.carried.clone();
                state.local.clear();
                state.detectors.clear();
            }
        }
        state
            .evidence
            .entry(Arc::clone(unit))
            .or_default()
            .add(reward, 1.0);
        state.local.push_back(Observed {
            id: record.id,
            unit: Arc::clone(unit),
            reward,
            at: now,
        });
        while state.local.len() > self.config.local_window {
            state.local.pop_front();
        }
        state.dirty = true;
        self.recache(&record.signal.kind, &mut state, now);
        shift
    }

    /// Whether an execution of `unit` started at `started` ran before the unit itself changed.
    fn changed_before(&self, unit: &str, started: DateTime<Utc>) -> bool {
        self.changed_at.get(unit).is_some_and(|at| started < *at)
    }

    /// Where `version` of `unit`, in an execution started at `started`, stands; a new version
    /// becomes the current one.
    fn standing(
        &self,
        unit: &Arc<str>,
        version: &semver::Version,
        started: DateTime<Utc>,
    ) -> VersionStanding {
        let mut entry = self
            .versions
            .entry(Arc::clone(unit))
            .or_insert_with(|| (version.clone(), started));
        let (current, since) = entry.value_mut();
        if current == version {
            *since = (*since).min(started);
            VersionStanding::Current
        } else if started >= *since {
            *current = version.clone();
            *since = started;
            VersionStanding::New
        } else {
            VersionStanding::Replaced
        }
    }

    /// Whether a past execution counts: it is of the version the ranker judges (or the ranker
    /// has not seen the unit yet), and it started after any change of the unit itself.
    fn counts(&self, record: &ExecutionRecord) -> bool {
        let version_counts = !self.config.per_version
            || self
                .versions
                .get(record.unit.as_str())
                .is_none_or(|v| v.value().0 == record.unit_version);
        version_counts && !self.changed_before(&record.unit, record.started_at)
    }

    /// `unit` runs a new `version`: it starts from its prior.
    fn new_version(&self, unit: &Arc<str>, version: &semver::Version, now: DateTime<Utc>) {
        tracing::info!(unit = %unit, %version, "new unit version: what was known of the unit is dropped");
        metrics::counter!("swarm_ranker_new_versions_total").increment(1);
        self.forget_unit(unit, now);
    }

    /// `unit` itself changed at `now` (seen in several contexts): it starts from its prior, and
    /// its executions started before no longer count.
    fn unit_changed(&self, unit: &Arc<str>, shift: Shift, now: DateTime<Utc>) {
        tracing::info!(unit = %unit, ?shift, "the unit changed in several contexts: what was known of it is dropped");
        metrics::counter!("swarm_ranker_unit_changes_total").increment(1);
        self.unit_changes.fetch_add(1, Ordering::Relaxed);
        self.changed_at.insert(Arc::clone(unit), now);
        self.forget_unit(unit, now);
    }

    /// Drops what is known of `unit` everywhere: its global rate, its evidence and change
    /// detectors in every context.
    fn forget_unit(&self, unit: &Arc<str>, now: DateTime<Utc>) {
        self.global.retain(|(_, u), _| u != unit);
        for entry in &self.contexts {
            let context = entry.value();
            let mut state = context.lock();
            state.evidence.remove(unit);
            state.carried.remove(unit);
            state.detectors.remove(unit);
            state.local.retain(|o| &o.unit != unit);
            state.dirty = true;
            self.recache(&context.shape.kind, &mut state, now);
        }
    }

    /// Contexts due for a refresh at `now`.
    fn due(&self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, Arc<Context>)> {
        let every = self.config.refresh_every;
        let mut due: Vec<(DateTime<Utc>, Arc<Context>)> = self
            .contexts
            .iter()
            .filter_map(|entry| {
                let state = entry.value().lock();
                let since = state.refreshed.unwrap_or(DateTime::<Utc>::MIN_UTC);
                let is_due = state.refreshed.is_none()
                    || (state.dirty && now >= super::breaker::after(since, every));
                is_due.then(|| (since, Arc::clone(entry.value())))
            })
            .collect();
        due.sort_by_key(|(since, _)| *since);
        due
    }

    /// The past executions that speak for `units` on signals of `shape`, weighed: for each
    /// unit, its nearest executions on signals of the same kind (at most `per_shape` from one
    /// shape), started before `until` if given. Closeness is relative to the nearest of all of
    /// them, so a unit known only from less similar signals weighs less. With no units, the
    /// nearest executions of any unit.
    pub async fn neighbours(
        &self,
        memory: &dyn Memory,
        shape: &Shape,
        units: &[Arc<str>],
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Weighed>, MemoryError> {
        let query = SearchQuery::shape(shape.clone())
            .kind(shape.kind.clone())
            .k(self.config.neighbours)
            .per_shape(self.config.per_shape)
            .between(None, until);
        let mut hits = Vec::new();
        if units.is_empty() {
            hits = memory.search(&query).await?;
        } else {
            for unit in units {
                hits.extend(memory.search(&query.clone().unit(unit.as_ref())).await?);
            }
        }
        Ok(weigh(
            &self.config.weighing,
            hits.into_iter()
                .map(|h| (f64::from(h.similarity), h.record)),
            now,
        ))
    }

    /// Refreshes up to `limit` due contexts from memory, least recently refreshed first: their
    /// evidence becomes the weighed nearest executions of the same kind plus this process's
    /// outcomes that memory does not have yet.
    pub async fn refresh(
        &self,
        memory: &dyn Memory,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Refreshed, MemoryError> {
        let due = self.due(now);
        let total = due.len();
        let mut done = 0;
        for (_, context) in due.into_iter().take(limit) {
            let units: Vec<Arc<str>> = {
                let state = context.lock();
                let mut units: Vec<Arc<str>> = state.evidence.keys().cloned().collect();
                for unit in state.cached.iter().flat_map(|c| &c.units) {
                    if !units.contains(unit) {
                        units.push(Arc::clone(unit));
                    }
                }
                units
            };
            let weighed = match self
                .neighbours(memory, &context.shape, &units, None, now)
                .await
            {
                Ok(weighed) => weighed,
                Err(error) => {
                    tracing::debug!(done, total, %error, "ranker refresh stopped");
                    return Err(error);
                }
            };
            if self.config.per_version {
                // Memory may know a unit's versions before this process ran it (another
                // process, an earlier run): learn them in the order they ran.
                let mut by_start: Vec<&Weighed> = weighed.iter().collect();
                by_start.sort_by_key(|n| n.record.started_at);
                for n in by_start {
                    let unit: Arc<str> = Arc::from(n.record.unit.as_str());
                    let version = &n.record.unit_version;
                    if self.standing(&unit, version, n.record.started_at) == VersionStanding::New {
                        self.new_version(&unit, version, now);
                    }
                }
            }
            let mut state = context.lock();
            let mut evidence: HashMap<Arc<str>, Evidence> = HashMap::new();
            let mut seen = HashSet::with_capacity(weighed.len());
            for n in &weighed {
                seen.insert(n.record.id);
                if state.cutoff.is_some_and(|cut| n.record.started_at < cut)
                    || !self.counts(&n.record)
                {
                    continue;
                }
                let unit: Arc<str> = Arc::from(n.record.unit.as_str());
                evidence.entry(unit).or_default().add(n.reward, n.weight);
            }
            let w = &self.config.weighing;
            if let Some(cut) = state.cutoff {
                for (unit, e) in &state.carried {
                    evidence
                        .entry(Arc::clone(unit))
                        .or_default()
                        .merge(e.scaled(w.recency(cut, now)));
                }
            }
            for o in state.local.iter().filter(|o| !seen.contains(&o.id)) {
                evidence
                    .entry(Arc::clone(&o.unit))
                    .or_default()
                    .add(o.reward, w.recency(o.at, now));
            }
            // What memory has no longer needs keeping here.
            state.local.retain(|o| !seen.contains(&o.id));
            state.evidence = evidence;
            state.at = Some(now);
            state.refreshed = Some(now);
            state.dirty = false;
            self.recache(&context.shape.kind, &mut state, now);
            done += 1;
        }
        Ok(Refreshed {
            contexts: done,
            pending: total - done,
        })
    }

    /// Number of contexts held.
    pub fn contexts(&self) -> usize {
        self.contexts.len()
    }
}
