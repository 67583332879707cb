//! Settling a batch: its records to memory, then its emits, dead letters and acknowledgements
//! to the mesh in one atomic step, in the order the batches were read.

use super::{Dispatcher, Part, Work};
use crate::execute::UnitRun;
use std::sync::Arc;
use swarm_mesh::{MeshError, Settlement, dead_letter_stream};
use swarm_schemas::ExecutionRecord;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

impl Dispatcher {
    /// Settle: what needs no retry at once (and the batch's permit goes back), then each entry
    /// as its last retry task ends. An entry whose retry task failed is not settled, so it
    /// stays pending.
    pub(super) async fn settle_in_turn(
        self: &Arc<Self>,
        part: &Arc<Part>,
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
        self.settle(part, ready).await;
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
                self.settle(part, done).await;
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
        self.settle(part, left).await;
    }

    /// Records the executions of `work` and settles each complete entry with what it emitted
    /// and its dead letters, in one atomic step; an incomplete one stays pending. Then the
    /// next entry of each settled entry's key gets its turn.
    pub(super) async fn settle(self: &Arc<Self>, part: &Arc<Part>, mut work: Vec<Work>) {
        if work.is_empty() {
            return;
        }
        let c = &self.config;
        let records: Vec<Arc<ExecutionRecord>> = work
            .iter_mut()
            .flat_map(|w| std::mem::take(&mut w.records))
            .collect();
        for record in &records {
            self.ranker.observe(record);
        }
        if let Some(telemetry) = &c.telemetry {
            for record in &records {
                telemetry.processed(&part.stream, &c.group, record);
            }
        }
        count_executions(&records);
        // Memory and the watchers share the records.
        let watched = (self.executions.receiver_count() > 0).then(|| records.clone());
        if !records.is_empty() {
            let count = records.len();
            if let Err(error) = self.memory.record_shared(records).await {
                tracing::warn!(%error, count, "execution records not stored");
            }
        }
        for record in watched.into_iter().flatten() {
            // Nobody left watching is not an error.
            let _ = self.executions.send(record);
        }
        let dead_stream = dead_letter_stream(&part.stream);
        let mut settlements = Vec::with_capacity(work.len());
        let mut ids = Vec::with_capacity(work.len());
        let mut keys = Vec::with_capacity(work.len());
        for entry in work {
            ids.push(entry.id);
            keys.extend(entry.key);
            if entry.complete {
                let emits = entry
                    .emitted
                    .into_iter()
                    .map(|s| (part.stream.clone(), s))
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
        // A settle that fails (the mesh is down, or failing over) is tried again, for as long
        // as nobody else may claim the entries: giving up would let the key's next entries run
        // before these are delivered again.
        let give_up = tokio::time::Instant::now() + c.claim_idle;
        let mut backoff = std::time::Duration::from_millis(50);
        let sending = std::time::SystemTime::now();
        loop {
            if part.fenced() {
                // The lease was found gone: nothing of this partition is settled by this
                // reader any more.
                metrics::counter!("swarm_settles_fenced_total").increment(1);
                break;
            }
            let settled = if part.has_lease() {
                self.mesh
                    .settle_batch_leased(&part.stream, &c.group, &c.consumer, &settlements)
                    .await
                    .map(|_| ())
            } else if part.unsure(&ids, c.claim_idle / 2) {
                // Held long enough, or kept alive too late, that another consumer of the
                // shared stream may have claimed some: settle only what is still this one's.
                self.settle_owned(part, &mut settlements).await
            } else {
                self.mesh
                    .settle_batch(&part.stream, &c.group, &settlements)
                    .await
                    .map(|_| ())
            };
            match settled {
                Err(MeshError::Fenced(why)) => {
                    part.fence();
                    metrics::counter!("swarm_settles_fenced_total").increment(1);
                    tracing::warn!(
                        entries = settlements.len(),
                        stream = %part.stream,
                        "{why}: this process lost the partition (paused or cut off past its lease); what it read is left to the partition's next reader"
                    );
                    break;
                }
                Ok(_) => {
                    if let Some(telemetry) = &c.telemetry {
                        let sent = std::time::SystemTime::now();
                        for (stream, signal) in settlements.iter().flat_map(|s| &s.emits) {
                            telemetry.sent(stream, signal, sending, sent);
                        }
                    }
                    // What was settled: the retries and a check of ownership may have left some.
                    let (mut out, mut dead) = (0u64, 0u64);
                    for (stream, _) in settlements.iter().flat_map(|s| &s.emits) {
                        *(if *stream == dead_stream {
                            &mut dead
                        } else {
                            &mut out
                        }) += 1;
                    }
                    metrics::counter!("swarm_signals_out_total").increment(out);
                    metrics::counter!("swarm_dead_letters_total").increment(dead);
                    metrics::counter!("swarm_signals_settled_total")
                        .increment(settlements.len() as u64);
                    break;
                }
                Err(error) if tokio::time::Instant::now() + backoff < give_up => {
                    metrics::counter!("swarm_settle_retries_total").increment(1);
                    tracing::warn!(%error, entries = settlements.len(), ?backoff, "settle failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                    // The failure may have been only the answer's: what was acknowledged
                    // meanwhile is settled, and must not emit again.
                    let ids: Vec<_> = settlements.iter().map(|s| s.id).collect();
                    if let Ok(pending) = self.mesh.pending_among(&part.stream, &c.group, &ids).await
                    {
                        settlements.retain(|s| pending.contains(&s.id));
                    }
                }
                Err(error) => {
                    metrics::counter!("swarm_settle_failures_total").increment(1);
                    tracing::warn!(%error, entries = settlements.len(), "settle failed; the entries stay pending and will be redelivered");
                    break;
                }
            }
        }
        // An entry left pending (a unit could not run, or the mesh stayed down past
        // `claim_idle`) lets its key go on too: it is delivered again later, after newer
        // entries of its key.
        self.let_go(part, &ids, keys);
    }

    /// Settles those of `settlements` still pending with this consumer, and keeps only them
    /// in `settlements`; the others were claimed by another consumer, which settles them.
    async fn settle_owned(
        &self,
        part: &Part,
        settlements: &mut Vec<Settlement>,
    ) -> Result<(), MeshError> {
        let c = &self.config;
        let settled = self
            .mesh
            .settle_batch_owned(&part.stream, &c.group, &c.consumer, settlements)
            .await?;
        let before = settlements.len();
        let mut done = settled.iter().map(Option::is_some);
        settlements.retain(|_| done.next().unwrap_or(false));
        let left = before - settlements.len();
        if left > 0 {
            metrics::counter!("swarm_entries_left_to_another_total").increment(left as u64);
            tracing::warn!(
                left,
                stream = %part.stream,
                "entries held past the claim time were claimed by another consumer: left to it, not settled here"
            );
        }
        Ok(())
    }

    /// Entries `ids`, of keys `keys`, are no longer in flight here, settled or not: the next
    /// entry of each key gets its turn.
    pub(super) fn let_go(
        self: &Arc<Self>,
        part: &Arc<Part>,
        ids: &[swarm_mesh::EntryId],
        keys: impl IntoIterator<Item = u64>,
    ) {
        for id in ids {
            self.in_flight.remove(&(part.index, *id));
        }
        part.let_go(ids);
        metrics::gauge!("swarm_in_flight").set(self.in_flight.len() as f64);
        let next = part.order.release(keys);
        self.run_released(part, next);
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

/// Per-unit execution counts and latency, in the process's metrics recorder: each unit's
/// counters and histogram are looked up once per batch, not once per record.
fn count_executions(records: &[Arc<ExecutionRecord>]) {
    let mut units: Vec<&str> = records.iter().map(|r| r.unit.as_str()).collect();
    units.sort_unstable();
    units.dedup();
    for unit in units {
        let label = unit.to_owned();
        let latency = metrics::histogram!("swarm_unit_latency_seconds", "unit" => label.clone());
        let (mut successes, mut failures) = (0u64, 0u64);
        for record in records.iter().filter(|r| r.unit == unit) {
            latency.record(record.latency_us as f64 / 1e6);
            if record.outcome.is_success() {
                successes += 1;
            } else {
                failures += 1;
            }
        }
        if successes > 0 {
            metrics::counter!("swarm_executions_total", "unit" => label.clone(), "outcome" => "success")
                .increment(successes);
        }
        if failures > 0 {
            metrics::counter!("swarm_executions_total", "unit" => label, "outcome" => "failure")
                .increment(failures);
        }
    }
}
