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

pub use swarm_schemas::{EVAPORATED, MAX_KEY_BYTES, MAX_MARK_OPS, MAX_VALUE_BYTES, evaporated};

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
    /// What the store holds is not what it writes: something else wrote to its keys. The
    /// value is left where it is.
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
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

/// Each unit's control (enabled, quarantined version), shared by every reactor on the mesh.
#[async_trait]
pub trait UnitControls: Send + Sync + 'static {
    /// Every unit's control, by unit name; units never changed are absent.
    async fn all(
        &self,
    ) -> Result<std::collections::BTreeMap<String, swarm_schemas::UnitControl>, StoreError>;

    /// Replaces `unit`'s control.
    async fn set(&self, unit: &str, control: &swarm_schemas::UnitControl)
    -> Result<(), StoreError>;
}

/// Checks a key (see [`swarm_schemas::validate_key`]).
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    swarm_schemas::validate_key(key).map_err(StoreError::Invalid)
}

/// Checks a batch of mark operations (see [`swarm_schemas::validate_mark_ops`]).
pub(crate) fn check_ops(ops: &[MarkOp]) -> Result<(), StoreError> {
    swarm_schemas::validate_mark_ops(ops).map_err(StoreError::Invalid)
}

/// The JSON text of a value, checked (see [`swarm_schemas::kv_value_text`]).
pub(crate) fn value_text(value: &serde_json::Value) -> Result<String, StoreError> {
    swarm_schemas::kv_value_text(value).map_err(StoreError::Invalid)
}

/// Milliseconds in `duration`, as a float.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
