//! [`WriteBehind`]: recording that never waits for the store.
//!
//! `record` hands the batch to a bounded queue and returns. One task drains the queue into the
//! store in batches, embedding the next batch's new shapes while it writes the one before
//! ([`drain`]). While the store is healthy, the queue holds at most `max_queued` records:
//! past that, `record` waits for room (the reactor then settles, and so reads, more slowly and
//! signals wait in the mesh), at most `max_wait`. When the store fails (PostgreSQL stopped,
//! unreachable), the wait runs out, or the queue is full, records go to a
//! [spool](crate::spool) on disk instead; while anything is spooled, new
//! batches are spooled behind it, and every `retry_every` the task replays the spool, oldest
//! first, until it is empty. The spool holds at most `spool_max_bytes` (a batch may pass the
//! mark it starts below): when it is full, queued records the store fails on stay in the
//! writer, holding their room in the queue, and `record` holds its records and waits for the
//! replay to make room. The reactor then settles, and so reads, no more: signals wait in the
//! mesh, which keeps them; the status says so. Only closing spools past the cap. Nothing is
//! dropped unless the disk itself refuses the spool (or the store refuses a record as invalid),
//! and each such loss is counted and logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::Serialize;
use swarm_schemas::{ExecutionId, ExecutionRecord, SignalId};
use tokio::sync::{mpsc, oneshot};

use crate::spool::Spool;

mod drain;
use crate::{Compaction, Memory, MemoryError, Retention, SearchHit, SearchQuery, UnitStats};

/// How a [`WriteBehind`] queues, batches and spools.
#[derive(Debug, Clone)]
pub struct WriteBehindConfig {
    /// Batches waiting in the queue, at most; `record` waits for a place (at most `max_wait`)
    /// while the store is healthy, and spills to the spool otherwise.
    pub queue: usize,
    /// Records per call to the store, at most.
    pub batch: usize,
    /// Where records wait while the store is unavailable.
    pub spool_dir: PathBuf,
    /// How often a spool is replayed into the store.
    pub retry_every: Duration,
    /// Records waiting in the queue, at most, while the store is healthy; `record` waits for
    /// room past that.
    pub max_queued: usize,
    /// How long `record` waits for room before it spools instead (a store that is stuck
    /// rather than slow).
    pub max_wait: Duration,
    /// Bytes the spool may hold; past them `record` waits for room.
    pub spool_max_bytes: u64,
}

impl WriteBehindConfig {
    /// Defaults, spooling into `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            // As many batches as records may wait: with small batches, the records' bound
            // (`max_queued`) is what fills first.
            queue: 8192,
            batch: 2048,
            spool_dir: spool_dir.into(),
            retry_every: Duration::from_secs(1),
            max_queued: 8192,
            max_wait: Duration::from_secs(10),
            spool_max_bytes: 1 << 30,
        }
    }
}

/// What a [`WriteBehind`] has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterStatus {
    /// Records in the store by this writer (replayed ones included).
    pub written: u64,
    /// Records waiting in the spool.
    pub spooled: u64,
    /// Bytes of the spool.
    pub spool_bytes: u64,
    /// Bytes the spool may hold.
    pub spool_max_bytes: u64,
    /// Records held back because the spool is full: their signals stay unsettled, and the
    /// reactor reads no more until there is room.
    pub held: u64,
    /// Records lost: the spool could not be written, or the store refused them as invalid.
    pub lost: u64,
    /// Whether the last call to the store succeeded.
    pub store_healthy: bool,
    /// The last error from the store or the spool.
    pub last_error: Option<String>,
}

enum Message {
    /// Records, and the room they took in the queue.
    Records(Vec<ExecutionRecord>, u32),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

struct Shared {
    spool: Mutex<Spool>,
    spool_max_bytes: u64,
    /// Records `record` holds while the spool is full.
    held: AtomicU64,
    /// Woken when the spool shrinks or the store recovers.
    room_in_spool: tokio::sync::Notify,
    written: AtomicU64,
    lost: AtomicU64,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Room in the queue, in records.
    room: tokio::sync::Semaphore,
}

impl Shared {
    fn spool(&self) -> parking_lot::MutexGuard<'_, Spool> {
        // The spool's state is a file handle and counters; a panic elsewhere leaves it usable.
        self.spool.lock()
    }

