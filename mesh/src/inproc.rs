//! An in-process [`Mesh`] with the semantics of Redis Streams consumer groups, for tests and
//! zero-setup runs. One lock guards all streams; blocked readers wait on a per-stream `Notify`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use swarm_schemas::Signal;
use tokio::sync::Notify;

use crate::{
    Body, Consume, ConsumerInfo, Delivery, Entry, EntryId, GroupInfo, Groups, MeshError, Observe,
    Publish, Settlement, StartAt, Stores, Undecodable, partition,
};

struct Pending {
    consumer: String,
    delivered_at: Instant,
    deliveries: u32,
}

#[derive(Default)]
struct Group {
    last_delivered: EntryId,
    pending: BTreeMap<EntryId, Pending>,
}

#[derive(Default)]
struct Stream {
    entries: BTreeMap<EntryId, Body>,
    last_id: EntryId,
    groups: HashMap<String, Group>,
    added: Arc<Notify>,
}

impl Stream {
    fn append(&mut self, body: Body) -> EntryId {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let id = if now_ms > self.last_id.ms {
            EntryId { ms: now_ms, seq: 0 }
        } else {
            self.last_id.next()
        };
        self.entries.insert(id, body);
        self.last_id = id;
        id
    }

    fn group(&mut self, stream: &str, group: &str) -> Result<&mut Group, MeshError> {
        group_mut(&mut self.groups, stream, group)
    }
}

fn group_mut<'a>(
    groups: &'a mut HashMap<String, Group>,
    stream: &str,
    group: &str,
) -> Result<&'a mut Group, MeshError> {
    groups.get_mut(group).ok_or_else(|| MeshError::NoGroup {
        stream: stream.to_owned(),
        group: group.to_owned(),
    })
}

fn body_of(entries: &BTreeMap<EntryId, Body>, id: &EntryId) -> Body {
    entries.get(id).cloned().unwrap_or_else(|| {
        Err(Undecodable {
            raw: String::new(),
            error: "entry data was trimmed".into(),
        })
    })
}

#[derive(Default)]
struct State {
    streams: HashMap<String, Stream>,
}

impl State {
    fn stream(&mut self, name: &str) -> &mut Stream {
        self.streams.entry(name.to_owned()).or_default()
    }

    fn existing(&mut self, stream: &str, group: &str) -> Result<&mut Stream, MeshError> {
        self.streams
            .get_mut(stream)
            .ok_or_else(|| MeshError::NoGroup {
                stream: stream.to_owned(),
                group: group.to_owned(),
            })
    }

    fn publish(&mut self, stream: &str, body: Body) -> EntryId {
        let s = self.stream(stream);
        let id = s.append(body);
        s.added.notify_waiters();
        id
    }
}

/// Streams, groups and pending lists held in process memory.
#[derive(Default, Clone)]
pub struct InProcMesh {
    state: Arc<Mutex<State>>,
    pub(crate) layout: Arc<Mutex<crate::inproc_partitions::Layout>>,
    field: Arc<Mutex<crate::stores::inproc::Field>>,
    kv: crate::InProcKv,
    controls: crate::InProcUnitControls,
}

