//! The hot path: orders the competing units of a signal by one sample each from the context's
//! cached posteriors, sharpened by the policy's concentration. No I/O.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::RngExt;
use rand_distr::{Beta, Distribution};
use swarm_schemas::{DispatchPolicy, Signal};

use super::Ranker;

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

impl Ranker {
    /// Orders `candidates` for `signal` under `policy`. Units whose breaker is open are left
    /// out (`skipped`); a half-open unit is admitted for one probe at a time.
    pub fn rank(
        &self,
        signal: &Signal,
        candidates: &[Arc<str>],
        policy: DispatchPolicy,
        now: DateTime<Utc>,
    ) -> Order {
        let (admitted, skipped): (Vec<Arc<str>>, Vec<Arc<str>>) = candidates
            .iter()
            .cloned()
            .partition(|unit| self.breaker(unit).admit(now));
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
        self.borrow(&context, now);
        let cached = {
            let mut state = context.lock();
            state.used = Some(now);
            let concentration = self.config.concentration_for(policy);
            match &state.cached {
                Some(c)
                    if c.units == admitted && c.concentration == concentration && !state.stale =>
                {
                    c.clone()
                }
                _ => {
                    let fresh = self.cache(&signal.kind, &state, admitted, policy, now);
                    state.cached = Some(fresh.clone());
                    state.stale = false;
                    fresh
                }
            }
        };
        let n = cached.units.len();
        let mut scored = self.sample(&cached.posteriors);
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

    /// One score per posterior: a sample of it, or with probability `exploration` a
    /// uniformly random one for every unit.
    fn sample(&self, posteriors: &[(f64, f64)]) -> Vec<(usize, f64)> {
        let mut rng = self.rng.lock();
        let explore = rng.random::<f64>() < self.config.exploration;
        posteriors
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| {
                let score = if explore {
                    rng.random::<f64>()
                } else {
                    Beta::new(a, b).map_or(a / (a + b), |d| d.sample(&mut *rng))
                };
                (i, score)
            })
            .collect()
    }
}
