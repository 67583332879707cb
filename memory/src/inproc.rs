//! An in-process [`Memory`]: records kept in a map, for zero-setup runs and tests.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use swarm_schemas::{ExecutionId, ExecutionRecord, SignalId};

use crate::{Memory, MemoryError};

#[derive(Default)]
struct State {
    by_id: HashMap<ExecutionId, ExecutionRecord>,
    order: VecDeque<ExecutionId>,
    by_signal: HashMap<SignalId, Vec<ExecutionId>>,
}

/// Execution records held in memory: unbounded for tests, or keeping the newest `limit`.
#[derive(Default)]
pub struct InProcMemory {
    state: Mutex<State>,
    limit: Option<usize>,
}

impl InProcMemory {
    /// An empty memory with no bound.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty memory that forgets the oldest records beyond `limit`.
    pub fn bounded(limit: usize) -> Self {
        Self { state: Mutex::default(), limit: Some(limit.max(1)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain maps behind; they are still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every record, in the order it was recorded.
    pub fn all(&self) -> Vec<ExecutionRecord> {
        let state = self.lock();
        state.order.iter().filter_map(|id| state.by_id.get(id).cloned()).collect()
    }

    /// The most recent records, newest first, at most `limit` (the synchronous form of
    /// [`Memory::recent`], for polling in tests).
    pub fn latest(&self, limit: usize) -> Vec<ExecutionRecord> {
        let state = self.lock();
        state.order.iter().rev().take(limit).filter_map(|id| state.by_id.get(id).cloned()).collect()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether no execution has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Memory for InProcMemory {
    async fn record(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        let mut state = self.lock();
        for record in records {
            if state.by_id.contains_key(&record.id) {
                continue;
            }
            state.order.push_back(record.id);
            state.by_signal.entry(record.signal.id).or_default().push(record.id);
            state.by_id.insert(record.id, record.clone());
        }
        while self.limit.is_some_and(|limit| state.order.len() > limit) {
            let Some(oldest) = state.order.pop_front() else { break };
            if let Some(record) = state.by_id.remove(&oldest) {
                if let Some(ids) = state.by_signal.get_mut(&record.signal.id) {
                    ids.retain(|id| *id != oldest);
                    if ids.is_empty() {
                        state.by_signal.remove(&record.signal.id);
                    }
                }
            }
        }
        Ok(())
    }

    async fn execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, MemoryError> {
        Ok(self.lock().by_id.get(&id).cloned())
    }

    async fn executions_of(&self, signal: SignalId) -> Result<Vec<ExecutionRecord>, MemoryError> {
        let state = self.lock();
        let ids = state.by_signal.get(&signal).map(Vec::as_slice).unwrap_or_default();
        Ok(ids.iter().filter_map(|id| state.by_id.get(id).cloned()).collect())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<ExecutionRecord>, MemoryError> {
        Ok(self.latest(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_schemas::{Outcome, Signal};

    fn record(signal: &Signal) -> ExecutionRecord {
        ExecutionRecord {
            id: uuid::Uuid::now_v7(),
            signal: signal.clone(),
            unit: "u".into(),
            unit_version: semver::Version::new(1, 0, 0),
            generation: 1,
            attempt: 0,
            outcome: Outcome::Success,
            started_at: chrono::Utc::now(),
            latency_us: 5,
            emitted: vec![],
            policy: "fan_out".into(),
            propensity: 1.0,
        }
    }

    #[tokio::test]
    async fn records_are_idempotent_and_indexed_by_signal() {
        let memory = InProcMemory::new();
        let signal = Signal::new("a", serde_json::json!({}));
        let first = record(&signal);
        let second = record(&signal);
        memory.record(&[first.clone(), first.clone()]).await.expect("record");
        memory.record(&[second.clone(), first.clone()]).await.expect("record");
        assert_eq!(memory.len(), 2);
        assert_eq!(memory.executions_of(signal.id).await.expect("query").len(), 2);
        assert_eq!(memory.execution(first.id).await.expect("query"), Some(first));
        let recent = memory.recent(1).await.expect("query");
        assert_eq!(recent, vec![second]);
    }

    #[tokio::test]
    async fn a_bounded_memory_forgets_the_oldest() {
        let memory = InProcMemory::bounded(2);
        let signals: Vec<Signal> = (0..3).map(|n| Signal::new("a", serde_json::json!({ "n": n }))).collect();
        let records: Vec<ExecutionRecord> = signals.iter().map(record).collect();
        memory.record(&records).await.expect("record");
        assert_eq!(memory.len(), 2);
        assert!(memory.executions_of(signals[0].id).await.expect("query").is_empty());
        assert_eq!(memory.all(), records[1..].to_vec());
    }
}
