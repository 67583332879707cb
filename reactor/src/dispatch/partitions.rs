//! Reading a partitioned stream: each partition is read by the one process holding its lease.
//!
//! Every `lease_ttl / 3` the process renews its membership and learns the live members; the
//! partitions it should read are those [`assigned`] to it. It takes the lease of each it
//! should read and does not hold (when the previous holder has given it up or let it run
//! out), renews the ones it holds, and gives up the ones it should no longer read once what
//! it read from them has settled (it keeps renewing them meanwhile, so nobody reads behind
//! it). A partition whose lease it finds taken by another stops at once. A process paused past
//! its lease reads nothing more until it has renewed it, and its settles are fenced (see
//! [`swarm_mesh::partition`]): a settle that finds the lease gone writes nothing, and the
//! partition's reader stops, leaving what it read to whoever takes the partition next.

use std::collections::HashMap;
use std::sync::Arc;

use swarm_mesh::partition::assigned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Dispatcher, Part, Taking};

/// A partition this process holds the lease of.
struct Held {
    part: Arc<Part>,
    stop: watch::Sender<bool>,
    reading: JoinHandle<()>,
    /// Asked to stop: it gives the partition up once drained.
    leaving: bool,
}

impl Dispatcher {
    /// Reads the partitions this process holds leases on, until `shutdown`; then drains them,
    /// gives their leases up and leaves.
    pub(super) async fn run_leased(
        self: Arc<Self>,
        partitions: u32,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let c = Arc::clone(&self.config);
        let ttl = c.lease_ttl;
        let mut held: HashMap<u32, Held> = HashMap::new();
        let mut tick = tokio::time::interval(ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let members = match self.mesh.heartbeat(&c.stream, &c.consumer, ttl).await {
                Ok(members) => members,
                Err(error) => {
                    tracing::warn!(%error, "cannot renew membership; retrying");
                    continue;
                }
            };
            let wanted = assigned(&members, &c.consumer, partitions);
            // Renew what is held; let go of what is no longer ours.
            let mut gone = Vec::new();
            for (&k, h) in &mut held {
                if h.part.fenced() {
                    // A settle found the lease gone: the reader stops by itself, and what it
                    // read is left pending. The partition is not renewed, and not taken again
                    // until the reader has ended, so that a new reader (in this process or
                    // another) takes over everything pending and nothing is settled twice.
                    if h.reading.is_finished() {
                        gone.push(k);
                    } else {
                        let _ = h.stop.send(true);
                    }
                    continue;
                }
                if h.leaving && h.reading.is_finished() {
                    if let Err(error) = self.mesh.release(&c.stream, k, &c.consumer).await {
                        tracing::warn!(%error, partition = k, "cannot give up a lease; it runs out");
                    }
                    tracing::info!(partition = k, "gave up partition");
                    gone.push(k);
                    continue;
                }
                let asked = std::time::Instant::now();
                match self.mesh.lease(&c.stream, k, &c.consumer, ttl).await {
                    Ok(true) => h.part.renewed(asked + ttl),
                    Ok(false) => {
                        tracing::warn!(
                            partition = k,
                            "lost the lease of a partition to another process; stopping reading it"
                        );
                        // Settles nothing more either, and goes once its reader has ended.
                        h.part.fence();
                        let _ = h.stop.send(true);
                        continue;
                    }
                    Err(error) => tracing::warn!(%error, partition = k, "cannot renew a lease"),
                }
                if !h.leaving && !wanted.contains(&k) {
                    tracing::info!(
                        partition = k,
                        "partition goes to another process; draining it"
                    );
                    let _ = h.stop.send(true);
                    h.leaving = true;
                }
            }
            for k in gone {
                held.remove(&k);
            }
            // Take what is ours and free.
            for &k in &wanted {
                if held.contains_key(&k) {
                    continue;
                }
                let asked = std::time::Instant::now();
                match self.mesh.lease(&c.stream, k, &c.consumer, ttl).await {
                    Ok(true) => {
                        tracing::info!(partition = k, members = members.len(), "took partition");
                        let (stop, stop_rx) = watch::channel(false);
                        let part = Part::leased(&c.stream, k, partitions, asked + ttl);
                        let reading = tokio::spawn(Arc::clone(&self).run_partition(
                            Arc::clone(&part),
                            Taking::Leased,
                            stop_rx,
                        ));
                        held.insert(
                            k,
                            Held {
                                part,
                                stop,
                                reading,
                                leaving: false,
                            },
                        );
                    }
                    // Its holder has not given it up yet.
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, partition = k, "cannot take a lease"),
                }
            }
            metrics::gauge!("swarm_partitions_held").set(held.len() as f64);
        }
        // Stop reading everything, let it settle, then give the leases up and leave.
        for h in held.values() {
            let _ = h.stop.send(true);
        }
        for (k, h) in held {
            let _ = h.reading.await;
            if let Err(error) = self.mesh.release(&c.stream, k, &c.consumer).await {
                tracing::warn!(%error, partition = k, "cannot give up a lease; it runs out");
            }
        }
        if let Err(error) = self.mesh.leave(&c.stream, &c.consumer).await {
            tracing::warn!(%error, "cannot leave the stream's members; the membership runs out");
        }
        metrics::gauge!("swarm_partitions_held").set(0.0);
    }
}
