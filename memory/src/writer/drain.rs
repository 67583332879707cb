//! The writing task of a [`WriteBehind`](super::WriteBehind): it takes the queue's records in
//! rounds, embeds each round's new shapes while the round before is stored, stores (or spools)
//! each round, answers flushes, and replays the spool.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use swarm_schemas::ExecutionRecord;
use tokio::sync::{mpsc, oneshot};

use super::{Message, Shared, WriteBehindConfig};
use crate::spool::Spool;
use crate::{Memory, MemoryError};

/// What one turn of the writing task took from the queue.
#[derive(Default)]
struct Round {
    batch: Vec<ExecutionRecord>,
    /// The room its records took in the queue: given back once they are stored or spooled.
    room: usize,
    replies: Vec<oneshot::Sender<()>>,
    closing: bool,
}

impl Round {
    /// Takes `message` out of the queue.
    fn take(&mut self, message: Message) {
        match message {
            Message::Records(records, room) => {
                self.room += room as usize;
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
pub(super) async fn run(
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
        round.take(message);
        while round.replies.is_empty() && round.batch.len() < config.batch {
            match receiver.try_recv() {
                Ok(message) => round.take(message),
                Err(_) => break,
            }
        }
        if round.closing {
            // Senders now fail and spool; whatever is already queued is taken here.
            receiver.close();
            while let Some(message) = receiver.recv().await {
                round.take(message);
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
/// replays the spool every `retry_every`. Records that can be neither stored nor spooled (the
/// store fails and the spool is full) are kept here, still holding their room in the queue, so
/// the queue fills and `record` waits: they are tried again after each replay.
async fn store_rounds(
    inner: Arc<dyn Memory>,
    mut rounds: mpsc::Receiver<Round>,
    shared: Arc<Shared>,
    config: WriteBehindConfig,
) {
    let mut replay_tick = tokio::time::interval(config.retry_every);
    replay_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut kept = Kept::default();
    loop {
        tokio::select! {
            round = rounds.recv() => {
                let Some(round) = round else { break };
                kept.add(&shared, round.batch, round.room);
                // Closing: nothing may be lost, so the spool takes what is kept past its cap.
                kept.settle(&*inner, &shared, config.batch, round.closing).await;
                if !round.replies.is_empty() {
                    replay(&*inner, &shared, config.batch).await;
                    kept.settle(&*inner, &shared, config.batch, round.closing).await;
                }
                for done in round.replies {
                    let _ = done.send(());
                }
                if round.closing {
                    break;
                }
            }
            _ = replay_tick.tick() => {
                replay(&*inner, &shared, config.batch).await;
                kept.settle(&*inner, &shared, config.batch, false).await;
            }
        }
    }
}

/// Records the store has not taken yet, and the room in the queue they hold.
#[derive(Default)]
struct Kept {
    records: Vec<ExecutionRecord>,
    room: usize,
    /// How many of `records` count as held (the spool was full for them).
    held: u64,
}

impl Kept {
    fn add(&mut self, shared: &Shared, records: Vec<ExecutionRecord>, room: usize) {
        self.records.extend(records);
        self.room += room;
        self.set_held(shared, 0);
    }

    /// Stores what is kept, or spools it; keeps it still if the store fails and the spool is
    /// full (unless `force`); gives the room back once nothing is kept.
    async fn settle(&mut self, inner: &dyn Memory, shared: &Shared, max: usize, force: bool) {
        if !self.records.is_empty() {
            let unstored = store(inner, shared, std::mem::take(&mut self.records), max).await;
            if !unstored.is_empty() {
                if force || shared.spool().bytes() < shared.spool_max_bytes {
                    shared.spill(&unstored);
                } else {
                    if self.held == 0 {
                        tracing::warn!(
                            count = unstored.len(),
                            "the spool is full: execution records kept in the writer until it has room; recording waits meanwhile"
                        );
                    }
                    let held = unstored.len() as u64;
                    self.records = unstored;
                    self.set_held(shared, held);
                    return;
                }
            }
        }
        self.set_held(shared, 0);
        shared.room.add_permits(std::mem::take(&mut self.room));
    }

    fn set_held(&mut self, shared: &Shared, held: u64) {
        if held != self.held {
            shared.held.fetch_add(held, Ordering::Relaxed);
            shared.held.fetch_sub(self.held, Ordering::Relaxed);
            self.held = held;
            metrics::gauge!("swarm_memory_held_records")
                .set(shared.held.load(Ordering::Relaxed) as f64);
        }
    }
}

/// Writes a batch to the store; returns what it did not write (everything while a spool is
/// waiting, which the batch must queue behind; the chunks the store failed on otherwise).
async fn store(
    inner: &dyn Memory,
    shared: &Shared,
    batch: Vec<ExecutionRecord>,
    max: usize,
) -> Vec<ExecutionRecord> {
    if batch.is_empty() || shared.spool().pending() > 0 {
        return batch;
    }
    let mut unstored = Vec::new();
    for chunk in batch.chunks(max.max(1)) {
        if let Err(error) = write(inner, shared, chunk).await {
            tracing::warn!(%error, count = chunk.len(), "memory store unavailable; execution records go to the spool");
            unstored.extend_from_slice(chunk);
        }
    }
    unstored
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
        shared.spool_shrank();
        tracing::info!(
            records = segment.records.len(),
            "spooled execution records caught up"
        );
    }
}
