//! An in-process [`Memory`]: records kept in maps, for zero-setup runs and tests. With an
//! embedder it searches signal shapes exactly (brute force): by cosine similarity, fused by
//! reciprocal rank with the shapes that hold every word of the probe, as `PgMemory` does.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use swarm_schemas::{ExecutionId, ExecutionRecord, SignalId};

use crate::query::{ago, nearest_rank};
use crate::words::{self, Words};
use crate::{
    Compaction, Embedder, Memory, MemoryError, Retention, SearchHit, SearchQuery, Shape,
    ShapeEmbedder, UnitStats, cosine, normalise_shared,
};

struct Stored {
    /// Shared with whoever else holds the record (the reactor's watchers): kept without a copy.
    record: Arc<ExecutionRecord>,
    /// None when the embedder failed on this signal's shape.
    shape: Option<i64>,
}

struct StoredShape {
    text: String,
    vector: Arc<[f32]>,
    words: Words,
}

/// The records and their indexes. Ordered maps rather than hash maps: execution and signal ids
/// are UUIDv7, which grow with time, so a new record goes to the right end of each index and
/// the oldest (the one a bounded memory forgets) comes off the left end, both in cache, where a
/// hash map touches a random bucket for each. No allocation per signal either.
#[derive(Default)]
struct State {
    by_id: BTreeMap<ExecutionId, Stored>,
    order: VecDeque<ExecutionId>,
    by_signal: BTreeSet<(SignalId, ExecutionId)>,
    shapes: HashMap<i64, StoredShape>,
}

impl State {
    fn forget(&mut self, id: ExecutionId) -> bool {
        let Some(stored) = self.by_id.remove(&id) else {
            return false;
        };
        self.by_signal.remove(&(stored.record.signal.id, id));
        true
    }

    /// The ids of the executions of `signal`, in id order.
    fn of_signal(&self, signal: SignalId) -> impl Iterator<Item = ExecutionId> + '_ {
        self.by_signal
            .range((signal, ExecutionId::nil())..=(signal, ExecutionId::max()))
            .map(|(_, id)| *id)
    }
}

/// Execution records held in memory: unbounded for tests, or keeping the newest `limit`.
#[derive(Default)]
pub struct InProcMemory {
    state: Mutex<State>,
    limit: Option<usize>,
    shapes: Option<ShapeEmbedder>,
}

impl InProcMemory {
    /// An empty memory with no bound and no embedder (it records but cannot search).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty memory that forgets the oldest records beyond `limit`.
    pub fn bounded(limit: usize) -> Self {
        Self {
            limit: Some(limit.max(1)),
            ..Self::default()
        }
    }

