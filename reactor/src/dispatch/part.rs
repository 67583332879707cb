//! A partition this process reads, and what it knows of the partition's lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use swarm_mesh::partition::partition_stream;

use super::order::KeyOrder;

/// One partition this process reads: its stream, the order of its keys, and its lease when it
/// has one (a partition of a partitioned stream).
pub(crate) struct Part {
    pub(super) index: u32,
    pub(super) stream: String,
    pub(super) order: KeyOrder,
    lease: Option<Lease>,
}

/// What this process knows of a partition's lease: until when it holds it, by its own clock
/// (from before the renewal was asked for, so never later than Redis's), and whether a settle
/// found it gone.
struct Lease {
    since: Instant,
    /// Milliseconds after `since`.
    until: AtomicU64,
    fenced: AtomicBool,
}

impl Lease {
    fn new(until: Instant) -> Self {
        let lease = Self {
            since: Instant::now(),
            until: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
        };
        lease.renewed(until);
        lease
    }

    fn renewed(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.since).as_millis();
        self.until
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    fn held(&self) -> bool {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.until.load(Ordering::Acquire)
    }
}

impl Part {
    /// The one partition of an unpartitioned stream, shared by every process of the group.
    pub(super) fn shared(stream: &str) -> Arc<Self> {
        Arc::new(Self {
            index: 0,
            stream: stream.to_owned(),
            order: KeyOrder::new(0),
            lease: None,
        })
    }

    /// Partition `index` of `partitions`, whose lease this process holds until `until`.
    pub(super) fn leased(stream: &str, index: u32, partitions: u32, until: Instant) -> Arc<Self> {
        Arc::new(Self {
            index,
            stream: partition_stream(stream, index, partitions),
            order: KeyOrder::new(index),
            lease: Some(Lease::new(until)),
        })
    }

    /// The lease was renewed until `until`.
    pub(super) fn renewed(&self, until: Instant) {
        if let Some(lease) = &self.lease {
            lease.renewed(until);
        }
    }

    /// A settle found the lease gone to another process, or run out: what this process read of
    /// the partition is no longer its to settle, and it reads no more.
    pub(super) fn fence(&self) {
        if let Some(lease) = &self.lease {
            lease.fenced.store(true, Ordering::Release);
        }
    }

    /// Whether a settle or a renewal found the lease gone.
    pub(super) fn fenced(&self) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|l| l.fenced.load(Ordering::Acquire))
    }

    /// Whether its settles are made under its lease (a partition of a partitioned stream).
    pub(super) fn has_lease(&self) -> bool {
        self.lease.is_some()
    }

    /// Whether the partition may be read now: shared, or leased and held by this process's
    /// clock (a process that was paused past its lease reads nothing until it is renewed).
    pub(super) fn may_read(&self) -> bool {
        self.lease
            .as_ref()
            .is_none_or(|l| l.held() && !l.fenced.load(Ordering::Acquire))
    }
}
