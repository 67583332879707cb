//! The stigmergic medium: a field of marks shared by every unit and every reactor process on
//! the mesh, whose values evaporate, halving every half-life (the reactor's configuration).
//!
//! Units coordinate through marks as ants do through pheromone, without knowing each other:
//! one deposits on a key, another senses the keys and follows the strongest.
//!
//! ```no_run
//! # fn f() -> Result<(), swarm_sdk::HostError> {
//! use swarm_sdk::marks;
//! marks::deposit("site.north", 2.0)?;
//! if let Some(best) = marks::strongest("site.")? {
//!     println!("follow {} ({:.2})", best.key, best.value);
//! }
//! # Ok(()) }
//! ```
//!
//! Needs `Manifest::uses_marks` and a grant in the reactor's configuration.

use swarm_abi::{HOST_MARKS, HOST_MARKS_PREFIX};
pub use swarm_schemas::{Mark, MarkOp};
use swarm_schemas::{MarksPrefixReply, MarksPrefixRequest, MarksReply, MarksRequest};

use super::{HostError, call};

/// Values read from the field, and the field's clock when they were read.
#[derive(Debug, Clone, PartialEq)]
pub struct Readings {
    /// One value per operation, after it.
    pub values: Vec<f64>,
    /// The field's clock: milliseconds since the Unix epoch.
    pub at_ms: f64,
}

/// Applies `ops` in order, in one round trip to the field (one step: no other unit's operation
/// comes between them).
pub fn apply(ops: Vec<MarkOp>) -> Result<Readings, HostError> {
    let reply: MarksReply = call(HOST_MARKS, &MarksRequest { ops })?;
    Ok(Readings {
        values: reply.values,
        at_ms: reply.at_ms,
    })
}

fn one(op: MarkOp) -> Result<f64, HostError> {
    let readings = apply(vec![op])?;
    readings.values.first().copied().ok_or_else(|| {
        HostError::new(
            super::HostErrorKind::Failed,
            "the host answered with no value",
        )
    })
}

/// Adds `amount` to the mark at `key` and returns its value after the deposit.
pub fn deposit(key: &str, amount: f64) -> Result<f64, HostError> {
    one(MarkOp::Deposit {
        key: key.to_owned(),
        amount,
    })
}

/// The value of the mark at `key` now (0 if nothing was deposited there).
pub fn sense(key: &str) -> Result<f64, HostError> {
    one(MarkOp::Sense {
        key: key.to_owned(),
    })
}

/// Every mark whose key starts with `prefix`, strongest first, and the field's clock.
pub fn sense_prefix(prefix: &str) -> Result<(Vec<Mark>, f64), HostError> {
    let reply: MarksPrefixReply = call(
        HOST_MARKS_PREFIX,
        &MarksPrefixRequest {
            prefix: prefix.to_owned(),
        },
    )?;
    Ok((reply.marks, reply.at_ms))
}

/// The strongest mark whose key starts with `prefix`, if any.
pub fn strongest(prefix: &str) -> Result<Option<Mark>, HostError> {
    Ok(sense_prefix(prefix)?.0.into_iter().next())
}
