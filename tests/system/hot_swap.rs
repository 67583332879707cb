//! Hot swap under load: while signals flow continuously, `counter` is replaced by rename, back
//! and forth between version 1 and version 2, 24 times. Every signal must be processed exactly
//! once, and every new generation must serve. How soon after its rename a version serves is
//! measured by the benchmark `tests/benches/hot_swap.rs`, not asserted here. The same holds
//! with the unit isolated in worker processes on the Redis mesh: each swap starts a new worker,
//! and the old one exits once its calls have returned.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use swarm_mesh::Mesh;
use swarm_schemas::{Outcome, Signal};
use swarm_tests::{TestSwarm, wait_for};
use uuid::Uuid;

const SWAPS: usize = 24;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_loses_nothing_and_processes_each_signal_once() {
    swap_under_load(TestSwarm::new(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_an_isolated_unit_under_load_loses_nothing_either() {
    swap_under_load(TestSwarm::new().on_redis().await.isolated(), true).await;
}

async fn swap_under_load<M: Mesh + 'static>(swarm: TestSwarm<M>, isolated: bool) {
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let slot = reactor.registry().unit("counter").expect("counter loaded");

    // Publish continuously: 10 signals every 2 ms, about 5k signals/s.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    let publisher = {
        let (mesh, stream) = (Arc::clone(&swarm.mesh), swarm.config.stream.clone());
        let (stop, published) = (Arc::clone(&stop), Arc::clone(&published));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10 {
                    let signal = Signal::new("tick", json!({}));
                    mesh.publish(&stream, &signal).await.expect("publish");
                    published.lock().expect("lock").push(signal.id);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut to_swapped = Vec::new();
    let mut to_serving = Vec::new();
    for i in 0..SWAPS {
        let (package, version) = if i % 2 == 0 {
            ("fixture-counter-v2", "2.0.0")
        } else {
            ("fixture-counter-v1", "1.0.0")
        };
        let before = slot.current().expect("serving").number();
        let renamed_at = swarm.deploy(package, "counter.so");
        let generation = wait_for(Duration::from_secs(5), || {
            slot.current().map(|g| g.number()).filter(|n| *n > before)
        })
        .await
        .unwrap_or_else(|| panic!("swap {i} to {version} never happened"));
        to_swapped.push(renamed_at.elapsed());
        wait_for(Duration::from_secs(5), || {
            swarm
                .memory
                .latest(64)
                .iter()
                .any(|r| r.generation == generation)
                .then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("generation {generation} never served"));
        let serving = renamed_at.elapsed();
        to_serving.push(serving);
        let served_by = swarm
            .memory
            .latest(64)
            .into_iter()
            .find(|r| r.generation == generation)
            .expect("record");
        assert_eq!(served_by.unit_version.to_string(), version);
        // Let the new generation carry the load for a while.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
    assert!(
        swarm.settled(Duration::from_secs(30)).await,
        "the swarm settles"
    );
    reactor.stop().await;

    let published = published.lock().expect("lock").clone();
    let records = swarm.memory.all();
    let failures: Vec<_> = records.iter().filter(|r| !r.outcome.is_success()).collect();
    assert!(failures.is_empty(), "no execution failed: {failures:#?}");
    let mut executions: HashMap<Uuid, usize> = HashMap::new();
    for record in &records {
        *executions.entry(record.signal.id).or_default() += 1;
    }
    let mut tocks: HashMap<Uuid, usize> = HashMap::new();
    let mut pids: BTreeSet<u64> = BTreeSet::new();
    for signal in swarm
        .signals(&swarm.config.stream)
        .await
        .iter()
        .filter(|s| s.kind == "tock")
    {
        pids.extend(signal.payload["pid"].as_u64());
        let of = signal.payload["of"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("tock names its tick");
        *tocks.entry(of).or_default() += 1;
    }
    let lost = published
        .iter()
        .filter(|id| !executions.contains_key(id))
        .count();
    let doubled = executions.values().filter(|n| **n > 1).count();
    let tock_wrong = published
        .iter()
        .filter(|id| tocks.get(id) != Some(&1))
        .count();
    let generations: BTreeSet<u64> = records.iter().map(|r| r.generation).collect();

    to_swapped.sort();
    to_serving.sort();
    println!(
        "hot swap: {} signals, {SWAPS} swaps, {} generations served; rename -> swapped p50 {:?} max {:?}; \
         rename -> new version serving p50 {:?} max {:?}; lost {lost}, processed twice {doubled}",
        published.len(),
        generations.len(),
        percentile(&to_swapped, 0.5),
        percentile(&to_swapped, 1.0),
        percentile(&to_serving, 0.5),
        percentile(&to_serving, 1.0),
    );
    assert!(
        published.len() > 2_000,
        "thousands of signals flowed: {}",
        published.len()
    );
    assert_eq!(lost, 0, "signals lost");
    assert_eq!(doubled, 0, "signals processed twice");
    assert_eq!(records.len(), published.len());
    assert_eq!(tock_wrong, 0, "every tick has exactly one tock");
    assert_eq!(
        generations,
        (1..=SWAPS as u64 + 1).collect(),
        "every generation served"
    );
    assert!(
        records
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Success))
    );
    let here = u64::from(std::process::id());
    if isolated {
        assert!(!pids.contains(&here), "an isolated unit ran in the reactor");
        assert!(
            pids.len() > SWAPS,
            "each generation ran in a worker of its own: {} workers",
            pids.len()
        );
    } else {
        assert_eq!(pids, BTreeSet::from([here]));
    }
}