    fn failed(&self, error: impl ToString) {
        *self.last_error.lock() = Some(error.to_string());
    }

    /// Spools `records`; if even that fails, counts them lost.
    fn spill(&self, records: &[ExecutionRecord]) {
        let mut spool = self.spool();
        if let Err(error) = spool.append(records) {
            self.lost.fetch_add(records.len() as u64, Ordering::Relaxed);
            tracing::error!(%error, count = records.len(), "execution records lost: the spool cannot be written");
            self.failed(format!("spool: {error}"));
        }
        gauge_spool(&spool);
    }

    /// The spool shrank: records held for room may go on.
    fn spool_shrank(&self) {
        gauge_spool(&self.spool());
        self.room_in_spool.notify_waiters();
    }
}

fn gauge_spool(spool: &Spool) {
    metrics::gauge!("swarm_memory_spool_bytes").set(spool.bytes() as f64);
    metrics::gauge!("swarm_memory_spooled_records").set(spool.pending() as f64);
}

/// A [`Memory`] that records through a bounded queue and a disk spool into another memory.
/// Reads go straight to the inner memory: records still queued or spooled are not in them.
pub struct WriteBehind {
    inner: Arc<dyn Memory>,
    queue: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    max_queued: usize,
    max_wait: Duration,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl WriteBehind {
    /// Opens the spool (records left in it by an earlier process are replayed) and starts the
    /// writing task on the current tokio runtime.
    pub fn start(inner: Arc<dyn Memory>, config: WriteBehindConfig) -> std::io::Result<Self> {
        let spool = Spool::open(&config.spool_dir)?;
        gauge_spool(&spool);
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            spool_max_bytes: config.spool_max_bytes,
            held: AtomicU64::new(0),
            room_in_spool: tokio::sync::Notify::new(),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            room: tokio::sync::Semaphore::new(config.max_queued.max(1)),
        });
        let (queue, receiver) = mpsc::channel(config.queue.max(1));
        let (max_queued, max_wait) = (config.max_queued.max(1), config.max_wait);
        let task = tokio::spawn(drain::run(
            Arc::clone(&inner),
            receiver,
            Arc::clone(&shared),
            config,
        ));
        Ok(Self {
            inner,
            queue,
            shared,
            max_queued,
            max_wait,
            task: Mutex::new(Some(task)),
        })
    }

    /// What the writer has done so far.
    pub fn status(&self) -> WriterStatus {
        let (spooled, spool_bytes) = {
            let spool = self.shared.spool();
            (spool.pending(), spool.bytes())
        };
        WriterStatus {
            written: self.shared.written.load(Ordering::Relaxed),
            spooled,
            spool_bytes,
            spool_max_bytes: self.shared.spool_max_bytes,
            held: self.shared.held.load(Ordering::Relaxed),
            lost: self.shared.lost.load(Ordering::Relaxed),
            store_healthy: self.shared.healthy.load(Ordering::Relaxed),
            last_error: self.shared.last_error.lock().clone(),
        }
    }

    /// Waits until everything recorded before this call is in the store or the spool, and the
    /// spool has been replayed once more; returns the status then.
    pub async fn flush(&self) -> WriterStatus {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
        self.status()
    }

    /// Stops taking records into the queue (later ones go straight to the spool), writes or
    /// spools what is queued, replays the spool once more and ends the task.
    pub async fn close(&self) -> WriterStatus {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
        let task = self.task.lock().take();
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::error!(%error, "the memory writer task failed");
            }
        }
        self.status()
    }
}

