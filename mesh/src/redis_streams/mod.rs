//! The [`Mesh`] on Redis Streams.
//!
//! Layout: a mesh stream `S` is the Redis stream `{P}:S`, where `P` is the configured key
//! prefix; every key of a mesh shares the hash tag `{P}`, so the MULTI/EXEC of a settle (emits
//! to `{P}:S` and `{P}:S:dead`, and the XACK) stays in one Redis Cluster slot. Each entry has
//! one field: `s` holding the signal's JSON, or `m` holding it in MessagePack (fields by name),
//! as the signal's `encoding` says; reading sets `encoding` from the field. A consumer group per reactor role; one consumer
//! name per process, stable across restarts.
//!
//! Connections: one auto-reconnecting connection for ordinary commands, and for blocking reads
//! (`XREADGROUP … BLOCK`) connections of their own, with a response timeout longer than the
//! block: a blocking command would stall every command multiplexed behind it, and the redis
//! crate's default response timeout is shorter than a block.

mod reply;
mod stores;

pub use stores::{RedisKv, RedisMarks};

use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Value};
use swarm_schemas::{Encoding, Signal};

use crate::{
    ConsumerInfo, Delivery, Entry, EntryId, GroupInfo, Mesh, MeshError, Settlement, StartAt,
};
use reply::{array, entry_id, field, field_for, int, read_reply, text, unexpected};

/// Typed configuration of a [`RedisMesh`].
#[derive(Debug, Clone)]
pub struct RedisMeshConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Hash tag shared by every key of this mesh.
    pub key_prefix: String,
    /// Longest wait a blocking read may ask for; longer ones are cut to this.
    pub max_block: Duration,
    /// Response timeout of ordinary commands.
    pub command_timeout: Duration,
}

impl RedisMeshConfig {
    /// Defaults for the Redis at `url`: prefix `swarm`, blocks up to 30 s, 5 s per command.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "swarm".to_owned(),
            max_block: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5),
        }
    }
}

/// Resets the idle time of entries still owned by the consumer, without taking any that
/// another consumer has claimed meanwhile (a plain XCLAIM would steal them back).
const KEEP_ALIVE: &str = r"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
";

/// A mesh on Redis Streams.
pub struct RedisMesh {
    client: Client,
    config: RedisMeshConfig,
    commands: ConnectionManager,
    blocking: Mutex<Vec<ConnectionManager>>,
    keep_alive: redis::Script,
}

fn error(stream: &str, group: &str, e: RedisError) -> MeshError {
    if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") {
        MeshError::NoGroup {
            stream: stream.to_owned(),
            group: group.to_owned(),
        }
    } else {
        MeshError::Unavailable(e.to_string())
    }
}

fn unavailable(e: RedisError) -> MeshError {
    MeshError::Unavailable(e.to_string())
}

/// The entry field and bytes of `signal`, in its encoding: JSON in `s`, MessagePack in `m`.
fn encode(signal: &Signal) -> Result<(&'static str, Vec<u8>), MeshError> {
    let encoded = match signal.encoding {
        Encoding::Json => serde_json::to_vec(signal).map_err(|e| e.to_string()),
        Encoding::MessagePack => rmp_serde::to_vec_named(signal).map_err(|e| e.to_string()),
    };
    let bytes = encoded.map_err(MeshError::Encode)?;
    Ok((field_for(signal.encoding), bytes))
}

