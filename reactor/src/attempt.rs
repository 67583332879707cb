//! One call of a unit on a signal: the call itself, the checks on what the unit returned, and
//! the execution record it leaves. Calls are made off the async threads, each within its
//! deadline, by the lanes (`lanes.rs`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_abi::{STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, STATUS_PANIC};
use swarm_schemas::{
    Emit, ExecutionRecord, FailureKind, Outcome, Signal, UnitReply, validate_kind,
};
use uuid::Uuid;

use crate::loader::CallResult;
use crate::slot::{Generation, UnitSlot};

/// One call to make: a unit's generation and the signal as the unit will see it.
pub(crate) struct Attempt {
    pub generation: Arc<Generation>,
    /// The unit's place in the registry: its name, its timeouts and quarantine.
    pub slot: Arc<UnitSlot>,
    pub signal: Signal,
    /// `signal`'s JSON as the mesh delivered it, when the unit sees it unchanged: handed to
    /// the unit as is.
    pub json: Option<Arc<[u8]>>,
    /// The dispatch policy that chose this unit, and the probability it had of doing so.
    pub policy: &'static str,
    pub propensity: f64,
}

/// What one call produced.
pub(crate) struct Attempted {
    /// Shared from the start: the batch, memory and the watchers all hold the same record.
    pub record: Arc<ExecutionRecord>,
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
    let encoded = match &attempt.json {
        Some(json) => Ok(std::borrow::Cow::Borrowed(&**json)),
        None => serde_json::to_vec(signal).map(std::borrow::Cow::Owned),
    };
    let result = match encoded {
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
        record: Arc::new(ExecutionRecord {
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
        }),
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
        record: Arc::new(ExecutionRecord {
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
        }),
        emitted: Vec::new(),
    }
}
