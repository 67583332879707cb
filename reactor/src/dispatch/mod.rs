//! The dispatch loop: read signals from the mesh, run the units that subscribe to them, record
//! the executions, then emit and acknowledge in one atomic step.
//!
//! Order of effects for a batch of entries: every unit runs (with retries) → the execution
//! records go to memory → the emitted signals, the dead letters and the acknowledgements of the
//! whole batch go to the mesh in one atomic `settle_batch` (one MULTI/EXEC on Redis). A crash
//! before it leaves the entries pending, to be redelivered (at least once); a crash after it
//! cannot emit twice.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use swarm_memory::Memory;
use swarm_mesh::{Delivery, EntryId, Mesh, Settlement, StartAt, Undecodable, dead_letter_stream};
use swarm_schemas::{DeadLetter, DispatchPolicy, ExecutionRecord, Signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use crate::ReactorConfig;
use crate::execute::{Attempt, Attempted, Retries, UnitRun, dead_letter, fall_back, retry};
use crate::lanes::call_all;
use crate::policy::groups;
use crate::quarantine::Watchdog;
use crate::ranking::Ranker;
use crate::registry::Registry;
use crate::slot::UnitSlot;

/// A unit's first try of a signal, and the units to fall back on if it fails (first-success).
struct Owner {
    entry: usize,
    slot: Arc<UnitSlot>,
    policy: DispatchPolicy,
    fallbacks: Vec<(Arc<UnitSlot>, f64)>,
}

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

    /// Handles a batch of delivered entries from start to settle: every first attempt of
    /// every (signal, unit) pair goes to the blocking pool in a few lanes; the entries whose
    /// units all succeeded (or are done failing) are recorded and settled together at once, and
    /// their share of `permit` comes back; an entry with a failure is retried per pair, and
    /// settled on its own when its last retry ends, so a unit that hangs until its deadline
    /// holds up only its own signal.
    async fn process_batch(&self, deliveries: Vec<Delivery>, permit: Option<OwnedSemaphorePermit>) {
        let (mut work, attempts, owners) = self.intake(deliveries);
        let results = call_all(attempts, self.config.unit_threads, &self.watchdog).await;
        let (retries, outstanding) = self.follow_up(&mut work, owners, results);
        self.settle_in_turn(work, retries, outstanding, permit)
            .await;
    }

    /// Intake and plan: one [`Work`] per delivery not already running here, with the unit
    /// calls its signal gets (and their owners, in the same order). A delivery that is not a
    /// signal, or was delivered more than `max_deliveries` times, gets only its dead letter.
    fn intake(&self, deliveries: Vec<Delivery>) -> (Vec<Work>, Vec<Attempt>, Vec<Owner>) {
        let mut work: Vec<Work> = Vec::with_capacity(deliveries.len());
        let mut attempts = Vec::new();
        let mut owners: Vec<Owner> = Vec::new();
        let now = chrono::Utc::now();
        for Delivery {
            id,
            body,
            deliveries,
        } in deliveries
        {
            let kind: Arc<str> = body
                .as_ref()
                .map_or_else(|_| Arc::from(""), |s| Arc::from(s.kind.as_str()));
            if self.in_flight.insert(id, Arc::clone(&kind)).is_some() {
                // Already running here (claimed back while in flight): leave it to that run.
                continue;
            }
            metrics::counter!("swarm_signals_in_total").increment(1);
            let mut entry = Work::new(id);
            match body {
                Err(bad) => entry.dead.push(not_a_signal(id, deliveries, bad)),
                Ok(signal) if deliveries > self.config.max_deliveries => entry.dead.push(
                    delivered_too_often(id, deliveries, self.config.max_deliveries, &signal),
                ),
                Ok(signal) => {
                    let index = work.len();
                    self.plan(&signal, index, now, &mut entry, &mut attempts, &mut owners);
                    entry.signal = Some(signal);
                }
            }
            work.push(entry);
        }
        (work, attempts, owners)
    }

    /// Calls with retries: each successful first call's record and signals join its entry;
    /// each failed one continues in a task of its own (retries, or the next unit for
    /// first-success). Returns those tasks and how many each entry waits for.
    fn follow_up(
        &self,
        work: &mut [Work],
        owners: Vec<Owner>,
        results: Vec<Option<Attempted>>,
    ) -> (JoinSet<(usize, UnitRun)>, Vec<usize>) {
        let c = &self.config;
        let mut retries = JoinSet::new();
        let mut outstanding = vec![0usize; work.len()];
        for (owner, result) in owners.into_iter().zip(results) {
            let Owner {
                entry: index,
                slot,
                policy,
                fallbacks,
            } = owner;
            let entry = &mut work[index];
            let Some(done) = result else {
                entry.complete = false;
                continue;
            };
            if done.error().is_none() {
                tracing::debug!(
                    unit = %done.record.unit,
                    kind = %done.record.signal.kind,
                    signal = %done.record.signal.id,
                    emitted = ?done.emitted.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>(),
                    latency_us = done.record.latency_us,
                    "executed"
                );
                entry.emitted.extend(done.emitted);
                entry.records.push(done.record);
                continue;
            }
            let Some(signal) = entry.signal.clone() else {
                continue;
            };
            outstanding[index] += 1;
            let entry_id = entry.id.to_string();
            let watchdog = Arc::clone(&self.watchdog);
            if policy == DispatchPolicy::FirstSuccess {
                retries.spawn(async move {
                    let run = fall_back(signal, done, fallbacks, entry_id, watchdog).await;
                    (index, run)
                });
            } else {
                let again = Retries {
                    max_attempts: c.max_attempts,
                    backoff: c.retry_backoff,
                    watchdog,
                };
                retries.spawn(async move {
                    let run = retry(slot, signal, done, policy.name(), entry_id, again).await;
                    (index, run)
                });
            }
        }
        (retries, outstanding)
    }

    /// Settle: what needs no retry at once (and the batch's permit goes back), then each entry
    /// as its last retry task ends. An entry whose retry task failed is not settled, so it
    /// stays pending.
    async fn settle_in_turn(
        &self,
        work: Vec<Work>,
        mut retries: JoinSet<(usize, UnitRun)>,
        mut outstanding: Vec<usize>,
        mut permit: Option<OwnedSemaphorePermit>,
    ) {
        let mut work: Vec<Option<Work>> = work.into_iter().map(Some).collect();
        let ready: Vec<Work> = work
            .iter_mut()
            .zip(&outstanding)
            .filter(|(_, o)| **o == 0)
            .filter_map(|(w, _)| w.take())
            .collect();
        let mut waiting = work.iter().filter(|w| w.is_some()).count();
        self.settle(ready).await;
        give_back(&mut permit, waiting);
        while let Some(joined) = retries.join_next().await {
            let (index, run) = match joined {
                Ok(done) => done,
                Err(error) => {
                    tracing::error!(%error, "a retry task failed");
                    continue;
                }
            };
            outstanding[index] -= 1;
            let Some(entry) = work[index].as_mut() else {
                continue;
            };
            entry.records.extend(run.records);
            entry.emitted.extend(run.emitted);
            entry.dead.extend(run.dead_letter);
            if outstanding[index] == 0 {
                let done: Vec<Work> = work[index].take().into_iter().collect();
                self.settle(done).await;
                waiting -= 1;
                give_back(&mut permit, waiting);
            }
        }
        let left: Vec<Work> = work
            .into_iter()
            .flatten()
            .map(|w| Work {
                complete: false,
                ..w
            })
            .collect();
        self.settle(left).await;
    }

    /// Records the executions of `work` and settles each complete entry with what it emitted
    /// and its dead letters, in one atomic step; an incomplete one stays pending.
    async fn settle(&self, mut work: Vec<Work>) {
        if work.is_empty() {
            return;
        }
        let c = &self.config;
        let records: Vec<ExecutionRecord> = work
            .iter_mut()
            .flat_map(|w| std::mem::take(&mut w.records))
            .collect();
        for record in &records {
            self.ranker.observe(record);
            count_execution(record);
        }
        if !records.is_empty() {
            if let Err(error) = self.memory.record(&records).await {
                tracing::warn!(%error, count = records.len(), "execution records not stored");
            }
        }
        if self.executions.receiver_count() > 0 {
            for record in records {
                // Nobody left watching is not an error.
                let _ = self.executions.send(Arc::new(record));
            }
        }
        let dead_stream = dead_letter_stream(&c.stream);
        let mut settlements = Vec::with_capacity(work.len());
        let mut ids = Vec::with_capacity(work.len());
        let (mut out, mut dead) = (0u64, 0u64);
        for entry in work {
            ids.push(entry.id);
            if entry.complete {
                out += entry.emitted.len() as u64;
                dead += entry.dead.len() as u64;
                let emits = entry
                    .emitted
                    .into_iter()
                    .map(|s| (c.stream.clone(), s))
                    .chain(entry.dead.into_iter().map(|s| (dead_stream.clone(), s)))
                    .collect();
                settlements.push(Settlement {
                    id: entry.id,
                    emits,
                });
            } else {
                tracing::warn!(entry = %entry.id, "not every unit ran; the entry stays pending and will be redelivered");
            }
        }
        match self
            .mesh
            .settle_batch(&c.stream, &c.group, &settlements)
            .await
        {
            Ok(_) => {
                metrics::counter!("swarm_signals_out_total").increment(out);
                metrics::counter!("swarm_dead_letters_total").increment(dead);
                metrics::counter!("swarm_signals_settled_total")
                    .increment(settlements.len() as u64);
            }
            Err(error) => {
                metrics::counter!("swarm_settle_failures_total").increment(1);
                tracing::warn!(%error, entries = settlements.len(), "settle failed; the entries stay pending and will be redelivered");
            }
        }
        for id in ids {
            self.in_flight.remove(&id);
        }
        metrics::gauge!("swarm_in_flight").set(self.in_flight.len() as f64);
    }
}

