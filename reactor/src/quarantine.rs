//! Hung units: the calls of a unit that ran past their deadline, the threads still stuck in
//! them, and the quarantine that keeps signals away from a unit that keeps hanging.
//!
//! A native call cannot be stopped from outside: a call past its deadline is abandoned, its
//! thread is counted as stuck until (if ever) it returns, and its generation is never unloaded
//! (the stuck thread holds it). Past a bound of stuck threads the process is told to exit, so
//! that a supervisor starts a fresh one.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Per unit: its timeouts since its version was loaded or it was last enabled, whether it is
/// quarantined, and its calls still stuck.
#[derive(Debug, Default)]
pub(crate) struct UnitHealth {
    timeouts: AtomicU64,
    quarantined: AtomicBool,
    stuck: AtomicU64,
}

impl UnitHealth {
    /// Timeouts since the version serving was loaded or the unit was last enabled.
    pub(crate) fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Acquire)
    }

    /// Calls abandoned past their deadline that have not returned.
    pub(crate) fn stuck(&self) -> u64 {
        self.stuck.load(Ordering::Acquire)
    }

    /// Whether the unit is kept from signals.
    pub(crate) fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }

    /// Quarantines the unit (as another reactor on the mesh did); whether it was not already.
    pub(crate) fn quarantine(&self) -> bool {
        !self.quarantined.swap(true, Ordering::AcqRel)
    }

    /// A new version serves, or the unit was enabled: its past timeouts no longer count.
    /// Calls still stuck stay counted.
    pub(crate) fn clear(&self) {
        self.timeouts.store(0, Ordering::Release);
        self.quarantined.store(false, Ordering::Release);
    }
}

/// The process's watch over unit calls: deadlines, stuck threads, quarantine.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// Deadline of a call whose unit's manifest sets none.
    pub default_timeout: Duration,
    /// Timeouts after which a unit is quarantined (0: never).
    pub quarantine_after: u64,
    /// Stuck calls beyond which the process should exit (0: no bound).
    pub max_stuck: usize,
    stuck: AtomicUsize,
    fatal: watch::Sender<Option<String>>,
    /// Where quarantines are recorded.
    audit: Option<swarm_memory::AuditTrail>,
}

impl Watchdog {
    pub(crate) fn new(default_timeout: Duration, quarantine_after: u64, max_stuck: usize) -> Self {
        Self {
            default_timeout,
            quarantine_after,
            max_stuck,
            stuck: AtomicUsize::new(0),
            fatal: watch::channel(None).0,
            audit: None,
        }
    }

    /// The watchdog, recording each quarantine in `audit`.
    pub(crate) fn with_audit(mut self, audit: swarm_memory::AuditTrail) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Set once the process should exit (why, in words): past the bound of stuck calls.
    pub(crate) fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    /// A call of `unit` ran past its deadline and was abandoned; with `stuck`, its thread is
    /// stuck until [`returned`](Self::returned) (an isolated unit's is not: its worker is
    /// killed). Counts the timeout against the unit and quarantines it at the bound; returns
    /// whether this timeout quarantined it.
    pub(crate) fn timed_out(&self, unit: &str, health: &UnitHealth, stuck: bool) -> bool {
        let stuck = if stuck {
            health.stuck.fetch_add(1, Ordering::AcqRel);
            let stuck = self.stuck.fetch_add(1, Ordering::AcqRel) + 1;
            metrics::gauge!("swarm_stuck_calls").set(stuck as f64);
            stuck
        } else {
            self.stuck.load(Ordering::Acquire)
        };
        metrics::counter!("swarm_call_timeouts_total", "unit" => unit.to_owned()).increment(1);
        let timeouts = health.timeouts.fetch_add(1, Ordering::AcqRel) + 1;
        let quarantined = self.quarantine_after > 0
            && timeouts >= self.quarantine_after
            && !health.quarantined.swap(true, Ordering::AcqRel);
        if quarantined {
            tracing::warn!(
                unit,
                timeouts,
                "unit quarantined: its calls keep running past their deadline; it gets no signals until it is swapped or enabled again"
            );
            metrics::counter!("swarm_unit_quarantines_total", "unit" => unit.to_owned())
                .increment(1);
            if let Some(audit) = &self.audit {
                audit.reactor(
                    swarm_schemas::AuditAction::Quarantine,
                    Some(unit),
                    "ok",
                    format!(
                        "{timeouts} calls ran past their deadline; no signals until it is swapped or enabled again"
                    ),
                );
            }
        }
        if self.max_stuck > 0 && stuck > self.max_stuck {
            let why = format!(
                "{stuck} unit calls are stuck past their deadline (more than --max-stuck-calls {}); the threads running them cannot be stopped, so the process must be restarted (the latest: unit `{unit}`)",
                self.max_stuck
            );
            tracing::error!("{why}");
            self.fatal.send_if_modified(|fatal| {
                let first = fatal.is_none();
                if first {
                    *fatal = Some(why);
                }
                first
            });
        }
        quarantined
    }

    /// An abandoned call of a unit returned after all.
    pub(crate) fn returned(&self, unit: &str, health: &UnitHealth) {
        health.stuck.fetch_sub(1, Ordering::AcqRel);
        let stuck = self.stuck.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("swarm_stuck_calls").set(stuck as f64);
        tracing::info!(unit, "a call abandoned past its deadline has returned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantines_at_the_bound_and_clears_on_enable() {
        let dog = Watchdog::new(Duration::from_secs(1), 3, 0);
        let unit = UnitHealth::default();
        assert!(!dog.timed_out("u", &unit, true));
        assert!(!dog.timed_out("u", &unit, true));
        assert!(!unit.is_quarantined());
        assert!(
            dog.timed_out("u", &unit, true),
            "the third timeout quarantines"
        );
        assert!(!dog.timed_out("u", &unit, true), "only once");
        assert!(unit.is_quarantined());
        assert_eq!(
            (
                unit.timeouts(),
                unit.stuck(),
                dog.stuck.load(Ordering::Acquire)
            ),
            (4, 4, 4)
        );
        dog.returned("u", &unit);
        assert_eq!((unit.stuck(), dog.stuck.load(Ordering::Acquire)), (3, 3));
        unit.clear();
        assert!(!unit.is_quarantined());
        assert_eq!(
            (unit.timeouts(), unit.stuck()),
            (0, 3),
            "stuck calls stay counted"
        );
    }

    #[test]
    fn past_the_stuck_bound_the_process_is_told_to_exit() {
        let dog = Watchdog::new(Duration::from_secs(1), 0, 2);
        let fatal = dog.fatal();
        let unit = UnitHealth::default();
        dog.timed_out("u", &unit, true);
        dog.timed_out("u", &unit, true);
        assert!(
            fatal.borrow().is_none(),
            "two stuck calls are within a bound of 2"
        );
        assert!(
            !unit.is_quarantined(),
            "quarantine_after 0 never quarantines"
        );
        dog.timed_out("hangs", &unit, true);
        let why = fatal.borrow().clone().expect("told to exit");
        assert!(
            why.contains("3 unit calls are stuck") && why.contains("`hangs`"),
            "{why}"
        );
    }
}
