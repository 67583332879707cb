//! [`Observe`] on Redis Streams: XINFO, XPENDING, XRANGE, XLEN, XREAD.

use std::time::Duration;

use async_trait::async_trait;

use redis::Value;

use super::reply::{self, array, field, int, read_reply, text};
use super::{RedisMesh, error, unavailable};
use crate::{ConsumerInfo, Entry, EntryId, GroupInfo, MeshError, Observe};

#[async_trait]
impl Observe for RedisMesh {
    async fn group_info(&self, stream: &str, group: &str) -> Result<GroupInfo, MeshError> {
        let groups = self.groups(stream, group).await?;
        let info = groups
            .iter()
            .find(|g| field(g, "name").and_then(text).as_deref() == Some(group))
            .ok_or_else(|| MeshError::NoGroup {
                stream: stream.to_owned(),
                group: group.to_owned(),
            })?;
        let pending = field(info, "pending").and_then(int).unwrap_or(0).max(0) as u64;
        let last = field(info, "last-delivered-id")
            .and_then(text)
            .unwrap_or_else(|| "0-0".into());
        // Entries past the group's last delivery, up to `most` of them.
        let past = |most: Option<usize>| {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(self.key(stream)).arg(format!("({last}")).arg("+");
            if let Some(most) = most {
                cmd.arg("COUNT").arg(most);
            }
            async move {
                let after: Value = cmd
                    .query_async(&mut self.conn())
                    .await
                    .map_err(|e| error(stream, group, e))?;
                Ok::<u64, MeshError>(array(&after).map_or(0, |a| a.len() as u64))
            }
        };
        let lag = match field(info, "lag").and_then(int) {
            // Redis counts entries read, and that count can go stale (after a failover, on a
            // promoted replica): a lag with nothing past the last delivery is none.
            Some(lag) if lag > 0 => {
                if past(Some(1)).await? == 0 {
                    0
                } else {
                    lag as u64
                }
            }
            Some(_) => 0,
            // Redis cannot tell (entries were deleted): count what lies past the last delivery.
            None => past(None).await?,
        };
        let consumers: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(self.key(stream))
            .arg(group)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        let consumers = array(&consumers)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| {
                Some(ConsumerInfo {
                    name: field(c, "name").and_then(text)?,
                    pending: field(c, "pending").and_then(int).unwrap_or(0).max(0) as u64,
                })
            })
            .filter(|c| c.pending > 0)
            .collect();
        Ok(GroupInfo {
            pending,
            lag,
            consumers,
        })
    }

    async fn settled(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<bool>, MeshError> {
        let groups = self.groups(stream, group).await?;
        let last: EntryId = groups
            .iter()
            .find(|g| field(g, "name").and_then(text).as_deref() == Some(group))
            .and_then(|g| field(g, "last-delivered-id").and_then(text))
            .ok_or_else(|| MeshError::NoGroup {
                stream: stream.to_owned(),
                group: group.to_owned(),
            })?
            .parse()
            .map_err(|e| MeshError::Unavailable(format!("last-delivered-id of `{group}`: {e}")))?;
        let pending = self.pending_ids(stream, group, ids).await?;
        Ok(ids
            .iter()
            .map(|id| *id <= last && !pending.contains(id))
            .collect())
    }

    async fn range(
        &self,
        stream: &str,
        after: Option<EntryId>,
        count: usize,
    ) -> Result<Vec<Entry>, MeshError> {
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.key(stream))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(i64::try_from(count).unwrap_or(i64::MAX).max(1))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(reply::entries(&reply)?
            .into_iter()
            .map(|(id, body)| Entry { id, body })
            .collect())
    }

    async fn len(&self, stream: &str) -> Result<u64, MeshError> {
        redis::cmd("XLEN")
            .arg(self.key(stream))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn last_id(&self, stream: &str) -> Result<EntryId, MeshError> {
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(self.key(stream))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(reply::entries(&reply)?
            .first()
            .map_or(EntryId::ZERO, |(id, _)| *id))
    }

    async fn tail(
        &self,
        stream: &str,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, MeshError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        let reply = self
            .stream_read(cmd, block, stream, &after.to_string(), unavailable)
            .await?;
        Ok(read_reply(&reply)?
            .into_iter()
            .map(|(id, body)| Entry { id, body })
            .collect())
    }
}
