//! Running units on signals: one call and its checks on what the unit returned, the execution
//! records, retries and dead letters. Calls are made off the async threads, each within its
//! deadline, by [`crate::lanes`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_abi::{STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, STATUS_PANIC};
use swarm_schemas::{
    DEAD_LETTER_KIND, DeadLetter, Emit, ExecutionRecord, FailureKind, Outcome, Signal, UnitReply,
    validate_kind,
};
use uuid::Uuid;

use crate::lanes::call_all;
use crate::loader::CallResult;
use crate::quarantine::Watchdog;
use crate::slot::{Generation, UnitSlot};

/// One call to make: a unit's generation and the signal as the unit will see it.
pub(crate) struct Attempt {
    pub generation: Arc<Generation>,
    /// The unit's place in the registry: its name, its timeouts and quarantine.
    pub slot: Arc<UnitSlot>,
    pub signal: Signal,
    /// The dispatch policy that chose this unit, and the probability it had of doing so.
    pub policy: &'static str,
    pub propensity: f64,
}

/// What one call produced.
pub(crate) struct Attempted {
    pub record: ExecutionRecord,
    /// Signals emitted, with lineage; empty on failure.
    pub emitted: Vec<Signal>,
}

impl Attempted {
    pub(crate) fn error(&self) -> Option<&str> {
        match &self.record.outcome {
            Outcome::Success => None,
            Outcome::Failure { error, .. } => Some(error),
        }
    }
}

/// Turns what the unit returned into the signals to emit, or a failure.
fn interpret(
    generation: &Generation,
    result: CallResult,
) -> Result<Vec<Emit>, (FailureKind, String)> {
    let text = || String::from_utf8_lossy(&result.bytes).into_owned();
    match result.status {
        STATUS_OK => {}
        STATUS_ERROR => return Err((FailureKind::Error, text())),
        STATUS_PANIC => return Err((FailureKind::Panic, text())),
        crate::isolate::STATUS_CRASHED => return Err((FailureKind::Crash, text())),
        STATUS_BAD_INPUT => {
            return Err((
                FailureKind::Error,
                format!("unit could not decode its input: {}", text()),
            ));
        }
        other => {
            return Err((
                FailureKind::BadOutput,
                format!("unit returned unknown status {other}: {}", text()),
            ));
        }
    }
    let reply: UnitReply = serde_json::from_slice(&result.bytes).map_err(|e| {
        (
            FailureKind::BadOutput,
            format!("unit reply is not a valid UnitReply: {e}"),
        )
    })?;
    let manifest = generation.manifest();
    for emit in &reply.emits {
        validate_kind(&emit.kind).map_err(|e| {
            (
                FailureKind::BadOutput,
                format!("emitted kind `{}` {e}", emit.kind),
            )
        })?;
        if !manifest.may_emit(&emit.kind) {
            return Err((
                FailureKind::BadOutput,
                format!(
                    "emitted `{}`, which the manifest does not declare in `emits`",
                    emit.kind
                ),
            ));
        }
    }
    Ok(reply.emits)
}

/// What one call did, before it becomes a record.
pub(crate) struct Ran {
    result: Result<Vec<Emit>, (FailureKind, String)>,
    host_calls: Vec<swarm_schemas::HostCalls>,
    elapsed: Duration,
    /// The generation that ran it: a unit that carries state may have been swapped while the
    /// call waited, and then its successor ran it.
    generation: Arc<Generation>,
}

/// Makes one call. Blocking: runs on the blocking pool.
pub(crate) fn run(attempt: &Attempt) -> Ran {
    let started = Instant::now();
    let mut generation = Arc::clone(&attempt.generation);
    let mut host_calls = Vec::new();
    let signal = &attempt.signal;
    let result = match serde_json::to_vec(signal) {
        Ok(bytes) => {
            // The unit catches its own panics; this guards the host-side checks around it.
            catch_unwind(AssertUnwindSafe(|| {
                let ((ran_on, result), used) =
                    crate::host::scoped(signal, || generation.call(&bytes));
                host_calls = used;
                generation = ran_on;
                interpret(&generation, result)
            }))
            .unwrap_or_else(|_| {
                Err((
                    FailureKind::BadOutput,
                    "the host failed to read the unit's reply".into(),
                ))
            })
        }
        Err(e) => Err((
            FailureKind::Unavailable,
            format!("signal does not serialise: {e}"),
        )),
    };
    Ran {
        result,
        host_calls,
        elapsed: started.elapsed(),
        generation,
    }
}

