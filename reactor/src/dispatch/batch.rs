//! One batch of deliveries: intake (decode, poison checks, the plan of first tries), the calls
//! with their retries and fallbacks, then the batch handed to settlement.

use super::{Dispatcher, Part, Work};
use crate::attempt::{Attempt, Attempted};
use crate::execute::{Retries, UnitRun, fall_back, retry};
use crate::lanes::call_all;
use crate::letters::{delivered_too_often, not_a_signal, not_run};
use crate::policy::{competes, groups};
use crate::slot::UnitSlot;
use std::collections::HashMap;
use std::sync::Arc;
use swarm_mesh::partition::order_key;
use swarm_mesh::{Delivery, EntryId};
use swarm_schemas::{DispatchPolicy, Signal};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

/// A signal to plan the first tries of: entry `index` of its batch, with its JSON as delivered.
pub(super) struct Call {
    signal: Signal,
    json: Option<Arc<[u8]>>,
    index: usize,
    now: chrono::DateTime<chrono::Utc>,
}

/// A unit chosen for a first try of a signal, before the try is given the signal.
struct First {
    generation: Arc<crate::slot::Generation>,
    slot: Arc<UnitSlot>,
    policy: DispatchPolicy,
    propensity: f64,
}

/// A unit's first try of a signal, and the units to fall back on if it fails (first-success).
pub(super) struct Owner {
    entry: usize,
    slot: Arc<UnitSlot>,
    policy: DispatchPolicy,
    fallbacks: Vec<(Arc<UnitSlot>, f64)>,
}

impl Dispatcher {
    /// Handles a batch of delivered entries from start to settle: every first attempt of
    /// every (signal, unit) pair goes to the blocking pool in a few lanes; the entries whose
    /// units all succeeded (or are done failing) are recorded and settled together at once, and
    /// their share of `permit` comes back; an entry with a failure is retried per pair, and
    /// settled on its own when its last retry ends, so a unit that hangs until its deadline
    /// holds up only its own signal.
    pub(super) async fn process_batch(
        self: &Arc<Self>,
        part: &Arc<Part>,
        deliveries: Vec<Delivery>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        if part.fenced() {
            self.leave_pending(part, deliveries);
            return;
        }
        self.place_new_shapes(&deliveries).await;
        let (mut work, attempts, owners) = self.intake(deliveries);
        let results = call_all(attempts, self.config.unit_threads, &self.watchdog).await;
        let (retries, outstanding) = self.follow_up(&mut work, owners, results);
        self.settle_in_turn(part, work, retries, outstanding, permit)
            .await;
    }

    /// Leaves `deliveries` pending without running them: their partition's lease is gone, so
    /// the partition's next reader takes them over. The entries queued behind their keys follow.
    fn leave_pending(self: &Arc<Self>, part: &Arc<Part>, deliveries: Vec<Delivery>) {
        let ids: Vec<EntryId> = deliveries.iter().map(|d| d.id).collect();
        self.let_go(
            part,
            &ids,
            deliveries.iter().filter_map(super::order::key_of),
        );
    }

