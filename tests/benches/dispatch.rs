//! Benchmark of the core loop on the in-process mesh and memory with a real no-op unit
//! library: signals per second end to end from a backlog, the latency from publish to the
//! unit's invocation at a fixed rate, and, as the reference, the bare mesh (publish, read,
//! settle) without the reactor. Prints its figures; asserts nothing about speed.
//!
//! Run with: cargo bench -p swarm-tests --bench dispatch

use std::time::{Duration, Instant};

use serde_json::json;
use swarm_mesh::prelude::*;
use swarm_mesh::{InProcMesh, StartAt};
use swarm_schemas::Signal;
use swarm_tests::TestSwarm;

const BACKLOG: usize = 100_000;
const RATE_PER_MS: u64 = 5;
const RATE_SECONDS: u64 = 5;

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn noop(n: usize) -> Signal {
    Signal::new("bench.noop", json!({ "n": n }))
}

fn bench_swarm() -> TestSwarm {
    let mut swarm = TestSwarm::new();
    swarm.config.batch = 256;
    swarm.config.concurrency = 256;
    swarm.config.trim_every = Duration::from_secs(1);
    swarm.deploy("fixture-noop", "noop.so");
    swarm
}

/// The bare in-process mesh: publish a backlog, then read and settle it in batches.
async fn mesh_reference() {
    let mesh = InProcMesh::new();
    mesh.create_group("s", "g", StartAt::Beginning)
        .await
        .expect("group");
    let started = Instant::now();
    for i in 0..BACKLOG {
        mesh.publish("s", &noop(i)).await.expect("publish");
    }
    let published = started.elapsed();
    let started = Instant::now();
    loop {
        let batch = mesh
            .read("s", "g", "c", 256, Duration::ZERO)
            .await
            .expect("read");
        if batch.is_empty() {
            break;
        }
        for delivery in batch {
            mesh.settle("s", "g", delivery.id, &[])
                .await
                .expect("settle");
        }
    }
    let consumed = started.elapsed();
    println!(
        "mesh alone (in-process): publish {:.0} signals/s, read+settle {:.0} signals/s",
        BACKLOG as f64 / published.as_secs_f64(),
        BACKLOG as f64 / consumed.as_secs_f64()
    );
}

/// A backlog published before the reactor starts, then drained through the no-op unit.
async fn throughput() {
    let swarm = bench_swarm();
    for i in 0..BACKLOG {
        swarm
            .mesh
            .publish(&swarm.config.stream, &noop(i))
            .await
            .expect("publish");
    }
    let started = Instant::now();
    let (reactor, _) = swarm.start().await;
    assert!(
        swarm.settled(Duration::from_secs(120)).await,
        "backlog drained"
    );
    let elapsed = started.elapsed();
    reactor.stop().await;
    assert_eq!(swarm.memory.len(), BACKLOG, "every signal executed once");
    println!(
        "reactor end to end (in-process mesh, no-op unit): {BACKLOG} signals in {elapsed:.2?} = {:.0} signals/s",
        BACKLOG as f64 / elapsed.as_secs_f64()
    );
}

/// Signals published at a fixed rate; latency from creation to the unit's invocation.
async fn latency() {
    let swarm = bench_swarm();
    let (reactor, _) = swarm.start().await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut n = 0;
    for _ in 0..RATE_SECONDS * 1000 {
        tick.tick().await;
        for _ in 0..RATE_PER_MS {
            swarm
                .mesh
                .publish(&swarm.config.stream, &noop(n))
                .await
                .expect("publish");
            n += 1;
        }
    }
    assert!(swarm.settled(Duration::from_secs(30)).await);
    reactor.stop().await;
    let mut micros: Vec<i64> = swarm
        .memory
        .all()
        .iter()
        .map(|r| {
            (r.started_at - r.signal.created_at)
                .num_microseconds()
                .unwrap_or(i64::MAX)
        })
        .collect();
    micros.sort_unstable();
    println!(
        "publish -> invoke at {} signals/s for {RATE_SECONDS} s ({} signals): p50 {} us, p99 {} us, max {} us",
        RATE_PER_MS * 1000,
        micros.len(),
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        percentile(&micros, 1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Build the unit libraries before anything is timed.
    swarm_tests::built_units();
    mesh_reference().await;
    throughput().await;
    latency().await;
}
