//! A circuit breaker per unit: after `failures` consecutive failures the unit is skipped by
//! every policy for `open_for`; then one signal at a time probes it (half-open); a success
//! closes it, a failure opens it again for twice as long (up to `max_open_for`). A new
//! generation of the unit (a hot swap, a reconfiguration) closes it: the failures were the old
//! code's, and outcomes of calls started before the swap no longer count.

use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0: never open).
    pub failures: u32,
    /// How long it stays open the first time.
    pub open_for: Duration,
    /// The longest it stays open after repeated failed probes.
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 20,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(300),
        }
    }
}

/// The state a breaker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Signals flow to the unit.
    Closed,
    /// The unit is skipped.
    Open,
    /// One probe at a time goes to the unit.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive: u32,
    },
    Open {
        until: DateTime<Utc>,
        open_for: Duration,
    },
    /// `probe`: when the probe in flight was admitted. A probe whose outcome never comes (it
    /// was admitted but not called, or its call was lost) stops blocking after `open_for`.
    HalfOpen {
        probe: Option<DateTime<Utc>>,
        open_for: Duration,
    },
}

/// One unit's breaker. Time (wall-clock, as in execution records) is passed in, so tests and
/// simulations control it.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Outcomes of calls started before this (the last reset) are not counted.
    since: Option<DateTime<Utc>>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(Inner {
                state: State::Closed { consecutive: 0 },
                since: None,
            }),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.state.lock()
    }

    /// Closes the breaker for a new generation of the unit that serves from `now`: its
    /// consecutive failures start again from zero, and outcomes of calls started before `now`
    /// are ignored. Returns the new state when it changed.
    pub fn reset(&self, now: DateTime<Utc>) -> Option<BreakerState> {
        let mut inner = self.lock();
        let before = report(&inner.state);
        inner.state = State::Closed { consecutive: 0 };
        inner.since = Some(inner.since.map_or(now, |since| since.max(now)));
        (before != BreakerState::Closed).then_some(BreakerState::Closed)
    }

    /// Whether a signal may go to the unit now. In half-open state, true once (the probe) until
    /// that probe's outcome is recorded or `open_for` has passed.
    pub fn admit(&self, now: DateTime<Utc>) -> bool {
        let mut inner = self.lock();
        let state = &mut inner.state;
        match *state {
            State::Closed { .. } => true,
            State::Open { until, open_for } if now >= until => {
                *state = State::HalfOpen {
                    probe: Some(now),
                    open_for,
                };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen {
                ref mut probe,
                open_for,
            } => {
                let free = probe.is_none_or(|since| now >= after(since, open_for));
                if free {
                    *probe = Some(now);
                }
                free
            }
        }
    }

    /// Records an outcome of the unit, of a call started at `now`. Returns the new state when
    /// it changed. The outcome of a call started before the last reset is ignored.
    pub fn record(&self, success: bool, now: DateTime<Utc>) -> Option<BreakerState> {
        let mut inner = self.lock();
        if inner.since.is_some_and(|since| now < since) {
            return None;
        }
        let state = &mut inner.state;
        let before = report(state);
        *state = match (&*state, success) {
            (_, true) => State::Closed { consecutive: 0 },
            (State::Closed { consecutive }, false) => {
                let consecutive = consecutive + 1;
                if self.config.failures > 0 && consecutive >= self.config.failures {
                    State::Open {
                        until: after(now, self.config.open_for),
                        open_for: self.config.open_for,
                    }
                } else {
                    State::Closed { consecutive }
                }
            }
            (State::HalfOpen { open_for, .. }, false) => {
                let open_for = (*open_for * 2).min(self.config.max_open_for);
                State::Open {
                    until: after(now, open_for),
                    open_for,
                }
            }
            // An outcome of a call admitted before the breaker opened.
            (State::Open { until, open_for }, false) => State::Open {
                until: *until,
                open_for: *open_for,
            },
        };
        let after = report(state);
        (after != before).then_some(after)
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        report(&self.lock().state)
    }
}

/// `now` plus `duration`, saturating.
pub(crate) fn after(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(duration)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn report(state: &State) -> BreakerState {
    match state {
        State::Closed { .. } => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failures: 3,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(30),
        })
    }

    /// The three failures in a row that open [`breaker`]'s breaker.
    fn fail_until_open(b: &Breaker, t: DateTime<Utc>) {
        for _ in 0..3 {
            b.record(false, t);
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        let t = Utc::now();
        b.record(false, t);
        b.record(false, t);
        b.record(true, t);
        b.record(false, t);
        b.record(false, t);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit(t));
        assert_eq!(b.record(false, t), Some(BreakerState::Open));
        assert!(!b.admit(after(t, Duration::from_secs(9))));
    }

    #[test]
    fn probes_one_at_a_time_and_closes_on_success() {
        let b = breaker();
        let t = Utc::now();
        fail_until_open(&b, t);
        let later = after(t, Duration::from_secs(10));
        assert!(b.admit(later), "the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.admit(later), "a second signal while the probe runs");
        assert!(
            b.admit(after(later, Duration::from_secs(10))),
            "a probe whose outcome never came stops blocking"
        );
        assert_eq!(b.record(true, later), Some(BreakerState::Closed));
        assert!(b.admit(later));
    }

    #[test]
    fn a_reset_closes_it_and_ignores_outcomes_of_calls_started_before() {
        let b = breaker();
        let t = Utc::now();
        fail_until_open(&b, t);
        assert_eq!(b.state(), BreakerState::Open);
        let swap = after(t, Duration::from_secs(1));
        assert_eq!(b.reset(swap), Some(BreakerState::Closed));
        assert!(b.admit(swap), "a closed breaker admits at once");
        // Calls of the old generation that finish late do not count against the new one...
        for _ in 0..5 {
            assert_eq!(b.record(false, t), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // ...while the new generation's failures do, from zero.
        b.record(false, swap);
        b.record(false, swap);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.record(false, swap), Some(BreakerState::Open));
        assert_eq!(b.reset(swap), Some(BreakerState::Closed));
        assert_eq!(b.reset(swap), None, "already closed");
    }

    #[test]
    fn a_failed_probe_opens_it_for_longer_up_to_the_cap() {
        let b = breaker();
        let mut t = Utc::now();
        fail_until_open(&b, t);
        let mut open_for = Duration::from_secs(10);
        for next in [20, 30, 30] {
            assert!(!b.admit(after(t, open_for - Duration::from_millis(1))));
            t = after(t, open_for);
            assert!(b.admit(t), "the probe after {open_for:?}");
            assert_eq!(b.record(false, t), Some(BreakerState::Open));
            open_for = Duration::from_secs(next);
        }
    }
}