    /// Before a batch is ranked: the shapes of its competing signals that are new to the ranker
    /// are placed among those it knows (their vectors from memory), so that each is ranked from
    /// its neighbours from its first signal. The batch waits for them at most `share_wait`;
    /// past it, they are ranked without neighbours and placed when their vectors come.
    async fn place_new_shapes(self: &Arc<Self>, deliveries: &[Delivery]) {
        if self.config.ranker.share_neighbours == 0 {
            return;
        }
        // Whether a kind's units compete, asked once per kind of the batch.
        let mut competing: HashMap<&str, bool> = HashMap::new();
        let signals = deliveries
            .iter()
            .filter_map(|d| d.body.as_ref().ok())
            .filter(|signal| {
                *competing.entry(signal.kind.as_str()).or_insert_with(|| {
                    let candidates = self.registry.candidates(&signal.kind);
                    competes(&signal.kind, &candidates, &self.config.dispatch)
                })
            });
        let new = self.ranker.unplaced(signals, chrono::Utc::now());
        if new.is_empty() {
            return;
        }
        let this = Arc::clone(self);
        // A task of its own: shapes whose vectors come after the wait are still placed.
        let placing = tokio::spawn(async move {
            let placed = this.ranker.place(this.memory.as_ref(), &new).await;
            if let Ok(placed) = placed {
                metrics::counter!("swarm_ranker_shapes_placed_total").increment(placed as u64);
            }
            placed
        });
        match tokio::time::timeout(self.config.ranker.share_wait, placing).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(error))) => {
                tracing::debug!(%error, "new signal shapes not placed: ranked without neighbours");
            }
            Ok(Err(error)) => tracing::warn!(%error, "placing new signal shapes failed"),
            Err(_) => {
                metrics::counter!("swarm_ranker_batches_ranked_before_placing_total").increment(1);
                tracing::debug!("new signal shapes still embedding: ranked without neighbours");
            }
        }
    }

    /// Intake and plan: one [`Work`] per delivery (admitted by the partition's key order, so
    /// none is already running here), with the unit calls its signal gets (and their owners,
    /// in the same order). A delivery that is not a
    /// signal, or was delivered more than `max_deliveries` times, gets only its dead letter.
    pub(super) fn intake(
        &self,
        deliveries: Vec<Delivery>,
    ) -> (Vec<Work>, Vec<Attempt>, Vec<Owner>) {
        let mut work: Vec<Work> = Vec::with_capacity(deliveries.len());
        let mut attempts = Vec::new();
        let mut owners: Vec<Owner> = Vec::new();
        let now = chrono::Utc::now();
        metrics::counter!("swarm_signals_in_total").increment(deliveries.len() as u64);
        for Delivery {
            id,
            body,
            deliveries,
            json,
        } in deliveries
        {
            let mut entry = Work::new(id, body.as_ref().ok().map(order_key));
            match body {
                Err(bad) => entry.dead.push(not_a_signal(id, deliveries, bad)),
                Ok(signal) if deliveries > self.config.max_deliveries => entry.dead.push(
                    delivered_too_often(id, deliveries, self.config.max_deliveries, &signal),
                ),
                Ok(signal) => {
                    let index = work.len();
                    let call = Call {
                        signal,
                        json,
                        index,
                        now,
                    };
                    self.plan(call, &mut entry, &mut attempts, &mut owners);
                }
            }
            work.push(entry);
        }
        (work, attempts, owners)
    }

    /// Calls with retries: each successful first call's record and signals join its entry;
    /// each failed one continues in a task of its own (retries, or the next unit for
    /// first-success). Returns those tasks and how many each entry waits for.
    pub(super) fn follow_up(
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
            // The signal as this unit saw it: the entry's, for its retries and fallbacks.
            let signal = done.record.signal.clone();
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

    /// Adds the first tries of `signal` (entry `index`) to the batch: the candidate units
    /// grouped by policy, each group in the ranker's order. Units skipped by their circuit
    /// breaker leave a dead letter (for a competing group, only when none is left).
    pub(super) fn plan(
        &self,
        call: Call,
        entry: &mut Work,
        attempts: &mut Vec<Attempt>,
        owners: &mut Vec<Owner>,
    ) {
        let Call {
            signal,
            json,
            index,
            now,
        } = call;
        let candidates = self.registry.candidates(&signal.kind);
        // The first tries, given the signal once all are known: the last takes it, the others
        // a copy each.
        let mut firsts: Vec<First> = Vec::new();
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
                        .push(not_run(&signal, entry.id, slot.name(), reason));
                }
            }
            if live.is_empty() {
                continue;
            }
            group.units = live;
            let names: Vec<Arc<str>> = group.units.iter().map(|s| s.shared_name()).collect();
            let order = self.ranker.rank(&signal, &names, group.policy, now);
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
                    entry.dead.push(not_run(&signal, entry.id, unit, reason));
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
                    firsts.push(First {
                        generation,
                        slot: Arc::clone(&slot),
                        policy: group.policy,
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
        let count = firsts.len();
        let mut signal = Some(signal);
        for (i, first) in firsts.into_iter().enumerate() {
            let signal = if i + 1 < count {
                signal.clone()
            } else {
                signal.take()
            };
            let Some(signal) = signal else {
                continue;
            };
            attempts.push(Attempt {
                generation: first.generation,
                slot: first.slot,
                signal,
                json: json.clone(),
                policy: first.policy.name(),
                propensity: first.propensity,
            });
        }
    }
}
