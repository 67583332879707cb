//! Partitions: a stream split into P streams, so that several processes (and, on a Redis
//! Cluster, several shards) share its load while each key's signals keep their order.
//!
//! Partition `k` of stream `S` is the mesh stream `S#k` (its dead letters `S#k:dead`); with one
//! partition the stream is `S` itself, as an unpartitioned stream always was. A signal's
//! partition is `xxh3_64(key) mod P`, where the key is the signal's `partition_key`, or its
//! `correlation_id` as lowercase hyphenated text ([`Signal::with_partition_key_bytes`]), so a
//! conversation stays in one partition. Publishing to `S` places the signal in its partition
//! when `S` has more than one; the count is fixed when the stream is created and recorded on
//! the mesh ([`Partitions::partitions`]).
//!
//! Each partition is read by one process at a time: it holds the partition's lease, kept alive
//! while it reads. Processes announce themselves with a heartbeat; partition `k` belongs to
//! the `k mod n`-th of the `n` live members in name order, so when one joins, leaves or dies
//! the others see it at their next heartbeat and move leases accordingly.
//!
//! A lease alone does not stop a process that was paused past it (a stopped VM, a stall, a
//! network partition) from writing when it wakes: its settles are fenced. Each is made with
//! [`Consume::settle_batch_leased`](crate::Consume::settle_batch_leased), which checks the
//! lease in the same atomic step as the emits and acknowledgements, and writes nothing when
//! the lease has gone to another process or run out.

use std::time::Duration;

use async_trait::async_trait;
use swarm_schemas::Signal;

use crate::MeshError;

/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// The partition of `signal` among `partitions`.
pub fn partition_of(signal: &Signal, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    let hash = signal.with_partition_key_bytes(xxhash_rust::xxh3::xxh3_64);
    u32::try_from(hash % u64::from(partitions)).unwrap_or(0)
}

/// The order key of `signal` within a process: signals with equal keys are handled one after
/// another. (The same hash as [`partition_of`]; two keys that collide are merely kept in order
/// with each other.)
pub fn order_key(signal: &Signal) -> u64 {
    signal.with_partition_key_bytes(xxhash_rust::xxh3::xxh3_64)
}

/// The mesh stream that holds partition `partition` of `stream`.
pub fn partition_stream(stream: &str, partition: u32, partitions: u32) -> String {
    if partitions <= 1 {
        stream.to_owned()
    } else {
        partition_name(stream, partition)
    }
}

/// `S#k`: the name of partition `partition` of `stream` on a partitioned mesh, its stream's
/// and its lease's.
pub(crate) fn partition_name(stream: &str, partition: u32) -> String {
    format!("{stream}#{partition}")
}

