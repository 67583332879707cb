//! Counting capability calls: per unit in the metrics, and per execution in the record of the
//! call being handled on this thread.

use std::cell::RefCell;
use std::time::Duration;

use swarm_schemas::{Capability, HostCalls, Signal, SignalId};

use super::Failure;

/// What the unit call running on this thread has used so far.
struct Scope {
    signal: SignalId,
    calls: Vec<HostCalls>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `call` (a unit handling `signal`, on this thread) and returns what it returned and
/// the capability calls it made.
pub(crate) fn scoped<R>(signal: &Signal, call: impl FnOnce() -> R) -> (R, Vec<HostCalls>) {
    let outer = SCOPE.with(|s| {
        s.borrow_mut().replace(Scope {
            signal: signal.id,
            calls: Vec::new(),
        })
    });
    let result = call();
    let used = SCOPE.with(|s| std::mem::replace(&mut *s.borrow_mut(), outer));
    (result, used.map(|s| s.calls).unwrap_or_default())
}

/// Whether this thread is running a unit's call (on the blocking pool).
pub(crate) fn in_call() -> bool {
    SCOPE.with(|s| s.borrow().is_some())
}

/// The signal being handled on this thread, for log records (`-` outside a call).
pub(crate) fn current_signal() -> String {
    SCOPE.with(|s| {
        s.borrow()
            .as_ref()
            .map_or_else(|| "-".to_owned(), |s| s.signal.to_string())
    })
}

/// Counts one call in the metrics and in this thread's execution, if one is running.
pub(super) fn record(
    unit: &str,
    capability: Capability,
    result: &Result<Vec<u8>, Failure>,
    took: Duration,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(Failure::Denied(_)) => "denied",
        Err(_) => "error",
    };
    metrics::counter!("swarm_host_calls_total", "unit" => unit.to_owned(),
        "capability" => capability.name(), "outcome" => outcome)
    .increment(1);
    metrics::histogram!("swarm_host_call_seconds", "unit" => unit.to_owned(),
        "capability" => capability.name())
    .record(took.as_secs_f64());
    SCOPE.with(|s| {
        let mut scope = s.borrow_mut();
        let Some(scope) = scope.as_mut() else {
            return;
        };
        let index = match scope.calls.iter().position(|c| c.capability == capability) {
            Some(i) => i,
            None => {
                scope.calls.push(HostCalls {
                    capability,
                    calls: 0,
                    errors: 0,
                    denied: 0,
                    micros: 0,
                });
                scope.calls.len() - 1
            }
        };
        let entry = &mut scope.calls[index];
        entry.calls = entry.calls.saturating_add(1);
        match outcome {
            "denied" => entry.denied = entry.denied.saturating_add(1),
            "error" => entry.errors = entry.errors.saturating_add(1),
            _ => {}
        }
        entry.micros = entry
            .micros
            .saturating_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    });
}
