//! Benchmark of isolated units against the same unit in process, in the same run: the no-op
//! unit's call latency (as recorded in each execution: the call and, isolated, its round trip
//! to the worker) and end-to-end throughput from a backlog on the Redis mesh. Prints the figures, the latency
//! added per call and the throughput ratio; asserts nothing about speed.
//!
//! Run with: cargo bench -p swarm-tests --bench isolation

use std::time::{Duration, Instant};

use serde_json::json;
use swarm_schemas::Signal;
use swarm_tests::TestSwarm;

const BACKLOG: usize = 50_000;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Drains a backlog through the no-op unit; returns signals per second and the sorted call
/// latencies, µs.
async fn run(isolated: bool) -> (f64, Vec<u64>) {
    let mut swarm = TestSwarm::new().on_redis().await;
    if isolated {
        swarm = swarm.isolated();
    }
    swarm.config.batch = 256;
    swarm.config.concurrency = 256;
    swarm.config.trim_every = Duration::from_secs(1);
    swarm.deploy("fixture-noop", "noop.so");
    for n in 0..BACKLOG {
        swarm
            .publish(&Signal::new("bench.noop", json!({ "n": n })))
            .await;
    }
    let started = Instant::now();
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        swarm.settled(Duration::from_secs(300)).await,
        "backlog drained"
    );
    let elapsed = started.elapsed();
    reactor.stop().await;
    let records = swarm.memory.all();
    assert_eq!(records.len(), BACKLOG, "every signal executed once");
    assert!(records.iter().all(|r| r.outcome.is_success()));
    let mut micros: Vec<u64> = records.iter().map(|r| r.latency_us).collect();
    micros.sort_unstable();
    (BACKLOG as f64 / elapsed.as_secs_f64(), micros)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    swarm_tests::built_units();
    swarm_tests::worker_binary();
    // Alternated, twice each, so a noisy moment does not land on one side only.
    let mut native = Vec::new();
    let mut isolated = Vec::new();
    for _ in 0..2 {
        native.push(run(false).await);
        isolated.push(run(true).await);
    }
    let best = |runs: &[(f64, Vec<u64>)]| {
        runs.iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .cloned()
            .expect("runs")
    };
    let (native_rate, native_us) = best(&native);
    let (isolated_rate, isolated_us) = best(&isolated);
    for (what, rate, us) in [
        ("in process", native_rate, &native_us),
        ("isolated  ", isolated_rate, &isolated_us),
    ] {
        println!(
            "no-op unit {what}: {BACKLOG} signals at {rate:.0}/s; call p50 {} us, p99 {} us",
            percentile(us, 0.5),
            percentile(us, 0.99)
        );
    }
    println!(
        "isolation adds {} us per call at p50 ({} us at p99); throughput isolated / in process = {:.2}",
        percentile(&isolated_us, 0.5).saturating_sub(percentile(&native_us, 0.5)),
        percentile(&isolated_us, 0.99).saturating_sub(percentile(&native_us, 0.99)),
        isolated_rate / native_rate
    );
}
