//! [`Consume`] on Redis Streams: XREADGROUP, XACK, settlements in MULTI/EXEC, XAUTOCLAIM.

use std::time::Duration;

use async_trait::async_trait;

use redis::Value;

use super::reply::{self, array, body_and_json, entry_id, int, read_reply_with, unexpected};
use super::{RedisMesh, encode, error, millis};
use crate::{Consume, Delivery, EntryId, MeshError, Settlement};

/// A settle under a partition's lease: KEYS are the lease, the partition's stream and the
/// streams emitted to; ARGV the owner, the group, the count `n` of entries, their `n` ids, then
/// per emit the index of its stream in KEYS, its field and its bytes. Writes nothing and
/// answers `{0, holder}` unless the owner holds the lease; else appends every emit, then
/// acknowledges every entry, and answers `{1, the emits' ids...}`. A script runs atomically.
const SETTLE_LEASED: &str = r"#!lua
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then
  return {0, holder or ''}
end
local n = tonumber(ARGV[3])
local out = {1}
for i = 4 + n, #ARGV, 3 do
  out[#out + 1] = redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', ARGV[i + 1], ARGV[i + 2])
end
for i = 4, 3 + n, 1000 do
  redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, i, math.min(i + 999, 3 + n)))
end
return out
";

/// A settle of the entries still pending with one consumer: KEYS are the stream, then the
/// streams emitted to; ARGV the consumer, the group, the count `n` of entries, their `n` ids,
/// then per emit the number of its entry (1 to `n`), the index of its stream in KEYS, its field
/// and its bytes. Each entry pending with another consumer, or with none, is left as it is,
/// with its emits. Answers `n` flags (1: settled), then the ids of the emits made, in order.
const SETTLE_OWNED: &str = r"#!lua
local n = tonumber(ARGV[3])
local owned = {}
local ids = {}
local out = {}
for j = 1, n do
  local id = ARGV[3 + j]
  local p = redis.call('XPENDING', KEYS[1], ARGV[2], id, id, 1, ARGV[1])
  if p[1] then
    owned[j] = true
    ids[#ids + 1] = id
    out[j] = 1
  else
    out[j] = 0
  end
end
for i = 4 + n, #ARGV, 4 do
  if owned[tonumber(ARGV[i])] then
    out[#out + 1] = redis.call('XADD', KEYS[tonumber(ARGV[i + 1])], '*', ARGV[i + 2], ARGV[i + 3])
  end
end
for i = 1, #ids, 1000 do
  redis.call('XACK', KEYS[1], ARGV[2], unpack(ids, i, math.min(i + 999, #ids)))
end
return out
";

/// The ids of the XADDs of settlements that emitted `counts` signals each, from `ids` (the
/// XADDs' replies, in the order of the emits, then anything else), per settlement.
fn emitted_ids(
    ids: &[Value],
    counts: impl IntoIterator<Item = usize>,
) -> Result<Vec<Vec<EntryId>>, MeshError> {
    let mut ids = ids.iter().map(|id| {
        entry_id(id)
            .ok_or_else(|| MeshError::Unavailable(format!("XADD answered {id:?}, not an entry id")))
    });
    counts
        .into_iter()
        .map(|count| ids.by_ref().take(count).collect())
        .collect()
}

/// How many signals each of `settlements` emits.
fn emit_counts(settlements: &[Settlement]) -> impl Iterator<Item = usize> + '_ {
    settlements.iter().map(|s| s.emits.len())
}

#[async_trait]
impl Consume for RedisMesh {
    async fn read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, MeshError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        let reply = self
            .stream_read(cmd, block, stream, ">", |e| error(stream, group, e))
            .await?;
        let entries = read_reply_with(&reply, body_and_json)?;
        Ok(entries
            .into_iter()
            .map(|(id, (body, json))| Delivery {
                id,
                body,
                deliveries: 1,
                json,
            })
            .collect())
    }

    async fn read_own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(self.key(stream))
            .arg(after.to_string())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        let entries = read_reply_with(&reply, body_and_json)?;
        self.with_counts(stream, group, entries).await
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> Result<u64, MeshError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(self.key(stream)).arg(group);
        for id in ids {
            cmd.arg(id.to_string());
        }
        let n: u64 = cmd
            .query_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        Ok(n)
    }

    async fn settle_batch(
        &self,
        stream: &str,
        group: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        // With emits, one MULTI/EXEC: every XADD, then one XACK of every entry, so a crash
        // keeps all of it or none. Without, the one XACK is atomic by itself. Either way one
        // round trip, with the WAIT for replicas last when the mesh waits for them.
        let emits: usize = settlements.iter().map(|s| s.emits.len()).sum();
        let transaction = emits > 0;
        let mut pipe = redis::pipe();
        if transaction {
            pipe.cmd("MULTI");
        }
        for settlement in settlements {
            for (target, signal) in &settlement.emits {
                pipe.cmd("XADD")
                    .arg(self.key(target))
                    .arg("*")
                    .arg(encode(signal)?);
            }
        }
        pipe.cmd("XACK").arg(self.key(stream)).arg(group);
        for settlement in settlements {
            pipe.arg(settlement.id.to_string());
        }
        let answer = if transaction {
            let queued = pipe.cmd_iter().count();
            pipe.cmd("EXEC");
            queued
        } else {
            0
        };
        // Replicas that did not confirm in time are logged and counted: the settle stands.
        let (replies, _) = self
            .query_replicated(pipe, answer, 1, "settle")
            .await
            .map_err(|e| error(stream, group, e))?;
        if !transaction {
            return Ok(vec![Vec::new(); settlements.len()]);
        }
        // EXEC answers each queued command: the XADDs' ids, then the XACK's count.
        let exec = match replies.first() {
            Some(Value::Array(items)) if items.len() == emits + 1 => items,
            other => {
                return Err(MeshError::Unavailable(format!(
                    "EXEC answered {other:?}, not the transaction's {} replies",
                    emits + 1
                )));
            }
        };
        emitted_ids(exec, emit_counts(settlements))
    }

    async fn settle_batch_leased(
        &self,
        stream: &str,
        group: &str,
        owner: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError> {
        let (base, partition) = crate::partition::leased(stream)?;
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        let keys = vec![self.lease_key(base, partition), self.key(stream)];
        let (pipe, emits) =
            self.settle_script(SETTLE_LEASED, keys, owner, group, settlements, false)?;
        let (replies, _) = self
            .query_replicated(pipe, 0, 1, "settle")
            .await
            .map_err(|e| error(stream, group, e))?;
        let reply = replies.first().unwrap_or(&Value::Nil);
        let Value::Array(items) = reply else {
            return Err(unexpected("the leased settle", reply));
        };
        match items.split_first() {
            Some((Value::Int(1), ids)) if ids.len() == emits => {
                emitted_ids(ids, emit_counts(settlements))
            }
            Some((Value::Int(0), [holder])) => {
                let holder = reply::text(holder).filter(|h| !h.is_empty());
                Err(crate::partition::fenced(stream, owner, holder.as_deref()))
            }
            _ => Err(unexpected("the leased settle", reply)),
        }
    }

    async fn settle_batch_owned(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Option<Vec<EntryId>>>, MeshError> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        let keys = vec![self.key(stream)];
        let (pipe, _) =
            self.settle_script(SETTLE_OWNED, keys, consumer, group, settlements, true)?;
        let (replies, _) = self
            .query_replicated(pipe, 0, 1, "settle")
            .await
            .map_err(|e| error(stream, group, e))?;
        let reply = replies.first().unwrap_or(&Value::Nil);
        let Some((flags, ids)) = array(reply).and_then(|items| {
            (items.len() >= settlements.len()).then(|| items.split_at(settlements.len()))
        }) else {
            return Err(unexpected("the owned settle", reply));
        };
        let owned: Vec<bool> = flags.iter().map(|f| int(f) == Some(1)).collect();
        let made = || {
            emit_counts(settlements)
                .zip(&owned)
                .filter_map(|(count, owned)| owned.then_some(count))
        };
        if ids.len() != made().sum::<usize>() {
            return Err(unexpected("the owned settle", reply));
        }
        let mut emitted = emitted_ids(ids, made())?.into_iter();
        Ok(owned
            .iter()
            .map(|owned| owned.then(|| emitted.next().unwrap_or_default()))
            .collect())
    }

    async fn claim_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        self.auto_claim(stream, group, consumer, Duration::ZERO, after.next(), count)
            .await
    }

    async fn pending_among(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, MeshError> {
        let pending = self.pending_ids(stream, group, ids).await?;
        Ok(ids
            .iter()
            .filter(|id| pending.contains(id))
            .copied()
            .collect())
    }

    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        self.auto_claim(stream, group, consumer, min_idle, EntryId::ZERO, count)
            .await
    }

    async fn keep_alive(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, MeshError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.keep_alive.key(self.key(stream));
        invocation.arg(group).arg(consumer);
        for id in ids {
            invocation.arg(id.to_string());
        }
        let gone: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        array(&gone)
            .ok_or_else(|| unexpected("the keep-alive", &gone))?
            .iter()
            .map(|id| entry_id(id).ok_or_else(|| unexpected("an entry id", id)))
            .collect()
    }
}

impl RedisMesh {
    /// The `EVAL` of a settle script: KEYS are `keys`, then each stream `settlements` emit to
    /// that is not among them yet; ARGV `who` (the lease's owner, or the consumer), `group`,
    /// the count `n` of entries and their `n` ids, then per emit the number of its entry (from
    /// 1, when `numbered`), the index of its stream in KEYS, its field and its bytes. Also
    /// returns how many emits there are.
    fn settle_script(
        &self,
        script: &str,
        mut keys: Vec<String>,
        who: &str,
        group: &str,
        settlements: &[Settlement],
        numbered: bool,
    ) -> Result<(redis::Pipeline, usize), MeshError> {
        let mut emits = Vec::new();
        for (entry, settlement) in settlements.iter().enumerate() {
            for (target, signal) in &settlement.emits {
                let key = self.key(target);
                let at = match keys.iter().position(|k| *k == key) {
                    Some(at) => at + 1,
                    None => {
                        keys.push(key);
                        keys.len()
                    }
                };
                let (field, bytes) = encode(signal)?;
                emits.push((entry + 1, at, field, bytes));
            }
        }
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(script)
            .arg(keys.len())
            .arg(&keys)
            .arg(who)
            .arg(group)
            .arg(settlements.len());
        for settlement in settlements {
            pipe.arg(settlement.id.to_string());
        }
        for (entry, at, field, bytes) in &emits {
            if numbered {
                pipe.arg(*entry);
            }
            pipe.arg(*at).arg(*field).arg(bytes);
        }
        Ok((pipe, emits.len()))
    }

    /// The pending entries of the group between the least and the greatest of `ids`, with
    /// their delivery counts.
    async fn pending_range(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<std::collections::HashMap<EntryId, u32>, MeshError> {
        let (Some(first), Some(last)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(std::collections::HashMap::new());
        };
        let reply: Value = redis::cmd("XPENDING")
            .arg(self.key(stream))
            .arg(group)
            .arg(first.to_string())
            .arg(last.to_string())
            .arg(ids.len().max(1) * 4)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        let rows = array(&reply).ok_or_else(|| unexpected("XPENDING", &reply))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let row = array(row)?;
                Some((
                    entry_id(row.first()?)?,
                    u32::try_from(int(row.get(3)?)?).unwrap_or(u32::MAX),
                ))
            })
            .collect())
    }

    /// Which of `ids` are pending in the group: one `XPENDING id id 1` each, in one pipeline.
    pub(super) async fn pending_ids(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<std::collections::HashSet<EntryId>, MeshError> {
        if ids.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let key = self.key(stream);
        let mut pipe = redis::pipe();
        for id in ids {
            let id = id.to_string();
            pipe.cmd("XPENDING")
                .arg(&key)
                .arg(group)
                .arg(&id)
                .arg(&id)
                .arg(1);
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        Ok(replies
            .iter()
            .filter_map(|reply| entry_id(array(array(reply)?.first()?)?.first()?))
            .collect())
    }

    /// Delivery counts of `ids` in the group's pending list.
    async fn delivery_counts(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<u32>, MeshError> {
        let counts = self.pending_range(stream, group, ids).await?;
        Ok(ids
            .iter()
            .map(|id| counts.get(id).copied().unwrap_or(1))
            .collect())
    }

    async fn with_counts(
        &self,
        stream: &str,
        group: &str,
        entries: Vec<(EntryId, reply::BodyAndJson)>,
    ) -> Result<Vec<Delivery>, MeshError> {
        let ids: Vec<EntryId> = entries.iter().map(|(id, _)| *id).collect();
        let counts = self.delivery_counts(stream, group, &ids).await?;
        Ok(entries
            .into_iter()
            .zip(counts)
            .map(|((id, (body, json)), deliveries)| Delivery {
                id,
                body,
                deliveries,
                json,
            })
            .collect())
    }

    /// XAUTOCLAIM from `start` (inclusive) of entries idle at least `min_idle`.
    async fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(self.key(stream))
            .arg(group)
            .arg(consumer)
            .arg(millis(min_idle))
            .arg(start.to_string())
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        let parts = array(&reply)
            .filter(|p| p.len() >= 2)
            .ok_or_else(|| unexpected("XAUTOCLAIM", &reply))?;
        if let Some(deleted) = parts.get(2).and_then(array).filter(|d| !d.is_empty()) {
            tracing::warn!(
                stream,
                count = deleted.len(),
                "pending entries lost their data to trimming; Redis dropped them"
            );
        }
        let entries = reply::entries_with(&parts[1], body_and_json)?;
        self.with_counts(stream, group, entries).await
    }
}
