//! A change detector per (context, unit): a two-sided Bernoulli CUSUM on rewards against what
//! the unit's evidence predicted. Without it, a unit that was reliable for a long time keeps its
//! rank long after it starts failing (its old successes outweigh the new failures); with it, a
//! few surprising outcomes in a row discard the old evidence.

/// Two cumulative log-likelihood ratios: "the rate fell by `delta`" and "the rate rose by it".
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cusum {
    down: f64,
    up: f64,
}

impl Cusum {
    /// Adds one reward seen when `expected` was predicted; true when either statistic passes
    /// `threshold` (both are then reset).
    pub(crate) fn observe(
        &mut self,
        reward: f64,
        expected: f64,
        delta: f64,
        threshold: f64,
    ) -> bool {
        let p0 = expected.clamp(0.02, 0.98);
        let llr =
            |p1: f64| reward * (p1 / p0).ln() + (1.0 - reward) * ((1.0 - p1) / (1.0 - p0)).ln();
        self.down = (self.down + llr((p0 - delta).max(0.01))).max(0.0);
        self.up = (self.up + llr((p0 + delta).min(0.99))).max(0.0);
        if self.down > threshold || self.up > threshold {
            *self = Self::default();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_of_a_reliable_unit_is_a_change() {
        let mut c = Cusum::default();
        let first = (0..5).position(|_| c.observe(0.0, 0.95, 0.4, 4.0));
        assert!(
            matches!(first, Some(1 | 2)),
            "not on one failure, soon after: {first:?}"
        );
        let mut c = Cusum::default();
        let first = (0..10).position(|_| c.observe(0.0, 0.7, 0.4, 4.0));
        assert!(
            matches!(first, Some(2..=4)),
            "a less reliable unit needs more: {first:?}"
        );
    }

    #[test]
    fn outcomes_as_predicted_are_not_a_change() {
        let mut c = Cusum::default();
        // 90% successes, failures spread out.
        for i in 0..1_000 {
            assert!(
                !c.observe(if i % 10 == 0 { 0.0 } else { 1.0 }, 0.9, 0.4, 4.0),
                "at {i}"
            );
        }
    }

    #[test]
    fn a_poor_unit_that_starts_succeeding_is_a_change() {
        let mut c = Cusum::default();
        let first = (0..20).position(|_| c.observe(1.0, 0.3, 0.4, 4.0));
        assert!(first.is_some_and(|n| n < 6), "{first:?}");
    }
}
