//! Isolated units, on the Redis mesh: a unit run in a worker process can segfault, abort,
//! overflow its stack, allocate without bound or hang, and only its calls fail; the reactor,
//! the other units and the unit's later signals go on. The worker can open no socket and run
//! no program. The last test does the same through `swarm up`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use swarm_mesh::Mesh;
use swarm_mesh::prelude::*;
use swarm_schemas::{FailureKind, Outcome, Signal, UnitState};
use swarm_tests::observed::{
    Running, STREAM, dead_letters, done as done_on_mesh, health, setup, until,
};
use swarm_tests::{TestSwarm, deploy, free_port};
use uuid::Uuid;

/// Publishes a `test.crash` with `payload` and `n`; returns its id.
async fn crash<M: Mesh + 'static>(swarm: &TestSwarm<M>, n: u64, mut payload: Value) -> Uuid {
    payload["n"] = json!(n);
    let signal = Signal::new("test.crash", payload);
    swarm.publish(&signal).await;
    signal.id
}

/// Every `test.done` on the stream, by the `n` it answers.
async fn done<M: Mesh + 'static>(swarm: &TestSwarm<M>) -> BTreeMap<u64, Value> {
    swarm
        .signals(&swarm.config.stream)
        .await
        .into_iter()
        .filter(|s| s.kind == "test.done")
        .filter_map(|s| Some((s.payload["n"].as_u64()?, s.payload)))
        .collect()
}