/// The record of a call that ran, started at `started_at` (now, when not known).
pub(crate) fn finish(
    attempt: Attempt,
    ran: Ran,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Attempted {
    let Attempt {
        slot,
        signal,
        policy,
        propensity,
        ..
    } = attempt;
    // To the microsecond: what every store keeps.
    let started_at = started_at.unwrap_or_else(|| {
        chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6)
            - chrono::Duration::from_std(ran.elapsed).unwrap_or_default()
    });
    let id = Uuid::now_v7();
    let (outcome, emitted) = match ran.result {
        Ok(emits) => (
            Outcome::Success,
            emits
                .into_iter()
                .map(|emit| signal.child(id, emit))
                .collect(),
        ),
        Err((kind, error)) => (Outcome::Failure { kind, error }, Vec::new()),
    };
    let emitted: Vec<Signal> = emitted;
    let generation = ran.generation;
    Attempted {
        record: ExecutionRecord {
            id,
            unit: slot.name().to_owned(),
            unit_version: generation.manifest().version.clone(),
            generation: generation.number(),
            attempt: signal.attempt,
            outcome,
            started_at,
            latency_us: u64::try_from(ran.elapsed.as_micros()).unwrap_or(u64::MAX),
            emitted: emitted.iter().map(|s| s.id).collect(),
            policy: policy.to_owned(),
            propensity,
            signal,
            host_calls: ran.host_calls,
        },
        emitted,
    }
}

/// The record of a call abandoned past its deadline (it may still be running).
pub(crate) fn timed_out(
    attempt: &Attempt,
    started_at: chrono::DateTime<chrono::Utc>,
    timeout: Duration,
) -> Attempted {
    let elapsed = (chrono::Utc::now() - started_at)
        .to_std()
        .unwrap_or_default();
    let generation = &attempt.generation;
    tracing::warn!(unit = attempt.slot.name(), signal = %attempt.signal.id,
        elapsed_ms = elapsed.as_millis() as u64, "unit call ran past its deadline: abandoned");
    Attempted {
        record: ExecutionRecord {
            id: Uuid::now_v7(),
            unit: attempt.slot.name().to_owned(),
            unit_version: generation.manifest().version.clone(),
            generation: generation.number(),
            attempt: attempt.signal.attempt,
            outcome: Outcome::Failure {
                kind: FailureKind::Timeout,
                error: format!(
                    "the call ran past its deadline of {} ms and was abandoned",
                    timeout.as_millis()
                ),
            },
            started_at,
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            emitted: Vec::new(),
            policy: attempt.policy.to_owned(),
            propensity: attempt.propensity,
            signal: attempt.signal.clone(),
            host_calls: Vec::new(),
        },
        emitted: Vec::new(),
    }
}

/// Everything one unit did with one signal, across its attempts.
pub(crate) struct UnitRun {
    pub records: Vec<ExecutionRecord>,
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
    let failure = run.records.last().and_then(failure_kind);
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
            policy: "first_success",
            propensity,
        };
        match try_once(&mut run, call, &watchdog).await {
            Some(Err(error)) => errors.push(format!("`{}`: {error}", slot.name())),
            _ => return run,
        }
    }
    let attempts = u32::try_from(run.records.len()).unwrap_or(u32::MAX);
    let failure = run.records.last().and_then(failure_kind);
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

/// A dead-letter signal carrying `letter`, in the trace of `original` when there is one.
pub(crate) fn dead_letter(original: Option<&Signal>, letter: DeadLetter) -> Signal {
    let mut signal = Signal::new(
        DEAD_LETTER_KIND,
        serde_json::to_value(&letter).unwrap_or_default(),
    );
    if let Some(original) = original {
        signal.trace_id = original.trace_id;
        signal.correlation_id = original.correlation_id;
    }
    signal
}
