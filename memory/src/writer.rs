//! [`WriteBehind`]: recording that never waits for the store.
//!
//! `record` hands the batch to a bounded queue and returns. One task drains the queue into the
//! store in batches, embedding the next batch's new shapes while it writes the one before. While the store is healthy, the queue holds at most `max_queued` records:
//! past that, `record` waits for room (the reactor then settles, and so reads, more slowly and
//! signals wait in the mesh), at most `max_wait`. When the store fails (PostgreSQL stopped,
//! unreachable), the wait runs out, or the queue is full, records go to a
//! [spool](crate::spool) on disk instead; while anything is spooled, new
//! batches are spooled behind it, and every `retry_every` the task replays the spool, oldest
//! first, until it is empty. Nothing is dropped unless the disk itself refuses the spool (or the
//! store refuses a record as invalid), and each such loss is counted and logged.

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
        if let Err(error) = self.spool().append(records) {
            self.lost.fetch_add(records.len() as u64, Ordering::Relaxed);
            tracing::error!(%error, count = records.len(), "execution records lost: the spool cannot be written");
            self.failed(format!("spool: {error}"));
        }
    }
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
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            room: tokio::sync::Semaphore::new(config.max_queued.max(1)),
        });
        let (queue, receiver) = mpsc::channel(config.queue.max(1));
        let (max_queued, max_wait) = (config.max_queued.max(1), config.max_wait);
        let task = tokio::spawn(run(
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
        WriterStatus {
            written: self.shared.written.load(Ordering::Relaxed),
            spooled: self.shared.spool().pending(),
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
    /// Waits for room for `records` records in the queue while the store is healthy and nothing
    /// is spooled, at most `max_wait`; returns the room taken (0: none, the records are queued
    /// or spooled regardless).
    async fn room_for(&self, records: usize) -> u32 {
        let healthy = self.shared.healthy.load(Ordering::Relaxed);
        if !healthy || self.shared.spool().pending() > 0 {
            return 0;
        }
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

/// What one turn of the writing task took from the queue.
#[derive(Default)]
struct Round {
    batch: Vec<ExecutionRecord>,
    replies: Vec<oneshot::Sender<()>>,
    closing: bool,
}

impl Round {
    /// Takes `message` out of the queue, giving back the room its records took.
    fn take(&mut self, message: Message, shared: &Shared) {
        match message {
            Message::Records(records, room) => {
                shared.room.add_permits(room as usize);
                self.batch.extend(records);
            }
            Message::Flush(done) => self.replies.push(done),
            Message::Close(done) => {
                self.replies.push(done);
                self.closing = true;
            }
        }
    }
}

/// The writing task, in two stages one round apart: this one takes rounds from the queue and
/// embeds their new shapes ([`Memory::embed_ahead`]) while [`store_rounds`] stores the round
/// before, so that the embedder need not wait for the store's writes.
async fn run(
    inner: Arc<dyn Memory>,
    mut receiver: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    config: WriteBehindConfig,
) {
    let (rounds, taken) = mpsc::channel(1);
    let storing = tokio::spawn(store_rounds(
        Arc::clone(&inner),
        taken,
        Arc::clone(&shared),
        config.clone(),
    ));
    while let Some(message) = receiver.recv().await {
        let mut round = Round::default();
        round.take(message, &shared);
        while round.replies.is_empty() && round.batch.len() < config.batch {
            match receiver.try_recv() {
                Ok(message) => round.take(message, &shared),
                Err(_) => break,
            }
        }
        if round.closing {
            // Senders now fail and spool; whatever is already queued is taken here.
            receiver.close();
            while let Some(message) = receiver.recv().await {
                round.take(message, &shared);
            }
        }
        // Records bound for the spool are not embedded now: the replay records them later.
        let storing_now = shared.healthy.load(Ordering::Relaxed) && shared.spool().pending() == 0;
        if storing_now && !round.batch.is_empty() {
            if let Err(error) = inner.embed_ahead(&round.batch).await {
                tracing::debug!(%error, "shapes not embedded ahead; recording embeds them");
            }
        }
        let closing = round.closing;
        if rounds.send(round).await.is_err() || closing {
            break;
        }
    }
    drop(rounds);
    if let Err(error) = storing.await {
        tracing::error!(%error, "the memory store task failed");
    }
}

/// The second stage of [`run`]: stores each round (or spools it), answers its flushes, and
/// replays the spool every `retry_every`.
async fn store_rounds(
    inner: Arc<dyn Memory>,
    mut rounds: mpsc::Receiver<Round>,
    shared: Arc<Shared>,
    config: WriteBehindConfig,
) {
    let mut replay_tick = tokio::time::interval(config.retry_every);
    replay_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            round = rounds.recv() => {
                let Some(round) = round else { break };
                store(&*inner, &shared, round.batch, config.batch).await;
                if !round.replies.is_empty() {
                    replay(&*inner, &shared, config.batch).await;
                }
                for done in round.replies {
                    let _ = done.send(());
                }
                if round.closing {
                    break;
                }
            }
            _ = replay_tick.tick() => replay(&*inner, &shared, config.batch).await,
        }
    }
}

/// Writes a batch to the store, or spools it when the store fails or a spool is waiting.
async fn store(inner: &dyn Memory, shared: &Shared, batch: Vec<ExecutionRecord>, max: usize) {
    if batch.is_empty() {
        return;
    }
    if shared.spool().pending() > 0 {
        shared.spill(&batch);
        return;
    }
    for chunk in batch.chunks(max.max(1)) {
        if let Err(error) = write(inner, shared, chunk).await {
            tracing::warn!(%error, count = chunk.len(), "memory store unavailable; execution records spooled to disk");
            shared.spill(chunk);
        }
    }
}

/// One call to the store. Records it refuses as invalid are written one by one, and those it
/// still refuses are counted lost; an unavailable store is returned as an error.
async fn write(
    inner: &dyn Memory,
    shared: &Shared,
    records: &[ExecutionRecord],
) -> Result<(), MemoryError> {
    let mut result = inner.record(records).await;
    let mut written = records.len() as u64;
    if let Err(MemoryError::Rejected(reason)) = &result {
        tracing::warn!(%reason, "the store refused a batch; writing its records one by one");
        result = Ok(());
        for record in records {
            match inner.record(std::slice::from_ref(record)).await {
                Err(MemoryError::Rejected(reason)) => {
                    written -= 1;
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(execution = %record.id, %reason, "execution record refused by the store");
                    shared.failed(format!("refused {}: {reason}", record.id));
                }
                Ok(()) => {}
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
    }
    match &result {
        Ok(()) => {
            shared.written.fetch_add(written, Ordering::Relaxed);
            shared.healthy.store(true, Ordering::Relaxed);
        }
        Err(error) => {
            shared.healthy.store(false, Ordering::Relaxed);
            shared.failed(error);
        }
    }
    result
}

/// Replays the spool into the store, oldest segment first, stopping at the first failure.
async fn replay(inner: &dyn Memory, shared: &Shared, max: usize) {
    if shared.spool().pending() == 0 {
        return;
    }
    let segments = match shared.spool().take_segments() {
        Ok(segments) => segments,
        Err(error) => {
            tracing::error!(%error, "the spool cannot be listed");
            shared.failed(format!("spool: {error}"));
            return;
        }
    };
    for path in segments {
        let segment = match Spool::read(&path) {
            Ok(segment) => segment,
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "a spool segment cannot be read");
                shared.failed(format!("spool: {error}"));
                return;
            }
        };
        for chunk in segment.records.chunks(max.max(1)) {
            if write(inner, shared, chunk).await.is_err() {
                return;
            }
        }
        if segment.unreadable > 0 {
            shared.lost.fetch_add(segment.unreadable, Ordering::Relaxed);
            tracing::error!(lines = segment.unreadable, path = %path.display(), "unreadable spool lines skipped");
        }
        if let Err(error) = shared.spool().remove(&segment) {
            tracing::error!(%error, path = %path.display(), "a replayed spool segment cannot be removed");
            shared.failed(format!("spool: {error}"));
            return;
        }
        tracing::info!(
            records = segment.records.len(),
            "spooled execution records caught up"
        );
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
        let started = tokio::time::Instant::now();
        let room = self.room_for(records.len()).await;
        let slot = if room > 0 {
            // Room taken: wait for a place in the queue too, within what is left of max_wait.
            let left = self.max_wait.saturating_sub(started.elapsed());
            tokio::time::timeout(left, self.queue.reserve())
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            self.queue.try_reserve().ok()
        };
        match slot {
            Some(slot) => slot.send(Message::Records(records, room)),
            None => {
                self.shared.room.add_permits(room as usize);
                self.shared.spill(&records);
            }
        }
        Ok(())
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
