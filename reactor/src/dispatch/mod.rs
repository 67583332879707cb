//! The dispatch loop: read signals from the mesh, run the units that subscribe to them, record
//! the executions, then emit and acknowledge in one atomic step.
//!
//! Order of effects for a batch of entries: every unit runs (with retries) → the execution
//! records go to memory → the emitted signals, the dead letters and the acknowledgements of the
//! whole batch go to the mesh in one atomic `settle_batch` (one MULTI/EXEC on Redis). A crash
//! before it leaves the entries pending, to be redelivered (at least once); a crash after it
//! cannot emit twice.

mod batch;
mod housekeeping;
mod order;
mod part;
mod partitions;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use swarm_memory::Memory;
use swarm_mesh::{Delivery, EntryId, Mesh, StartAt};
use swarm_schemas::{ExecutionRecord, Signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use crate::ReactorConfig;
use crate::quarantine::Watchdog;
use crate::ranking::Ranker;
use crate::registry::Registry;
use part::Part;

/// Entries read and not yet settled, by (partition, entry id), with their signal's kind (empty
/// when undecodable).
pub(crate) type InFlight = DashMap<(u32, EntryId), Arc<str>>;

pub(crate) struct Dispatcher {
    pub mesh: Arc<dyn Mesh>,
    pub memory: Arc<dyn Memory>,
    pub registry: Arc<Registry>,
    pub ranker: Arc<Ranker>,
    pub config: Arc<ReactorConfig>,
    /// Entries read and not yet settled.
    pub in_flight: Arc<InFlight>,
    /// Every execution record, once recorded, for whoever watches (the inspector).
    pub executions: broadcast::Sender<Arc<ExecutionRecord>>,
    /// Call deadlines, stuck calls, quarantine.
    pub watchdog: Arc<Watchdog>,
}

/// How a process comes to read a partition.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Taking {
    /// Shared with other processes of the group (one partition, no lease): first what this
    /// consumer left pending before a restart.
    Shared,
    /// Just leased: first everything pending in the group, whoever it was delivered to (a
    /// partition has one reader, so the entries of any other consumer were abandoned).
    Leased,
}

