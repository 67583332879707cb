//! Settling entries on Redis Streams: each settle acknowledges a batch and appends its emits
//! in one atomic step, as one MULTI/EXEC (a plain settle) or one script (a settle under a
//! partition's lease, fenced by it; a settle of the entries still pending with one consumer).

use redis::Value;

use super::reply::{self, array, entry_id, int, unexpected};
use super::{RedisMesh, encode, error};
use crate::{EntryId, MeshError, Settlement};

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

impl RedisMesh {
    /// [`Consume::settle_batch`](crate::Consume::settle_batch).
    pub(super) async fn settle_plain(
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
        let emits: usize = emit_counts(settlements).sum();
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

    /// [`Consume::settle_batch_leased`](crate::Consume::settle_batch_leased).
    pub(super) async fn settle_leased(
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
        let reply = &self.send_settle_script(pipe, stream, group).await?;
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

    /// Sends a settle script built by [`Self::settle_script`] (with `WAIT` when replicas are
    /// waited for) and takes its one reply.
    async fn send_settle_script(
        &self,
        pipe: redis::Pipeline,
        stream: &str,
        group: &str,
    ) -> Result<Value, MeshError> {
        let (replies, _) = self
            .query_replicated(pipe, 0, 1, "settle")
            .await
            .map_err(|e| error(stream, group, e))?;
        Ok(replies.into_iter().next().unwrap_or(Value::Nil))
    }

    /// [`Consume::settle_batch_owned`](crate::Consume::settle_batch_owned).
    pub(super) async fn settle_owned(
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
        let reply = &self.send_settle_script(pipe, stream, group).await?;
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
}
