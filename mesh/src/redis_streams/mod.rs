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
//!
//! Scripts: each Lua script opens with `#!lua` (Redis 7's script flags, none declared), which
//! makes it a write in Redis's eyes. On a cluster that matters after a failover: the cluster
//! client sends READONLY on every node connection, so a master turned replica would run a
//! flagless script on its copy and fail at the first write with READONLY, an error the client
//! neither redirects nor refreshes its slot map on; a write is answered MOVED, which it follows.

mod conn;
mod consume;
mod groups;
mod observe;
mod partitions;
mod reply;
mod settle;
mod stores;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use conn::Conn as RedisConnection;
pub use stores::{RedisKv, RedisMarks};

use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::{RedisError, Value};
use swarm_schemas::{Encoding, Signal};

use crate::{EntryId, MeshError, Publish, Stores};
use conn::{Conn, Target};
use reply::{array, field_for, text};

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
    /// Wait for replicas to have each publish and each settle before answering (`WAIT`);
    /// `None` (the default) answers once the master has it.
    pub wait_for_replicas: Option<WaitForReplicas>,
}

/// How long a write waits for Redis replicas to have it: `WAIT replicas timeout` after each
/// publish and each settle, in the same round trip. A publish answered then survives the loss
/// of its master when one of those replicas takes over; a settle is not run again after such a
/// failover. Redis cannot undo a write the replicas did not confirm in time: such a publish
/// fails with [`MeshError::NotReplicated`] (the signal is on the master, and a publisher that
/// tries again may deliver it twice); such a settle stands, logged. Both are counted in
/// `swarm_mesh_replication_short_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitForReplicas {
    /// Replicas that must confirm the write (on a cluster, replicas of the master holding the
    /// written key).
    pub replicas: u32,
    /// The longest wait for them.
    pub timeout: Duration,
}

impl RedisMeshConfig {
    /// Defaults for the Redis at `url`: prefix `swarm`, blocks up to 30 s, 5 s per command.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "swarm".to_owned(),
            max_block: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5),
            wait_for_replicas: None,
        }
    }
}

/// Resets the idle time of entries still owned by the consumer, without taking any that
/// another consumer has claimed meanwhile (a plain XCLAIM would steal them back).
const KEEP_ALIVE: &str = r"#!lua
local gone = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
";

/// A mesh on Redis Streams.
pub struct RedisMesh {
    target: Target,
    config: RedisMeshConfig,
    commands: Conn,
    blocking: Mutex<Vec<Conn>>,
    keep_alive: redis::Script,
    /// Partition counts seen (fixed once recorded), for placing published signals.
    partition_counts: partitions::Counts,
}

