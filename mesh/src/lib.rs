//! The mesh: the shared medium that signals flow through.
//!
//! The [`Mesh`] trait has the semantics of Redis Streams consumer groups: append-only streams of
//! entries; named groups that each see every entry; within a group each entry goes to one
//! consumer and stays on the group's pending list until acknowledged; entries idle too long
//! can be claimed by another consumer; delivery counts grow with every delivery, so a poison
//! entry can be dead-lettered. `RedisMesh` (feature `redis`) implements them on Redis Streams,
//! so reactors in several processes and machines share one mesh; [`InProcMesh`] implements the
//! same semantics in-process for tests and zero-setup runs. Both pass one behaviour suite
//! (`testkit`).
//!
//! The mesh knows nothing of units, the reactor or memory: it moves [`Signal`]s.

mod entry_id;
mod inproc;
mod inproc_partitions;
pub mod partition;
#[cfg(feature = "redis")]
mod redis_streams;
pub mod stores;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

/// Every role trait, for code that calls mesh methods on a concrete mesh
/// (`use swarm_mesh::prelude::*;`).
pub mod prelude {
    pub use crate::{Consume, Groups, Mesh, Observe, Partitions, Publish, Stores};
}

use std::time::Duration;

use async_trait::async_trait;
use swarm_schemas::Signal;

pub use entry_id::{BadEntryId, EntryId};
pub use inproc::InProcMesh;
pub use partition::Partitions;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use redis_streams::fuzzing;
#[cfg(feature = "redis")]
pub use redis_streams::{
    RedisConnection, RedisKv, RedisMarks, RedisMesh, RedisMeshConfig, WaitForReplicas,
};
pub use stores::inproc::{InProcKv, InProcMarks, InProcUnitControls};
pub use stores::{Kv, Marks, StoreError, UnitControls};

/// Why a mesh operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// The consumer group does not exist on that stream.
    #[error("no consumer group `{group}` on stream `{stream}`")]
    NoGroup {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// A signal could not be encoded for the wire.
    #[error("signal could not be encoded: {0}")]
    Encode(String),
    /// A partition count that is out of range, or differs from the one recorded.
    #[error("{0}")]
    Partitions(String),
    /// The backing service is unreachable or refused the command.
    #[error("mesh unavailable: {0}")]
    Unavailable(String),
    /// A write the mesh made, but fewer replicas confirmed in time than it waits for: it stands
    /// on the primary alone (see `WaitForReplicas`).
    #[error("not replicated: {0}")]
    NotReplicated(String),
    /// A settle made under a partition's lease that another process holds now, or nobody (it
    /// ran out): nothing was written (see [`Consume::settle_batch_leased`]).
    #[error("fenced: {0}")]
    Fenced(String),
}

/// An entry whose data is not a signal (garbage written by another tool, or trimmed data).
/// It is kept as data so it can be dead-lettered with its raw text rather than lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// The raw entry, as text.
    pub raw: String,
    /// Why it is not a signal.
    pub error: String,
}

/// The data of an entry: a signal, or what could not be decoded.
pub type Body = Result<Signal, Undecodable>;

/// An entry read from a stream without a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its id.
    pub id: EntryId,
    /// Its data.
    pub body: Body,
}

/// An entry delivered to a consumer of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id.
    pub id: EntryId,
    /// Its data.
    pub body: Body,
    /// How many times it has been delivered in this group, this delivery included.
    pub deliveries: u32,
    /// The signal's JSON as it was read, when it travelled as JSON (none in process, or for
    /// MessagePack): a unit is handed these bytes as they are instead of the signal encoded
    /// again.
    pub json: Option<std::sync::Arc<[u8]>>,
}

/// One entry to acknowledge, with the signals to add in the same atomic step.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The entry to acknowledge.
    pub id: EntryId,
    /// `(stream, signal)` pairs to append.
    pub emits: Vec<(String, Signal)>,
}

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Every entry still in the stream.
    Beginning,
    /// Only entries added after the group is created.
    End,
}

/// One consumer's share of a group's pending list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer name.
    pub name: String,
    /// Entries delivered to it and not yet acknowledged.
    pub pending: u64,
}