/// Returns the permits of a batch beyond one per entry still `waiting`.
fn give_back(permit: &mut Option<OwnedSemaphorePermit>, waiting: usize) {
    if let Some(held) = permit.as_mut() {
        let spare = held.num_permits().saturating_sub(waiting.max(1));
        if spare > 0 {
            drop(held.split(spare));
        }
    }
}

/// Per-unit execution counts and latency, in the process's metrics recorder.
fn count_execution(record: &ExecutionRecord) {
    let outcome = if record.outcome.is_success() {
        "success"
    } else {
        "failure"
    };
    metrics::counter!("swarm_executions_total", "unit" => record.unit.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("swarm_unit_latency_seconds", "unit" => record.unit.clone())
        .record(record.latency_us as f64 / 1e6);
}

impl Dispatcher {
    /// Adds the first tries of `signal` (entry `index`) to the batch: the candidate units
    /// grouped by policy, each group in the ranker's order. Units skipped by their circuit
    /// breaker leave a dead letter (for a competing group, only when none is left).
    fn plan(
        &self,
        signal: &Signal,
        index: usize,
        now: chrono::DateTime<chrono::Utc>,
        entry: &mut Work,
        attempts: &mut Vec<Attempt>,
        owners: &mut Vec<Owner>,
    ) {
        let candidates = self.registry.candidates(&signal.kind);
        for mut group in groups(&signal.kind, candidates, &self.config.dispatch) {
            let (quarantined, live): (Vec<_>, Vec<_>) =
                group.units.into_iter().partition(|s| s.is_quarantined());
            if group.policy == DispatchPolicy::FanOut || live.is_empty() {
                for slot in &quarantined {
                    let reason = format!(
                        "unit `{}` is quarantined: {} of its calls ran past their deadline (swap in a new version or enable it to lift it)",
                        slot.name(),
                        slot.health.timeouts()
                    );
                    entry
                        .dead
                        .push(not_run(signal, entry.id, slot.name(), reason));
                }
            }
            if live.is_empty() {
                continue;
            }
            group.units = live;
            let names: Vec<Arc<str>> = group.units.iter().map(|s| Arc::from(s.name())).collect();
            let order = self.ranker.rank(signal, &names, group.policy, now);
            let slot_of = |unit: &Arc<str>| {
                group
                    .units
                    .iter()
                    .find(|s| s.name() == unit.as_ref())
                    .cloned()
            };
            if group.policy == DispatchPolicy::FanOut || order.ranked.is_empty() {
                for unit in &order.skipped {
                    let reason = format!("unit `{unit}` was skipped: its circuit breaker is open");
                    entry.dead.push(not_run(signal, entry.id, unit, reason));
                }
            }
            let wave = order.first_wave().len();
            let fallbacks: Vec<(Arc<UnitSlot>, f64)> = match group.policy {
                DispatchPolicy::FirstSuccess => order.ranked[wave..]
                    .iter()
                    .filter_map(|choice| slot_of(&choice.unit).map(|s| (s, choice.propensity)))
                    .collect(),
                _ => Vec::new(),
            };
            for choice in order.first_wave() {
                let Some(slot) = slot_of(&choice.unit) else {
                    continue;
                };
                if let Some(generation) = slot.current() {
                    attempts.push(Attempt {
                        generation,
                        slot: Arc::clone(&slot),
                        signal: signal.clone(),
                        policy: group.policy.name(),
                        propensity: choice.propensity,
                    });
                    owners.push(Owner {
                        entry: index,
                        slot,
                        policy: group.policy,
                        fallbacks: fallbacks.clone(),
                    });
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

/// The dead letter of `signal` for a unit it was not run on, and why.
fn not_run(signal: &Signal, entry: EntryId, unit: &str, reason: String) -> Signal {
    dead_letter(
        Some(signal),
        DeadLetter {
            reason,
            unit: Some(unit.to_owned()),
            attempts: 0,
            failure: None,
            entry_id: entry.to_string(),
            original: serde_json::to_value(signal).unwrap_or_default(),
        },
    )
}

/// The dead letter of an entry that is not a signal.
fn not_a_signal(id: EntryId, deliveries: u32, bad: Undecodable) -> Signal {
    dead_letter(
        None,
        DeadLetter {
            reason: format!("entry is not a signal: {}", bad.error),
            unit: None,
            attempts: deliveries,
            failure: None,
            entry_id: id.to_string(),
            original: serde_json::Value::String(bad.raw),
        },
    )
}

/// The dead letter of a poison entry: delivered more than `max_deliveries` times.
fn delivered_too_often(
    id: EntryId,
    deliveries: u32,
    max_deliveries: u32,
    signal: &Signal,
) -> Signal {
    dead_letter(
        Some(signal),
        DeadLetter {
            reason: format!(
                "delivered {deliveries} times without being settled (max_deliveries = {max_deliveries}): each run of it hung past its deadline, or the process running it died"
            ),
            unit: None,
            attempts: deliveries,
            failure: None,
            entry_id: id.to_string(),
            original: serde_json::to_value(signal).unwrap_or_default(),
        },
    )
}

/// Sleeps for `duration`; returns true if shutdown was asked for meanwhile.
async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(duration) => *shutdown.borrow(),
    }
}