/// Splits a mesh stream name into `(base, partition, rest)` when it names a partition: the
/// first `#` followed by digits that end the name or a `:` (`S#k` and `S#k:dead` give
/// `("S", k, "")` and `("S", k, ":dead")`).
pub fn split_partition(name: &str) -> Option<(&str, u32, &str)> {
    name.match_indices('#').find_map(|(at, _)| {
        let after = &name[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let rest = &after[digits..];
        let ends = rest.is_empty() || rest.starts_with(':');
        if at == 0 || digits == 0 || !ends {
            return None;
        }
        Some((&name[..at], after[..digits].parse().ok()?, rest))
    })
}

/// The `(stream, partition)` whose lease a settle on the mesh stream `stream` is made under:
/// only a partition (`S#k`) has a lease.
pub(crate) fn leased(stream: &str) -> Result<(&str, u32), MeshError> {
    match split_partition(stream) {
        Some((base, partition, "")) => Ok((base, partition)),
        _ => Err(MeshError::Partitions(format!(
            "`{stream}` is not a partition of a stream: only a partition has a lease"
        ))),
    }
}

/// What a settle on partition stream `stream` under `owner`'s lease fails with when `holder`
/// holds the lease instead (or nobody does).
pub(crate) fn fenced(stream: &str, owner: &str, holder: Option<&str>) -> MeshError {
    let now = match holder {
        Some(holder) => format!("`{holder}` holds it now"),
        None => "nobody holds it: it ran out or was given up".to_owned(),
    };
    MeshError::Fenced(format!(
        "`{owner}` no longer holds the lease of `{stream}` ({now}); nothing was written"
    ))
}

/// Checks a partition count asked for by a user.
pub fn check_partitions(partitions: u32) -> Result<u32, MeshError> {
    if (1..=MAX_PARTITIONS).contains(&partitions) {
        Ok(partitions)
    } else {
        Err(MeshError::Partitions(format!(
            "a stream has from 1 to {MAX_PARTITIONS} partitions, not {partitions}"
        )))
    }
}

/// The partitions `member` should read: partition `k` goes to the `k mod n`-th of the `n`
/// live `members` in name order (every process must agree on that order, so it is sorted
/// here whatever order `members` come in). Empty when `member` is not among them.
pub fn assigned(members: &[String], member: &str, partitions: u32) -> Vec<u32> {
    let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
    members.sort_unstable();
    members.dedup();
    let Some(at) = members.iter().position(|m| *m == member) else {
        return Vec::new();
    };
    let n = members.len() as u32;
    (0..partitions).filter(|k| k % n == at as u32).collect()
}

/// The layout of partitioned streams on a mesh: their recorded partition counts, the members
/// reading them, and the lease of each partition.
#[async_trait]
pub trait Partitions: Send + Sync + 'static {
    /// The partition count of `stream`. When none is recorded yet, `wanted` is recorded (by the
    /// first caller to ask; any other caller gets what was recorded), or 1 is answered without
    /// recording anything when `wanted` is `None`.
    async fn partitions(&self, stream: &str, wanted: Option<u32>) -> Result<u32, MeshError>;

    /// Says that `member` reads `stream` and is alive for `ttl` more; returns the live
    /// members, sorted by name.
    async fn heartbeat(
        &self,
        stream: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, MeshError>;

    /// Says that `member` no longer reads `stream`.
    async fn leave(&self, stream: &str, member: &str) -> Result<(), MeshError>;

    /// Takes the lease of `partition` of `stream` for `owner`, or keeps it for `ttl` more when
    /// `owner` holds it already. False when another owner holds it.
    async fn lease(
        &self,
        stream: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, MeshError>;

    /// Gives up the lease of `partition` when `owner` holds it; says whether it did.
    async fn release(&self, stream: &str, partition: u32, owner: &str) -> Result<bool, MeshError>;

    /// Who holds the lease of `partition` of `stream`, if anyone.
    async fn lease_owner(&self, stream: &str, partition: u32) -> Result<Option<String>, MeshError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(partition_stream("signals", 0, 1), "signals");
        assert_eq!(partition_stream("signals", 3, 8), "signals#3");
        assert_eq!(split_partition("signals#3"), Some(("signals", 3, "")));
        assert_eq!(
            split_partition("signals#3:dead"),
            Some(("signals", 3, ":dead"))
        );
        assert_eq!(split_partition("signals"), None);
        assert_eq!(split_partition("signals:dead"), None);
        assert_eq!(split_partition("a#b"), None);
        assert_eq!(split_partition("#3"), None);
        assert_eq!(split_partition("a#"), None);
        assert_eq!(split_partition("a:b#3"), Some(("a:b", 3, "")));
        assert_eq!(split_partition("a:b#3:dead"), Some(("a:b", 3, ":dead")));
        assert_eq!(split_partition("a#b#2"), Some(("a#b", 2, "")));
    }

    #[test]
    fn a_key_has_one_partition_and_keys_spread() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            let mut signal = Signal::new("a.b", serde_json::json!({}));
            signal.partition_key = Some(format!("key-{i}"));
            let p = partition_of(&signal, 8);
            assert_eq!(p, partition_of(&signal, 8));
            counts[p as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        // Without a key, the conversation decides, so a child lands with its parent.
        let root = Signal::new("a.b", serde_json::json!({}));
        let child = root.child(
            uuid_v7(),
            swarm_schemas::Emit::new("a.c", serde_json::json!({})),
        );
        assert_eq!(partition_of(&root, 16), partition_of(&child, 16));
        assert_eq!(order_key(&root), order_key(&child));
    }

    #[test]
    fn the_hash_is_xxh3_of_the_key_text() {
        // What every other publisher (a client in another language) must compute.
        let mut signal = Signal::new("a.b", serde_json::json!({}));
        signal.partition_key = Some("customer-42".into());
        assert_eq!(
            u64::from(partition_of(&signal, 1000)),
            xxhash_rust::xxh3::xxh3_64(b"customer-42") % 1000
        );
        signal.partition_key = None;
        let text = signal.correlation_id.to_string();
        assert_eq!(
            u64::from(partition_of(&signal, 7)),
            xxhash_rust::xxh3::xxh3_64(text.as_bytes()) % 7
        );
    }

    #[test]
    fn members_share_partitions_by_name_order() {
        let members = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(assigned(&members, "a", 8), vec![0, 3, 6]);
        assert_eq!(assigned(&members, "b", 8), vec![1, 4, 7]);
        assert_eq!(assigned(&members, "c", 8), vec![2, 5]);
        assert!(assigned(&members, "d", 8).is_empty());
        let shuffled = vec!["c".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(
            assigned(&shuffled, "a", 8),
            vec![0, 3, 6],
            "any order of members"
        );
        assert!(check_partitions(0).is_err());
        assert_eq!(check_partitions(4), Ok(4));
    }

    fn uuid_v7() -> swarm_schemas::ExecutionId {
        swarm_schemas::ExecutionId::now_v7()
    }
}
