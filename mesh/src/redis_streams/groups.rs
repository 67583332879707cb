//! Consumer groups' life on Redis: creating them (XGROUP CREATE), trimming what every group
//! acknowledged, retentions and deletions (XTRIM, XDEL).

use async_trait::async_trait;
use redis::{RedisError, Value};

use super::reply::{array, entry_id, field, text, unexpected};
use super::{RedisMesh, error, unavailable};
use crate::{EntryId, Groups, MeshError, StartAt};

#[async_trait]
impl Groups for RedisMesh {
    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartAt,
    ) -> Result<(), MeshError> {
        let from = match start {
            StartAt::Beginning => "0",
            StartAt::End => "$",
        };
        let result: Result<Value, RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key(stream))
            .arg(group)
            .arg(from)
            .arg("MKSTREAM")
            .query_async(&mut self.conn())
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn trim_acknowledged(&self, stream: &str) -> Result<u64, MeshError> {
        let groups = match self.groups(stream, "").await {
            Ok(groups) => groups,
            Err(MeshError::NoGroup { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        if groups.is_empty() {
            return Ok(0);
        }
        let mut keep_from: Option<EntryId> = None;
        for g in &groups {
            let name = field(g, "name")
                .and_then(text)
                .ok_or_else(|| unexpected("XINFO GROUPS", g))?;
            let last = field(g, "last-delivered-id")
                .and_then(entry_id)
                .unwrap_or(EntryId::ZERO);
            let summary: Value = redis::cmd("XPENDING")
                .arg(self.key(stream))
                .arg(&name)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| error(stream, &name, e))?;
            let oldest_pending = array(&summary).and_then(|s| s.get(1)).and_then(entry_id);
            let needed = oldest_pending.map_or(last.next(), |p| p.min(last.next()));
            keep_from = Some(keep_from.map_or(needed, |k| k.min(needed)));
        }
        let Some(keep_from) = keep_from else {
            return Ok(0);
        };
        self.xtrim(stream, "MINID", keep_from.to_string()).await
    }

    async fn trim_retained(
        &self,
        stream: &str,
        max_len: Option<u64>,
        before: Option<EntryId>,
    ) -> Result<u64, MeshError> {
        let mut removed = 0;
        if let Some(before) = before {
            removed += self.xtrim(stream, "MINID", before.to_string()).await?;
        }
        if let Some(max_len) = max_len {
            removed += self.xtrim(stream, "MAXLEN", max_len.to_string()).await?;
        }
        Ok(removed)
    }

    async fn delete(&self, stream: &str, ids: &[EntryId]) -> Result<u64, MeshError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut xdel = redis::cmd("XDEL");
        xdel.arg(self.key(stream));
        for id in ids {
            xdel.arg(id.to_string());
        }
        xdel.query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}

impl RedisMesh {
    /// `XTRIM stream MINID|MAXLEN threshold` (exact): how many entries it removed.
    async fn xtrim(
        &self,
        stream: &str,
        strategy: &str,
        threshold: String,
    ) -> Result<u64, MeshError> {
        redis::cmd("XTRIM")
            .arg(self.key(stream))
            .arg(strategy)
            .arg(threshold)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}
