//! Running one unit on one signal: the call off the async threads, the checks on what it
//! returns, retries, and the execution records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_abi::{STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, STATUS_PANIC};
use swarm_schemas::{
    DEAD_LETTER_KIND, DeadLetter, ExecutionRecord, FailureKind, Outcome, Signal, UnitReply, validate_kind,
};
use uuid::Uuid;

use crate::loader::CallResult;
use crate::registry::{Generation, UnitSlot};

/// What running one unit on one signal (with retries) produced.
pub(crate) struct UnitRun {
    /// One record per attempt.
    pub records: Vec<ExecutionRecord>,
    /// Signals emitted by the successful attempt, with lineage.
    pub emitted: Vec<Signal>,
    /// Set when every attempt failed.
    pub dead_letter: Option<Signal>,
}

/// Turns what the unit returned into the signals to emit, or a failure.
fn interpret(generation: &Generation, result: CallResult) -> Result<Vec<swarm_schemas::Emit>, (FailureKind, String)> {
    let text = || String::from_utf8_lossy(&result.bytes).into_owned();
    match result.status {
        STATUS_OK => {}
        STATUS_ERROR => return Err((FailureKind::Error, text())),
        STATUS_PANIC => return Err((FailureKind::Panic, text())),
        STATUS_BAD_INPUT => return Err((FailureKind::Error, format!("unit could not decode its input: {}", text()))),
        other => return Err((FailureKind::BadOutput, format!("unit returned unknown status {other}: {}", text()))),
    }
    let reply: UnitReply = serde_json::from_slice(&result.bytes)
        .map_err(|e| (FailureKind::BadOutput, format!("unit reply is not a valid UnitReply: {e}")))?;
    let manifest = generation.manifest();
    for emit in &reply.emits {
        validate_kind(&emit.kind)
            .map_err(|e| (FailureKind::BadOutput, format!("emitted kind `{}` {e}", emit.kind)))?;
        if !manifest.may_emit(&emit.kind) {
            return Err((
                FailureKind::BadOutput,
                format!("emitted `{}`, which the manifest does not declare in `emits`", emit.kind),
            ));
        }
    }
    Ok(reply.emits)
}

/// Calls `generation` with `signal` on the blocking pool; returns the result and the time the
/// call itself took.
async fn call(generation: Arc<Generation>, signal: &Signal) -> (Result<Vec<swarm_schemas::Emit>, (FailureKind, String)>, Duration) {
    let bytes = match serde_json::to_vec(signal) {
        Ok(bytes) => bytes,
        Err(e) => return (Err((FailureKind::Unavailable, format!("signal does not serialise: {e}"))), Duration::ZERO),
    };
    let joined = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let result = generation.call(&bytes);
        let elapsed = started.elapsed();
        (interpret(&generation, result), elapsed)
    })
    .await;
    joined.unwrap_or_else(|e| (Err((FailureKind::Unavailable, format!("unit call did not complete: {e}"))), Duration::ZERO))
}

/// Runs the unit in `slot` on `signal`, retrying up to `max_attempts` times. Each try uses the
/// generation serving at that moment, so a retry after a swap runs the new code.
pub(crate) async fn run_unit(
    slot: &UnitSlot,
    signal: &Signal,
    entry_id: &str,
    max_attempts: u32,
    backoff: Duration,
) -> UnitRun {
    let mut run = UnitRun { records: Vec::new(), emitted: Vec::new(), dead_letter: None };
    let mut last_error = String::new();
    for attempt in 0..max_attempts.max(1) {
        let Some(generation) = slot.current() else {
            // Unloaded while we were retrying: nobody is left to fail.
            return run;
        };
        let seen = Signal { attempt, ..signal.clone() };
        let started_at = chrono::Utc::now();
        let (result, elapsed) = call(Arc::clone(&generation), &seen).await;
        let execution = Uuid::now_v7();
        let mut record = ExecutionRecord {
            id: execution,
            signal: seen,
            unit: slot.name().to_owned(),
            unit_version: generation.manifest().version.clone(),
            generation: generation.number(),
            attempt,
            outcome: Outcome::Success,
            started_at,
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            emitted: Vec::new(),
            policy: "fan_out".to_owned(),
            propensity: 1.0,
        };
        match result {
            Ok(emits) => {
                run.emitted = emits.into_iter().map(|emit| signal.child(execution, emit)).collect();
                record.emitted = run.emitted.iter().map(|s| s.id).collect();
                run.records.push(record);
                return run;
            }
            Err((kind, error)) => {
                tracing::debug!(unit = slot.name(), signal = %signal.id, attempt, %error, "execution failed");
                last_error = error.clone();
                record.outcome = Outcome::Failure { kind, error };
                run.records.push(record);
            }
        }
        if attempt + 1 < max_attempts {
            tokio::time::sleep(backoff * 2u32.saturating_pow(attempt)).await;
        }
    }
    let attempts = max_attempts.max(1);
    tracing::warn!(unit = slot.name(), signal = %signal.id, attempts, error = %last_error, "signal dead-lettered");
    run.dead_letter = Some(dead_letter(
        Some(signal),
        DeadLetter {
            reason: format!("unit `{}` failed {attempts} attempts; last error: {last_error}", slot.name()),
            unit: Some(slot.name().to_owned()),
            attempts,
            entry_id: entry_id.to_owned(),
            original: serde_json::to_value(signal).unwrap_or_default(),
        },
    ));
    run
}

/// A dead-letter signal carrying `letter`, in the trace of `original` when there is one.
pub(crate) fn dead_letter(original: Option<&Signal>, letter: DeadLetter) -> Signal {
    let mut signal = Signal::new(DEAD_LETTER_KIND, serde_json::to_value(&letter).unwrap_or_default());
    if let Some(original) = original {
        signal.trace_id = original.trace_id;
        signal.correlation_id = original.correlation_id;
    }
    signal
}
