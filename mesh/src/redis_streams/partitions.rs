//! Partition counts, members and leases on Redis (see [`crate::partition`]). The count and the
//! members live under the mesh's own hash tag: `{P}:partitions:S` (the count) and
//! `{P}:members:S` (a sorted set of members scored by when their heartbeat runs out, on the
//! server's clock). A partition's lease lives under the partition's hash tag, beside its
//! stream, so that a settle can check it in the same atomic step: `{P#k}:lease:S` (the owner,
//! expiring with the lease).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{RedisMesh, millis, unavailable};
use crate::{MeshError, Partitions, partition};

/// How long a stream with no recorded count is taken to have one partition before asking
/// again (a reactor may record one at any time).
const UNRECORDED_FOR: Duration = Duration::from_secs(1);

/// Counts seen per stream: a recorded one for good, an unrecorded one until it is re-checked.
#[derive(Default)]
pub(super) struct Counts(RwLock<HashMap<String, (u32, Option<Instant>)>>);

/// Records the member's heartbeat, forgets members whose heartbeat ran out, returns the rest.
const HEARTBEAT: &str = r"#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 4)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// Takes a free lease or extends one the caller holds.
const LEASE: &str = r"#!lua
local owner = redis.call('GET', KEYS[1])
if owner == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Deletes the lease when the caller holds it.
const RELEASE: &str = r"#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The scripts, each hashed once (redis-rs sends `EVALSHA` by that hash, and the script
/// itself only when the server does not have it yet).
static HEARTBEAT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(HEARTBEAT));
static LEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LEASE));
static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE));

impl RedisMesh {
    fn layout_key(&self, what: &str, stream: &str) -> String {
        format!("{{{}}}:{what}:{stream}", self.config.key_prefix)
    }

    /// The key of the lease of `partition` of `stream`, in the partition's slot.
    pub(super) fn lease_key(&self, stream: &str, partition: u32) -> String {
        format!("{{{}#{partition}}}:lease:{stream}", self.config.key_prefix)
    }

    /// The partition count that places a signal published to `stream` (1 for a partition
    /// stream itself, or a stream none recorded).
    pub(super) async fn placed_count(&self, stream: &str) -> Result<u32, MeshError> {
        if partition::split_partition(stream).is_some() {
            return Ok(1);
        }
        if let Some(&(count, until)) = self.partition_counts.0.read().get(stream) {
            if until.is_none_or(|until| Instant::now() < until) {
                return Ok(count);
            }
        }
        self.partitions(stream, None).await
    }
}

#[async_trait]
impl Partitions for RedisMesh {
    async fn partitions(&self, stream: &str, wanted: Option<u32>) -> Result<u32, MeshError> {
        let key = self.layout_key("partitions", stream);
        if let Some(wanted) = wanted {
            let wanted = partition::check_partitions(wanted)?;
            let _: redis::Value = redis::cmd("SET")
                .arg(&key)
                .arg(wanted)
                .arg("NX")
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        let recorded: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let (count, until) = match recorded {
            Some(text) => {
                let count = text.parse().map_err(|_| {
                    MeshError::Partitions(format!(
                        "the partition count recorded at `{key}` is not a number: `{text}`"
                    ))
                })?;
                (partition::check_partitions(count)?, None)
            }
            None => (1, Some(Instant::now() + UNRECORDED_FOR)),
        };
        self.partition_counts
            .0
            .write()
            .insert(stream.to_owned(), (count, until));
        Ok(count)
    }

    async fn heartbeat(
        &self,
        stream: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, MeshError> {
        let mut members: Vec<String> = HEARTBEAT_SCRIPT
            .key(self.layout_key("members", stream))
            .arg(member)
            .arg(millis(ttl).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // The set is ordered by expiry; members are listed by name.
        members.sort_unstable();
        Ok(members)
    }

    async fn leave(&self, stream: &str, member: &str) -> Result<(), MeshError> {
        let _: i64 = redis::cmd("ZREM")
            .arg(self.layout_key("members", stream))
            .arg(member)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn lease(
        &self,
        stream: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, MeshError> {
        let taken: i64 = LEASE_SCRIPT
            .key(self.lease_key(stream, partition))
            .arg(owner)
            .arg(millis(ttl).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    async fn release(&self, stream: &str, partition: u32, owner: &str) -> Result<bool, MeshError> {
        let released: i64 = RELEASE_SCRIPT
            .key(self.lease_key(stream, partition))
            .arg(owner)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(released == 1)
    }

    async fn lease_owner(&self, stream: &str, partition: u32) -> Result<Option<String>, MeshError> {
        redis::cmd("GET")
            .arg(self.lease_key(stream, partition))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}
