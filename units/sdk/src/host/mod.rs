//! Calls to the host's capabilities: the shared code behind [`crate::log`], [`crate::marks`],
//! [`crate::kv`] and [`crate::http`].
//!
//! A unit cannot do I/O of its own safely (it has its own copy of std and of any runtime), so
//! the host does it on the unit's behalf. Each call blocks the unit's thread until the host
//! answers. A capability works only if the unit's manifest declares it and the reactor's
//! configuration grants it; otherwise the call fails with [`HostErrorKind::Denied`].

pub mod http;
pub mod kv;
pub mod log;
pub mod marks;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use swarm_abi::{HostOp, STATUS_BAD_INPUT, STATUS_DENIED};

use crate::ffi::{HostFailure, host_call};

/// What kind of failure a [`HostError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostErrorKind {
    /// The unit was not granted the capability (or its manifest does not declare it, or an
    /// HTTP host is not on its allowlist).
    Denied,
    /// The request was malformed: a bad key, a non-finite amount, a bad URL.
    BadRequest,
    /// The host tried and failed: the service is unreachable, a timeout, a response too large.
    Failed,
    /// No host is there: the unit runs outside a reactor (in a test harness, for instance).
    NoHost,
}

/// A capability call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    kind: HostErrorKind,
    message: String,
}

impl HostError {
    pub(crate) fn new(kind: HostErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> HostErrorKind {
        self.kind
    }

    /// The host's explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

/// Makes a call with raw request bytes.
pub(crate) fn call_raw(op: HostOp, request: &[u8]) -> Result<Vec<u8>, HostError> {
    host_call(op, request).map_err(|failure| match failure {
        HostFailure::Unbound => HostError::new(
            HostErrorKind::NoHost,
            "no host: capabilities work only when a reactor runs the unit",
        ),
        HostFailure::Status(status, message) => HostError::new(
            match status {
                STATUS_DENIED => HostErrorKind::Denied,
                STATUS_BAD_INPUT => HostErrorKind::BadRequest,
                _ => HostErrorKind::Failed,
            },
            message,
        ),
    })
}

/// Makes a call with a JSON request and a JSON reply.
pub(crate) fn call<R: DeserializeOwned>(
    op: HostOp,
    request: &impl Serialize,
) -> Result<R, HostError> {
    let request = serde_json::to_vec(request)
        .map_err(|e| HostError::new(HostErrorKind::BadRequest, e.to_string()))?;
    let reply = call_raw(op, &request)?;
    serde_json::from_slice(&reply).map_err(|e| {
        HostError::new(
            HostErrorKind::Failed,
            format!("the host's reply is not understood: {e}"),
        )
    })
}
