//! The dispatch loop: read signals from the mesh, run the units that subscribe to them, record
//! the executions, then emit and acknowledge in one atomic step.
//!
//! Order of effects for a batch of entries: every unit runs (with retries) → the execution
//! records go to memory → the emitted signals, the dead letters and the acknowledgements of the
//! whole batch go to the mesh in one atomic `settle_batch` (one MULTI/EXEC on Redis). A crash
//! before it leaves the entries pending, to be redelivered (at least once); a crash after it
//! cannot emit twice.

mod batch;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use swarm_memory::Memory;
use swarm_mesh::{EntryId, Mesh, StartAt};
use swarm_schemas::{ExecutionRecord, Signal};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use crate::ReactorConfig;
use crate::quarantine::Watchdog;
use crate::ranking::Ranker;
use crate::registry::Registry;

pub(crate) struct Dispatcher {
    pub mesh: Arc<dyn Mesh>,
    pub memory: Arc<dyn Memory>,
    pub registry: Arc<Registry>,
    pub ranker: Arc<Ranker>,
    pub config: Arc<ReactorConfig>,
    /// Entries read and not yet settled, with their signal's kind (empty when undecodable).
    pub in_flight: Arc<DashMap<EntryId, Arc<str>>>,
    /// Every execution record, once recorded, for whoever watches (the inspector).
    pub executions: broadcast::Sender<Arc<ExecutionRecord>>,
    /// Call deadlines, stuck calls, quarantine.
    pub watchdog: Arc<Watchdog>,
}

