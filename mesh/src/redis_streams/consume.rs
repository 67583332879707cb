//! [`Consume`] on Redis Streams: XREADGROUP, XACK, XAUTOCLAIM and the keep-alive; the settles
//! are in `settle.rs`.

use std::time::Duration;

use async_trait::async_trait;

use redis::Value;

use super::reply::{self, array, body_and_json, entry_id, int, read_reply_with, unexpected};
use super::{RedisMesh, error, millis};
use crate::{Consume, Delivery, EntryId, MeshError, Settlement};

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
        self.settle_plain(stream, group, settlements).await
    }

    async fn settle_batch_leased(
        &self,
        stream: &str,
        group: &str,
        owner: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError> {
        self.settle_leased(stream, group, owner, settlements).await
    }

    async fn settle_batch_owned(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Option<Vec<EntryId>>>, MeshError> {
        self.settle_owned(stream, group, consumer, settlements)
            .await
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
