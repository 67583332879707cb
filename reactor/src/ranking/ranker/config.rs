//! What the ranker is told: how it weighs, explores and forgets.

use std::time::Duration;

use swarm_schemas::DispatchPolicy;

use crate::ranking::{BreakerConfig, Weighing};

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
    /// Under top-k, each posterior Beta(a, b) is sampled as Beta(c·a, c·b): the same mean,
    /// about 1/c of the variance. 1 is plain Thompson sampling; above 1 the ranker settles
    /// sooner on what little evidence says, and explores less. The README's ranking benchmark
    /// says why the default is 4.
    pub concentration: f64,
    /// The same under first-success. There every unit after the first is tried whenever the
    /// one before it failed, so the fallbacks explore on their own, and the default (1,000)
    /// orders units by their posterior means, the sample only breaking near-ties. Under top-k
    /// no unit below the k-th runs, so there the order itself has to explore.
    pub first_success_concentration: f64,
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
    /// Threshold of a change detector per unit that pools the unit's outcomes in every context
    /// where its odds are known, each against what that context's own outcomes predicted; 0
    /// turns it off. When it sees the unit do worse than predicted, the unit has changed
    /// itself, as above. A unit tried in many shapes shows its fall across them long before
    /// any one shape has seen enough of it to tell. The README's ranking benchmark says why
    /// the default is 8.
    pub unit_pooled_threshold: f64,
    /// Smallest fall of a unit's success rate the pooled detector looks for.
    pub unit_pooled_delta: f64,
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
    /// Sharing across similar shapes: each context borrows the evidence of up to this many
    /// nearest other contexts of the same kind (by the cosine similarity of their shapes'
    /// vectors), from the first signal of its shape on; 0 turns sharing off.
    pub share_neighbours: usize,
    /// Contexts less similar than this are never borrowed from.
    pub share_min_similarity: f64,
    /// Share of the nearest neighbour's evidence a context borrows; a farther one's is scaled
    /// down by its closeness ([`Weighing::closeness`] relative to the nearest).
    pub share_weight: f64,
    /// A unit's borrowed evidence is scaled down to at most this weight, and all of it by
    /// `share_cap / (share_cap + own)` with `own` the weight of the context's own evidence: its
    /// own outcomes, once it has some, outweigh what its neighbours say.
    pub share_cap: f64,
    /// A neighbour is not borrowed from while its evidence on some unit and the context's own
    /// are further apart than this many standard deviations...
    pub share_disagreement: f64,
    /// ...each with at least this weight.
    pub share_evidence: f64,
    /// A change detected in a context is taken as a change of its neighbours that borrow from
    /// it at least this weight too (they drop the unit's older evidence); above 1, never.
    pub share_change_weight: f64,
    /// How long the reactor holds a batch whose signals have shapes new to the ranker, for their
    /// vectors (embedded by memory); past it they are ranked without neighbours, and placed
    /// when their vectors come.
    pub share_wait: Duration,
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
            first_success_concentration: 1000.0,
            change_threshold: 6.0,
            change_delta: 0.4,
            change_evidence: 10.0,
            change_keep: 0.0,
            unit_change_contexts: 2,
            unit_change_window: Duration::from_secs(600),
            unit_pooled_threshold: 8.0,
            unit_pooled_delta: 0.5,
            per_version: true,
            share_neighbours: 8,
            share_min_similarity: 0.5,
            share_weight: 1.0,
            share_cap: 20.0,
            share_disagreement: 2.5,
            share_evidence: 3.0,
            share_change_weight: 0.5,
            share_wait: Duration::from_millis(250),
            refresh_every: Duration::from_secs(5),
            local_window: 256,
            max_contexts: 100_000,
            breaker: BreakerConfig::default(),
            seed: 0x5eed,
        }
    }
}

impl RankerConfig {
    /// How sharply posteriors are sampled under `policy`.
    pub fn concentration_for(&self, policy: DispatchPolicy) -> f64 {
        let c = match policy {
            DispatchPolicy::FirstSuccess => self.first_success_concentration,
            DispatchPolicy::TopK { .. } | DispatchPolicy::FanOut => self.concentration,
        };
        c.max(f64::MIN_POSITIVE)
    }
}
