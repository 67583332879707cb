//! A change detector per (context, unit): a two-sided Bernoulli CUSUM on rewards against what
//! the unit's evidence predicted. Without it, a unit that was reliable for a long time keeps its
//! rank long after it starts failing (its old successes outweigh the new failures); with it, a
//! few surprising outcomes in a row discard the old evidence.
//!
//! [`UnitAlarms`] looks across contexts: the same shift of one unit in several contexts at about
//! the same time is a change of the unit itself (a dependency broke, a service it calls moved),
//! and what is known of the unit in contexts that have not noticed yet is stale too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// Which way a unit's outcomes moved against what was predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shift {
    /// Worse than predicted.
    Down,
    /// Better than predicted.
    Up,
}

/// Two cumulative log-likelihood ratios: "the rate fell by `delta`" and "the rate rose by it".
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cusum {
    down: f64,
    up: f64,
}

impl Cusum {
    /// Adds one reward seen when `expected` was predicted; the shift when either statistic
    /// passes `threshold` (both are then reset).
    pub(crate) fn observe(
        &mut self,
        reward: f64,
        expected: f64,
        delta: f64,
        threshold: f64,
    ) -> Option<Shift> {
        let p0 = expected.clamp(0.02, 0.98);
        let llr =
            |p1: f64| reward * (p1 / p0).ln() + (1.0 - reward) * ((1.0 - p1) / (1.0 - p0)).ln();
        self.down = (self.down + llr((p0 - delta).max(0.01))).max(0.0);
        self.up = (self.up + llr((p0 + delta).min(0.99))).max(0.0);
        let shift = if self.down > threshold {
            Shift::Down
        } else if self.up > threshold {
            Shift::Up
        } else {
            return None;
        };
        *self = Self::default();
        Some(shift)
    }
}

/// One change detected in one context.
#[derive(Debug, Clone, Copy)]
struct Alarm {
    context: i64,
    shift: Shift,
    at: DateTime<Utc>,
}

/// Changes detected per unit, to tell a change of the unit from a change of one context.
#[derive(Debug, Default)]
pub(crate) struct UnitAlarms {
    recent: Mutex<HashMap<Arc<str>, Vec<Alarm>>>,
}

impl UnitAlarms {
    /// Notes that `unit` shifted in `context` at `at`. True when, with this one, `contexts`
    /// distinct contexts saw it shift the same way within `window`: a change of the unit
    /// itself. Its alarms are then forgotten, so the next inference needs as many new ones.
    pub(crate) fn raise(
        &self,
        unit: &Arc<str>,
        context: i64,
        shift: Shift,
        at: DateTime<Utc>,
        contexts: usize,
        window: Duration,
    ) -> bool {
        if contexts == 0 {
            return false;
        }
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let mut recent = self.recent.lock();
        // Alarms past the window are gone for every unit, so the map stays small.
        recent.retain(|_, alarms| {
            alarms.retain(|a| at.signed_duration_since(a.at) <= window);
            !alarms.is_empty()
        });
        let alarms = recent.entry(Arc::clone(unit)).or_default();
        alarms.retain(|a| a.context != context || a.shift != shift);
        alarms.push(Alarm { context, shift, at });
        let agreeing = alarms.iter().filter(|a| a.shift == shift).count();
        if agreeing >= contexts {
            recent.remove(unit);
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
        let first = (0..5).position(|_| c.observe(0.0, 0.95, 0.4, 4.0).is_some());
        assert!(
            matches!(first, Some(1 | 2)),
            "not on one failure, soon after: {first:?}"
        );
        let mut c = Cusum::default();
        let first = (0..10).position(|_| c.observe(0.0, 0.7, 0.4, 4.0) == Some(Shift::Down));
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
            assert_eq!(
                c.observe(if i % 10 == 0 { 0.0 } else { 1.0 }, 0.9, 0.4, 4.0),
                None,
                "at {i}"
            );
        }
    }

    #[test]
    fn a_poor_unit_that_starts_succeeding_is_a_change() {
        let mut c = Cusum::default();
        let first = (0..20).position(|_| c.observe(1.0, 0.3, 0.4, 4.0) == Some(Shift::Up));
        assert!(first.is_some_and(|n| n < 6), "{first:?}");
    }

    fn minutes(m: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(m)
    }

    #[test]
    fn the_same_shift_in_two_contexts_is_a_change_of_the_unit() {
        let alarms = UnitAlarms::default();
        let unit: Arc<str> = Arc::from("u");
        let window = Duration::from_secs(600);
        assert!(!alarms.raise(&unit, 1, Shift::Down, minutes(0), 2, window));
        // Again in the same context: still one context.
        assert!(!alarms.raise(&unit, 1, Shift::Down, minutes(1), 2, window));
        // Another context, the other way: no agreement.
        assert!(!alarms.raise(&unit, 2, Shift::Up, minutes(2), 2, window));
        assert!(alarms.raise(&unit, 3, Shift::Down, minutes(3), 2, window));
        // Consumed: the next inference needs two new alarms.
        assert!(!alarms.raise(&unit, 4, Shift::Down, minutes(4), 2, window));
    }

    #[test]
    fn alarms_apart_by_more_than_the_window_or_of_other_units_do_not_add_up() {
        let alarms = UnitAlarms::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let window = Duration::from_secs(600);
        assert!(!alarms.raise(&a, 1, Shift::Down, minutes(0), 2, window));
        assert!(!alarms.raise(&b, 2, Shift::Down, minutes(1), 2, window));
        assert!(!alarms.raise(&a, 2, Shift::Down, minutes(11), 2, window));
        // Zero contexts turns the inference off.
        assert!(!alarms.raise(&a, 3, Shift::Down, minutes(12), 0, window));
        assert!(!alarms.raise(&a, 4, Shift::Down, minutes(13), 0, window));
    }
}
