//! Sharing evidence across similar shapes: a context borrows the evidence of its nearest other
//! contexts of the same kind, by their shapes' vectors, from its first signal on.
//!
//! A shape is placed once, when its vector is known: the reactor asks memory for the vectors of
//! a batch's new shapes ([`Ranker::unplaced`]) before it ranks the batch ([`Ranker::place`]). Placing links the context
//! to its nearest placed contexts of the same kind, and links it into theirs where it is among
//! their nearest. What a context borrows is gathered from its neighbours' own evidence (never
//! from what they borrow, so nothing echoes) when the context is ranked and it or a neighbour
//! has moved since the last gathering; each context's epoch says so without a lock. Learning
//! stays one lock per outcome, and ranking a context where nothing moved only samples.
//!
//! Neighbours by vector are a guess that outcomes check: a neighbour whose evidence on some unit
//! clearly disagrees with the context's own (their posterior means further apart than
//! `share_disagreement` standard deviations, each side with at least `share_evidence` of it)
//! is not borrowed from, as online clustering of bandits cuts the edge between two users whose
//! estimates differ. The others are weighed by their closeness times the likelihood of the
//! context's own outcomes under their evidence, relative to the best of them: the neighbours
//! whose evidence predicts what the context saw count most. What a context borrows is capped
//! at `share_cap` per unit and scaled down as its own evidence grows (by `share_cap /
//! (share_cap + own)`), so that its own outcomes soon decide.
//!
//! A change detected in a context is a change of its nearest neighbours too: those it borrows
//! from with at least `share_change_weight` drop what they know of the unit (and nothing else:
//! their other units have not been seen to change).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use swarm_memory::{Memory, MemoryError, Shape};
use swarm_schemas::Signal;

use super::Ranker;
use super::context::{Context, ContextState, Near, UnitEvidence};
use crate::ranking::Evidence;
use crate::ranking::propensity::beta_moments;

/// Placed contexts of one kind scanned for the neighbours of a new one (the newest): placing
/// stays a bounded cost however many shapes a kind has.
const SCAN: usize = 20_000;

/// Signal shapes new to the ranker, waiting for their vectors ([`Ranker::unplaced`]).
#[derive(Debug, Default)]
pub struct Unplaced(Vec<Arc<Context>>);

