//! Memory: every execution the reactor runs is recorded here.
//!
//! This crate holds the [`Memory`] trait and two implementations that pass one behaviour suite:
//! `PgMemory` (PostgreSQL + pgvector, feature `postgres`) and [`InProcMemory`] (for zero-setup
//! runs and tests); [`WriteBehind`], which puts a bounded queue and a disk spool in front of either so that
//! recording never waits for the store; the [`Embedder`] trait with `TractEmbedder` (feature
//! `tract`), a MiniLM sentence model run by tract; and [`Shape`], what gets embedded.
//! The crate knows nothing of the mesh, the reactor or units.

mod audit;
mod embed;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod inproc;
#[cfg(feature = "postgres")]
mod pg;
mod query;
mod shape;
mod spool;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "tract")]
mod tract_embedder;
pub mod words;
mod writer;

pub use audit::{AuditLog, AuditQuery, AuditTrail, InProcAudit, MAX_AUDIT_READ};
pub use embed::{EmbedError, Embedder, cosine};
pub use inproc::InProcMemory;
#[cfg(feature = "postgres")]
pub use pg::{
    CompactStep, PgMemory, PgMemoryConfig, PgProbe, ReindexProgress, Reindexed, StepDone,
};
pub use query::{
    Compaction, Fusion, MAX_K, OutcomeFilter, Probe, Retention, SearchHit, SearchQuery, UnitStats,
};
pub use shape::{MAX_SHAPE_CHARS, Shape, ShapeEmbedder, shape_id};
#[cfg(feature = "tract")]
pub use tract_embedder::{MAX_TOKENS, MODEL_FILE, TOKENIZER_FILE, TractEmbedder};
pub use writer::{WriteBehind, WriteBehindConfig, WriterStatus};

use std::sync::Arc;

use async_trait::async_trait;
use swarm_schemas::{ExecutionId, ExecutionRecord, SignalId};

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The backing store could not be reached or refused the operation.
    #[error("memory store unavailable: {0}")]
    Unavailable(String),
    /// The question cannot be answered as asked.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// This memory was made without an embedder, so it cannot search.
    #[error("this memory has no embedder: similarity search is not available")]
    NoEmbedder,
    /// The embedder failed.
    #[error("embedding failed: {0}")]
    Embed(String),
    /// The store refused the records as invalid; trying again will not help.
    #[error("the store refused the records: {0}")]
    Rejected(String),
    /// The store holds something this version cannot read.
    #[error("a stored record cannot be read: {0}")]
    Corrupt(String),
}

/// A record as every store keeps it: times to the microsecond, and NUL characters in the error
/// text replaced by U+FFFD (PostgreSQL text cannot hold NUL). The signal is kept exactly.
pub fn normalise(record: &ExecutionRecord) -> ExecutionRecord {
    normalise_owned(record.clone())
}

/// [`normalise`], taking the record.
pub fn normalise_owned(mut record: ExecutionRecord) -> ExecutionRecord {
    use chrono::SubsecRound;
    record.started_at = record.started_at.trunc_subsecs(6);
    if let swarm_schemas::Outcome::Failure { error, .. } = &mut record.outcome {
        if error.contains('\0') {
            *error = error.replace('\0', "\u{FFFD}");
        }
    }
    record
}

/// [`normalise_owned`] for a shared record: the same record when it is already normal (the
/// reactor's always are), else a normalised copy.
pub fn normalise_shared(record: Arc<ExecutionRecord>) -> Arc<ExecutionRecord> {
    use chrono::SubsecRound;
    let normal = record.started_at.trunc_subsecs(6) == record.started_at
        && match &record.outcome {
            swarm_schemas::Outcome::Failure { error, .. } => !error.contains('\0'),
            swarm_schemas::Outcome::Success => true,
        };
    if normal {
        record
    } else {
        Arc::new(normalise_owned(Arc::unwrap_or_clone(record)))
    }
}

/// A store of execution records.
///
/// Writes are idempotent per execution id: recording the same execution twice keeps one record
/// (a batch replayed from the spool, or retried after a lost reply, is not counted twice). A
/// signal that really ran twice (it was in flight in a process that died) has two executions,
/// and both are remembered.
#[async_trait]
pub trait Memory: Send + Sync + 'static {
    /// Records a batch of executions.
    async fn record(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError>;

    /// Records a batch of executions the caller gives up: a memory that keeps records in
    /// process (or queues them) takes them without a copy.
    async fn record_owned(&self, records: Vec<ExecutionRecord>) -> Result<(), MemoryError> {
        self.record(&records).await
    }

    /// Records a batch of executions that others may still hold (the reactor hands the same
    /// records to its watchers): a memory that keeps records in process keeps these without a
    /// copy; by default each is taken over, or copied when still shared.
    async fn record_shared(&self, records: Vec<Arc<ExecutionRecord>>) -> Result<(), MemoryError> {
        self.record_owned(records.into_iter().map(Arc::unwrap_or_clone).collect())
            .await
    }

    /// Does ahead of [`record`](Memory::record) the slow part of recording `records`, and
    /// writes nothing: a memory that embeds shapes embeds those it does not have yet, so that
    /// a writer can embed one batch while it writes the one before. Recording gives the same
    /// result with or without it.
    async fn embed_ahead(&self, _records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        Ok(())
    }

    /// The vector of each of `shapes` that memory can embed, by shape id, from the same model
    /// and cache as its records' shapes (a shape embedded here is not embedded again when its
    /// executions are recorded). For a caller that compares shapes itself: the ranker places a
    /// new signal shape among the ones it knows before ranking its first signal. A memory
    /// without an embedder returns none.
    async fn shape_vectors(
        &self,
        _shapes: &[Shape],
    ) -> Result<std::collections::HashMap<i64, std::sync::Arc<[f32]>>, MemoryError> {
        Ok(std::collections::HashMap::new())
    }

    /// How recording goes, for a memory that records through a queue and a spool
    /// ([`WriteBehind`]); `None` for one that records directly.
    fn writer_status(&self) -> Option<WriterStatus> {
        None
    }

    /// One execution by id.
    async fn execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, MemoryError>;

    /// Every execution of one signal, oldest first.
    async fn executions_of(&self, signal: SignalId) -> Result<Vec<ExecutionRecord>, MemoryError>;

    /// The most recent executions, newest first, at most `limit`.
    async fn recent(&self, limit: usize) -> Result<Vec<ExecutionRecord>, MemoryError>;

    /// Executions whose signals are most similar to the probe, most similar first (ties: the
    /// newest first), after the query's filters.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, MemoryError>;

    /// Per-unit statistics over every remembered execution, by unit name.
    async fn unit_stats(&self) -> Result<Vec<UnitStats>, MemoryError>;

    /// Number of remembered executions.
    async fn count(&self) -> Result<u64, MemoryError>;

    /// Forgets what `retention` does not keep, and shapes no execution uses any more.
    async fn compact(&self, retention: &Retention) -> Result<Compaction, MemoryError>;
}
