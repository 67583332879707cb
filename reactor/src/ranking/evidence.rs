//! What past executions say about a unit: reward-weighted successes and failures, each weighted
//! by how similar its signal was to the one being ranked and by how long ago it ran.
//!
//! Pure arithmetic, shared by the ranker and by `swarm explain` so that an explanation shows the
//! very numbers the ranker used.

use std::time::Duration;

use chrono::{DateTime, Utc};
use swarm_schemas::ExecutionRecord;

/// How past executions are weighed.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighing {
    /// Similarity temperature τ: a neighbour `s` below the nearest one weighs
    /// `exp(-(s_max - s) / τ)`. Weights are relative to the nearest neighbour: absolute weights
    /// let the prior swamp the evidence whenever no neighbour is very close.
    pub temperature: f64,
    /// An execution this old weighs half as much as one that ran now.
    pub half_life: Duration,
    /// Latency at which a success is worth half a success: reward = success × 1 / (1 + latency /
    /// latency_scale).
    pub latency_scale: Duration,
}

impl Default for Weighing {
    fn default() -> Self {
        Self {
            temperature: 0.05,
            half_life: Duration::from_secs(3600),
            latency_scale: Duration::from_secs(1),
        }
    }
}

impl Weighing {
    /// The reward of one execution, in [0, 1]: 0 for a failure, less than 1 for a slow success.
    pub fn reward(&self, success: bool, latency_us: u64) -> f64 {
        if !success {
            return 0.0;
        }
        let scale = self.latency_scale.as_micros().max(1) as f64;
        1.0 / (1.0 + latency_us as f64 / scale)
    }

    /// The recency factor of something that happened at `at`, seen at `now`.
    pub fn recency(&self, at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
        let age = (now - at).num_microseconds().unwrap_or(i64::MAX).max(0) as f64;
        let half_life = self.half_life.as_micros().max(1) as f64;
        (-std::f64::consts::LN_2 * age / half_life).exp()
    }

    /// The similarity factor of a neighbour at similarity `s` when the nearest is at `nearest`.
    pub fn closeness(&self, s: f64, nearest: f64) -> f64 {
        (-(nearest - s).max(0.0) / self.temperature.max(1e-9)).exp()
    }
}

/// Weighted successes and failures of one unit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    /// Reward-weighted successes.
    pub wins: f64,
    /// Weighted failures (a slow success counts partly as a failure).
    pub losses: f64,
}

impl Evidence {
    /// Adds one execution of reward `reward` with weight `weight`.
    pub fn add(&mut self, reward: f64, weight: f64) {
        self.wins += weight * reward;
        self.losses += weight * (1.0 - reward);
    }

    /// Adds another body of evidence.
    pub fn merge(&mut self, other: Evidence) {
        self.wins += other.wins;
        self.losses += other.losses;
    }

    /// All of it scaled by `factor` (time passing).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            wins: self.wins * factor,
            losses: self.losses * factor,
        }
    }

    /// Total weight.
    pub fn weight(&self) -> f64 {
        self.wins + self.losses
    }

    /// The posterior mean of the reward from a flat prior: `(1 + wins) / (2 + weight)`.
    pub fn mean(&self) -> f64 {
        (1.0 + self.wins) / (2.0 + self.weight())
    }

    /// Scaled down so that its weight is at most `cap`: old certainty never grows so large that
    /// new outcomes cannot move it.
    pub fn capped(self, cap: f64) -> Self {
        let weight = self.weight();
        if weight > cap && weight > 0.0 {
            self.scaled(cap / weight)
        } else {
            self
        }
    }
}

/// One past execution as the ranker weighed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighed {
    /// The execution.
    pub record: ExecutionRecord,
    /// Cosine similarity of its signal's shape to the ranked signal's shape.
    pub similarity: f64,
    /// Its reward.
    pub reward: f64,
    /// Its weight: closeness × recency.
    pub weight: f64,
}

/// Weighs neighbours found by a similarity search (most similar first).
pub fn weigh(
    weighing: &Weighing,
    neighbours: impl IntoIterator<Item = (f64, ExecutionRecord)>,
    now: DateTime<Utc>,
) -> Vec<Weighed> {
    let neighbours: Vec<(f64, ExecutionRecord)> = neighbours.into_iter().collect();
    let nearest = neighbours
        .iter()
        .map(|(s, _)| *s)
        .fold(f64::NEG_INFINITY, f64::max);
    neighbours
        .into_iter()
        .map(|(similarity, record)| {
            let reward = weighing.reward(record.outcome.is_success(), record.latency_us);
            let weight =
                weighing.closeness(similarity, nearest) * weighing.recency(record.started_at, now);
            Weighed {
                record,
                similarity,
                reward,
                weight,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_fall_with_latency_and_are_zero_on_failure() {
        let w = Weighing::default();
        assert_eq!(w.reward(false, 0), 0.0);
        assert_eq!(w.reward(true, 0), 1.0);
        assert!((w.reward(true, 1_000_000) - 0.5).abs() < 1e-12);
        assert!(w.reward(true, 10_000) > w.reward(true, 100_000));
    }

    #[test]
    fn recency_halves_every_half_life() {
        let w = Weighing {
            half_life: Duration::from_secs(10),
            ..Weighing::default()
        };
        let now = Utc::now();
        assert!((w.recency(now, now) - 1.0).abs() < 1e-12);
        assert!((w.recency(now - chrono::Duration::seconds(10), now) - 0.5).abs() < 1e-9);
        assert!((w.recency(now - chrono::Duration::seconds(20), now) - 0.25).abs() < 1e-9);
        // The future counts as now.
        assert!((w.recency(now + chrono::Duration::seconds(5), now) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn closeness_is_relative_to_the_nearest() {
        let w = Weighing::default();
        assert_eq!(w.closeness(0.6, 0.6), 1.0);
        assert!((w.closeness(0.55, 0.6) - (-1.0f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn capping_keeps_the_rate() {
        let e = Evidence {
            wins: 90.0,
            losses: 10.0,
        }
        .capped(20.0);
        assert!((e.weight() - 20.0).abs() < 1e-9);
        assert!((e.wins / e.weight() - 0.9).abs() < 1e-12);
    }
}
