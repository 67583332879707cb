//! The ranker's state per context — a (kind, signal shape) pair — and the posteriors and
//! propensities cached from it, so that ranking only samples.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use swarm_memory::Shape;
use swarm_schemas::{DispatchPolicy, ExecutionId, Signal};

use super::Ranker;
use crate::ranking::change::Cusum;
use crate::ranking::propensity::{beta_moments, matrix};
use crate::ranking::{Evidence, Weighing};

/// A context: the signal's kind and the id of its shape.
pub(super) type Key = (String, i64);

/// One outcome this process saw, kept until a refresh finds it in memory.
#[derive(Debug, Clone)]
pub(super) struct Observed {
    pub(super) id: ExecutionId,
    pub(super) unit: Arc<str>,
    pub(super) reward: f64,
    pub(super) at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(super) struct ContextState {
    /// The time `evidence` refers to; it decays from there.
    pub(super) at: Option<DateTime<Utc>>,
    pub(super) evidence: HashMap<Arc<str>, Evidence>,
    pub(super) local: VecDeque<Observed>,
    /// Evidence older than this is ignored (a change was detected then)...
    pub(super) cutoff: Option<DateTime<Utc>>,
    /// ...but for this share of the other units' evidence at that moment, kept as of `cutoff`.
    pub(super) carried: HashMap<Arc<str>, Evidence>,
    pub(super) detectors: HashMap<Arc<str>, Cusum>,
    pub(super) refreshed: Option<DateTime<Utc>>,
    pub(super) dirty: bool,
    pub(super) used: Option<DateTime<Utc>>,
    /// Posteriors and propensities of the units last ranked here, computed again by the first
    /// ranking after the evidence changed (`stale`), so that other rankings only sample.
    pub(super) cached: Option<Cached>,
    /// `cached` no longer says what the evidence says.
    pub(super) stale: bool,
    /// The nearest other contexts of the same kind, nearest first (see `sharing.rs`).
    pub(super) near: Vec<Near>,
    /// What `near` said when last gathered, per unit, weighed and capped, as of `borrowed_at`.
    pub(super) borrowed: HashMap<Arc<str>, Evidence>,
    pub(super) borrowed_at: Option<DateTime<Utc>>,
    /// The sum of the epochs of `near` when `borrowed` was gathered; `None` to gather again.
    pub(super) borrowed_epochs: Option<u64>,
}

/// A neighbour a context borrows evidence from.
#[derive(Debug, Clone)]
pub(super) struct Near {
    pub(super) context: std::sync::Weak<Context>,
    /// Cosine similarity of the two shapes' vectors.
    pub(super) similarity: f64,
}

/// Evidence per unit, as of one moment.
pub(super) type UnitEvidence = Vec<(Arc<str>, Evidence)>;

impl ContextState {
    /// The share of its own evidence left at `now` (the evidence is as of `at`).
    pub(super) fn decay(&self, weighing: &Weighing, now: DateTime<Utc>) -> f64 {
        self.at.map_or(1.0, |at| weighing.recency(at, now))
    }

    /// Its own evidence per unit, as of `now`.
    pub(super) fn own_at(&self, weighing: &Weighing, now: DateTime<Utc>) -> UnitEvidence {
        let decay = self.decay(weighing, now);
        self.evidence
            .iter()
            .map(|(unit, e)| (Arc::clone(unit), e.scaled(decay)))
            .collect()
    }

    /// Forgets what it knows of `unit`: its evidence, its change detector and its outcomes
    /// not yet in memory; the cached ranking is stale.
    pub(super) fn forget(&mut self, unit: &Arc<str>) {
        self.evidence.remove(unit);
        self.detectors.remove(unit);
        self.local.retain(|o| &o.unit != unit);
        self.dirty = true;
        self.invalidate();
    }

    /// Marks the cached ranking stale after the evidence changed: the next ranking here
    /// computes it again (once, however many outcomes came in between).
    pub(super) fn invalidate(&mut self) {
        self.stale = true;
    }
}

/// What ranking a given set of units in a context needs, computed ahead.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) units: Vec<Arc<str>>,
    /// The concentration of the policy they were computed for.
    pub(super) concentration: f64,
    /// Posteriors times `concentration`: what is sampled.
    pub(super) posteriors: Vec<(f64, f64)>,
    /// `top[k - 1][i]`: probability that sampling `posteriors` puts unit i among the first k.
    pub(super) top: Vec<Vec<f64>>,
}

