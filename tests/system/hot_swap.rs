//! Hot swap under load: while signals flow continuously, `counter` is replaced by rename, back
//! and forth between version 1 and version 2, 24 times. Every signal must be processed exactly
//! once, and each new version must serve within 100 ms of its rename.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use swarm_mesh::Mesh;
use swarm_schemas::{Outcome, Signal};
use swarm_tests::{TestSwarm, wait_for, wait_for_async};
use uuid::Uuid;

const SWAPS: usize = 24;
const SERVE_WITHIN: Duration = Duration::from_millis(100);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_loses_nothing_and_processes_each_signal_once() {
    let swarm = TestSwarm::new();
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
        let (package, version) =
            if i % 2 == 0 { ("fixture-counter-v2", "2.0.0") } else { ("fixture-counter-v1", "1.0.0") };
        let before = slot.current().expect("serving").number();
        let renamed_at = swarm.deploy(package, "counter.so");
        let generation = wait_for(Duration::from_secs(5), || {
            slot.current().map(|g| g.number()).filter(|n| *n > before)
        })
        .await
        .unwrap_or_else(|| panic!("swap {i} to {version} never happened"));
        to_swapped.push(renamed_at.elapsed());
        wait_for(Duration::from_secs(5), || {
            swarm.memory.latest(64).iter().any(|r| r.generation == generation).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("generation {generation} never served"));
        let serving = renamed_at.elapsed();
        to_serving.push(serving);
        let served_by = swarm.memory.latest(64).into_iter().find(|r| r.generation == generation).expect("record");
        assert_eq!(served_by.unit_version.to_string(), version);
        // Let the new generation carry the load for a while.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
    assert!(swarm.settled(Duration::from_secs(30)).await, "the swarm settles");
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
    for signal in swarm.signals(&swarm.config.stream).await.iter().filter(|s| s.kind == "tock") {
        let of = signal.payload["of"].as_str().and_then(|s| s.parse().ok()).expect("tock names its tick");
        *tocks.entry(of).or_default() += 1;
    }
    let lost = published.iter().filter(|id| !executions.contains_key(id)).count();
    let doubled = executions.values().filter(|n| **n > 1).count();
    let tock_wrong = published.iter().filter(|id| tocks.get(id) != Some(&1)).count();
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
    assert!(published.len() > 2_000, "thousands of signals flowed: {}", published.len());
    assert_eq!(lost, 0, "signals lost");
    assert_eq!(doubled, 0, "signals processed twice");
    assert_eq!(records.len(), published.len());
    assert_eq!(tock_wrong, 0, "every tick has exactly one tock");
    assert_eq!(generations, (1..=SWAPS as u64 + 1).collect(), "every generation served");
    assert!(records.iter().all(|r| matches!(r.outcome, Outcome::Success)));
    let slowest = percentile(&to_serving, 1.0);
    assert!(slowest <= SERVE_WITHIN, "slowest swap served after {slowest:?}, over {SERVE_WITHIN:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_same_bytes_is_not_a_swap() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, _) = swarm.start().await;
    swarm.deploy("fixture-counter-v1", "counter.so");
    // Give the watcher ample time to see and weigh the event, then check nothing changed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slot = reactor.registry().unit("counter").expect("loaded");
    assert_eq!(slot.current().map(|g| g.number()), Some(1));
    swarm.deploy("fixture-counter-v2", "counter.so");
    let swapped = wait_for(Duration::from_secs(5), || slot.current().filter(|g| g.number() == 2).map(|_| ())).await;
    assert!(swapped.is_some(), "a different file is swapped in");
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_call_finishes_on_the_old_generation_which_then_unloads() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, _) = swarm.start().await;
    let stream = &swarm.config.stream;
    let copies = || std::fs::read_dir(swarm.private.path()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(copies(), 1);

    let slow = Signal::new("tick", json!({ "sleep_ms": 600 }));
    swarm.mesh.publish(stream, &slow).await.expect("publish");
    let running = wait_for_async(Duration::from_secs(5), async || {
        let info = swarm.mesh.group_info(stream, &swarm.config.group).await.ok()?;
        (info.pending == 1 && swarm.memory.is_empty()).then_some(())
    })
    .await;
    assert!(running.is_some(), "the slow call is running");

    swarm.deploy("fixture-counter-v2", "counter.so");
    let slot = reactor.registry().unit("counter").expect("loaded");
    let swapped = wait_for(Duration::from_secs(5), || slot.current().filter(|g| g.number() == 2).map(|_| ())).await;
    assert!(swapped.is_some(), "version 2 swapped in while the call runs");
    assert_eq!(copies(), 2, "the old generation is still held by its running call");

    let quick = Signal::new("tick", json!({}));
    swarm.mesh.publish(stream, &quick).await.expect("publish");
    let by_new = wait_for(Duration::from_secs(5), || {
        swarm.memory.latest(10).into_iter().find(|r| r.signal.id == quick.id)
    })
    .await
    .expect("the quick signal is handled");
    assert_eq!(by_new.generation, 2);
    assert!(
        swarm.memory.all().iter().all(|r| r.signal.id != slow.id),
        "the new version served while the old call was still running"
    );

    assert!(swarm.settled(Duration::from_secs(10)).await);
    let old = swarm.memory.all().into_iter().find(|r| r.signal.id == slow.id).expect("the slow call is recorded");
    assert_eq!((old.generation, old.unit_version.to_string().as_str()), (1, "1.0.0"));
    assert_eq!(old.outcome, Outcome::Success);
    let drained = wait_for(Duration::from_secs(5), || (copies() == 1).then_some(())).await;
    assert!(drained.is_some(), "the old generation unloads once its call has returned");
    reactor.stop().await;
}