/// The state of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupInfo {
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to any consumer of the group.
    pub lag: u64,
    /// Pending entries per consumer.
    pub consumers: Vec<ConsumerInfo>,
}

/// Name of the dead-letter stream that belongs to `stream`. It shares the stream's Redis
/// Cluster hash tag, if the stream name has one.
pub fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}:dead")
}

/// The stores that live on a mesh (see [`stores`]).
pub trait Stores: Send + Sync + 'static {
    /// The field of marks on this mesh, evaporating with `half_life` (see [`stores`]). Every
    /// process on one mesh must use the same half-life: the field refuses another.
    fn marks(&self, half_life: Duration) -> std::sync::Arc<dyn Marks>;

    /// The key-value store on this mesh (see [`stores`]).
    fn kv(&self) -> std::sync::Arc<dyn Kv>;

    /// The units' controls (enabled, quarantined) every reactor on this mesh applies.
    fn unit_controls(&self) -> std::sync::Arc<dyn UnitControls>;
}

/// Adding signals to streams.
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    /// Appends a signal to a stream, creating the stream if needed. When the stream has
    /// partitions, the signal goes to its partition (see [`partition`]).
    async fn publish(&self, stream: &str, signal: &Signal) -> Result<EntryId, MeshError>;
}

/// Consumer groups' life: creating them, and removing what all of them are done with.
#[async_trait]
pub trait Groups: Send + Sync + 'static {
    /// Creates a consumer group (and the stream); does nothing if the group exists.
    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartAt,
    ) -> Result<(), MeshError>;

    /// Removes entries that every group of the stream has delivered and acknowledged; never an
    /// entry still pending or not yet delivered. Returns how many were removed.
    async fn trim_acknowledged(&self, stream: &str) -> Result<u64, MeshError>;

    /// Removes the entries before `before`, then the oldest past `max_len`, whatever any group
    /// still owes: a retention for streams kept for people rather than consumed, such as dead
    /// letters. Returns how many were removed.
    async fn trim_retained(
        &self,
        stream: &str,
        max_len: Option<u64>,
        before: Option<EntryId>,
    ) -> Result<u64, MeshError>;

    /// Removes the entries `ids` (those that exist); returns how many it removed.
    async fn delete(&self, stream: &str, ids: &[EntryId]) -> Result<u64, MeshError>;
}