impl Dispatcher {
    /// Reads and dispatches until `shutdown` turns true, then waits for running signals. With
    /// one partition every process of the group reads the stream; with more, each partition is
    /// read by the process holding its lease (see [`partitions`]).
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let c = &self.config;
        let partitions = loop {
            match self.mesh.partitions(&c.stream, Some(c.partitions)).await {
                Ok(recorded) => break recorded,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the stream's partition count; retrying");
                    if sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await {
                        return;
                    }
                }
            }
        };
        if partitions != c.partitions {
            tracing::warn!(
                asked = c.partitions,
                recorded = partitions,
                stream = %c.stream,
                "the stream's partition count was fixed when it was created; using it"
            );
        }
        let refresh = tokio::spawn(Arc::clone(&self).refresh_rankings(shutdown.clone()));
        if partitions == 1 {
            let part = Part::shared(&c.stream);
            Arc::clone(&self)
                .run_partition(part, Taking::Shared, shutdown)
                .await;
        } else {
            Arc::clone(&self).run_leased(partitions, shutdown).await;
        }
        refresh.abort();
        // Gone before `run` returns: it holds the registry, and the units unload (on_unload)
        // when it is dropped.
        let _ = refresh.await;
    }

    /// Reads and dispatches one partition until `stop` turns true, then waits until everything
    /// it read has settled.
    async fn run_partition(
        self: Arc<Self>,
        part: Arc<Part>,
        taking: Taking,
        mut stop: watch::Receiver<bool>,
    ) {
        let c = &self.config;
        while let Err(error) = self
            .mesh
            .create_group(&part.stream, &c.group, StartAt::Beginning)
            .await
        {
            tracing::warn!(%error, stream = %part.stream, "cannot create the consumer group; retrying");
            if sleep_or_shutdown(Duration::from_secs(1), &mut stop).await {
                return;
            }
        }
        // Entries taken before run beside new ones: one of them may hang its unit again, and
        // must not hold up the rest for longer than a call's deadline. They are all read
        // before the first new read, so none is taken twice, and each key's keep their order.
        let mut tasks = JoinSet::new();
        if self.take_over(&part, taking, &mut tasks, &mut stop).await {
            self.drain(&part, tasks).await;
            return;
        }
        let housekeeping =
            tokio::spawn(Arc::clone(&self).housekeeping(Arc::clone(&part), stop.clone()));
        let concurrency = c.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut backoff = Duration::from_millis(50);
        loop {
            // Entries waiting behind their key are read and pending: bound them.
            tokio::select! {
                () = part.order.room(concurrency * 4) => {}
                _ = stop.changed() => break,
            }
            if !part.may_read() {
                if part.fenced() {
                    break;
                }
                // The lease may have run out while this process could not renew it (paused,
                // or cut off from Redis): read again once it is renewed, or stop.
                if sleep_or_shutdown(Duration::from_millis(50), &mut stop).await {
                    break;
                }
                continue;
            }
            part.reading();
            let read = self
                .mesh
                .read(&part.stream, &c.group, &c.consumer, c.batch, c.block);
            tokio::pin!(read);
            let (deliveries, stopping) = tokio::select! {
                result = &mut read => (result, false),
                // A read already sent may have taken entries into this consumer's pending
                // list; dropped, it would leave them there until the next start. Its answer
                // comes within the block time, and what it brought runs before stopping.
                _ = stop.changed() => (read.await, true),
            };
            match deliveries {
                Ok(deliveries) if deliveries.is_empty() => {}
                Ok(deliveries) => {
                    backoff = Duration::from_millis(50);
                    let run = part.order.admit(deliveries, &self.in_flight);
                    if !run.is_empty() {
                        // One permit per signal: at most `concurrency` signals in flight.
                        let wanted = u32::try_from(run.len().min(concurrency)).unwrap_or(u32::MAX);
                        let Ok(permit) = Arc::clone(&permits).acquire_many_owned(wanted).await
                        else {
                            break;
                        };
                        self.spawn_batch(&part, run, Some(permit), &mut tasks);
                    }
                }
                Err(swarm_mesh::MeshError::NoGroup { .. }) => {
                    // The mesh lost the group (a failover to a replica that never had it, or
                    // someone deleted it): make it again, from what the stream still holds.
                    tracing::warn!(stream = %part.stream, "the consumer group is gone; creating it again");
                    if let Err(error) = self
                        .mesh
                        .create_group(&part.stream, &c.group, StartAt::Beginning)
                        .await
                    {
                        tracing::warn!(%error, "cannot create the consumer group; retrying");
                    }
                    if sleep_or_shutdown(backoff, &mut stop).await {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, ?backoff, stream = %part.stream, "mesh read failed; retrying");
                    if sleep_or_shutdown(backoff, &mut stop).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            // What the read brought is in flight (or it brought nothing).
            part.read_done();
            while tasks.try_join_next().is_some() {}
            if stopping {
                break;
            }
        }
        // Stop reading; let what started finish and settle.
        self.drain(&part, tasks).await;
        housekeeping.abort();
        let _ = housekeeping.await;
    }

    /// Waits for the batches of `tasks` and for every entry waiting behind its key.
    async fn drain(&self, part: &Part, mut tasks: JoinSet<()>) {
        while tasks.join_next().await.is_some() {}
        part.order.idle().await;
    }

    fn spawn_batch(
        self: &Arc<Self>,
        part: &Arc<Part>,
        deliveries: Vec<Delivery>,
        permit: Option<OwnedSemaphorePermit>,
        tasks: &mut JoinSet<()>,
    ) {
        let this = Arc::clone(self);
        let part = Arc::clone(part);
        tasks.spawn(async move { this.process_batch(&part, deliveries, permit).await });
    }

    /// Runs the entries whose turn came when the entries before them settled.
    pub(super) fn run_released(self: &Arc<Self>, part: &Arc<Part>, released: Vec<Delivery>) {
        if released.is_empty() {
            return;
        }
        let this = Arc::clone(self);
        let part = Arc::clone(part);
        // Not in the partition's task set: `drain` waits for them through the key order.
        tokio::spawn(async move { this.process_batch(&part, released, None).await });
    }

    /// Reads what was pending before this process took the partition, page by page, and runs
    /// each page in a task of `tasks`. Each re-read counts a delivery, so an entry that hung or
    /// crashed every process that ran it is dead-lettered at `max_deliveries` instead of being
    /// run again. Returns whether `stop` came first.
    async fn take_over(
        self: &Arc<Self>,
        part: &Arc<Part>,
        taking: Taking,
        tasks: &mut JoinSet<()>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let c = &self.config;
        let mut after = EntryId::ZERO;
        while !*stop.borrow() {
            let page = match taking {
                Taking::Shared => {
                    self.mesh
                        .read_own_pending(&part.stream, &c.group, &c.consumer, after, c.batch)
                        .await
                }
                Taking::Leased => {
                    self.mesh
                        .claim_pending(&part.stream, &c.group, &c.consumer, after, c.batch)
                        .await
                }
            };
            match page {
                Ok(page) => {
                    let Some(last) = page.last().map(|d| d.id) else {
                        return false;
                    };
                    after = last;
                    if taking == Taking::Shared {
                        // Pending since before this start, for how long is not known: each is
                        // settled only if it is still this consumer's.
                        part.unsure_of(page.iter().map(|d| d.id));
                    }
                    tracing::info!(
                        count = page.len(),
                        stream = %part.stream,
                        "taking over entries pending from before"
                    );
                    let run = part.order.admit(page, &self.in_flight);
                    self.spawn_batch(part, run, None, tasks);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the pending entries; retrying");
                    if sleep_or_shutdown(Duration::from_secs(1), stop).await {
                        return true;
                    }
                }
            }
        }
        true
    }
}

/// One delivered entry on its way through a batch.
struct Work {
    id: EntryId,
    /// Its order key (none when undecodable).
    key: Option<u64>,
    emitted: Vec<Signal>,
    dead: Vec<Signal>,
    records: Vec<Arc<ExecutionRecord>>,
    /// False when some unit call could not run; the entry is then left pending.
    complete: bool,
}

impl Work {
    fn new(id: EntryId, key: Option<u64>) -> Self {
        Self {
            id,
            key,
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
