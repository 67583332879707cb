//! Running units on signals: calls off the async threads (batched, so one hand-off to the
//! blocking pool carries many calls), the checks on what a unit returns, the execution
//! records, retries and dead letters.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_abi::{STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, STATUS_PANIC};
use swarm_schemas::{
    DEAD_LETTER_KIND, DeadLetter, Emit, ExecutionRecord, FailureKind, Outcome, Signal, UnitReply,
    validate_kind,
};
use uuid::Uuid;

use crate::loader::CallResult;
use crate::slot::{Generation, UnitSlot};

/// One call to make: a unit's generation and the signal as the unit will see it.
pub(crate) struct Attempt {
    pub generation: Arc<Generation>,
    pub unit: Arc<str>,
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

/// Makes one call and its record. Blocking: runs on the blocking pool.
fn attempt_blocking(attempt: Attempt) -> Attempted {
    let Attempt {
        generation,
        unit,
        signal,
        policy,
        propensity,
    } = attempt;
    // To the microsecond: what every store keeps.
    let started_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
    let started = Instant::now();
    // The generation that runs the call: a unit that carries state may have been swapped while
    // the call waited, and then its successor runs it.
    let mut generation = generation;
    let mut host_calls = Vec::new();
    let result = match serde_json::to_vec(&signal) {
        Ok(bytes) => {
            // The unit catches its own panics; this guards the host-side checks around it.
            catch_unwind(AssertUnwindSafe(|| {
                let ((ran_on, result), used) =
                    crate::host::scoped(&signal, || generation.call(&bytes));
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
    let elapsed = started.elapsed();
    let id = Uuid::now_v7();
    let (outcome, emitted) = match result {
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
    Attempted {
        record: ExecutionRecord {
            id,
            unit: unit.to_string(),
            unit_version: generation.manifest().version.clone(),
            generation: generation.number(),
            attempt: signal.attempt,
            outcome,
            started_at,
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            emitted: emitted.iter().map(|s| s.id).collect(),
            policy: policy.to_owned(),
            propensity,
            signal,
            host_calls,
        },
        emitted,
    }
}

/// Makes every call, spread over at most `threads` hand-offs to the blocking pool. Returns one
/// entry per call, in order; `None` where the blocking pool could not run it (shutdown).
pub(crate) async fn call_all(attempts: Vec<Attempt>, threads: usize) -> Vec<Option<Attempted>> {
    let total = attempts.len();
    let chunk = total.div_ceil(threads.max(1)).max(1);
    let mut handles = Vec::new();
    let mut attempts = attempts.into_iter();
    loop {
        let part: Vec<Attempt> = attempts.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let len = part.len();
        handles.push((
            len,
            tokio::task::spawn_blocking(move || {
                part.into_iter().map(attempt_blocking).collect::<Vec<_>>()
            }),
        ));
    }
    let mut out = Vec::with_capacity(total);
    for (len, handle) in handles {
        match handle.await {
            Ok(done) => out.extend(done.into_iter().map(Some)),
            Err(error) => {
                tracing::warn!(%error, calls = len, "unit calls did not run");
                out.extend((0..len).map(|_| None));
            }
        }
    }
    out
}

/// Everything one unit did with one signal, across its attempts.
pub(crate) struct UnitRun {
    pub records: Vec<ExecutionRecord>,
    pub emitted: Vec<Signal>,
    pub dead_letter: Option<Signal>,
}

/// Makes one more call of a run on the blocking pool and adds its record to the run; on
/// success its signals become the run's. `None` when the call could not run (shutdown).
async fn try_once(run: &mut UnitRun, call: Attempt) -> Option<Result<(), String>> {
    let done = call_all(vec![call], 1).await.pop().flatten()?;
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

/// Continues after a failed first attempt: retries up to `max_attempts` in all, each time on
/// the generation serving then (a retry after a swap runs the new code), with backoff. Dead-
/// letters the signal for this unit if every attempt fails.
pub(crate) async fn retry(
    slot: Arc<UnitSlot>,
    signal: Signal,
    first: Attempted,
    policy: &'static str,
    entry_id: String,
    max_attempts: u32,
    backoff: Duration,
) -> UnitRun {
    let propensity = first.record.propensity;
    let mut last_error = first.error().unwrap_or_default().to_owned();
    let mut run = UnitRun {
        records: vec![first.record],
        emitted: Vec::new(),
        dead_letter: None,
    };
    for attempt in 1..max_attempts {
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
            unit: Arc::from(slot.name()),
            signal: seen,
            policy,
            propensity,
        };
        match try_once(&mut run, call).await {
            Some(Err(error)) => last_error = error,
            // Succeeded, or could not run (shutdown).
            _ => return run,
        }
    }
    let attempts = max_attempts.max(1);
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
            unit: Arc::from(slot.name()),
            signal: signal.clone(),
            policy: "first_success",
            propensity,
        };
        match try_once(&mut run, call).await {
            Some(Err(error)) => errors.push(format!("`{}`: {error}", slot.name())),
            _ => return run,
        }
    }
    let attempts = u32::try_from(run.records.len()).unwrap_or(u32::MAX);
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
            entry_id,
            original: serde_json::to_value(&signal).unwrap_or_default(),
        },
    ));
    run
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
