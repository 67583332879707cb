//! Why a unit was chosen: the ranking of one execution recomputed from memory as it stood when
//! the execution started — the neighbours, their outcomes and weights, each unit's evidence and
//! the resulting scores.
//!
//! What cannot be recomputed is said so: the running ranker also counted its own outcomes not
//! yet in memory, each unit's decayed global rate as its prior, and its sampling drew random
//! numbers. The recorded policy and propensity are what the ranker logged at the time.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use swarm_memory::{Memory, MemoryError, Shape};
use swarm_schemas::{DispatchPolicy, ExecutionId, ExecutionRecord};

use super::evidence::{Evidence, Weighed};
use super::propensity::{beta_moments, matrix};
use super::ranker::Ranker;

/// One neighbour as shown in an explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Neighbour {
    /// The past execution.
    pub execution: ExecutionId,
    /// Its unit.
    pub unit: String,
    /// Whether it succeeded.
    pub success: bool,
    /// Its latency.
    pub latency_us: u64,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Similarity of its signal's shape to this one's.
    pub similarity: f64,
    /// Its reward and weight in the evidence.
    pub reward: f64,
    /// Closeness × recency.
    pub weight: f64,
}

/// One competing unit's standing.
#[derive(Debug, Clone, Serialize)]
pub struct Standing {
    /// The unit.
    pub unit: String,
    /// Neighbours of this unit counted.
    pub neighbours: usize,
    /// Weighted evidence (capped as the ranker caps it).
    pub wins: f64,
    /// Weighted failures.
    pub losses: f64,
    /// Posterior mean of its reward, with this ranker's prior (neutral in a ranker that has seen
    /// nothing, as in `swarm explain`).
    pub mean: f64,
    /// Probability that sampling under the execution's policy would have put it first.
    pub p_first: f64,
}

/// Why an execution's unit was chosen.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The execution explained.
    pub execution: ExecutionRecord,
    /// Every execution of the same signal, in order (fallbacks, other units, retries).
    pub siblings: Vec<ExecutionRecord>,
    /// The units' standings, best first.
    pub standings: Vec<Standing>,
    /// The neighbours, most similar first.
    pub neighbours: Vec<Neighbour>,
}

impl Ranker {
    /// Explains execution `id` from `memory`; `None` when memory does not have it.
    pub async fn explain(
        &self,
        memory: &dyn Memory,
        id: ExecutionId,
    ) -> Result<Option<Explanation>, MemoryError> {
        let Some(execution) = memory.execution(id).await? else {
            return Ok(None);
        };
        let siblings = memory.executions_of(execution.signal.id).await?;
        let mut units: Vec<Arc<str>> = Vec::new();
        for unit in std::iter::once(&execution.unit).chain(siblings.iter().map(|s| &s.unit)) {
            if !units.iter().any(|u| u.as_ref() == unit) {
                units.push(Arc::from(unit.as_str()));
            }
        }
        let at = execution.started_at;
        let weighed: Vec<Weighed> = self
            .neighbours(memory, &Shape::of(&execution.signal), &units, Some(at), at)
            .await?;
        let mut evidence: BTreeMap<String, (usize, Evidence)> = units
            .iter()
            .map(|u| (u.to_string(), (0, Evidence::default())))
            .collect();
        for n in &weighed {
            let entry = evidence.entry(n.record.unit.clone()).or_default();
            entry.0 += 1;
            entry.1.add(n.reward, n.weight);
        }
        let kind = &execution.signal.kind;
        // Sampled as the execution's policy samples (its `k` is not recorded, nor needed).
        let policy = if execution.policy == DispatchPolicy::FirstSuccess.name() {
            DispatchPolicy::FirstSuccess
        } else {
            DispatchPolicy::TopK { k: 1 }
        };
        let concentration = self.config().concentration_for(policy);
        let posteriors: Vec<(String, usize, Evidence, f64, f64)> = evidence
            .into_iter()
            .map(|(unit, (count, e))| {
                let e = e.capped(self.config().max_evidence);
                let (a, b) = self.posterior(kind, &Arc::from(unit.as_str()), e, at);
                (unit, count, e, concentration * a, concentration * b)
            })
            .collect();
        let moments: Vec<(f64, f64)> = posteriors
            .iter()
            .map(|(.., a, b)| beta_moments(*a, *b))
            .collect();
        let first = matrix(&moments).into_iter().next().unwrap_or_default();
        let mut standings: Vec<Standing> = posteriors
            .into_iter()
            .zip(first)
            .map(|((unit, neighbours, e, a, b), p_first)| Standing {
                unit,
                neighbours,
                wins: e.wins,
                losses: e.losses,
                mean: a / (a + b),
                p_first,
            })
            .collect();
        standings.sort_by(|x, y| y.mean.total_cmp(&x.mean));
        let mut neighbours: Vec<Neighbour> = weighed
            .into_iter()
            .map(|n| Neighbour {
                execution: n.record.id,
                unit: n.record.unit.clone(),
                success: n.record.outcome.is_success(),
                latency_us: n.record.latency_us,
                started_at: n.record.started_at,
                similarity: n.similarity,
                reward: n.reward,
                weight: n.weight,
            })
            .collect();
        neighbours.sort_by(|x, y| {
            y.similarity
                .total_cmp(&x.similarity)
                .then(y.started_at.cmp(&x.started_at))
        });
        Ok(Some(Explanation {
            execution,
            siblings,
            standings,
            neighbours,
        }))
    }
}
