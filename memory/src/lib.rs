//! Memory: every execution the reactor runs is recorded here.
//!
//! This crate holds the [`Memory`] trait and [`InProcMemory`], an in-process implementation for
//! zero-setup runs and tests; and the [`Embedder`] trait with `TractEmbedder` (feature
//! `tract`), a MiniLM sentence model run by tract. The PostgreSQL + pgvector implementation and similarity search
//! come next, behind the same traits. The crate knows nothing of the mesh, the reactor or units.

mod embed;
mod inproc;
#[cfg(feature = "tract")]
mod tract_embedder;

pub use embed::{EmbedError, Embedder, cosine};
pub use inproc::InProcMemory;
#[cfg(feature = "tract")]
pub use tract_embedder::{MAX_TOKENS, TractEmbedder};

use async_trait::async_trait;
use swarm_schemas::{ExecutionId, ExecutionRecord, SignalId};

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The backing store could not be reached or refused the operation.
    #[error("memory store unavailable: {0}")]
    Unavailable(String),
}

/// A store of execution records.
///
/// Writes are idempotent per execution id: recording the same execution twice keeps one record
/// (the mesh delivers at least once, so every sink must tolerate repeats).
#[async_trait]
pub trait Memory: Send + Sync + 'static {
    /// Records a batch of executions.
    async fn record(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError>;

    /// One execution by id.
    async fn execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, MemoryError>;

    /// Every execution of one signal, oldest first.
    async fn executions_of(&self, signal: SignalId) -> Result<Vec<ExecutionRecord>, MemoryError>;

    /// The most recent executions, newest first, at most `limit`.
    async fn recent(&self, limit: usize) -> Result<Vec<ExecutionRecord>, MemoryError>;
}