impl Dispatcher {
    /// Reads and dispatches until `shutdown` turns true, then waits for running signals.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let c = &self.config;
        while let Err(error) = self
            .mesh
            .create_group(&c.stream, &c.group, StartAt::Beginning)
            .await
        {
            tracing::warn!(%error, "cannot create the consumer group; retrying");
            if sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await {
                return;
            }
        }
        // Entries this consumer took before a restart run beside new ones: one of them may hang
        // its unit again, and must not hold up the rest for longer than a call's deadline.
        // They are all read before the first new read, so none is taken twice.
        let mut tasks = JoinSet::new();
        if self.resume_own_pending(&mut tasks, &mut shutdown).await {
            while tasks.join_next().await.is_some() {}
            return;
        }
        let housekeeping = tokio::spawn(Arc::clone(&self).housekeeping(shutdown.clone()));
        let refresh = tokio::spawn(Arc::clone(&self).refresh_rankings(shutdown.clone()));
        let concurrency = c.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut backoff = Duration::from_millis(50);
        loop {
            let read = self
                .mesh
                .read(&c.stream, &c.group, &c.consumer, c.batch, c.block);
            tokio::pin!(read);
            let (deliveries, stopping) = tokio::select! {
                result = &mut read => (result, false),
                // A read already sent may have taken entries into this consumer's pending
                // list; dropped, it would leave them there until the next start. Its answer
                // comes within the block time, and what it brought runs before stopping.
                _ = shutdown.changed() => (read.await, true),
            };
            match deliveries {
                Ok(deliveries) if deliveries.is_empty() => {}
                Ok(deliveries) => {
                    backoff = Duration::from_millis(50);
                    // One permit per signal: at most `concurrency` signals in flight.
                    let wanted =
                        u32::try_from(deliveries.len().min(concurrency)).unwrap_or(u32::MAX);
                    let Ok(permit) = Arc::clone(&permits).acquire_many_owned(wanted).await else {
                        break;
                    };
                    let this = Arc::clone(&self);
                    tasks.spawn(async move { this.process_batch(deliveries, Some(permit)).await });
                }
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "mesh read failed; retrying");
                    if sleep_or_shutdown(backoff, &mut shutdown).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            while tasks.try_join_next().is_some() {}
            if stopping {
                break;
            }
        }
        // Stop reading; let what started finish and settle.
        while tasks.join_next().await.is_some() {}
        housekeeping.abort();
        refresh.abort();
        // Gone before `run` returns: they hold the registry, and the units unload (on_unload)
        // when it is dropped.
        let _ = housekeeping.await;
        let _ = refresh.await;
    }

    /// Reads the entries pending for this consumer from before a restart, page by page, and
    /// runs each page in a task of `tasks`. Each re-read counts a delivery, so an entry that
    /// hung or crashed every process that ran it is dead-lettered at `max_deliveries` instead
    /// of being run again. Returns whether shutdown came first.
    async fn resume_own_pending(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let c = &self.config;
        let mut after = EntryId::ZERO;
        while !*shutdown.borrow() {
            match self
                .mesh
                .read_own_pending(&c.stream, &c.group, &c.consumer, after, c.batch)
                .await
            {
                Ok(own) => {
                    let Some(last) = own.last().map(|d| d.id) else {
                        return false;
                    };
                    after = last;
                    tracing::info!(
                        count = own.len(),
                        "resuming entries pending from a previous run"
                    );
                    let this = Arc::clone(self);
                    tasks.spawn(async move { this.process_batch(own, None).await });
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read own pending entries; retrying");
                    if sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
                        return true;
                    }
                }
            }
        }
        true
    }

    /// Keeps the ranker's rankings fresh from memory, off the dispatch path.
    async fn refresh_rankings(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.ranker_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            match self
                .ranker
                .refresh(&*self.memory, chrono::Utc::now(), 256)
                .await
            {
                Ok(_) => failing = false,
                Err(error) if !failing => {
                    // Ranking goes on from this process's own outcomes meanwhile.
                    tracing::info!(%error, "rankings cannot be refreshed from memory");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Keeps running entries claimed, takes over entries abandoned by dead consumers, and
    /// trims what every group has acknowledged.
    async fn housekeeping(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let c = &self.config;
        // First ticks one period from now, not at once.
        let every = |period: Duration| {
            tokio::time::interval_at(tokio::time::Instant::now() + period, period)
        };
        let mut keep_alive = every(c.claim_idle / 3);
        let mut claim = every(c.claim_idle / 2);
        let mut trim = every(c.trim_every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = keep_alive.tick() => {
                    let ids: Vec<EntryId> = self.in_flight.iter().map(|e| *e.key()).collect();
                    if !ids.is_empty() {
                        if let Err(error) = self.mesh.keep_alive(&c.stream, &c.group, &c.consumer, &ids).await {
                            tracing::warn!(%error, "keep-alive failed");
                        }
                    }
                }
                _ = claim.tick() => {
                    match self.mesh.claim_idle(&c.stream, &c.group, &c.consumer, c.claim_idle, c.batch).await {
                        Ok(claimed) if claimed.is_empty() => {}
                        Ok(claimed) => {
                            for delivery in &claimed {
                                tracing::info!(entry = %delivery.id, deliveries = delivery.deliveries, "claimed an abandoned entry");
                            }
                            let this = Arc::clone(&self);
                            tokio::spawn(async move { this.process_batch(claimed, None).await });
                        }
                        Err(error) => tracing::warn!(%error, "claiming idle entries failed"),
                    }
                }
                _ = trim.tick() => {
                    if let Err(error) = self.mesh.trim_acknowledged(&c.stream).await {
                        tracing::warn!(%error, "trimming failed");
                    }
                }
            }
        }
    }
}

/// One delivered entry on its way through a batch.
struct Work {
    id: EntryId,
    signal: Option<Signal>,
    emitted: Vec<Signal>,
    dead: Vec<Signal>,
    records: Vec<ExecutionRecord>,
    /// False when some unit call could not run; the entry is then left pending.
    complete: bool,
}

impl Work {
    fn new(id: EntryId) -> Self {
        Self {
            id,
            signal: None,
            emitted: Vec::new(),
            dead: Vec::new(),
            records: Vec::new(),
            complete: true,
        }
    }
}

/// Sleeps for `duration`; returns true if shutdown was asked for meanwhile.
async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(duration) => *shutdown.borrow(),
    }
}
