//! Signals: the typed messages units react to, and what a unit hands back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ExecutionId;

/// Identity of one signal; a UUIDv7, so ids sort by creation time.
pub type SignalId = Uuid;

/// A typed signal on the mesh.
///
/// Lineage: a signal emitted by an execution carries that execution's id as
/// `parent_execution`, and keeps the `trace_id` and `correlation_id` of the signal that
/// execution handled. A root signal is its own correlation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// Unique id of this signal.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: SignalId,
    /// Dot-separated kind, such as `order.placed`.
    pub kind: String,
    /// The signal's data.
    pub payload: serde_json::Value,
    /// Shared by every signal of one request/reply conversation; a root signal uses its own id.
    pub correlation_id: Uuid,
    /// The execution that emitted this signal; absent for signals from outside the swarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub parent_execution: Option<ExecutionId>,
    /// Shared by every signal descended from one root signal.
    pub trace_id: Uuid,
    /// What orders this signal among others on a partitioned mesh: signals with one key land
    /// in one partition and are handled in publish order. Absent, the key is the
    /// `correlation_id`, so one conversation stays in order. Signals emitted while handling a
    /// signal keep its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// How many times this signal has been handed to a unit before (0 on the first try).
    #[serde(default)]
    pub attempt: u32,
    /// When the signal was created.
    pub created_at: DateTime<Utc>,
    /// How the signal travels on the mesh. Not part of the signal's JSON: the mesh records it
    /// in how it stores the entry, and sets it when it reads one back. Signals emitted while
    /// handling a signal travel as it did. Units never see it: they always get JSON.
    #[serde(skip)]
    pub encoding: Encoding,
}

/// How a signal is encoded on the mesh: JSON (the default) or MessagePack (smaller and quicker
/// to decode for large payloads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Encoding {
    /// JSON text.
    #[default]
    #[serde(rename = "json")]
    Json,
    /// MessagePack, with fields by name.
    #[serde(rename = "msgpack")]
    MessagePack,
}

impl Signal {
    /// A root signal: new id, its own correlation, a new trace.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        let id = Uuid::now_v7();
        Self {
            id,
            kind: kind.into(),
            payload,
            correlation_id: id,
            parent_execution: None,
            trace_id: Uuid::now_v7(),
            partition_key: None,
            attempt: 0,
            created_at: Utc::now(),
            encoding: Encoding::Json,
        }
    }

    /// The same signal, travelling with `encoding`.
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The bytes of this signal's partition key: `partition_key` when it has one, else the
    /// `correlation_id` written as lowercase hyphenated text. Every publisher must hash
    /// these same bytes to place a signal.
    pub fn with_partition_key_bytes<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        match &self.partition_key {
            Some(key) => f(key.as_bytes()),
            None => {
                let mut buf = uuid::Uuid::encode_buffer();
                f(self
                    .correlation_id
                    .hyphenated()
                    .encode_lower(&mut buf)
                    .as_bytes())
            }
        }
    }

    /// A signal emitted by `execution` while it handled `self`: lineage carried over.
    pub fn child(&self, execution: ExecutionId, emit: Emit) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind: emit.kind,
            payload: emit.payload,
            correlation_id: self.correlation_id,
            parent_execution: Some(execution),
            trace_id: self.trace_id,
            partition_key: self.partition_key.clone(),
            attempt: 0,
            created_at: Utc::now(),
            encoding: self.encoding,
        }
    }
}

/// A signal posted to the swarm from outside (the HTTP API): the host gives it an id and a
/// time. Without `correlation_id` it starts a conversation of its own; with one it joins that
/// conversation, and replies to it carry the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PostSignal {
    /// Dot-separated kind, such as `order.placed`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 255)))]
    pub kind: String,
    /// The signal's data: a JSON object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// The conversation this signal belongs to (default: its own id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The trace this signal belongs to (default: a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<Uuid>,
    /// How the signal travels on the mesh (default: `json`); what it emits travels the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// What orders this signal on a partitioned mesh (default: its conversation): signals with
    /// one key are handled in the order they were posted. At most 255 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 255)))]
    pub partition_key: Option<String>,
}

impl PostSignal {
    /// The root signal this post asks for (the kind is not checked here; see
    /// [`validate_kind`](crate::validate_kind)).
    pub fn into_signal(self) -> Signal {
        let mut signal = Signal::new(self.kind, serde_json::Value::Object(self.payload));
        if let Some(correlation) = self.correlation_id {
            signal.correlation_id = correlation;
        }
        if let Some(trace) = self.trace_id {
            signal.trace_id = trace;
        }
        if let Some(encoding) = self.encoding {
            signal.encoding = encoding;
        }
        signal.partition_key = self.partition_key;
        signal
    }
}

/// The longest partition key, in bytes.
pub const MAX_PARTITION_KEY_BYTES: usize = 255;

/// Why a partition key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionKeyError {
    /// Empty.
    #[error("a partition key cannot be empty")]
    Empty,
    /// Longer than [`MAX_PARTITION_KEY_BYTES`].
    #[error("a partition key has at most {MAX_PARTITION_KEY_BYTES} bytes, not {0}")]
    TooLong(usize),
}

/// Checks a partition key given from outside.
pub fn validate_partition_key(key: &str) -> Result<(), PartitionKeyError> {
    match key.len() {
        0 => Err(PartitionKeyError::Empty),
        n if n > MAX_PARTITION_KEY_BYTES => Err(PartitionKeyError::TooLong(n)),
        _ => Ok(()),
    }
}

/// A signal a unit asks the host to emit. The host gives it an id and lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Emit {
    /// Kind of the new signal; must match one of the unit's `emits` patterns.
    pub kind: String,
    /// Its data.
    pub payload: serde_json::Value,
}

impl Emit {
    /// A signal to emit with the given kind and payload.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
        }
    }
}

/// What a unit returns from a successful call, across the ABI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UnitReply {
    /// Signals to emit, in order.
    #[serde(default)]
    pub emits: Vec<Emit>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn children_carry_lineage() {
        let root = Signal::new("order.placed", json!({"id": 7}));
        assert_eq!(root.correlation_id, root.id);
        let execution = Uuid::now_v7();
        let child = root.child(execution, Emit::new("order.valid", json!({})));
        assert_eq!(child.parent_execution, Some(execution));
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.correlation_id, root.correlation_id);
        assert_ne!(child.id, root.id);
    }

    #[test]
    fn signals_round_trip_and_unknown_fields_are_refused() {
        let signal = Signal::new("a.b", json!({"x": [1, 2]}));
        let text = serde_json::to_string(&signal).expect("serialise");
        let back: Signal = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, signal);
        let mut value = serde_json::to_value(&signal).expect("to value");
        value["surprise"] = json!(1);
        assert!(serde_json::from_value::<Signal>(value).is_err());
    }
}
