//! [`Consume`] on Redis Streams: XREADGROUP, XACK, settlements in MULTI/EXEC, XAUTOCLAIM.

use std::time::Duration;

use async_trait::async_trait;

use redis::Value;

use super::reply::{self, array, read_reply, unexpected};
use super::{RedisMesh, encode, error, millis, parse_id};
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
        let entries = read_reply(&reply)?;
        Ok(entries
            .into_iter()
            .map(|(id, body)| Delivery {
                id,
                body,
                deliveries: 1,
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
        let entries = read_reply(&reply)?;
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
        // One MULTI/EXEC, one round trip: every XADD, then one XACK of every entry.
        let mut pipe = redis::pipe();
        pipe.atomic();
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
        pipe.ignore();
        let ids: Vec<String> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        let mut ids = ids.into_iter();
        settlements
            .iter()
            .map(|settlement| {
                ids.by_ref()
                    .take(settlement.emits.len())
                    .map(|id| parse_id(&id))
                    .collect()
            })
            .collect()
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
    ) -> Result<(), MeshError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut invocation = self.keep_alive.key(self.key(stream));
        invocation.arg(group).arg(consumer);
        for id in ids {
            invocation.arg(id.to_string());
        }
        let _: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        Ok(())
    }
}

impl RedisMesh {
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
        let entries = reply::entries(&parts[1])?;
        self.with_counts(stream, group, entries).await
    }
}