impl InProcMesh {
    /// An empty mesh.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent, so a poisoned lock is still usable.
        self.state.lock()
    }

    /// Settles under one lock for the whole operation: nobody sees the emits without the acks,
    /// or the acks without the emits.
    fn settle_now(
        &self,
        stream: &str,
        group: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError> {
        Ok(self
            .settle_of(stream, group, None, settlements)?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }

    /// Settles `settlements` (of those still pending with `owner` only, when given) under one
    /// lock: `None` for each left alone.
    fn settle_of(
        &self,
        stream: &str,
        group: &str,
        owner: Option<&str>,
        settlements: &[Settlement],
    ) -> Result<Vec<Option<Vec<EntryId>>>, MeshError> {
        let mut state = self.lock();
        let g = state.existing(stream, group)?.group(stream, group)?;
        let settled: Vec<bool> = settlements
            .iter()
            .map(|s| owner.is_none_or(|o| g.pending.get(&s.id).is_some_and(|p| p.consumer == o)))
            .collect();
        let mut out = Vec::with_capacity(settlements.len());
        for (settlement, settled) in settlements.iter().zip(settled) {
            if !settled {
                out.push(None);
                continue;
            }
            out.push(Some(
                settlement
                    .emits
                    .iter()
                    .map(|(target, signal)| state.publish(target, Ok(signal.clone())))
                    .collect(),
            ));
            state
                .existing(stream, group)?
                .group(stream, group)?
                .pending
                .remove(&settlement.id);
        }
        Ok(out)
    }

    /// Appends an entry that is not a signal, as another tool writing garbage to the stream
    /// would; for testing how consumers treat undecodable entries.
    pub fn publish_undecodable(&self, stream: &str, raw: &str) -> EntryId {
        let error = match serde_json::from_str::<Signal>(raw) {
            Ok(_) => "entry decodes as a signal".to_owned(),
            Err(e) => e.to_string(),
        };
        self.lock().publish(
            stream,
            Err(Undecodable {
                raw: raw.to_owned(),
                error,
            }),
        )
    }

    /// Delivers again, to `consumer`, up to `count` pending entries that `wanted` picks, oldest
    /// first, counting the delivery (what XREADGROUP with ID 0 and XAUTOCLAIM do).
    fn redeliver(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        wanted: impl Fn(&EntryId, &Pending, Instant) -> bool,
    ) -> Result<Vec<Delivery>, MeshError> {
        let mut state = self.lock();
        let Stream {
            entries, groups, ..
        } = state.existing(stream, group)?;
        let g = group_mut(groups, stream, group)?;
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, pending) in g
            .pending
            .iter_mut()
            .filter(|(id, p)| wanted(id, p, now))
            .take(count)
        {
            pending.consumer = consumer.to_owned();
            pending.delivered_at = now;
            pending.deliveries += 1;
            out.push(Delivery {
                id: *id,
                body: body_of(entries, id),
                deliveries: pending.deliveries,
                json: None,
            });
        }
        Ok(out)
    }

    fn try_read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        let mut state = self.lock();
        let Stream {
            entries, groups, ..
        } = state.existing(stream, group)?;
        let g = group_mut(groups, stream, group)?;
        let now = Instant::now();
        let mut out = Vec::new();
        let start = g.last_delivered.next();
        for (id, body) in entries.range(start..).take(count) {
            g.pending.insert(
                *id,
                Pending {
                    consumer: consumer.to_owned(),
                    delivered_at: now,
                    deliveries: 1,
                },
            );
            g.last_delivered = *id;
            out.push(Delivery {
                id: *id,
                body: body.clone(),
                deliveries: 1,
                json: None,
            });
        }
        Ok(out)
    }
}

impl Stores for InProcMesh {
    fn marks(&self, half_life: std::time::Duration) -> Arc<dyn crate::Marks> {
        Arc::new(crate::InProcMarks::new(Arc::clone(&self.field), half_life))
    }

    fn kv(&self) -> Arc<dyn crate::Kv> {
        Arc::new(self.kv.clone())
    }

    fn unit_controls(&self) -> Arc<dyn crate::UnitControls> {
        Arc::new(self.controls.clone())
    }
}

#[async_trait]
impl Publish for InProcMesh {
    async fn publish(&self, stream: &str, signal: &Signal) -> Result<EntryId, MeshError> {
        let partitions = self.layout.lock().partitions.get(stream).copied();
        let stream = match partitions {
            Some(p) if p > 1 => {
                partition::partition_stream(stream, partition::partition_of(signal, p), p)
            }
            _ => stream.to_owned(),
        };
        Ok(self.lock().publish(&stream, Ok(signal.clone())))
    }
}

