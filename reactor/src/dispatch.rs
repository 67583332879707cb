//! The dispatch loop: read signals from the mesh, run the units that subscribe to them, record
//! the executions, then emit and acknowledge in one atomic step.
//!
//! Order of effects for one entry: every unit runs (with retries) → the execution records go to
//! memory → the emitted signals, any dead letters and the acknowledgement go to the mesh in one
//! `settle`. A crash before the settle leaves the entry pending, to be redelivered (at least
//! once); a crash after it cannot emit twice.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashSet;
use swarm_memory::Memory;
use swarm_mesh::{Delivery, EntryId, Mesh, StartAt, dead_letter_stream};
use swarm_schemas::{DeadLetter, Signal};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::ReactorConfig;
use crate::execute::{dead_letter, run_unit};
use crate::registry::Registry;

pub(crate) struct Dispatcher {
    pub mesh: Arc<dyn Mesh>,
    pub memory: Arc<dyn Memory>,
    pub registry: Arc<Registry>,
    pub config: Arc<ReactorConfig>,
    pub in_flight: DashSet<EntryId>,
}

impl Dispatcher {
    /// Reads and dispatches until `shutdown` turns true, then waits for running signals.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let c = &self.config;
        while let Err(error) = self.mesh.create_group(&c.stream, &c.group, StartAt::Beginning).await {
            tracing::warn!(%error, "cannot create the consumer group; retrying");
            if sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await {
                return;
            }
        }
        // Entries this consumer took before a restart come first.
        loop {
            match self.mesh.read_own_pending(&c.stream, &c.group, &c.consumer, c.batch).await {
                Ok(own) if own.is_empty() => break,
                Ok(own) => {
                    tracing::info!(count = own.len(), "resuming entries pending from a previous run");
                    let mut tasks = JoinSet::new();
                    for delivery in own {
                        let this = Arc::clone(&self);
                        tasks.spawn(async move { this.process(delivery).await });
                    }
                    while tasks.join_next().await.is_some() {}
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read own pending entries; retrying");
                    if sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await {
                        return;
                    }
                }
            }
        }

        let housekeeping = tokio::spawn(Arc::clone(&self).housekeeping(shutdown.clone()));
        let permits = Arc::new(Semaphore::new(c.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut backoff = Duration::from_millis(50);
        loop {
            let read = self.mesh.read(&c.stream, &c.group, &c.consumer, c.batch, c.block);
            let deliveries = tokio::select! {
                _ = shutdown.changed() => break,
                result = read => result,
            };
            match deliveries {
                Ok(deliveries) => {
                    backoff = Duration::from_millis(50);
                    for delivery in deliveries {
                        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
                        let this = Arc::clone(&self);
                        tasks.spawn(async move {
                            this.process(delivery).await;
                            drop(permit);
                        });
                    }
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
        }
        // Stop reading; let what started finish and settle.
        while tasks.join_next().await.is_some() {}
        housekeeping.abort();
    }

    /// Keeps running entries claimed, takes over entries abandoned by dead consumers, and
    /// trims what every group has acknowledged.
    async fn housekeeping(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let c = &self.config;
        // First ticks one period from now, not at once.
        let every = |period: Duration| tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut keep_alive = every(c.claim_idle / 3);
        let mut claim = every(c.claim_idle / 2);
        let mut trim = every(c.trim_every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = keep_alive.tick() => {
                    let ids: Vec<EntryId> = self.in_flight.iter().map(|id| *id).collect();
                    if !ids.is_empty() {
                        if let Err(error) = self.mesh.keep_alive(&c.stream, &c.group, &c.consumer, &ids).await {
                            tracing::warn!(%error, "keep-alive failed");
                        }
                    }
                }
                _ = claim.tick() => {
                    match self.mesh.claim_idle(&c.stream, &c.group, &c.consumer, c.claim_idle, c.batch).await {
                        Ok(claimed) => {
                            for delivery in claimed {
                                tracing::info!(entry = %delivery.id, deliveries = delivery.deliveries, "claimed an abandoned entry");
                                let this = Arc::clone(&self);
                                tokio::spawn(async move { this.process(delivery).await });
                            }
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

    /// Handles one delivered entry from start to settle.
    async fn process(&self, delivery: Delivery) {
        let c = &self.config;
        let Delivery { id, body, deliveries } = delivery;
        if !self.in_flight.insert(id) {
            // Already running here (claimed back while still in flight): leave it to that run.
            return;
        }
        let (emitted, dead) = match body {
            Err(bad) => (Vec::new(), vec![dead_letter(
                None,
                DeadLetter {
                    reason: format!("entry is not a signal: {}", bad.error),
                    unit: None,
                    attempts: deliveries,
                    entry_id: id.to_string(),
                    original: serde_json::Value::String(bad.raw),
                },
            )]),
            Ok(signal) if deliveries > c.max_deliveries => (Vec::new(), vec![dead_letter(
                Some(&signal),
                DeadLetter {
                    reason: format!(
                        "delivered {deliveries} times without being acknowledged (max_deliveries = {})",
                        c.max_deliveries
                    ),
                    unit: None,
                    attempts: deliveries,
                    entry_id: id.to_string(),
                    original: serde_json::to_value(&signal).unwrap_or_default(),
                },
            )]),
            Ok(signal) => self.execute(&signal, &id.to_string()).await,
        };
        let dead_stream = dead_letter_stream(&c.stream);
        let targets: Vec<(String, Signal)> = emitted
            .into_iter()
            .map(|s| (c.stream.clone(), s))
            .chain(dead.into_iter().map(|s| (dead_stream.clone(), s)))
            .collect();
        if let Err(error) = self.mesh.settle(&c.stream, &c.group, id, &targets).await {
            tracing::warn!(entry = %id, %error, "settle failed; the entry stays pending and will be redelivered");
        }
        self.in_flight.remove(&id);
    }

    /// Runs every enabled unit subscribed to the signal's kind; returns the signals to emit
    /// and the dead letters.
    async fn execute(&self, signal: &Signal, entry_id: &str) -> (Vec<Signal>, Vec<Signal>) {
        let c = &self.config;
        let candidates = self.registry.candidates(&signal.kind);
        if candidates.is_empty() {
            tracing::debug!(kind = %signal.kind, signal = %signal.id, "no unit subscribes");
            return (Vec::new(), Vec::new());
        }
        let runs = if candidates.len() == 1 {
            vec![run_unit(&candidates[0], signal, entry_id, c.max_attempts, c.retry_backoff).await]
        } else {
            let mut set = JoinSet::new();
            for (index, slot) in candidates.into_iter().enumerate() {
                let signal = signal.clone();
                let entry_id = entry_id.to_owned();
                let (attempts, backoff) = (c.max_attempts, c.retry_backoff);
                set.spawn(async move { (index, run_unit(&slot, &signal, &entry_id, attempts, backoff).await) });
            }
            let mut runs: Vec<_> = set.join_all().await;
            runs.sort_by_key(|(index, _)| *index);
            runs.into_iter().map(|(_, run)| run).collect()
        };
        let records: Vec<_> = runs.iter().flat_map(|run| run.records.iter().cloned()).collect();
        if let Err(error) = self.memory.record(&records).await {
            tracing::warn!(%error, count = records.len(), "execution records not stored");
        }
        let mut emitted = Vec::new();
        let mut dead = Vec::new();
        for run in runs {
            emitted.extend(run.emitted);
            dead.extend(run.dead_letter);
        }
        (emitted, dead)
    }
}

/// Sleeps for `duration`; returns true if shutdown was asked for meanwhile.
async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(duration) => *shutdown.borrow(),
    }
}