/// Reading a stream as a consumer of a group: deliveries, acknowledgements, settlements,
/// claims of what another consumer left idle, dead letters.
#[async_trait]
pub trait Consume: Send + Sync + 'static {
    /// Delivers up to `count` entries the group has not delivered yet to `consumer`, waiting up
    /// to `block` for at least one. They join the group's pending list with one delivery.
    async fn read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, MeshError>;

    /// Delivers again up to `count` entries pending for `consumer` itself whose ids come after
    /// `after`, oldest first (what a restarted consumer does before reading new entries: page
    /// by page, each page after the last id of the one before, with `EntryId::ZERO` first).
    /// Each delivery is counted.
    async fn read_own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError>;

    /// Takes over up to `count` entries pending with any consumer (this one included) whose
    /// ids come after `after`, oldest first, however short their idle time, and delivers them
    /// to `consumer`, counting the delivery: what the new sole reader of a partition does with
    /// what its previous reader left (page by page, as with `read_own_pending`).
    async fn claim_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError>;

    /// Those of `ids` still on the group's pending list (in the order given): what a settle
    /// whose answer was lost checks before it is tried again, so it never emits twice.
    async fn pending_among(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, MeshError>;

    /// Acknowledges entries: they leave the pending list. Returns how many were pending.
    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> Result<u64, MeshError>;

    /// Atomically appends `emits` (each to its stream) and acknowledges `id`: either all of it
    /// happens or none does, so a crash cannot emit twice for one acknowledged entry.
    async fn settle(
        &self,
        stream: &str,
        group: &str,
        id: EntryId,
        emits: &[(String, Signal)],
    ) -> Result<Vec<EntryId>, MeshError> {
        let settlement = Settlement {
            id,
            emits: emits.to_vec(),
        };
        Ok(self
            .settle_batch(stream, group, &[settlement])
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// Settles several entries at once: all their emits and acknowledgements happen together
    /// or not at all (one round trip where the backend allows). Returns the new ids per
    /// settlement, in order.
    async fn settle_batch(
        &self,
        stream: &str,
        group: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError>;

    /// [`settle_batch`](Self::settle_batch) on a partition (`stream` is `S#k`, see
    /// [`partition`]), made only if `owner` holds the partition's lease when it runs, in the
    /// same atomic step: when another process holds it, or nobody, nothing is written and
    /// [`MeshError::Fenced`] is returned. A process paused past its lease (a stopped VM, a long
    /// GC-like stall, a network partition) cannot then emit for entries the partition's new
    /// reader has taken over and handled.
    async fn settle_batch_leased(
        &self,
        stream: &str,
        group: &str,
        owner: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError>;

    /// [`settle_batch`](Self::settle_batch) of only those entries still pending with
    /// `consumer` when it runs, in the same atomic step; each of the others is left as it is,
    /// `None` in its place. For a reader of a shared stream that settles late: an entry it held
    /// past the group's claim time may have been claimed, run and settled by another consumer,
    /// and must not emit twice.
    async fn settle_batch_owned(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Option<Vec<EntryId>>>, MeshError>;

    /// Takes over up to `count` entries of the group that have been pending (with any consumer)
    /// for at least `min_idle`, and delivers them to `consumer`, counting the delivery.
    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError>;

    /// Resets the idle time of entries `consumer` is still working on, so they are not claimed
    /// while running. Does not count a delivery. Returns those of `ids` no longer pending with
    /// `consumer` (settled meanwhile, or claimed by another consumer), which it leaves alone.
    async fn keep_alive(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, MeshError>;

    /// Atomically appends `letter` to the stream's dead-letter stream and acknowledges `id`.
    async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        id: EntryId,
        letter: &Signal,
    ) -> Result<EntryId, MeshError> {
        let ids = self
            .settle(
                stream,
                group,
                id,
                &[(dead_letter_stream(stream), letter.clone())],
            )
            .await?;
        ids.first()
            .copied()
            .ok_or_else(|| MeshError::Unavailable("dead letter was not added".into()))
    }
}

/// Watching streams and groups from outside: lengths, ranges, live tails, group state.
#[async_trait]
pub trait Observe: Send + Sync + 'static {
    /// Pending count, lag and per-consumer pending of a group.
    async fn group_info(&self, stream: &str, group: &str) -> Result<GroupInfo, MeshError>;

    /// For each of `ids`, whether the group has settled it: delivered to one of its consumers
    /// and acknowledged since. What a caller waiting for a conversation to end asks (an entry's
    /// emits are on the stream before its acknowledgement).
    async fn settled(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<bool>, MeshError>;

    /// Up to `count` entries with ids after `after` (from the start when `None`), outside any
    /// group: for reading dead letters and for tools.
    async fn range(
        &self,
        stream: &str,
        after: Option<EntryId>,
        count: usize,
    ) -> Result<Vec<Entry>, MeshError>;

    /// Number of entries in the stream (0 if it does not exist).
    async fn len(&self, stream: &str) -> Result<u64, MeshError>;

    /// Id of the newest entry of the stream ([`EntryId::ZERO`] if it is empty or does not
    /// exist): where a [`tail`](Observe::tail) that wants only what comes next starts.
    async fn last_id(&self, stream: &str) -> Result<EntryId, MeshError>;

    /// Up to `count` entries with ids after `after`, outside any group, waiting up to `block`
    /// for the first when there are none yet (XREAD BLOCK): for watching a stream live.
    async fn tail(
        &self,
        stream: &str,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, MeshError>;
}

/// A whole mesh of streams with consumer groups: every role. See the crate docs for the
/// semantics. Code that needs only some of them takes those roles (the inspector publishes
/// and observes); anything that implements every role is a `Mesh`.
pub trait Mesh: Stores + Publish + Groups + Consume + Observe + Partitions {}

impl<T: Stores + Publish + Groups + Consume + Observe + Partitions + ?Sized> Mesh for T {}