#[async_trait]
impl Groups for InProcMesh {
    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartAt,
    ) -> Result<(), MeshError> {
        let mut state = self.lock();
        let s = state.stream(stream);
        let last_delivered = match start {
            StartAt::Beginning => EntryId::ZERO,
            StartAt::End => s.last_id,
        };
        s.groups.entry(group.to_owned()).or_insert_with(|| Group {
            last_delivered,
            pending: BTreeMap::new(),
        });
        Ok(())
    }

    async fn trim_acknowledged(&self, stream: &str) -> Result<u64, MeshError> {
        let mut state = self.lock();
        let Some(s) = state.streams.get_mut(stream) else {
            return Ok(0);
        };
        if s.groups.is_empty() {
            return Ok(0);
        }
        // The first entry some group still needs: its oldest pending one, or the first it has
        // not delivered yet.
        let keep_from = s
            .groups
            .values()
            .map(|g| {
                let undelivered = g.last_delivered.next();
                g.pending
                    .keys()
                    .next()
                    .map_or(undelivered, |oldest| (*oldest).min(undelivered))
            })
            .min()
            .unwrap_or(EntryId::ZERO);
        let kept = s.entries.split_off(&keep_from);
        let removed = s.entries.len() as u64;
        s.entries = kept;
        Ok(removed)
    }

    async fn trim_retained(
        &self,
        stream: &str,
        max_len: Option<u64>,
        before: Option<EntryId>,
    ) -> Result<u64, MeshError> {
        let mut state = self.lock();
        let Some(s) = state.streams.get_mut(stream) else {
            return Ok(0);
        };
        let mut removed = 0;
        if let Some(before) = before {
            let kept = s.entries.split_off(&before);
            removed += s.entries.len() as u64;
            s.entries = kept;
        }
        if let Some(max_len) = max_len {
            while s.entries.len() as u64 > max_len {
                s.entries.pop_first();
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn delete(&self, stream: &str, ids: &[EntryId]) -> Result<u64, MeshError> {
        let mut state = self.lock();
        let Some(s) = state.streams.get_mut(stream) else {
            return Ok(0);
        };
        Ok(ids
            .iter()
            .filter(|id| s.entries.remove(id).is_some())
            .count() as u64)
    }
}

#[async_trait]
impl Consume for InProcMesh {
    async fn read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, MeshError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let added = Arc::clone(&self.lock().existing(stream, group)?.added);
            // Register interest before looking, so a publish between the look and the wait
            // still wakes this reader.
            let notified = added.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let out = self.try_read(stream, group, consumer, count)?;
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn read_own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        self.redeliver(stream, group, consumer, count, |id, pending, _| {
            *id > after && pending.consumer == consumer
        })
    }

    async fn claim_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        self.redeliver(stream, group, consumer, count, |id, _, _| *id > after)
    }

    async fn pending_among(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, MeshError> {
        let mut state = self.lock();
        let g = state.existing(stream, group)?.group(stream, group)?;
        Ok(ids
            .iter()
            .filter(|id| g.pending.contains_key(id))
            .copied()
            .collect())
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> Result<u64, MeshError> {
        let mut state = self.lock();
        let g = state.existing(stream, group)?.group(stream, group)?;
        Ok(ids
            .iter()
            .filter(|id| g.pending.remove(id).is_some())
            .count() as u64)
    }

    async fn settle_batch(
        &self,
        stream: &str,
        group: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError> {
        self.settle_now(stream, group, settlements)
    }

    async fn settle_batch_leased(
        &self,
        stream: &str,
        group: &str,
        owner: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError> {
        crate::partition::leased(stream)?;
        // The layout stays locked through the settle: the lease cannot change hands meanwhile.
        let layout = self.layout.lock();
        match layout.holder(stream) {
            Some(holder) if holder == owner => self.settle_now(stream, group, settlements),
            holder => Err(crate::partition::fenced(stream, owner, holder)),
        }
    }

    async fn settle_batch_owned(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Option<Vec<EntryId>>>, MeshError> {
        // One lock over the check and the settle, as one script on Redis.
        self.settle_of(stream, group, Some(consumer), settlements)
    }

    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        self.redeliver(stream, group, consumer, count, |_, pending, now| {
            now.duration_since(pending.delivered_at) >= min_idle
        })
    }

    async fn keep_alive(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, MeshError> {
        let mut state = self.lock();
        let g = state.existing(stream, group)?.group(stream, group)?;
        let now = Instant::now();
        let mut gone = Vec::new();
        for id in ids {
            match g.pending.get_mut(id) {
                Some(pending) if pending.consumer == consumer => pending.delivered_at = now,
                _ => gone.push(*id),
            }
        }
        Ok(gone)
    }
}

#[async_trait]
impl Observe for InProcMesh {
    async fn group_info(&self, stream: &str, group: &str) -> Result<GroupInfo, MeshError> {
        let mut state = self.lock();
        let s = state.existing(stream, group)?;
        let lag = {
            let g = s.group(stream, group)?;
            let start = g.last_delivered.next();
            s.entries.range(start..).count() as u64
        };
        let g = s.group(stream, group)?;
        let mut per_consumer: BTreeMap<&str, u64> = BTreeMap::new();
        for pending in g.pending.values() {
            *per_consumer.entry(&pending.consumer).or_default() += 1;
        }
        Ok(GroupInfo {
            pending: g.pending.len() as u64,
            lag,
            consumers: per_consumer
                .into_iter()
                .map(|(name, pending)| ConsumerInfo {
                    name: name.to_owned(),
                    pending,
                })
                .collect(),
        })
    }

    async fn settled(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<bool>, MeshError> {
        let mut state = self.lock();
        let g = state.existing(stream, group)?.group(stream, group)?;
        Ok(ids
            .iter()
            .map(|id| *id <= g.last_delivered && !g.pending.contains_key(id))
            .collect())
    }

    async fn range(
        &self,
        stream: &str,
        after: Option<EntryId>,
        count: usize,
    ) -> Result<Vec<Entry>, MeshError> {
        let state = self.lock();
        let Some(s) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let start = after.map_or(EntryId::ZERO, EntryId::next);
        Ok(s.entries
            .range(start..)
            .take(count)
            .map(|(id, body)| Entry {
                id: *id,
                body: body.clone(),
            })
            .collect())
    }

    async fn len(&self, stream: &str) -> Result<u64, MeshError> {
        Ok(self
            .lock()
            .streams
            .get(stream)
            .map_or(0, |s| s.entries.len() as u64))
    }

    async fn last_id(&self, stream: &str) -> Result<EntryId, MeshError> {
        Ok(self
            .lock()
            .streams
            .get(stream)
            .and_then(|s| s.entries.keys().next_back().copied())
            .unwrap_or(EntryId::ZERO))
    }

    async fn tail(
        &self,
        stream: &str,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, MeshError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let added = Arc::clone(&self.lock().stream(stream).added);
            // Register interest before looking (as `read` does).
            let notified = added.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let out = self.range(stream, Some(after), count.max(1)).await?;
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}