impl Unplaced {
    /// Whether there are none: ranking the signals needs nothing from memory.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Ranker {
    /// The distinct shapes of `signals` the ranker has not placed yet (none when sharing is
    /// off); their contexts exist from now on.
    pub fn unplaced<'a>(
        &self,
        signals: impl IntoIterator<Item = &'a Signal>,
        now: DateTime<Utc>,
    ) -> Unplaced {
        if self.config.share_neighbours == 0 {
            return Unplaced::default();
        }
        let mut waiting: Vec<Arc<Context>> = Vec::new();
        for signal in signals {
            let context = self.context(signal, now);
            if context.vector.get().is_none() && !waiting.iter().any(|c| Arc::ptr_eq(c, &context)) {
                waiting.push(context);
            }
        }
        Unplaced(waiting)
    }

    /// Places `unplaced` among the shapes the ranker knows, with their vectors from `memory`
    /// (which embeds them once, for their records too): from then on their contexts borrow from
    /// their nearest neighbours. Returns how many were placed; none when memory has no
    /// embedder.
    pub async fn place(
        &self,
        memory: &dyn Memory,
        unplaced: &Unplaced,
    ) -> Result<usize, MemoryError> {
        if unplaced.is_empty() {
            return Ok(0);
        }
        let shapes: Vec<Shape> = unplaced.0.iter().map(|c| c.shape.clone()).collect();
        let vectors = memory.shape_vectors(&shapes).await?;
        let mut placed = 0;
        for context in &unplaced.0 {
            if let Some(vector) = vectors.get(&context.shape.id) {
                placed += usize::from(self.place_vector(context, vector));
            }
        }
        Ok(placed)
    }

    /// Places one context with its shape's vector; false if it was placed already (or the
    /// vector is all zeros).
    fn place_vector(&self, context: &Arc<Context>, vector: &[f32]) -> bool {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm <= f32::MIN_POSITIVE {
            return false;
        }
        let unit: Arc<[f32]> = vector.iter().map(|x| x / norm).collect();
        if context.vector.set(Arc::clone(&unit)).is_err() {
            return false;
        }
        let k = self.config.share_neighbours;
        let min = self.config.share_min_similarity;
        let mut near: Vec<(Arc<Context>, f64)> = Vec::new();
        {
            let mut placed = self.placed.entry(context.shape.kind.clone()).or_default();
            placed.retain(|c| c.strong_count() > 0);
            for other in placed.iter().rev().take(SCAN).filter_map(Weak::upgrade) {
                let Some(theirs) = other.vector.get() else {
                    continue;
                };
                let similarity = f64::from(dot(&unit, theirs));
                if similarity >= min {
                    near.push((other, similarity));
                }
            }
            placed.push(Arc::downgrade(context));
        }
        near.sort_by(|a, b| b.1.total_cmp(&a.1));
        // The new context may be among the nearest of each of them (one lock at a time).
        for (other, similarity) in &near {
            let mut state = other.lock();
            if link(&mut state.near, context, *similarity, k) {
                state.borrowed_epochs = None;
            }
        }
        near.truncate(k);
        let mut state = context.lock();
        state.near = near
            .iter()
            .map(|(c, similarity)| Near {
                context: Arc::downgrade(c),
                similarity: *similarity,
            })
            .collect();
        state.borrowed_epochs = None;
        true
    }

    /// Brings what `context` borrows up to date when a neighbour's evidence moved since it was
    /// gathered (the posteriors cached from it are recomputed). Takes the context's lock, then
    /// each neighbour's in turn, never two at once.
    pub(super) fn borrow(&self, context: &Context, now: DateTime<Utc>) {
        let (near, own, mine) = {
            let state = context.lock();
            if state.near.is_empty() || state.borrowed_epochs == Some(epochs(context, &state.near))
            {
                return;
            }
            (
                state.near.clone(),
                state.own_at(&self.config.weighing, now),
                context.epoch.load(Ordering::Acquire),
            )
        };
        let (borrowed, seen) = self.gather(&near, &own, now);
        let seen = seen.wrapping_add(mine);
        let mut state = context.lock();
        state.borrowed = borrowed;
        state.borrowed_at = Some(now);
        state.borrowed_epochs = Some(seen);
        state.invalidate();
    }

    /// The own evidence per unit of the neighbours that agree with `own` (the context's), as of
    /// `now`, weighed by closeness times how well they predict `own` (relative to the best of
    /// them), capped and scaled down by the weight of `own`; and the sum of their epochs before
    /// it was read.
    fn gather(
        &self,
        near: &[Near],
        own: &UnitEvidence,
        now: DateTime<Utc>,
    ) -> (HashMap<Arc<str>, Evidence>, u64) {
        let c = &self.config;
        let w = &c.weighing;
        let nearest = near.first().map_or(1.0, |n| n.similarity);
        let mut seen = 0u64;
        // Each neighbour that agrees: its evidence, and its score, the log of its closeness plus
        // how well its evidence predicts the context's own outcomes.
        let mut agreeing: Vec<(f64, UnitEvidence)> = Vec::with_capacity(near.len());
        for n in near {
            let Some(other) = n.context.upgrade() else {
                continue;
            };
            // Read before the evidence: a move after it is seen at the next ranking.
            seen = seen.wrapping_add(other.epoch.load(Ordering::Acquire));
            let theirs = other.lock().own_at(w, now);
            if theirs
                .iter()
                .any(|(unit, e)| of(own, unit).is_some_and(|o| self.disagree(o, *e)))
            {
                continue;
            }
            let closeness = w.closeness(n.similarity, nearest).max(f64::MIN_POSITIVE);
            agreeing.push((closeness.ln() + predicts(&theirs, own), theirs));
        }
        let best = agreeing
            .iter()
            .map(|(score, _)| *score)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut borrowed: HashMap<Arc<str>, Evidence> = HashMap::new();
        for (score, theirs) in agreeing {
            let weight = c.share_weight * (score - best).exp();
            for (unit, e) in theirs {
                borrowed.entry(unit).or_default().merge(e.scaled(weight));
            }
        }
        let own_weight: f64 = own.iter().map(|(_, e)| e.weight()).sum();
        let scale = c.share_cap / (c.share_cap + own_weight).max(f64::MIN_POSITIVE);
        for e in borrowed.values_mut() {
            *e = e.capped(c.share_cap).scaled(scale);
        }
        (borrowed, seen)
    }

    /// Whether two bodies of evidence on one unit clearly disagree: each has at least
    /// `share_evidence`, and their posterior means (from a flat prior) are further apart than
    /// `share_disagreement` standard deviations of the difference.
    fn disagree(&self, a: Evidence, b: Evidence) -> bool {
        let c = &self.config;
        if a.weight() < c.share_evidence || b.weight() < c.share_evidence {
            return false;
        }
        let (ma, sa) = beta_moments(1.0 + a.wins, 1.0 + a.losses);
        let (mb, sb) = beta_moments(1.0 + b.wins, 1.0 + b.losses);
        (ma - mb).abs() > c.share_disagreement * (sa * sa + sb * sb).sqrt()
    }

    /// A change of `unit` was detected in `context`: the neighbours it borrows from
    /// with at least `share_change_weight` drop their evidence of the unit (a refresh from
    /// memory may bring it back, until their own outcomes show the change).
    pub(super) fn spread_change(&self, context: &Context, unit: &Arc<str>) {
        let near = context.lock().near.clone();
        let nearest = near.first().map_or(1.0, |n| n.similarity);
        let w = &self.config.weighing;
        for n in &near {
            let weight = self.config.share_weight * w.closeness(n.similarity, nearest);
            if weight < self.config.share_change_weight {
                continue;
            }
            let Some(other) = n.context.upgrade() else {
                continue;
            };
            other.lock().forget(unit);
            other.moved();
        }
    }

    /// A change of `unit` at `now` in a context: its evidence there is dropped, and all but
    /// `change_keep` of the other units' (kept as of `now`); outcomes before `now` no longer
    /// count there.
    pub(super) fn drop_older(&self, state: &mut ContextState, unit: &Arc<str>, now: DateTime<Utc>) {
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

/// Links `context` into a neighbour list (nearest first, at most `k`) if it is among the
/// nearest; whether it was.
fn link(near: &mut Vec<Near>, context: &Arc<Context>, similarity: f64, k: usize) -> bool {
    near.retain(|n| n.context.strong_count() > 0);
    if near.len() >= k && near.last().is_some_and(|n| n.similarity >= similarity) {
        return false;
    }
    let at = near.partition_point(|n| n.similarity >= similarity);
    near.insert(
        at,
        Near {
            context: Arc::downgrade(context),
            similarity,
        },
    );
    near.truncate(k);
    true
}

/// The log-likelihood of the outcomes in `own` under the evidence of a neighbour: each unit's
/// wins and losses in the context, given the unit's posterior mean there (from a flat prior).
fn predicts(theirs: &UnitEvidence, own: &UnitEvidence) -> f64 {
    own.iter()
        .map(|(unit, o)| {
            let t = of(theirs, unit).unwrap_or_default();
            let mean = t.mean();
            o.wins * mean.ln() + o.losses * (1.0 - mean).ln()
        })
        .sum()
}

/// The evidence of `unit` among `evidence`.
fn of(evidence: &UnitEvidence, unit: &Arc<str>) -> Option<Evidence> {
    evidence.iter().find(|(u, _)| u == unit).map(|(_, e)| *e)
}

/// The sum of the epochs of a context and its neighbours (a neighbour gone counts 0): it moves
/// whenever one of them moves.
fn epochs(context: &Context, near: &[Near]) -> u64 {
    near.iter()
        .filter_map(|n| n.context.upgrade())
        .fold(context.epoch.load(Ordering::Acquire), |sum, c| {
            sum.wrapping_add(c.epoch.load(Ordering::Acquire))
        })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
