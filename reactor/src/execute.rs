//! What follows a failed first call: retries with backoff, fallbacks to the next unit in the
//! order, and dead letters when every try failed.

use std::sync::Arc;
use std::time::Duration;

use swarm_schemas::{DeadLetter, ExecutionRecord, FailureKind, Outcome, Signal};

use crate::attempt::{Attempt, Attempted};
use crate::lanes::call_all;
use crate::letters::dead_letter;
use crate::quarantine::Watchdog;
use crate::slot::UnitSlot;

/// Everything one unit did with one signal, across its attempts.
pub(crate) struct UnitRun {
    pub records: Vec<Arc<ExecutionRecord>>,
    pub emitted: Vec<Signal>,
    pub dead_letter: Option<Signal>,
}

/// Makes one more call of a run on the blocking pool and adds its record to the run; on
/// success its signals become the run's. `None` when the call could not run (shutdown).
async fn try_once(
    run: &mut UnitRun,
    call: Attempt,
    watchdog: &Arc<Watchdog>,
) -> Option<Result<(), String>> {
    let done = call_all(vec![call], 1, watchdog).await.pop().flatten()?;
    let outcome = match done.error() {
        None => Ok(()),
        Some(error) => Err(error.to_owned()),
    };
    if outcome.is_ok() {
        let r = &done.record;
        tracing::debug!(unit = %r.unit, kind = %r.signal.kind, signal = %r.signal.id, attempt = r.attempt,
            policy = %r.policy, latency_us = r.latency_us, "executed after a failure");
        run.emitted = done.emitted;
    }
    run.records.push(done.record);
    Some(outcome)
}

/// How a failed (signal, unit) is tried again.
#[derive(Clone)]
pub(crate) struct Retries {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Pause before the second try; doubled for each further try.
    pub backoff: Duration,
    /// Each try has its deadline.
    pub watchdog: Arc<Watchdog>,
}

/// Continues after a failed first attempt: retries up to `max_attempts` in all, each time on
/// the generation serving then (a retry after a swap runs the new code), with backoff. Dead-
/// letters the signal for this unit if every attempt fails.
pub(crate) async fn retry(
    slot: Arc<UnitSlot>,
    signal: Signal,
    first: Attempted,
    policy: &'static str,
    entry_id: String,
    retries: Retries,
) -> UnitRun {
    let Retries {
        max_attempts,
        backoff,
        watchdog,
    } = retries;
    let propensity = first.record.propensity;
    let mut last_error = first.error().unwrap_or_default().to_owned();
    let mut run = UnitRun {
        records: vec![first.record],
        emitted: Vec::new(),
        dead_letter: None,
    };
    for attempt in 1..max_attempts {
        if slot.health.is_quarantined() {
            // Its calls keep hanging: another try would only strand another thread.
            last_error = format!("{last_error} (then the unit was quarantined)");
            break;
        }
        tokio::time::sleep(backoff * 2u32.saturating_pow(attempt - 1)).await;
        let Some(generation) = slot.current() else {
            // Unloaded meanwhile: nobody is left to fail.
            return run;
        };
        let seen = Signal {
            attempt,
            ..signal.clone()
        };
        let call = Attempt {
            generation,
            slot: Arc::clone(&slot),
            signal: seen,
            json: None,
            policy,
            propensity,
        };
        match try_once(&mut run, call, &watchdog).await {
            Some(Err(error)) => last_error = error,
            // Succeeded, or could not run (shutdown).
            _ => return run,
        }
    }
    let attempts = u32::try_from(run.records.len()).unwrap_or(u32::MAX);
    let failure = run.records.last().and_then(|r| failure_kind(r));
    tracing::warn!(unit = slot.name(), signal = %signal.id, attempts, error = %last_error, "signal dead-lettered");
    run.dead_letter = Some(dead_letter(
        Some(&signal),
        DeadLetter {
            reason: format!(
                "unit `{}` failed {attempts} attempts; last error: {last_error}",
                slot.name()
            ),
            unit: Some(slot.name().to_owned()),
            attempts,
            failure,
            entry_id,
            original: serde_json::to_value(&signal).unwrap_or_default(),
        },
    ));
    run
}

/// Continues first-success dispatch after the first unit failed: the next units in rank order,
/// one try each, until one succeeds. If every unit fails the signal is dead-lettered with each
/// unit's last error.
pub(crate) async fn fall_back(
    signal: Signal,
    first: Attempted,
    next: Vec<(Arc<UnitSlot>, f64)>,
    entry_id: String,
    watchdog: Arc<Watchdog>,
) -> UnitRun {
    let mut errors = vec![format!(
        "`{}`: {}",
        first.record.unit,
        first.error().unwrap_or_default()
    )];
    let mut run = UnitRun {
        records: vec![first.record],
        emitted: Vec::new(),
        dead_letter: None,
    };
    for (slot, propensity) in next {
        let Some(generation) = slot.current() else {
            continue;
        };
        let call = Attempt {
            generation,
            slot: Arc::clone(&slot),
            signal: signal.clone(),
            json: None,
            policy: "first_success",
            propensity,
        };
        match try_once(&mut run, call, &watchdog).await {
            Some(Err(error)) => errors.push(format!("`{}`: {error}", slot.name())),
            _ => return run,
        }
    }
    let attempts = u32::try_from(run.records.len()).unwrap_or(u32::MAX);
    let failure = run.records.last().and_then(|r| failure_kind(r));
    tracing::warn!(signal = %signal.id, units = attempts, "every unit failed; signal dead-lettered");
    run.dead_letter = Some(dead_letter(
        Some(&signal),
        DeadLetter {
            reason: format!(
                "every unit tried in rank order failed (first_success): {}",
                errors.join("; ")
            ),
            unit: None,
            attempts,
            failure,
            entry_id,
            original: serde_json::to_value(&signal).unwrap_or_default(),
        },
    ));
    run
}

/// The kind of failure `record` ended in, if it failed.
fn failure_kind(record: &ExecutionRecord) -> Option<FailureKind> {
    match &record.outcome {
        Outcome::Success => None,
        Outcome::Failure { kind, .. } => Some(*kind),
    }
}
