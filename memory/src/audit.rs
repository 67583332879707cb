//! The audit trail's store: append and read, never change. In PostgreSQL (the `audit` table,
//! whose trigger refuses every UPDATE and DELETE, so not even SQL can rewrite it), shared by
//! every reactor on one database; or in process memory.
//!
//! Recording never waits on the store: [`AuditTrail::record`] queues the entry, and a writer
//! task appends what is queued in one call. An entry the store refuses is logged and kept for
//! the next try, up to a bound.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use swarm_schemas::{AuditAction, AuditEntry};
use tokio::sync::mpsc;

use crate::MemoryError;

/// Entries read at most per query.
pub const MAX_AUDIT_READ: usize = 10_000;

/// Which entries to read: the newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries older than this one (by `seq`): the next page.
    pub before: Option<i64>,
    /// Only entries about this unit.
    pub unit: Option<String>,
    /// Only entries of this action.
    pub action: Option<AuditAction>,
    /// At most this many (capped at [`MAX_AUDIT_READ`]).
    pub limit: usize,
}

/// Where the audit trail is kept.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends `entries` in order; each gets the next `seq`.
    async fn append(&self, entries: &[AuditEntry]) -> Result<(), MemoryError>;

    /// The entries `query` picks, newest first.
    async fn read(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, MemoryError>;
}

/// Entries an [`InProcAudit`] keeps; past this the oldest go.
const IN_PROCESS_KEPT: usize = 100_000;

/// The audit trail in process memory: the newest 100,000 entries, gone with the process.
#[derive(Debug, Default)]
pub struct InProcAudit {
    entries: Mutex<std::collections::VecDeque<AuditEntry>>,
    last_seq: Mutex<i64>,
}

impl InProcAudit {
    /// An empty trail.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl AuditLog for InProcAudit {
    async fn append(&self, entries: &[AuditEntry]) -> Result<(), MemoryError> {
        let mut all = self.entries.lock();
        let mut seq = self.last_seq.lock();
        for entry in entries {
            *seq += 1;
            all.push_back(AuditEntry {
                seq: *seq,
                ..entry.clone()
            });
            if all.len() > IN_PROCESS_KEPT {
                all.pop_front();
            }
        }
        Ok(())
    }

    async fn read(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, MemoryError> {
        let all = self.entries.lock();
        Ok(all
            .iter()
            .rev()
            .filter(|e| query.before.is_none_or(|before| e.seq < before))
            .filter(|e| query.unit.is_none() || e.unit == query.unit)
            .filter(|e| query.action.is_none_or(|a| e.action == a))
            .take(query.limit.min(MAX_AUDIT_READ))
            .cloned()
            .collect())
    }
}

/// Entries kept for the store while it cannot take them; past this the oldest are dropped
/// (and logged).
const MAX_QUEUED: usize = 100_000;

/// Records audit entries without waiting: queued, and appended to the log by a writer task.
/// Cheap to clone.
#[derive(Clone)]
pub struct AuditTrail {
    log: Arc<dyn AuditLog>,
    queue: mpsc::UnboundedSender<AuditEntry>,
    process: Arc<str>,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl AuditTrail {
    /// A trail into `log` for the process named `process`; starts its writer task (call inside
    /// a tokio runtime).
    pub fn spawn(log: Arc<dyn AuditLog>, process: &str) -> Self {
        let (queue, receive) = mpsc::unbounded_channel();
        tokio::spawn(write(Arc::clone(&log), receive));
        Self {
            log,
            queue,
            process: Arc::from(process),
        }
    }

    /// Records what `actor` did; `client` for an HTTP call.
    pub fn record(
        &self,
        actor: &str,
        client: Option<String>,
        action: AuditAction,
        unit: Option<&str>,
        outcome: &str,
        detail: String,
    ) {
        let entry = AuditEntry {
            seq: 0,
            at: chrono::Utc::now(),
            process: self.process.to_string(),
            actor: actor.to_owned(),
            client,
            action,
            unit: unit.map(str::to_owned),
            outcome: outcome.to_owned(),
            detail,
        };
        tracing::debug!(action = action.as_str(), unit, outcome, "audit");
        // The writer lives as long as any trail: a send fails only at process exit.
        let _ = self.queue.send(entry);
    }

    /// What the reactor did by itself.
    pub fn reactor(&self, action: AuditAction, unit: Option<&str>, outcome: &str, detail: String) {
        self.record("reactor", None, action, unit, outcome, detail);
    }

    /// The log the trail writes to, for reading.
    pub fn log(&self) -> &Arc<dyn AuditLog> {
        &self.log
    }
}

/// Appends what is queued, in batches, until every trail is dropped.
async fn write(log: Arc<dyn AuditLog>, mut receive: mpsc::UnboundedReceiver<AuditEntry>) {
    let mut pending: Vec<AuditEntry> = Vec::new();
    let mut failing = false;
    loop {
        if pending.is_empty() {
            match receive.recv().await {
                Some(entry) => pending.push(entry),
                None => return,
            }
        }
        while let Ok(entry) = receive.try_recv() {
            pending.push(entry);
        }
        if pending.len() > MAX_QUEUED {
            let dropped = pending.len() - MAX_QUEUED;
            pending.drain(..dropped);
            tracing::error!(
                dropped,
                "the audit log is unreachable: oldest audit entries dropped"
            );
        }
        match log.append(&pending).await {
            Ok(()) => {
                pending.clear();
                if std::mem::take(&mut failing) {
                    tracing::info!("the audit log takes entries again");
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "cannot append to the audit log; keeping the entries to try again");
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}
