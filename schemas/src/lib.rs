//! The wire types of swarm.
//!
//! Everything that crosses a boundary — the mesh, the unit ABI, memory, the HTTP API — is one of
//! these types, serialised as JSON. This crate is plain data: serde derives, pure validation
//! functions, no I/O. With the `schema` feature each type also derives a JSON Schema; the files
//! in `schemas/json/` are generated from them and a test fails when they are stale. With the `openapi`
//! feature they derive OpenAPI schemas (utoipa) for the HTTP API's document.

mod audit;
mod dead_letter;
mod execution;
mod host;
mod kind;
mod manifest;
mod signal;
mod unit;

pub use audit::{AuditAction, AuditEntry};
pub use dead_letter::{DEAD_LETTER_KIND, DeadLetter};
pub use execution::{ExecutionId, ExecutionRecord, FailureKind, Outcome};
pub use host::{
    Capabilities, Capability, HostCalls, HttpCapability, HttpRequest, HttpResponse, KvReply,
    KvRequest, LogLevel, LogRecord, Mark, MarkOp, MarksPrefixReply, MarksPrefixRequest, MarksReply,
    MarksRequest, validate_host_pattern,
};
/// The limits and arithmetic of the host's stores, shared by every implementation of them.
pub use host::{
    EVAPORATED, MAX_KEY_BYTES, MAX_MARK_OPS, MAX_VALUE_BYTES, evaporated, kv_value_text,
    sort_strongest_first, validate_key, validate_mark_ops,
};
pub use kind::{KindError, KindPattern, MAX_KIND_LEN, validate_kind};
pub use manifest::{
    Dependency, DispatchPolicy, ManifestError, PatternDispatch, UnitManifest, validate_unit_name,
};
pub use signal::{
    Emit, Encoding, MAX_PARTITION_KEY_BYTES, PartitionKeyError, PostSignal, Signal, SignalId,
    UnitReply, validate_partition_key,
};
pub use unit::{UnitControl, UnitState, UnitStatus};

/// The semver crate, whose `Version` unit manifests carry.
pub use semver;
