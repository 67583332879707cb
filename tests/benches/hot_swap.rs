//! Benchmark of hot swaps under load, on the in-process mesh and memory with real unit
//! libraries: while about 5,000 signals a second flow, a unit is replaced by rename 24 times,
//! back and forth between two versions, and each time the benchmark measures how long after the
//! rename the new generation is swapped in and has served a signal. Once for `counter`, which
//! keeps no state (the swap never waits), and once for `tally`, which carries its state across
//! the swap (the swap waits for the old version's running calls, then snapshots and restores).
//! Prints its figures; asserts nothing about speed (`tests/system/hot_swap.rs` and
//! `tests/system/lifecycle.rs` check that nothing is lost or repeated).
//!
//! Run with: cargo bench -p swarm-tests --bench hot_swap

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use swarm_mesh::prelude::*;
use swarm_schemas::Signal;
use swarm_tests::{TestSwarm, wait_for};

const SWAPS: usize = 24;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Swaps `name` between the two packages under load; returns rename -> swapped and rename ->
/// serving, sorted, and how many signals flowed.
async fn swaps(
    name: &str,
    packages: [&str; 2],
    kind: &'static str,
) -> (Vec<Duration>, Vec<Duration>, usize) {
    let file = format!("{name}.so");
    let swarm = TestSwarm::new();
    swarm.deploy(packages[0], &file);
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let slot = reactor.registry().unit(name).expect("loaded");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (mesh, stream) = (Arc::clone(&swarm.mesh), swarm.config.stream.clone());
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10 {
                    mesh.publish(&stream, &Signal::new(kind, json!({})))
                        .await
                        .expect("publish");
                }
                sent.fetch_add(10, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (mut to_swapped, mut to_serving) = (Vec::new(), Vec::new());
    for i in 0..SWAPS {
        let before = slot.current().expect("serving").number();
        let renamed_at = swarm.deploy(packages[(i + 1) % 2], &file);
        let generation = wait_for(Duration::from_secs(20), || {
            slot.current().map(|g| g.number()).filter(|n| *n > before)
        })
        .await
        .expect("swapped");
        to_swapped.push(renamed_at.elapsed());
        wait_for(Duration::from_secs(20), || {
            swarm
                .memory
                .latest(64)
                .iter()
                .any(|r| r.generation == generation)
                .then_some(())
        })
        .await
        .expect("served");
        to_serving.push(renamed_at.elapsed());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
    assert!(swarm.settled(Duration::from_secs(60)).await);
    reactor.stop().await;
    to_swapped.sort();
    to_serving.sort();
    (to_swapped, to_serving, sent.load(Ordering::Relaxed))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cases = [
        (
            "counter",
            ["fixture-counter-v1", "fixture-counter-v2"],
            "tick",
            "no state",
        ),
        (
            "tally",
            ["fixture-tally-v1", "fixture-tally-v2"],
            "tally.add",
            "carries state",
        ),
    ];
    for (name, packages, kind, state) in cases {
        let (swapped, serving, sent) = swaps(name, packages, kind).await;
        println!(
            "hot swap {name} ({state}): {SWAPS} swaps under {sent} signals; rename -> swapped \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; rename -> new version served p50 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms",
            percentile(&swapped, 0.5).as_secs_f64() * 1e3,
            percentile(&swapped, 0.99).as_secs_f64() * 1e3,
            percentile(&swapped, 1.0).as_secs_f64() * 1e3,
            percentile(&serving, 0.5).as_secs_f64() * 1e3,
            percentile(&serving, 0.99).as_secs_f64() * 1e3,
            percentile(&serving, 1.0).as_secs_f64() * 1e3,
        );
    }
}