/// A (kind, shape) the ranker has seen.
#[derive(Debug)]
pub(super) struct Context {
    /// The shape (bounded in size, unlike a signal): the probe of refreshes.
    pub(super) shape: Shape,
    pub(super) state: Mutex<ContextState>,
    /// Moves on with every change of the context's own evidence: the contexts that borrow
    /// from it see that what they borrowed is stale without locking it.
    pub(super) epoch: AtomicU64,
    /// The shape's vector (unit length), once placed.
    pub(super) vector: OnceLock<Arc<[f32]>>,
    /// Dropped from the ranker's contexts (the least recently used, when there were too many).
    pub(super) evicted: AtomicBool,
}

impl Context {
    fn new(shape: Shape, state: ContextState) -> Self {
        Self {
            shape,
            state: Mutex::new(state),
            epoch: AtomicU64::new(0),
            vector: OnceLock::new(),
            evicted: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> parking_lot::MutexGuard<'_, ContextState> {
        self.state.lock()
    }

    /// Its own evidence changed.
    pub(super) fn moved(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }
}

impl Ranker {
    /// The context of `signal`'s shape, made if new.
    pub(super) fn context(&self, signal: &Signal, now: DateTime<Utc>) -> Arc<Context> {
        let fingerprint = Shape::fingerprint(signal);
        if let Some(found) = self
            .fingerprints
            .get(&fingerprint)
            .and_then(|c| c.upgrade())
            && !found.evicted.load(Ordering::Acquire)
        {
            return found;
        }
        let context = self.context_of(Shape::of(signal), now);
        self.fingerprints
            .insert(fingerprint, Arc::downgrade(&context));
        context
    }

    fn context_of(&self, shape: Shape, now: DateTime<Utc>) -> Arc<Context> {
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
                    Arc::new(Context::new(
                        shape,
                        ContextState {
                            dirty: true,
                            used: Some(now),
                            ..ContextState::default()
                        },
                    ))
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
            if let Some((_, context)) = self.contexts.remove(key) {
                // Its fingerprints no longer lead to it.
                context.evicted.store(true, Ordering::Release);
            }
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
    pub(super) fn posteriors(
        &self,
        kind: &str,
        state: &ContextState,
        units: &[Arc<str>],
        now: DateTime<Utc>,
    ) -> Vec<(f64, f64)> {
        let w = &self.config.weighing;
        let decay = state.decay(w, now);
        let borrowed_decay = state.borrowed_at.map_or(1.0, |at| w.recency(at, now));
        units
            .iter()
            .map(|unit| {
                let own = state.evidence.get(unit).copied().unwrap_or_default();
                let mut e = own.scaled(decay);
                if let Some(b) = state.borrowed.get(unit) {
                    e.merge(b.scaled(borrowed_decay));
                }
                self.posterior(kind, unit, e, now)
            })
            .collect()
    }

    /// Posterior (a, b) of `unit` with `evidence` (as of `now`): the prior plus the evidence,
    /// capped.
    pub(in crate::ranking) fn posterior(
        &self,
        kind: &str,
        unit: &Arc<str>,
        evidence: Evidence,
        now: DateTime<Utc>,
    ) -> (f64, f64) {
        let (pa, pb) = self.prior(kind, unit, now);
        let e = evidence.capped(self.config.max_evidence);
        (pa + e.wins, pb + e.losses)
    }

    /// What ranking `units` in a context under `policy` samples from, at `now`: their
    /// posteriors times the policy's concentration, and the propensities that follow.
    pub(super) fn cache(
        &self,
        kind: &str,
        state: &ContextState,
        units: Vec<Arc<str>>,
        policy: DispatchPolicy,
        now: DateTime<Utc>,
    ) -> Cached {
        let concentration = self.config.concentration_for(policy);
        let posteriors: Vec<(f64, f64)> = self
            .posteriors(kind, state, &units, now)
            .into_iter()
            .map(|(a, b)| (concentration * a, concentration * b))
            .collect();
        let moments: Vec<(f64, f64)> = posteriors
            .iter()
            .map(|&(a, b)| beta_moments(a, b))
            .collect();
        Cached {
            units,
            concentration,
            posteriors,
            top: matrix(&moments),
        }
    }
}