/// The failures of `signal`'s calls, as (kind, error).
fn failures<M: Mesh>(swarm: &TestSwarm<M>, signal: Uuid) -> Vec<(FailureKind, String)> {
    swarm
        .memory
        .all()
        .into_iter()
        .filter(|r| r.signal.id == signal)
        .filter_map(|r| match r.outcome {
            Outcome::Failure { kind, error } => Some((kind, error)),
            Outcome::Success => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_in_a_worker_fail_the_call_and_nothing_else() {
    let swarm = TestSwarm::new().on_redis().await.isolated();
    swarm.deploy("fixture-crash", "crash.so");
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let status = reactor.registry().status();
    assert!(status.iter().all(|u| u.isolated), "{status:?}");

    let cases = [
        ("segv", json!({"how": "segv"}), "SIGSEGV"),
        ("abort", json!({"how": "abort"}), "SIGABRT"),
        ("stack", json!({"how": "stack"}), "SIGABRT"),
        // 64 GiB: far past the worker's address space (4 GiB by default).
        ("oom", json!({"how": "oom"}), "SIGABRT"),
    ];
    let mut fatal = Vec::new();
    for (n, (_, payload, _)) in cases.iter().enumerate() {
        // A good signal beside each bad one: it must not be lost with it. (A crash fails
        // every call its worker runs at that moment, so one case at a time keeps each
        // failure's cause its own.)
        crash(&swarm, 100 + n as u64, json!({})).await;
        fatal.push(crash(&swarm, n as u64, payload.clone()).await);
        swarm.publish(&Signal::new("tick", json!({}))).await;
        assert!(
            swarm.settled(Duration::from_secs(30)).await,
            "the swarm settles"
        );
    }
    crash(&swarm, 200, json!({})).await;
    assert!(
        swarm.settled(Duration::from_secs(30)).await,
        "the swarm settles"
    );

    for ((name, _, says), id) in cases.iter().zip(&fatal) {
        let failed = failures(&swarm, *id);
        assert_eq!(failed.len(), 3, "{name}: every attempt failed: {failed:?}");
        for (kind, error) in &failed {
            assert_eq!(*kind, FailureKind::Crash, "{name}: {error}");
            assert!(error.contains(says), "{name}: `{says}` not in: {error}");
        }
    }
    let letters = swarm.dead_letters().await;
    assert_eq!(letters.len(), cases.len(), "{letters:?}");
    assert!(
        letters
            .iter()
            .all(|l| l.failure == Some(FailureKind::Crash) && l.unit.as_deref() == Some("crash"))
    );
    // Every good signal was answered, by a worker (not this process), after each crash too.
    let answered = done(&swarm).await;
    for n in [100, 101, 102, 103, 200] {
        let pid = answered
            .get(&n)
            .and_then(|d| d["pid"].as_u64())
            .unwrap_or_else(|| panic!("signal {n} was not answered"));
        assert_ne!(pid, u64::from(std::process::id()));
    }
    let ticks = swarm
        .memory
        .all()
        .into_iter()
        .filter(|r| r.unit == "counter" && r.outcome.is_success())
        .count();
    assert_eq!(ticks, cases.len(), "the other unit never noticed");
    let status = reactor.registry().status();
    assert!(
        status
            .iter()
            .all(|u| u.state == UnitState::Ready && u.stuck_calls == 0),
        "{status:?}"
    );
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_kills_the_worker_and_leaves_no_thread_stuck() {
    let mut swarm = TestSwarm::new().on_redis().await.isolated();
    swarm.config.call_timeout = Duration::from_millis(300);
    swarm.config.quarantine_after = 0;
    swarm.deploy("fixture-crash", "crash.so");
    let (reactor, _) = swarm.start().await;
    let first = crash(&swarm, 1, json!({})).await;
    assert!(swarm.settled(Duration::from_secs(10)).await);
    let hung = crash(&swarm, 2, json!({"how": "hang"})).await;
    for n in 3..20 {
        crash(&swarm, n, json!({})).await;
    }
    assert!(
        swarm.settled(Duration::from_secs(30)).await,
        "the swarm settles"
    );

    let failed = failures(&swarm, hung);
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed.iter().all(|(kind, _)| *kind == FailureKind::Timeout));
    assert!(failures(&swarm, first).is_empty());
    let answered = done(&swarm).await;
    assert_eq!(
        answered.keys().copied().collect::<Vec<_>>(),
        [1].into_iter().chain(3..20).collect::<Vec<_>>()
    );
    // The worker that hung was killed (and reaped): a signal now runs in a new one.
    let killed = answered[&1]["pid"].as_u64().expect("a pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{killed}")).exists(),
        "the hung worker {killed} was killed"
    );
    crash(&swarm, 20, json!({})).await;
    assert!(swarm.settled(Duration::from_secs(10)).await);
    let now = done(&swarm).await[&20]["pid"].as_u64().expect("a pid");
    assert_ne!(now, killed, "a new worker runs the unit");
    let unit = &reactor.registry().status()[0];
    assert_eq!(unit.stuck_calls, 0, "no thread is left in the hung call");
    assert_eq!(unit.timeouts, 3);
    assert_eq!(unit.state, UnitState::Ready);
    // Its stopping does not wait for any stuck call.
    assert!(reactor.stop_within(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_opens_no_socket_and_runs_no_program() {
    let outcome = async |isolated: bool| -> (Value, Value) {
        let mut swarm = TestSwarm::new().on_redis().await;
        if isolated {
            swarm = swarm.isolated();
        }
        swarm.deploy("fixture-crash", "crash.so");
        let (reactor, _) = swarm.start().await;
        // Nothing listens on the discard port: in process the connection is refused.
        crash(&swarm, 1, json!({"how": "socket", "addr": "127.0.0.1:9"})).await;
        crash(&swarm, 2, json!({"how": "exec"})).await;
        assert!(swarm.settled(Duration::from_secs(10)).await);
        let answered = done(&swarm).await;
        reactor.stop().await;
        (answered[&1]["error"].clone(), answered[&2]["error"].clone())
    };
    let (socket, exec) = outcome(true).await;
    for (what, error) in [("socket", &socket), ("exec", &exec)] {
        assert!(
            error
                .as_str()
                .is_some_and(|e| e.contains("Operation not permitted")),
            "{what} in a worker: {error}"
        );
    }
    // The same unit in process: the socket is made (and refused by the port), the program runs.
    let (socket, exec) = outcome(false).await;
    assert!(
        socket
            .as_str()
            .is_some_and(|e| !e.contains("not permitted")),
        "{socket}"
    );
    assert_eq!(exec, Value::Null, "in process, the program ran");
}

/// Through `swarm up --isolate crash` on the Redis mesh, counted on the mesh: each fatal call
/// is dead-lettered with its cause, each good signal beside it is handled once, the process
/// stays healthy and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_up_survives_every_way_an_isolated_unit_dies() {
    let s = setup(&["--isolate", "crash", "--call-timeout", "2"]).await;
    deploy(&s.spec.units, "fixture-crash", "crash.so");
    let port = free_port();
    let mut reactor = Running(Some(
        s.spec
            .start_serving("isolated", &format!("127.0.0.1:{port}")),
    ));
    let cases = [
        ("segv", FailureKind::Crash, "SIGSEGV"),
        ("abort", FailureKind::Crash, "SIGABRT"),
        ("stack", FailureKind::Crash, "SIGABRT"),
        ("oom", FailureKind::Crash, "SIGABRT"),
        ("hang", FailureKind::Timeout, "deadline"),
    ];
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (n, (how, _, _)) in cases.iter().enumerate() {
        let n = n as u64;
        for payload in [json!({"n": 100 + n}), json!({"n": n, "how": how})] {
            s.mesh
                .publish(STREAM, &Signal::new("test.crash", payload))
                .await
                .expect("publish");
        }
        // One case at a time: a crash fails every call its worker runs at that moment.
        until(
            "the fatal signal's dead letter",
            Duration::from_secs(60),
            async || (dead_letters(&s.mesh).await.len() > n as usize).then_some(()),
        )
        .await;
        until(
            "the good signal's answer",
            Duration::from_secs(30),
            async || {
                for (n, times) in done_on_mesh(&s.mesh).await {
                    *seen.entry(n).or_default() += times;
                }
                seen.contains_key(&(100 + n)).then_some(())
            },
        )
        .await;
    }
    let letters = dead_letters(&s.mesh).await;
    assert_eq!(letters.len(), cases.len(), "{letters:#?}");
    for (letter, (how, failure, says)) in letters.iter().zip(&cases) {
        assert_eq!(letter.original["payload"]["how"], *how, "{letter:?}");
        assert_eq!(letter.unit.as_deref(), Some("crash"));
        assert_eq!(letter.failure, Some(*failure), "{how}: {}", letter.reason);
        assert_eq!(letter.attempts, 3, "{how}: {}", letter.reason);
        assert!(
            letter.reason.contains(says),
            "{how}: `{says}` not in {}",
            letter.reason
        );
    }
    assert_eq!(
        seen,
        (100..100 + cases.len() as u64).map(|n| (n, 1)).collect(),
        "each good signal handled once, none of the fatal ones"
    );
    let h = health(port).await;
    assert_eq!(h["status"], "ok", "{h}");
    let log = reactor.0.as_ref().expect("running").log.clone();
    let process = reactor.0.take().expect("running");
    assert!(
        process.stop(),
        "clean exit; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