    /// The same memory, embedding signal shapes with `embedder` so that it can search.
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.shapes = Some(ShapeEmbedder::new(embedder, 65_536));
        self
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain maps behind; they are still usable.
        self.state.lock()
    }

    /// Every record, in the order it was recorded.
    pub fn all(&self) -> Vec<ExecutionRecord> {
        let state = self.lock();
        state
            .order
            .iter()
            .filter_map(|id| {
                state
                    .by_id
                    .get(id)
                    .map(|s| ExecutionRecord::clone(&s.record))
            })
            .collect()
    }

    /// The most recent records (by start time, then id), newest first, at most `limit`: the
    /// synchronous form of [`Memory::recent`], for polling in tests.
    pub fn latest(&self, limit: usize) -> Vec<ExecutionRecord> {
        let state = self.lock();
        let mut newest: Vec<&ExecutionRecord> = state.by_id.values().map(|s| &*s.record).collect();
        let key = |r: &&ExecutionRecord| std::cmp::Reverse((r.started_at, r.id));
        if newest.len() > limit && limit > 0 {
            newest.select_nth_unstable_by_key(limit - 1, key);
        }
        newest.truncate(limit);
        newest.sort_unstable_by_key(key);
        newest.into_iter().cloned().collect()
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
        self.record_owned(records.to_vec()).await
    }

    async fn record_owned(&self, records: Vec<ExecutionRecord>) -> Result<(), MemoryError> {
        self.record_shared(records.into_iter().map(Arc::new).collect())
            .await
    }

    async fn record_shared(&self, records: Vec<Arc<ExecutionRecord>>) -> Result<(), MemoryError> {
        // Embed outside the lock; a shape the embedder fails on leaves its records unsearchable
        // rather than unrecorded.
        let mut shapes: HashMap<ExecutionId, Shape> = HashMap::new();
        let mut vectors = HashMap::new();
        if let Some(embedder) = &self.shapes {
            shapes = records
                .iter()
                .map(|r| (r.id, Shape::of(&r.signal)))
                .collect();
            match embedder.vectors(shapes.values()).await {
                Ok(found) => vectors = found,
                Err(error) => {
                    tracing::warn!(%error, "signal shapes not embedded; these executions cannot be found by search")
                }
            }
        }
        let mut state = self.lock();
        let State {
            by_id,
            order,
            by_signal,
            shapes: stored_shapes,
        } = &mut *state;
        for record in records {
            let std::collections::btree_map::Entry::Vacant(vacant) = by_id.entry(record.id) else {
                continue;
            };
            let shape = shapes.remove(&record.id).and_then(|shape| {
                let vector = vectors.get(&shape.id)?;
                let id = shape.id;
                stored_shapes.entry(id).or_insert_with(|| StoredShape {
                    words: Words::of(&shape.text),
                    text: shape.text,
                    vector: Arc::clone(vector),
                });
                Some(id)
            });
            order.push_back(record.id);
            by_signal.insert((record.signal.id, record.id));
            vacant.insert(Stored {
                record: normalise_shared(record),
                shape,
            });
        }
        while self.limit.is_some_and(|limit| state.order.len() > limit) {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            state.forget(oldest);
        }
        Ok(())
    }

    async fn shape_vectors(
        &self,
        shapes: &[Shape],
    ) -> Result<HashMap<i64, Arc<[f32]>>, MemoryError> {
        match &self.shapes {
            Some(embedder) => embedder.vectors(shapes).await,
            None => Ok(HashMap::new()),
        }
    }

    async fn execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, MemoryError> {
        Ok(self
            .lock()
            .by_id
            .get(&id)
            .map(|s| ExecutionRecord::clone(&s.record)))
    }

    async fn executions_of(&self, signal: SignalId) -> Result<Vec<ExecutionRecord>, MemoryError> {
        let mut found: Vec<ExecutionRecord> = {
            let state = self.lock();
            state
                .of_signal(signal)
                .filter_map(|id| {
                    state
                        .by_id
                        .get(&id)
                        .map(|s| ExecutionRecord::clone(&s.record))
                })
                .collect()
        };
        // Oldest first, as `PgMemory` orders them.
        found.sort_by_key(|r| (r.started_at, r.id));
        Ok(found)
    }

    async fn recent(&self, limit: usize) -> Result<Vec<ExecutionRecord>, MemoryError> {
        Ok(self.latest(limit))
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, MemoryError> {
        let embedder = self.shapes.as_ref().ok_or(MemoryError::NoEmbedder)?;
        query.validate(embedder.dimensions())?;
        let probe = embedder.probe(&query.probe).await?;
        let words = query.words().map(|w| words::query(&w));
        let state = self.lock();
        // The executions passing the filters, by shape.
        let mut admitted: HashMap<i64, Vec<&ExecutionRecord>> = HashMap::new();
        for stored in state.by_id.values() {
            if let Some(shape) = stored.shape.filter(|_| query.admits(&stored.record)) {
                admitted.entry(shape).or_default().push(&stored.record);
            }
        }
        let similarity: HashMap<i64, f32> = admitted
            .keys()
            .map(|id| (*id, cosine(&probe, &state.shapes[id].vector)))
            .collect();
        let candidates = query.shape_candidates();
        let mut near: Vec<i64> = admitted.keys().copied().collect();
        near.sort_by(|a, b| similarity[b].total_cmp(&similarity[a]).then(a.cmp(b)));
        near.truncate(candidates);
        let mut matched: Vec<(i64, f32)> = match &words {
            Some(words) => admitted
                .keys()
                .filter(|id| state.shapes[*id].words.holds_all(words))
                .map(|id| (*id, state.shapes[id].words.rank(words)))
                .collect(),
            None => Vec::new(),
        };
        matched.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        matched.truncate(candidates);
        let matched: Vec<i64> = matched.into_iter().map(|(id, _)| id).collect();
        let scores = words::fuse(&[&near, &matched]);
        let mut shapes: Vec<(i64, f64)> = scores.into_iter().collect();
        shapes.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then(similarity[&b.0].total_cmp(&similarity[&a.0]))
                .then(a.0.cmp(&b.0))
        });
        let limit = query.shape_limit();
        let mut hits = Vec::with_capacity(query.k);
        for (shape, score) in shapes {
            let mut executions = admitted.remove(&shape).unwrap_or_default();
            executions.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
            for record in executions.into_iter().take(limit) {
                if hits.len() == query.k {
                    return Ok(hits);
                }
                hits.push(SearchHit {
                    similarity: similarity[&shape],
                    score,
                    shape: state.shapes[&shape].text.clone(),
                    record: record.clone(),
                });
            }
        }
        Ok(hits)
    }

    async fn unit_stats(&self) -> Result<Vec<UnitStats>, MemoryError> {
        let state = self.lock();
        let mut by_unit: HashMap<&str, Vec<&ExecutionRecord>> = HashMap::new();
        for stored in state.by_id.values() {
            by_unit
                .entry(stored.record.unit.as_str())
                .or_default()
                .push(&stored.record);
        }
        let mut stats: Vec<UnitStats> = by_unit
            .into_iter()
            .map(|(unit, records)| {
                let mut latencies: Vec<u64> = records.iter().map(|r| r.latency_us).collect();
                latencies.sort_unstable();
                let successes = records.iter().filter(|r| r.outcome.is_success()).count() as u64;
                UnitStats {
                    unit: unit.to_owned(),
                    executions: records.len() as u64,
                    successes,
                    failures: records.len() as u64 - successes,
                    mean_latency_us: latencies.iter().map(|l| *l as f64).sum::<f64>()
                        / latencies.len() as f64,
                    p95_latency_us: nearest_rank(&latencies, 0.95),
                    last_started_at: records
                        .iter()
                        .map(|r| r.started_at)
                        .max()
                        .unwrap_or_default(),
                }
            })
            .collect();
        stats.sort_by(|a, b| a.unit.cmp(&b.unit));
        Ok(stats)
    }

    async fn count(&self) -> Result<u64, MemoryError> {
        Ok(self.len() as u64)
    }

    async fn compact(&self, retention: &Retention) -> Result<Compaction, MemoryError> {
        let mut state = self.lock();
        let mut doomed: Vec<(chrono::DateTime<Utc>, ExecutionId)> = Vec::new();
        let mut kept: Vec<(chrono::DateTime<Utc>, ExecutionId)> = Vec::new();
        let cutoff = retention.max_age.map(ago);
        for (id, stored) in &state.by_id {
            let key = (stored.record.started_at, *id);
            if cutoff.is_some_and(|c| stored.record.started_at < c) {
                doomed.push(key)
            } else {
                kept.push(key)
            }
        }
        if let Some(max) = retention.max_rows {
            kept.sort_unstable_by(|a, b| b.cmp(a));
            doomed.extend(kept.drain(usize::try_from(max).unwrap_or(usize::MAX).min(kept.len())..));
        }
        let mut removed = Compaction::default();
        for (_, id) in doomed {
            if state.forget(id) {
                removed.executions += 1;
            }
        }
        let State {
            by_id,
            order,
            shapes,
            ..
        } = &mut *state;
        order.retain(|id| by_id.contains_key(id));
        let used: std::collections::HashSet<i64> = by_id.values().filter_map(|s| s.shape).collect();
        let before = shapes.len();
        shapes.retain(|id, _| used.contains(id));
        removed.shapes = (before - shapes.len()) as u64;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;
    use swarm_schemas::Signal;

    fn record(signal: &Signal) -> ExecutionRecord {
        crate::testkit::record(signal, "u", true, 0)
    }

    #[tokio::test]
    async fn records_are_idempotent_and_indexed_by_signal() {
        let memory = InProcMemory::new();
        let signal = Signal::new("a", serde_json::json!({}));
        let first = record(&signal);
        let second = record(&signal);
        memory
            .record(&[first.clone(), first.clone()])
            .await
            .expect("record");
        memory
            .record(&[second.clone(), first.clone()])
            .await
            .expect("record");
        assert_eq!(memory.len(), 2);
        assert_eq!(
            memory.executions_of(signal.id).await.expect("query").len(),
            2
        );
        assert_eq!(
            memory.execution(first.id).await.expect("query"),
            Some(first)
        );
        let recent = memory.recent(1).await.expect("query");
        assert_eq!(recent, vec![second]);
    }

    #[tokio::test]
    async fn a_bounded_memory_forgets_the_oldest() {
        let memory = InProcMemory::bounded(2);
        let signals: Vec<Signal> = (0..3)
            .map(|n| Signal::new("a", serde_json::json!({ "n": n })))
            .collect();
        let records: Vec<ExecutionRecord> = signals.iter().map(record).collect();
        memory.record(&records).await.expect("record");
        assert_eq!(memory.len(), 2);
        assert!(
            memory
                .executions_of(signals[0].id)
                .await
                .expect("query")
                .is_empty()
        );
        assert_eq!(memory.all(), records[1..].to_vec());
    }

    #[tokio::test]
    async fn a_signals_executions_come_oldest_first_and_leave_with_their_records() {
        let memory = InProcMemory::bounded(3);
        let signal = Signal::new("a", serde_json::json!({}));
        let other = Signal::new("a", serde_json::json!({}));
        // Recorded newest first, with ids that do not follow their start times (ids from
        // another process, or random ones): the later started has the smaller id.
        let mut late = crate::testkit::record(&signal, "u", true, 10);
        late.id = uuid::Uuid::from_u128(1);
        let mut early = crate::testkit::record(&signal, "u", true, 20);
        early.id = uuid::Uuid::from_u128(2);
        let between = crate::testkit::record(&other, "u", true, 15);
        memory
            .record(&[late.clone(), early.clone(), between.clone()])
            .await
            .expect("record");
        let found = memory.executions_of(signal.id).await.expect("query");
        assert_eq!(found, vec![early.clone(), late.clone()]);
        // One more forgets the first recorded (`late`), from the signal's executions too.
        let newest = record(&other);
        memory
            .record(std::slice::from_ref(&newest))
            .await
            .expect("record");
        assert_eq!(
            memory.executions_of(signal.id).await.expect("query"),
            vec![early]
        );
        assert_eq!(memory.execution(late.id).await.expect("query"), None);
        assert_eq!(
            memory.executions_of(other.id).await.expect("query"),
            vec![between, newest]
        );
    }

    #[tokio::test]
    async fn shared_records_are_kept_without_a_copy_unless_they_need_normalising() {
        let memory = InProcMemory::new();
        let signal = Signal::new("a", serde_json::json!({ "big": "payload" }));
        let normal = Arc::new(record(&signal));
        let mut raw = record(&signal);
        raw.started_at += chrono::Duration::nanoseconds(1);
        let raw = Arc::new(raw);
        memory
            .record_shared(vec![Arc::clone(&normal), Arc::clone(&raw)])
            .await
            .expect("record");
        // Memory holds the caller's allocation of the normal record, and a copy of the other.
        assert_eq!(Arc::strong_count(&normal), 2);
        assert_eq!(Arc::strong_count(&raw), 1);
        let kept = memory
            .execution(raw.id)
            .await
            .expect("query")
            .expect("kept");
        assert_eq!(kept.started_at, raw.started_at.trunc_subsecs(6));
        assert_eq!(
            memory.execution(normal.id).await.expect("query").as_ref(),
            Some(&*normal)
        );
        // Forgotten, it is let go.
        let bounded = InProcMemory::bounded(1);
        let first = Arc::new(record(&signal));
        bounded
            .record_shared(vec![Arc::clone(&first), Arc::new(record(&signal))])
            .await
            .expect("record");
        assert_eq!(Arc::strong_count(&first), 1);
    }
}
