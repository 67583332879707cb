//! Per-key order within a partition: a signal runs only once every signal of its key read
//! before it has settled. Entries of other keys (and undecodable ones, which have no key) run
//! side by side.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use swarm_mesh::Delivery;
use swarm_mesh::partition::order_key;
use tokio::sync::Notify;

use super::InFlight;

/// The order keys of one partition that have an entry running, each with the entries of that
/// key read since, waiting their turn.
pub(super) struct KeyOrder {
    partition: u32,
    keys: Mutex<Keys>,
    changed: Notify,
}

#[derive(Default)]
struct Keys {
    waiting: HashMap<u64, VecDeque<Delivery>>,
    held: usize,
    /// The kinds seen, each shared by every entry of its kind in flight.
    kinds: HashMap<Box<str>, Arc<str>>,
}

/// Kinds kept for sharing before the set starts again (a mesh has a few dozen).
const KINDS_KEPT: usize = 1024;

impl Keys {
    /// `kind`, shared: one allocation per kind rather than per entry.
    fn kind(&mut self, kind: &str) -> Arc<str> {
        if let Some(shared) = self.kinds.get(kind) {
            return Arc::clone(shared);
        }
        if self.kinds.len() >= KINDS_KEPT {
            self.kinds.clear();
        }
        let shared: Arc<str> = Arc::from(kind);
        self.kinds.insert(kind.into(), Arc::clone(&shared));
        shared
    }
}

/// The order key of a delivery; undecodable entries have none.
pub(super) fn key_of(delivery: &Delivery) -> Option<u64> {
    delivery.body.as_ref().ok().map(order_key)
}

impl KeyOrder {
    pub(super) fn new(partition: u32) -> Self {
        Self {
            partition,
            keys: Mutex::new(Keys::default()),
            changed: Notify::new(),
        }
    }

    /// Takes newly read deliveries in read order: marks each in flight (one already in flight
    /// here, claimed back while it runs, is dropped), and returns those whose key has nothing
    /// running; the others wait behind their key.
    pub(super) fn admit(&self, deliveries: Vec<Delivery>, in_flight: &InFlight) -> Vec<Delivery> {
        let mut keys = self.keys.lock();
        let mut run = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let kind = keys.kind(delivery.body.as_ref().map_or("", |s| s.kind.as_str()));
            if in_flight
                .insert((self.partition, delivery.id), kind)
                .is_some()
            {
                continue;
            }
            let Some(key) = key_of(&delivery) else {
                run.push(delivery);
                continue;
            };
            match keys.waiting.get_mut(&key) {
                Some(queue) => {
                    queue.push_back(delivery);
                    keys.held += 1;
                }
                None => {
                    keys.waiting.insert(key, VecDeque::new());
                    run.push(delivery);
                }
            }
        }
        run
    }

    /// The entries of `keys` have settled (or given up): returns the next entry of each key
    /// that has one waiting.
    pub(super) fn release(&self, done: impl IntoIterator<Item = u64>) -> Vec<Delivery> {
        let mut keys = self.keys.lock();
        let mut next = Vec::new();
        for key in done {
            let Some(queue) = keys.waiting.get_mut(&key) else {
                continue;
            };
            match queue.pop_front() {
                Some(delivery) => {
                    next.push(delivery);
                    keys.held -= 1;
                }
                None => {
                    keys.waiting.remove(&key);
                }
            }
        }
        drop(keys);
        self.changed.notify_waiters();
        next
    }

    /// Entries waiting behind their key.
    pub(super) fn held(&self) -> usize {
        self.keys.lock().held
    }

    /// Waits until at most `most` entries wait behind their key.
    pub(super) async fn room(&self, most: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.held() <= most {
                return;
            }
            changed.await;
        }
    }

    /// Waits until no key has an entry running or waiting.
    pub(super) async fn idle(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.keys.lock().waiting.is_empty() {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dashmap::DashMap;
    use serde_json::json;
    use swarm_mesh::EntryId;
    use swarm_schemas::Signal;

    fn delivery(seq: u64, key: &str) -> Delivery {
        let mut signal = Signal::new("a.b", json!({ "seq": seq }));
        signal.partition_key = Some(key.to_owned());
        Delivery {
            id: EntryId { ms: 1, seq },
            body: Ok(signal),
            deliveries: 1,
            json: None,
        }
    }

    fn seqs(deliveries: &[Delivery]) -> Vec<u64> {
        deliveries.iter().map(|d| d.id.seq).collect()
    }

    #[test]
    fn entries_of_one_kind_in_flight_share_its_name() {
        let order = KeyOrder::new(0);
        let in_flight = DashMap::new();
        order.admit(vec![delivery(1, "a"), delivery(2, "b")], &in_flight);
        let kind = |seq| {
            in_flight
                .get(&(0, EntryId { ms: 1, seq }))
                .map(|k| Arc::clone(k.value()))
                .expect("in flight")
        };
        assert_eq!(&*kind(1), "a.b");
        assert!(Arc::ptr_eq(&kind(1), &kind(2)));
    }

    #[tokio::test]
    async fn one_entry_per_key_runs_and_the_rest_follow_in_order() {
        let order = KeyOrder::new(0);
        let in_flight = DashMap::new();
        let run = order.admit(
            vec![
                delivery(1, "a"),
                delivery(2, "b"),
                delivery(3, "a"),
                delivery(4, "a"),
            ],
            &in_flight,
        );
        assert_eq!(seqs(&run), vec![1, 2]);
        assert_eq!(order.held(), 2);
        // Read again while running: dropped, not queued behind itself.
        assert!(order.admit(vec![delivery(1, "a")], &in_flight).is_empty());
        let a = key_of(&run[0]).expect("key");
        let b = key_of(&run[1]).expect("key");
        assert_eq!(seqs(&order.release([a, b])), vec![3]);
        assert_eq!(
            seqs(&order.admit(vec![delivery(5, "b")], &in_flight)),
            vec![5]
        );
        assert_eq!(seqs(&order.release([a])), vec![4]);
        assert_eq!(order.held(), 0);
        order.release([a, b]);
        tokio::time::timeout(std::time::Duration::from_secs(1), order.idle())
            .await
            .expect("idle once every key is released");
    }
}
