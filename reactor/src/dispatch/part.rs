//! A partition this process reads, and what it knows of the partition's lease.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use swarm_mesh::EntryId;

use swarm_mesh::partition::partition_stream;

use super::order::KeyOrder;

/// One partition this process reads: its stream, the order of its keys, and its lease when it
/// has one (a partition of a partitioned stream).
pub(crate) struct Part {
    pub(super) index: u32,
    pub(super) stream: String,
    pub(super) order: KeyOrder,
    lease: Option<Lease>,
    /// How long this process has surely held what it has in flight (see [`Held`]).
    held: Held,
}

/// What this process knows of how long its entries in flight are safe from other consumers'
/// claims: every entry it holds was delivered to it, or kept alive, no earlier than `kept`
/// (bar those a keep-alive found gone, in `lost`). A settle later than `kept` plus half the
/// claim time, or of a lost entry, is checked entry by entry in Redis (the settle of a shared
/// stream, whose entries have no lease to fence them).
struct Held {
    since: Instant,
    /// Milliseconds after `since`.
    kept: AtomicU64,
    /// When the read in flight was sent, in milliseconds after `since` (`u64::MAX`: none).
    reading: AtomicU64,
    /// Entries in flight a keep-alive found no longer this consumer's.
    lost: Mutex<HashSet<EntryId>>,
}

impl Held {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            kept: AtomicU64::new(0),
            reading: AtomicU64::new(u64::MAX),
            lost: Mutex::new(HashSet::new()),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.since).as_millis()).unwrap_or(u64::MAX)
    }
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
            held: Held::new(),
        })
    }

    /// Partition `index` of `partitions`, whose lease this process holds until `until`.
    pub(super) fn leased(stream: &str, index: u32, partitions: u32, until: Instant) -> Arc<Self> {
        Arc::new(Self {
            index,
            stream: partition_stream(stream, index, partitions),
            order: KeyOrder::new(index),
            lease: Some(Lease::new(until)),
            held: Held::new(),
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

    /// A read of the partition is being sent: what it brings is delivered from now on.
    pub(super) fn reading(&self) {
        let now = self.held.ms(Instant::now());
        self.held.reading.store(now, Ordering::Release);
    }

    /// The read sent last has been answered, and what it brought is in flight.
    pub(super) fn read_done(&self) {
        self.held.reading.store(u64::MAX, Ordering::Release);
    }

    /// A keep-alive of every entry in flight at `collected` was answered: each is safe from
    /// claims from then on, but those in `gone` (and what a read still in flight brings, from
    /// when it was sent).
    pub(super) fn kept_alive(&self, collected: Instant, gone: &[EntryId]) {
        let kept = self
            .held
            .ms(collected)
            .min(self.held.reading.load(Ordering::Acquire));
        self.held.kept.fetch_max(kept, Ordering::AcqRel);
        if !gone.is_empty() {
            self.held.lost.lock().extend(gone.iter().copied());
        }
    }

    /// Entries whose hold is not known (taken over from before a restart): settled only after
    /// a check, as if a keep-alive had found them gone.
    pub(super) fn unsure_of(&self, ids: impl IntoIterator<Item = EntryId>) {
        self.held.lost.lock().extend(ids);
    }

    /// Whether a settle of `ids` now must check, entry by entry, that each is still this
    /// consumer's: the last keep-alive is older than `margin`, or one of them was found gone.
    pub(super) fn unsure(&self, ids: &[EntryId], margin: Duration) -> bool {
        let kept = self.held.kept.load(Ordering::Acquire);
        let now = self.held.ms(Instant::now());
        if now.saturating_sub(kept) > u64::try_from(margin.as_millis()).unwrap_or(u64::MAX) {
            return true;
        }
        let lost = self.held.lost.lock();
        !lost.is_empty() && ids.iter().any(|id| lost.contains(id))
    }

    /// Entries `ids` are no longer in flight here.
    pub(super) fn let_go(&self, ids: &[EntryId]) {
        let mut lost = self.held.lost.lock();
        if !lost.is_empty() {
            for id in ids {
                lost.remove(id);
            }
        }
    }

    /// Whether the partition may be read now: shared, or leased and held by this process's
    /// clock (a process that was paused past its lease reads nothing until it is renewed).
    pub(super) fn may_read(&self) -> bool {
        self.lease
            .as_ref()
            .is_none_or(|l| l.held() && !l.fenced.load(Ordering::Acquire))
    }
}