/// An entry id Redis returned; anything else means the reply was not what XADD answers.
fn parse_id(id: &str) -> Result<EntryId, MeshError> {
    id.parse()
        .map_err(|e: crate::BadEntryId| MeshError::Unavailable(e.to_string()))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisMesh {
    /// Connects to Redis. Fails if it cannot be reached now; later outages are survived by
    /// reconnecting with backoff.
    pub async fn connect(config: RedisMeshConfig) -> Result<Self, MeshError> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| MeshError::Unavailable(format!("bad Redis URL `{}`: {e}", config.url)))?;
        let commands = ConnectionManager::new_with_config(
            client.clone(),
            Self::manager_config(config.command_timeout),
        )
        .await
        .map_err(|e| {
            MeshError::Unavailable(format!("cannot connect to Redis at {}: {e}", config.url))
        })?;
        Ok(Self {
            client,
            config,
            commands,
            blocking: Mutex::new(Vec::new()),
            keep_alive: redis::Script::new(KEEP_ALIVE),
        })
    }

    fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3)
    }

    /// The Redis key of a mesh stream.
    pub fn key(&self, stream: &str) -> String {
        format!("{{{}}}:{stream}", self.config.key_prefix)
    }

    /// The Redis server's version (from `INFO server`).
    pub async fn server_version(&self) -> Result<String, MeshError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        info.lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| MeshError::Unavailable("INFO server has no redis_version".into()))
    }

    fn conn(&self) -> ConnectionManager {
        self.commands.clone()
    }

    async fn blocking_conn(&self) -> Result<ConnectionManager, MeshError> {
        let pooled = self.blocking.lock().pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => ConnectionManager::new_with_config(
                self.client.clone(),
                Self::manager_config(self.config.max_block + Duration::from_secs(10)),
            )
            .await
            .map_err(unavailable),
        }
    }

    /// Finishes an XREAD or XREADGROUP `cmd` with `[BLOCK ms] STREAMS key id` and runs it: at
    /// once on the command connection, or, when it may block, on a blocking connection of its
    /// own whose response timeout outlasts the block.
    async fn stream_read(
        &self,
        mut cmd: redis::Cmd,
        block: Duration,
        stream: &str,
        id: &str,
        on_error: impl Fn(RedisError) -> MeshError,
    ) -> Result<Value, MeshError> {
        if block.is_zero() {
            cmd.arg("STREAMS").arg(self.key(stream)).arg(id);
            return cmd.query_async(&mut self.conn()).await.map_err(on_error);
        }
        // BLOCK 0 would wait forever: anything below a millisecond waits one.
        let block = millis(block.min(self.config.max_block)).max(1);
        cmd.arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(self.key(stream))
            .arg(id);
        let mut conn = self.blocking_conn().await?;
        let reply = cmd.query_async(&mut conn).await.map_err(on_error)?;
        self.return_blocking(conn);
        Ok(reply)
    }

    fn return_blocking(&self, conn: ConnectionManager) {
        self.blocking.lock().push(conn);
    }

    /// Delivery counts of `ids` in the group's pending list.
    async fn delivery_counts(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<u32>, MeshError> {
        let (Some(first), Some(last)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(Vec::new());
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
        let counts: std::collections::HashMap<EntryId, u32> = rows
            .iter()
            .filter_map(|row| {
                let row = array(row)?;
                Some((
                    entry_id(row.first()?)?,
                    u32::try_from(int(row.get(3)?)?).unwrap_or(u32::MAX),
                ))
            })
            .collect();
        Ok(ids
            .iter()
            .map(|id| counts.get(id).copied().unwrap_or(1))
            .collect())
    }

    async fn with_counts(
        &self,
        stream: &str,
        group: &str,
        entries: Vec<(EntryId, crate::Body)>,
    ) -> Result<Vec<Delivery>, MeshError> {
        let ids: Vec<EntryId> = entries.iter().map(|(id, _)| *id).collect();
        let counts = self.delivery_counts(stream, group, &ids).await?;
        Ok(entries
            .into_iter()
            .zip(counts)
            .map(|((id, body), deliveries)| Delivery {
                id,
                body,
                deliveries,
            })
            .collect())
    }

    async fn groups(&self, stream: &str, group: &str) -> Result<Vec<Value>, MeshError> {
        let reply: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.key(stream))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| error(stream, group, e))?;
        Ok(array(&reply).map(<[Value]>::to_vec).unwrap_or_default())
    }
}

#[async_trait]
impl Mesh for RedisMesh {
    fn marks(&self, half_life: Duration) -> std::sync::Arc<dyn crate::Marks> {
        std::sync::Arc::new(RedisMarks::new(
            self.conn(),
            &self.config.key_prefix,
            half_life,
        ))
    }

    fn kv(&self) -> std::sync::Arc<dyn crate::Kv> {
        std::sync::Arc::new(RedisKv::new(self.conn(), &self.config.key_prefix))
    }

    fn unit_controls(&self) -> std::sync::Arc<dyn crate::UnitControls> {
        std::sync::Arc::new(stores::RedisUnitControls::new(
            self.conn(),
            &self.config.key_prefix,
        ))
    }

    async fn publish(&self, stream: &str, signal: &Signal) -> Result<EntryId, MeshError> {
        let id: String = redis::cmd("XADD")
            .arg(self.key(stream))
            .arg("*")
            .arg(encode(signal)?)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        parse_id(&id)
    }

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

    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(self.key(stream))
            .arg(group)
            .arg(consumer)
            .arg(millis(min_idle))
            .arg("0-0")
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
        let lag = match field(info, "lag").and_then(int) {
            Some(lag) => lag.max(0) as u64,
            None => {
                // Redis cannot tell (entries were deleted): count what lies past the last delivery.
                let last = field(info, "last-delivered-id")
                    .and_then(text)
                    .unwrap_or_else(|| "0-0".into());
                let after: Value = redis::cmd("XRANGE")
                    .arg(self.key(stream))
                    .arg(format!("({last}"))
                    .arg("+")
                    .query_async(&mut self.conn())
                    .await
                    .map_err(|e| error(stream, group, e))?;
                array(&after).map_or(0, |a| a.len() as u64)
            }
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
        redis::cmd("XTRIM")
            .arg(self.key(stream))
            .arg("MINID")
            .arg(keep_from.to_string())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}
