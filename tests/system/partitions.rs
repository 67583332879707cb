//! A partitioned stream read by three `swarm up` processes on the project's Redis: each
//! partition is read by one process at a time, and each key's signals are handled in publish
//! order, while processes join, and after one is SIGKILLed under load and the others take its
//! partitions over. The order is checked through the mesh (see `swarm_tests::partitioned`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use swarm_mesh::partition::partition_stream;
use swarm_mesh::prelude::*;
use swarm_schemas::Signal;
use swarm_tests::partitioned::{Partitioned, STREAM, backlog, diagnose, tick, tocks};
use swarm_tests::redis_url;
use uuid::Uuid;

const PARTITIONS: u32 = 8;
const KEYS: usize = 100;
const SIGNALS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_is_handled_in_publish_order_across_three_processes_and_a_kill() {
    let Partitioned { mesh, spec, .. } = &Partitioned::new(&redis_url(), PARTITIONS, 30.0).await;
    let a = spec.start("a");
    let b = spec.start("b");
    let mut c = Some(spec.start("c"));

    // 10,000 ticks over 100 keys, published while the processes join and share the
    // partitions out; one is SIGKILLed a third of the way through.
    let mut ticks: HashMap<Uuid, (usize, usize)> = HashMap::new();
    let started = Instant::now();
    for n in 0..SIGNALS {
        let (key, seq) = (n % KEYS, n / KEYS);
        let signal = tick(key, seq);
        while mesh.publish(STREAM, &signal).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ticks.insert(signal.id, (key, seq));
        if n % 100 == 99 {
            // About 5,000 a second.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if n == SIGNALS / 3 {
            if let Some(victim) = c.take() {
                victim.kill();
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while backlog(mesh, PARTITIONS).await != Some(0) {
        if Instant::now() > deadline {
            let state = diagnose(mesh, PARTITIONS, &[&a, &b]).await;
            panic!(
                "every tick handled: {:?} left{state}",
                backlog(mesh, PARTITIONS).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let mut owners = Vec::new();
    for k in 0..PARTITIONS {
        owners.push(mesh.lease_owner(STREAM, k).await.expect("lease owner"));
    }
    assert!(
        a.stop() && b.stop(),
        "the survivors exit cleanly on SIGTERM"
    );

    let seen = tocks(mesh, PARTITIONS, &ticks).await;
    println!(
        "{SIGNALS} ticks over {KEYS} keys in {PARTITIONS} partitions through 3 processes (one \
         SIGKILLed): handled in {:.1} s; tocks per process {:?}; lease owners at the end {owners:?}",
        took.as_secs_f64(),
        seen.by_pid
    );
    assert_eq!(seen.by_key.len(), KEYS);
    for (key, seqs) in &seen.by_key {
        assert_eq!(
            seqs,
            &(0..SIGNALS / KEYS).collect::<Vec<_>>(),
            "key {key}: ticks handled in publish order, each once"
        );
    }
    assert!(
        seen.by_pid.len() >= 2,
        "more than one process handled ticks: {:?}",
        seen.by_pid
    );
    assert!(
        owners
            .iter()
            .all(|o| o.as_deref().is_some_and(|o| o == "a" || o == "b")),
        "the killed process's partitions were taken over: {owners:?}"
    );
}

/// The same on the in-process mesh, with three reactors in one process: ticks that take a
/// random few milliseconds each would finish out of order if a key's ticks ran side by side;
/// one reactor stops half way and hands its partitions over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_reactors_keep_each_key_in_order_through_a_handover() {
    use swarm_tests::TestSwarm;
    const SIGNALS: usize = 2_000;
    const KEYS: usize = 20;
    const P: u32 = 4;
    let mut swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    swarm.config.partitions = P;
    swarm.config.lease_ttl = Duration::from_millis(300);
    let start = |consumer: &str| {
        let mut config = swarm.config.clone();
        config.consumer = consumer.to_owned();
        swarm_reactor::Reactor::start(
            config,
            Arc::clone(&swarm.mesh) as Arc<dyn swarm_mesh::Mesh>,
            Arc::clone(&swarm.memory) as _,
        )
    };
    let (a, _) = start("a").await.expect("a starts");
    let (b, _) = start("b").await.expect("b starts");
    let (c, _) = start("c").await.expect("c starts");
    let stream = swarm.config.stream.clone();
    let mut order: HashMap<Uuid, (usize, usize)> = HashMap::new();
    let mut c = Some(c);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 0..SIGNALS {
        let (key, seq) = (n % KEYS, n / KEYS);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut signal = Signal::new("tick", json!({ "sleep_ms": seed % 4 }));
        signal.partition_key = Some(format!("k{key}"));
        swarm.mesh.publish(&stream, &signal).await.expect("publish");
        order.insert(signal.id, (key, seq));
        if n % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if n == SIGNALS / 2 {
            if let Some(c) = c.take() {
                c.stop().await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = 0;
        for k in 0..P {
            let part = partition_stream(&stream, k, P);
            left += swarm
                .mesh
                .group_info(&part, &swarm.config.group)
                .await
                .map_or(1, |i| i.pending + i.lag);
        }
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "every tick handled: {left} left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.stop().await;
    b.stop().await;
    let mut seen: HashMap<usize, Vec<usize>> = HashMap::new();
    for k in 0..P {
        let part = partition_stream(&stream, k, P);
        for signal in swarm.signals(&part).await {
            if signal.kind == "tock" {
                let of: Uuid = signal.payload["of"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("tock names its tick");
                let (key, seq) = order[&of];
                seen.entry(key).or_default().push(seq);
            }
        }
    }
    assert_eq!(seen.len(), KEYS);
    for (key, seqs) in &seen {
        assert_eq!(
            seqs,
            &(0..SIGNALS / KEYS).collect::<Vec<_>>(),
            "key {key}: in publish order, each once"
        );
    }
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
/// Publishes `per_key` ticks of 300 ms for each of `keys` keys, in turn; returns each tick's
/// key and place.
async fn slow_ticks(
    mesh: &swarm_mesh::RedisMesh,
    keys: usize,
    per_key: usize,
) -> HashMap<Uuid, (usize, usize)> {
    let mut ticks = HashMap::new();
    for seq in 0..per_key {
        for key in 0..keys {
            let mut signal = tick(key, seq);
            signal.payload["sleep_ms"] = json!(300);
            mesh.publish(STREAM, &signal).await.expect("publish");
            ticks.insert(signal.id, (key, seq));
        }
    }
    ticks
}

/// The counter unit's log of executions: `(tick, pid)` per line.
fn executions(log: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            line.split_once(' ')
                .map(|(id, pid)| (id.to_owned(), pid.to_owned()))
        })
        .collect::<Option<Vec<_>>>()
        .expect("`<tick> <pid>` lines")
}

/// The processes that ran each tick.
fn runs_of(executions: &[(String, String)]) -> HashMap<&str, Vec<&str>> {
    let mut runs: HashMap<&str, Vec<&str>> = HashMap::new();
    for (tick, pid) in executions {
        runs.entry(tick.as_str()).or_default().push(pid.as_str());
    }
    runs
}

/// Each of `keys` keys had its `per_key` ticks answered in publish order, each once.
fn answered_once_in_order(
    by_key: &std::collections::BTreeMap<usize, Vec<usize>>,
    keys: usize,
    per_key: usize,
) {
    assert_eq!(by_key.len(), keys);
    for (key, seqs) in by_key {
        assert_eq!(
            seqs,
            &(0..per_key).collect::<Vec<_>>(),
            "key {key}: ticks answered in publish order, each once"
        );
    }
}

/// Pauses `a` (SIGSTOP) once it runs ticks (by `deadline`), then starts `b` and waits until
/// every tick of the stream's `partitions` is handled; `a` stays paused. Returns `b` and when
/// `a` was paused.
async fn pause_while_another_handles(
    mesh: &swarm_mesh::RedisMesh,
    spec: &swarm_tests::ReactorSpec,
    a: &swarm_tests::ReactorProcess,
    partitions: u32,
    log: &std::path::Path,
    deadline: Instant,
) -> (swarm_tests::ReactorProcess, Instant) {
    while executions(log).is_empty() {
        assert!(Instant::now() < deadline, "a runs ticks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send("STOP", a.pid());
    let paused = Instant::now();
    let b = spec.start("b");
    let deadline = Instant::now() + Duration::from_secs(60);
    while backlog(mesh, partitions).await != Some(0) {
        if Instant::now() > deadline {
            send("CONT", a.pid());
            panic!(
                "b handles every tick{}",
                diagnose(mesh, partitions, &[a, &b]).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (b, paused)
}

fn send(signal: &str, pid: u32) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -{signal} {pid}");
}

/// A process paused (SIGSTOP) past its leases while it runs ticks: another process takes its
/// partitions over, with what it had read, and handles them. When the paused one wakes and
/// finishes the ticks it was running, its settles are fenced: every tick is answered once, in
/// its key's order, although two processes ran some of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_paused_past_its_leases_settles_nothing_when_it_wakes() {
    const P: u32 = 2;
    const KEYS: usize = 4;
    const PER_KEY: usize = 5;
    let setup = Partitioned::new(&redis_url(), P, 30.0).await;
    let (mesh, mut spec) = (&setup.mesh, setup.spec.clone());
    // The pause must not count against the calls it interrupts.
    spec.extra_args
        .extend(["--call-timeout", "60"].map(str::to_owned));
    let a = spec.start("a");
    let deadline = Instant::now() + Duration::from_secs(30);
    for k in 0..P {
        while mesh.lease_owner(STREAM, k).await.ok().flatten().as_deref() != Some("a") {
            assert!(Instant::now() < deadline, "a takes partition {k}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Ticks of 300 ms each: a key's five take 1.5 s one after another.
    let ticks = slow_ticks(mesh, KEYS, PER_KEY).await;
    let log = spec.counter_log();
    let ran = || executions(&log);
    // Its leases run out (2 s); b takes the partitions over and handles every tick.
    let (b, paused) = pause_while_another_handles(mesh, &spec, &a, P, &log, deadline).await;
    let owners = [
        mesh.lease_owner(STREAM, 0).await,
        mesh.lease_owner(STREAM, 1).await,
    ];
    send("CONT", a.pid());
    let paused = paused.elapsed();

    // a finishes the ticks it was running and finds the leases gone: by a settle that Redis
    // refused, or by a renewal that came first (its settles are then not even tried).
    let a_log = a.log.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let log = std::fs::read_to_string(&a_log).unwrap_or_default();
        let found = [
            "this process lost the partition",
            "lost the lease of a partition to another process",
        ]
        .into_iter()
        .find(|line| log.contains(line));
        if let Some(found) = found {
            break found;
        }
        if Instant::now() > deadline {
            panic!(
                "a finds its leases gone{}",
                diagnose(mesh, P, &[&a, &b]).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Both run on: a takes a partition back, with nothing left to do.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(backlog(mesh, P).await, Some(0));
    assert!(a.stop() && b.stop(), "both exit cleanly on SIGTERM");

    let executions = ran();
    let runs = runs_of(&executions);
    let twice = runs.values().filter(|pids| pids.len() > 1).count();
    let seen = tocks(mesh, P, &ticks).await;
    println!(
        "a paused {:.1} s; leases then held by {owners:?}; a found out: `{found}`; {} \
         executions of {} ticks, {twice} run by both processes; tocks per process {:?}",
        paused.as_secs_f64(),
        executions.len(),
        ticks.len(),
        seen.by_pid
    );
    assert!(
        owners
            .iter()
            .all(|o| o.as_ref().is_ok_and(|o| o.as_deref() == Some("b"))),
        "b held both partitions while a was paused: {owners:?}"
    );
    assert!(
        twice > 0,
        "a was running ticks when it was paused, and b ran them again: {runs:?}"
    );
    answered_once_in_order(&seen.by_key, KEYS, PER_KEY);
}

/// The same pause on a stream of one partition, shared by every process of the group with no
/// lease: the paused process's entries go idle and another claims, runs and settles them. When
/// the paused one wakes, the ticks it finishes, and those it had waiting behind their keys,
/// are checked entry by entry as they settle: each was claimed by the other process, and is
/// left to it. Every tick is answered once, in its key's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_paused_past_the_claim_time_of_a_shared_stream_settles_nothing_claimed() {
    const KEYS: usize = 4;
    const PER_KEY: usize = 5;
    // A claimed entry waits 3 s: the pause below is longer.
    let setup = Partitioned::new(&redis_url(), 1, 3.0).await;
    let (mesh, mut spec) = (&setup.mesh, setup.spec.clone());
    spec.extra_args
        .extend(["--call-timeout", "60"].map(str::to_owned));
    let a = spec.start("a");
    let ticks = slow_ticks(mesh, KEYS, PER_KEY).await;
    let log = spec.counter_log();
    let ran = || executions(&log);
    let deadline = Instant::now() + Duration::from_secs(30);
    // a's entries go idle past the claim time; b claims them and handles every tick.
    let (b, paused) = pause_while_another_handles(mesh, &spec, &a, 1, &log, deadline).await;
    send("CONT", a.pid());
    let paused = paused.elapsed();

    // a finishes what it was running, and finds it claimed when it settles.
    let a_log = a.log.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&a_log)
        .unwrap_or_default()
        .contains("claimed by another consumer: left to it")
    {
        if Instant::now() > deadline {
            panic!(
                "a leaves what b claimed{}",
                diagnose(mesh, 1, &[&a, &b]).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever a still had waiting runs and is left too; nothing is pending after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(backlog(mesh, 1).await, Some(0));
    assert!(a.stop() && b.stop(), "both exit cleanly on SIGTERM");

    let executions = ran();
    let runs = runs_of(&executions);
    let twice = runs.values().filter(|pids| pids.len() > 1).count();
    let seen = tocks(mesh, 1, &ticks).await;
    println!(
        "a paused {:.1} s; {} executions of {} ticks, {twice} run by both processes; tocks per \
         process {:?}",
        paused.as_secs_f64(),
        executions.len(),
        ticks.len(),
        seen.by_pid
    );
    assert!(
        twice > 0,
        "a was running ticks when it was paused, and b ran them again: {runs:?}"
    );
    answered_once_in_order(&seen.by_key, KEYS, PER_KEY);
}
