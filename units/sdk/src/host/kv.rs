//! A key-value store of the unit's own: every version of a unit, in every reactor process on
//! the mesh, sees the same keys; other units do not see them. Values are JSON.
//!
//! Needs `Manifest::uses_kv` and a grant in the reactor's configuration.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use swarm_abi::HOST_KV;
use swarm_schemas::{KvReply, KvRequest};

use super::{HostError, HostErrorKind, call};

/// The value at `key`, if it is set (and has not expired).
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, HostError> {
    let reply: KvReply = call(
        HOST_KV,
        &KvRequest::Get {
            key: key.to_owned(),
        },
    )?;
    reply
        .value
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| HostError::new(HostErrorKind::Failed, format!("value at `{key}`: {e}")))
}

/// Sets `key` to `value`, expiring after `ttl` if given.
pub fn set<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
    ttl: Option<Duration>,
) -> Result<(), HostError> {
    let value = serde_json::to_value(value)
        .map_err(|e| HostError::new(HostErrorKind::BadRequest, e.to_string()))?;
    let _: KvReply = call(
        HOST_KV,
        &KvRequest::Set {
            key: key.to_owned(),
            value,
            ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)),
        },
    )?;
    Ok(())
}

/// Removes `key`; whether it was set.
pub fn delete(key: &str) -> Result<bool, HostError> {
    let reply: KvReply = call(
        HOST_KV,
        &KvRequest::Delete {
            key: key.to_owned(),
        },
    )?;
    Ok(reply.removed)
}
