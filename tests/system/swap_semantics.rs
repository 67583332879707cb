//! What a swap does to calls and files: identical bytes are not a swap; a call running when a
//! new version arrives finishes on the old one, which unloads (its private copy removed) once
//! that call has returned.

use std::time::Duration;

use serde_json::json;
use swarm_mesh::prelude::*;
use swarm_schemas::{Outcome, Signal};
use swarm_tests::{TestSwarm, wait_for, wait_for_async};

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
    let swapped = wait_for(Duration::from_secs(5), || {
        slot.current().filter(|g| g.number() == 2).map(|_| ())
    })
    .await;
    assert!(swapped.is_some(), "a different file is swapped in");
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_call_finishes_on_the_old_generation_which_then_unloads() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, _) = swarm.start().await;
    let stream = &swarm.config.stream;
    let copies = || {
        std::fs::read_dir(swarm.private.path())
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(copies(), 1);

    let slow = Signal::new("tick", json!({ "sleep_ms": 600 }));
    swarm.mesh.publish(stream, &slow).await.expect("publish");
    let running = wait_for_async(Duration::from_secs(5), async || {
        let info = swarm
            .mesh
            .group_info(stream, &swarm.config.group)
            .await
            .ok()?;
        (info.pending == 1 && swarm.memory.is_empty()).then_some(())
    })
    .await;
    assert!(running.is_some(), "the slow call is running");

    swarm.deploy("fixture-counter-v2", "counter.so");
    let slot = reactor.registry().unit("counter").expect("loaded");
    let swapped = wait_for(Duration::from_secs(5), || {
        slot.current().filter(|g| g.number() == 2).map(|_| ())
    })
    .await;
    assert!(
        swapped.is_some(),
        "version 2 swapped in while the call runs"
    );
    assert_eq!(
        copies(),
        2,
        "the old generation is still held by its running call"
    );

    let quick = Signal::new("tick", json!({}));
    swarm.mesh.publish(stream, &quick).await.expect("publish");
    let by_new = wait_for(Duration::from_secs(5), || {
        swarm
            .memory
            .latest(10)
            .into_iter()
            .find(|r| r.signal.id == quick.id)
    })
    .await
    .expect("the quick signal is handled");
    assert_eq!(by_new.generation, 2);
    assert!(
        swarm.memory.all().iter().all(|r| r.signal.id != slow.id),
        "the new version served while the old call was still running"
    );

    assert!(swarm.settled(Duration::from_secs(10)).await);
    let old = swarm
        .memory
        .all()
        .into_iter()
        .find(|r| r.signal.id == slow.id)
        .expect("the slow call is recorded");
    assert_eq!(
        (old.generation, old.unit_version.to_string().as_str()),
        (1, "1.0.0")
    );
    assert_eq!(old.outcome, Outcome::Success);
    let drained = wait_for(Duration::from_secs(5), || (copies() == 1).then_some(())).await;
    assert!(
        drained.is_some(),
        "the old generation unloads once its call has returned"
    );
    reactor.stop().await;
}