impl WriteBehind {
    /// Spools `records` once the spool has room for them, holding them meanwhile (their
    /// signals stay unsettled, so the reactor reads no more); if the store has recovered and
    /// the spool emptied while they waited, they are recorded as usual instead.
    async fn spill_when_room(&self, records: Vec<ExecutionRecord>) {
        let shared = &self.shared;
        let count = records.len() as u64;
        let mut holding = false;
        loop {
            let wake = shared.room_in_spool.notified();
            let (bytes, pending) = {
                let spool = shared.spool();
                (spool.bytes(), spool.pending())
            };
            if bytes < shared.spool_max_bytes {
                shared.spill(&records);
                break;
            }
            if pending == 0 && shared.healthy.load(Ordering::Relaxed) {
                // Only reachable with a cap of 0 bytes: nothing waits, so nothing can make room.
                shared.spill(&records);
                break;
            }
            if !holding {
                holding = true;
                let held = shared.held.fetch_add(count, Ordering::Relaxed) + count;
                metrics::gauge!("swarm_memory_held_records").set(held as f64);
                tracing::warn!(
                    spool_bytes = bytes,
                    cap = shared.spool_max_bytes,
                    "the spool is full: execution records held until it has room; the reactor reads no more meanwhile"
                );
            }
            // Woken when a replay removes a segment; the tick is a safety net.
            let _ = tokio::time::timeout(Duration::from_millis(250), wake).await;
        }
        if holding {
            let held = shared.held.fetch_sub(count, Ordering::Relaxed) - count;
            metrics::gauge!("swarm_memory_held_records").set(held as f64);
        }
    }

    /// Waits for room for `records` records in the queue, at most `max_wait`; returns the room
    /// taken (0: none, the records are queued or spooled regardless).
    async fn room_for(&self, records: usize) -> u32 {
        let want = u32::try_from(records.min(self.max_queued)).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.max_wait, self.shared.room.acquire_many(want)).await {
            Ok(Ok(permit)) => {
                permit.forget();
                want
            }
            _ => 0,
        }
    }
}

#[async_trait]
impl Memory for WriteBehind {
    async fn record(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        self.record_owned(records.to_vec()).await
    }

    async fn record_owned(&self, records: Vec<ExecutionRecord>) -> Result<(), MemoryError> {
        if records.is_empty() {
            return Ok(());
        }
        // While the store fails or anything waits in the spool, records go behind it.
        if !self.shared.healthy.load(Ordering::Relaxed) || self.shared.spool().pending() > 0 {
            self.spill_when_room(records).await;
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        let room = self.room_for(records.len()).await;
        // No room within max_wait (a store that is stuck rather than slow): the spool.
        let slot = if room > 0 {
            // Room taken: wait for a place in the queue too, within what is left of max_wait.
            let left = self.max_wait.saturating_sub(started.elapsed());
            tokio::time::timeout(left, self.queue.reserve())
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        match slot {
            Some(slot) => slot.send(Message::Records(records, room)),
            None => {
                self.shared.room.add_permits(room as usize);
                self.spill_when_room(records).await;
            }
        }
        Ok(())
    }

    fn writer_status(&self) -> Option<WriterStatus> {
        Some(self.status())
    }

    async fn shape_vectors(
        &self,
        shapes: &[crate::Shape],
    ) -> Result<std::collections::HashMap<i64, Arc<[f32]>>, MemoryError> {
        self.inner.shape_vectors(shapes).await
    }

    async fn execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, MemoryError> {
        self.inner.execution(id).await
    }

    async fn executions_of(&self, signal: SignalId) -> Result<Vec<ExecutionRecord>, MemoryError> {
        self.inner.executions_of(signal).await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<ExecutionRecord>, MemoryError> {
        self.inner.recent(limit).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, MemoryError> {
        self.inner.search(query).await
    }

    async fn unit_stats(&self) -> Result<Vec<UnitStats>, MemoryError> {
        self.inner.unit_stats().await
    }

    async fn count(&self) -> Result<u64, MemoryError> {
        self.inner.count().await
    }

    async fn compact(&self, retention: &Retention) -> Result<Compaction, MemoryError> {
        self.inner.compact(retention).await
    }
}