/// Whether the replicas a mesh waits for confirmed a write.
enum Replicated {
    /// As many as asked (or the mesh does not wait for any).
    Enough,
    /// Fewer, within the wait's timeout.
    Short {
        confirmed: i64,
        wanted: u32,
        timeout: Duration,
    },
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
        let target = Target::open(&config.url)
            .map_err(|e| MeshError::Unavailable(format!("bad Redis URL `{}`: {e}", config.url)))?;
        let commands = target.connect(config.command_timeout).await.map_err(|e| {
            MeshError::Unavailable(format!("cannot connect to Redis at {}: {e}", config.url))
        })?;
        Ok(Self {
            target,
            config,
            commands,
            blocking: Mutex::new(Vec::new()),
            keep_alive: redis::Script::new(KEEP_ALIVE),
            partition_counts: partitions::Counts::default(),
        })
    }

    /// A new connection to the mesh's Redis (one server or the cluster), for tools and
    /// benchmarks that issue their own commands.
    pub async fn open_connection(&self) -> Result<RedisConnection, MeshError> {
        self.target
            .connect(self.config.command_timeout)
            .await
            .map_err(unavailable)
    }

    /// Whether this mesh is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The Redis key of a mesh stream: `{P}:S`, or `{P#k}:S` (and `{P#k}:S:dead`) for
    /// partition `k` of `S`, so each partition has a hash tag of its own.
    pub fn key(&self, stream: &str) -> String {
        let prefix = &self.config.key_prefix;
        match crate::partition::split_partition(stream) {
            Some((base, k, rest)) => format!("{{{prefix}#{k}}}:{base}{rest}"),
            None => format!("{{{prefix}}}:{stream}"),
        }
    }

    /// The Redis server's version (from `INFO server`); on a cluster, the lowest of its nodes'.
    pub async fn server_version(&self) -> Result<String, MeshError> {
        let reply: Value = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // A cluster answers with each node's text, by node.
        let texts: Vec<String> = match &reply {
            Value::Map(nodes) => nodes.iter().filter_map(|(_, info)| text(info)).collect(),
            other => text(other).into_iter().collect(),
        };
        let number = |version: &str| -> Vec<u64> {
            version.split('.').map(|n| n.parse().unwrap_or(0)).collect()
        };
        texts
            .iter()
            .filter_map(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("redis_version:"))
                    .map(|v| v.trim().to_owned())
            })
            .min_by_key(|version| number(version))
            .ok_or_else(|| MeshError::Unavailable("INFO server has no redis_version".into()))
    }

    fn conn(&self) -> Conn {
        self.commands.clone()
    }

    async fn blocking_conn(&self) -> Result<Conn, MeshError> {
        let pooled = self.blocking.lock().pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => self
                .target
                .connect(self.config.max_block + Duration::from_secs(10))
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

    /// Runs `pipe` (which must not be atomic) and returns the replies of its `count` commands
    /// from `offset`, each checked for a server error, and whether the replicas the mesh waits
    /// for confirmed them. When it waits for replicas, a `WAIT` goes last in the same round
    /// trip (on the node the pipeline's keys route to), and a short answer is logged and
    /// counted for `what`.
    async fn query_replicated(
        &self,
        mut pipe: redis::Pipeline,
        offset: usize,
        count: usize,
        what: &'static str,
    ) -> Result<(Vec<Value>, Replicated), RedisError> {
        let wait = self.config.wait_for_replicas;
        if let Some(wait) = wait {
            pipe.cmd("WAIT")
                .arg(wait.replicas)
                .arg(millis(wait.timeout).max(1));
        }
        let asked = count + usize::from(wait.is_some());
        let mut replies =
            redis::aio::ConnectionLike::req_packed_commands(&mut self.conn(), &pipe, offset, asked)
                .await?
                .into_iter()
                .map(Value::extract_error)
                .collect::<Result<Vec<_>, _>>()?;
        let Some(wait) = wait else {
            return Ok((replies, Replicated::Enough));
        };
        let confirmed = match replies.pop() {
            Some(Value::Int(n)) => n,
            _ => 0,
        };
        if confirmed >= i64::from(wait.replicas) {
            return Ok((replies, Replicated::Enough));
        }
        metrics::counter!("swarm_mesh_replication_short_total", "write" => what).increment(1);
        tracing::warn!(
            write = what,
            confirmed,
            wanted = wait.replicas,
            timeout = ?wait.timeout,
            "fewer replicas than asked confirmed a write in time: it stands on the master alone"
        );
        let short = Replicated::Short {
            confirmed,
            wanted: wait.replicas,
            timeout: wait.timeout,
        };
        Ok((replies, short))
    }

    fn return_blocking(&self, conn: Conn) {
        self.blocking.lock().push(conn);
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

impl Stores for RedisMesh {
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
}

#[async_trait]
impl Publish for RedisMesh {
    async fn publish(&self, stream: &str, signal: &Signal) -> Result<EntryId, MeshError> {
        let key = match self.placed_count(stream).await? {
            p if p > 1 => self.key(&crate::partition::partition_stream(
                stream,
                crate::partition::partition_of(signal, p),
                p,
            )),
            _ => self.key(stream),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("XADD").arg(key).arg("*").arg(encode(signal)?);
        let (replies, replicated) = self
            .query_replicated(pipe, 0, 1, "publish")
            .await
            .map_err(unavailable)?;
        let id = replies.first().and_then(text).ok_or_else(|| {
            MeshError::Unavailable(format!("XADD answered {replies:?}, not an entry id"))
        })?;
        let id = parse_id(&id)?;
        match replicated {
            Replicated::Enough => Ok(id),
            Replicated::Short {
                confirmed,
                wanted,
                timeout,
            } => Err(MeshError::NotReplicated(format!(
                "signal {} was written as entry {id}, but {confirmed} of the {wanted} replicas \
                 asked for confirmed it within {timeout:?}: it may not survive a failover",
                signal.id
            ))),
        }
    }
}
