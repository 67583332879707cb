//! The stores units reach through the host's capabilities, kept beside the signals on the
//! same medium: the field of marks (the stigmergic medium: values that evaporate, halving
//! every half-life) and a key-value store per unit.
//!
//! Both have a Redis implementation, so every reactor process and machine on the mesh sees the
//! same marks and keys, and an in-process one for tests and zero-setup runs; one behaviour
//! suite (`testkit`) runs against both.
//!
//! Evaporation is computed, never scheduled: a mark is stored as (value, time of its last
//! deposit), and whoever reads it sees `value × 2^(−elapsed / half_life)` on the store's clock
//! (Redis's `TIME`, so processes on machines with skewed clocks still agree).

pub(crate) mod inproc;

use std::time::Duration;

use async_trait::async_trait;
use swarm_schemas::{MarkOp, MarksPrefixReply, MarksReply};

/// Longest key of a mark or of the key-value store, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value of the key-value store, as JSON text, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most operations in one [`Marks::apply`].
pub const MAX_MARK_OPS: usize = 10_000;
/// Marks that have evaporated below this (in absolute value) are dropped when a prefix read
/// comes across them.
pub const EVAPORATED: f64 = 1e-9;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The request is malformed: an empty or huge key, a non-finite amount, a huge value.
    #[error("{0}")]
    Invalid(String),
    /// The field was set up with another half-life than this process's.
    #[error(
        "the field of marks evaporates with a half-life of {stored_ms} ms; this process is configured with {configured_ms} ms"
    )]
    HalfLife {
        /// The half-life the field has.
        stored_ms: f64,
        /// The half-life this process was configured with.
        configured_ms: f64,
    },
    /// The backing service is unreachable or refused the command.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The shared field of marks.
#[async_trait]
pub trait Marks: Send + Sync + 'static {
    /// Applies `ops` in order, as one step, and reads each mark's value after its operation.
    async fn apply(&self, ops: &[MarkOp]) -> Result<MarksReply, StoreError>;

    /// Every mark whose key starts with `prefix` (literally), strongest first (ties by key).
    async fn sense_prefix(&self, prefix: &str) -> Result<MarksPrefixReply, StoreError>;

    /// The half-life the values evaporate with.
    fn half_life(&self) -> Duration;
}

/// A key-value store with a namespace per unit.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// The value at `key` in `namespace`, if set and not expired.
    async fn get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError>;

    /// Sets `key` in `namespace`, expiring after `ttl` if given.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &serde_json::Value,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError>;

    /// Removes `key` from `namespace`; whether it was set.
    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError>;
}

/// `value` after `elapsed_ms` of evaporation with `half_life_ms`. Time running backwards (a
/// clock stepped back) evaporates nothing.
pub fn evaporated(value: f64, elapsed_ms: f64, half_life_ms: f64) -> f64 {
    value * (-(elapsed_ms.max(0.0)) / half_life_ms).exp2()
}

/// Checks a key: non-empty and at most [`MAX_KEY_BYTES`].
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Invalid("a key may not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "a key may have at most {MAX_KEY_BYTES} bytes; this one has {}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a batch of mark operations: its size, each key, each amount.
pub(crate) fn check_ops(ops: &[MarkOp]) -> Result<(), StoreError> {
    if ops.len() > MAX_MARK_OPS {
        return Err(StoreError::Invalid(format!(
            "at most {MAX_MARK_OPS} mark operations at once; got {}",
            ops.len()
        )));
    }
    for op in ops {
        match op {
            MarkOp::Deposit { key, amount } => {
                check_key(key)?;
                if !amount.is_finite() {
                    return Err(StoreError::Invalid(format!(
                        "a deposit must be a finite number; got {amount} for `{key}`"
                    )));
                }
            }
            MarkOp::Sense { key } => check_key(key)?,
        }
    }
    Ok(())
}

/// The JSON text of a value, checked against [`MAX_VALUE_BYTES`].
pub(crate) fn value_text(value: &serde_json::Value) -> Result<String, StoreError> {
    let text = serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
    if text.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!(
            "a value may have at most {MAX_VALUE_BYTES} bytes of JSON; this one has {}",
            text.len()
        )));
    }
    Ok(text)
}

/// Sorts marks strongest first, ties by key.
pub(crate) fn strongest_first(marks: &mut [swarm_schemas::Mark]) {
    marks.sort_by(|a, b| b.value.total_cmp(&a.value).then_with(|| a.key.cmp(&b.key)));
}

/// Milliseconds in `duration`, as a float.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
