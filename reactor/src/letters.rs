//! Dead letters: the signal that says why another signal was not handled, in its trace.

use swarm_mesh::{EntryId, Undecodable};
use swarm_schemas::{DEAD_LETTER_KIND, DeadLetter, Signal};

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

/// The dead letter of `signal` for a unit it was not run on, and why.
pub(crate) fn not_run(signal: &Signal, entry: EntryId, unit: &str, reason: String) -> Signal {
    dead_letter(
        Some(signal),
        DeadLetter {
            reason,
            unit: Some(unit.to_owned()),
            attempts: 0,
            failure: None,
            entry_id: entry.to_string(),
            original: serde_json::to_value(signal).unwrap_or_default(),
        },
    )
}

/// The dead letter of an entry that is not a signal.
pub(crate) fn not_a_signal(id: EntryId, deliveries: u32, bad: Undecodable) -> Signal {
    dead_letter(
        None,
        DeadLetter {
            reason: format!("entry is not a signal: {}", bad.error),
            unit: None,
            attempts: deliveries,
            failure: None,
            entry_id: id.to_string(),
            original: serde_json::Value::String(bad.raw),
        },
    )
}

/// The dead letter of a poison entry: delivered more than `max_deliveries` times.
pub(crate) fn delivered_too_often(
    id: EntryId,
    deliveries: u32,
    max_deliveries: u32,
    signal: &Signal,
) -> Signal {
    dead_letter(
        Some(signal),
        DeadLetter {
            reason: format!(
                "delivered {deliveries} times without being settled (max_deliveries = {max_deliveries}): each run of it hung past its deadline, or the process running it died"
            ),
            unit: None,
            attempts: deliveries,
            failure: None,
            entry_id: id.to_string(),
            original: serde_json::to_value(signal).unwrap_or_default(),
        },
    )
}
