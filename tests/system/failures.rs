//! Failures: a unit that panics on some signals is retried, its failures are recorded, the
//! signal is dead-lettered after N attempts, and the reactor goes on. Entries that are not
//! signals, and entries abandoned by a crashed consumer, are dead-lettered or taken over.

use std::time::Duration;

use serde_json::json;
use swarm_mesh::StartAt;
use swarm_mesh::prelude::*;
use swarm_schemas::{FailureKind, Outcome, Signal};
use swarm_tests::TestSwarm;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_unit_is_retried_recorded_and_dead_lettered() {
    let mut swarm = TestSwarm::new();
    swarm.config.max_attempts = 3;
    swarm.deploy("fixture-flaky", "flaky.so");
    let (reactor, _) = swarm.start().await;
    let stream = swarm.config.stream.clone();
    let mut jobs = Vec::new();
    for n in 0..20 {
        let job = Signal::new("job", json!({ "n": n, "fail": n % 5 == 0 }));
        swarm.mesh.publish(&stream, &job).await.expect("publish");
        jobs.push(job);
    }
    assert!(swarm.settled(WAIT).await);

    let records = swarm.memory.all();
    for job in &jobs {
        let of_job: Vec<_> = records.iter().filter(|r| r.signal.id == job.id).collect();
        if job.payload["fail"] == json!(true) {
            assert_eq!(of_job.len(), 3, "three attempts recorded");
            let attempts: Vec<u32> = of_job.iter().map(|r| r.attempt).collect();
            assert_eq!(attempts, [0, 1, 2]);
            for record in of_job {
                let Outcome::Failure { kind, error } = &record.outcome else {
                    panic!("a failure")
                };
                assert_eq!(*kind, FailureKind::Panic);
                let expected = format!(
                    "flaky gave up on job {} (at tests/units/flaky/src/lib.rs:",
                    job.payload["n"]
                );
                assert!(error.starts_with(&expected), "{error}");
            }
        } else {
            assert_eq!(of_job.len(), 1);
            assert_eq!(of_job[0].outcome, Outcome::Success);
        }
    }
    let dead = swarm.dead_letters().await;
    assert_eq!(dead.len(), 4);
    for letter in &dead {
        assert_eq!(letter.unit.as_deref(), Some("flaky"));
        assert_eq!(letter.attempts, 3);
        assert!(
            letter
                .reason
                .starts_with("unit `flaky` failed 3 attempts; last error: flaky gave up on job")
        );
        assert_eq!(letter.original["payload"]["fail"], json!(true));
    }
    let done = swarm
        .signals(&stream)
        .await
        .into_iter()
        .filter(|s| s.kind == "job.done")
        .count();
    assert_eq!(done, 16);

    // The reactor goes on.
    let after = Signal::new("job", json!({ "n": 99 }));
    swarm.mesh.publish(&stream, &after).await.expect("publish");
    assert!(swarm.settled(WAIT).await);
    assert_eq!(swarm.memory.latest(1)[0].signal.id, after.id);
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_is_not_a_signal_is_dead_lettered_with_its_raw_text() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, _) = swarm.start().await;
    let stream = swarm.config.stream.clone();
    swarm.mesh.publish_undecodable(&stream, "{\"kind\": 42}");
    let tick = Signal::new("tick", json!({}));
    swarm.mesh.publish(&stream, &tick).await.expect("publish");
    assert!(swarm.settled(WAIT).await);
    let dead = swarm.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.starts_with("entry is not a signal: "),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].original, json!("{\"kind\": 42}"));
    assert_eq!(
        swarm.memory.all().len(),
        1,
        "the good signal after it is handled"
    );
    reactor.stop().await;
}

/// A consumer named "crashed" takes entries and dies without acknowledging them.
async fn abandon_two_ticks(swarm: &TestSwarm) -> Vec<Signal> {
    let (stream, group) = (&swarm.config.stream, &swarm.config.group);
    swarm
        .mesh
        .create_group(stream, group, StartAt::Beginning)
        .await
        .expect("group");
    let ticks = vec![
        Signal::new("tick", json!({})),
        Signal::new("tick", json!({})),
    ];
    for tick in &ticks {
        swarm.mesh.publish(stream, tick).await.expect("publish");
    }
    let taken = swarm
        .mesh
        .read(stream, group, "crashed", 10, Duration::from_millis(1))
        .await
        .expect("read");
    assert_eq!(taken.len(), 2);
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_abandoned_by_a_crashed_consumer_are_taken_over() {
    let mut swarm = TestSwarm::new();
    swarm.config.claim_idle = Duration::from_millis(300);
    swarm.deploy("fixture-counter-v1", "counter.so");
    let ticks = abandon_two_ticks(&swarm).await;
    let (reactor, _) = swarm.start().await;
    assert!(
        swarm.settled(WAIT).await,
        "the abandoned entries are claimed and handled"
    );
    let handled: Vec<_> = swarm
        .memory
        .all()
        .into_iter()
        .map(|r| r.signal.id)
        .collect();
    assert_eq!(handled.len(), 2);
    assert!(ticks.iter().all(|t| handled.contains(&t.id)));
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_delivered_too_often_are_dead_lettered_unhandled() {
    let mut swarm = TestSwarm::new();
    swarm.config.claim_idle = Duration::from_millis(300);
    swarm.config.max_deliveries = 1;
    swarm.deploy("fixture-counter-v1", "counter.so");
    let ticks = abandon_two_ticks(&swarm).await;
    let (reactor, _) = swarm.start().await;
    assert!(swarm.settled(WAIT).await);
    assert!(swarm.memory.is_empty(), "no unit ran them");
    let dead = swarm.dead_letters().await;
    assert_eq!(dead.len(), 2);
    for letter in &dead {
        assert_eq!(
            letter.reason,
            "delivered 2 times without being settled (max_deliveries = 1): each run of it hung past its deadline, or the process running it died"
        );
        assert!(ticks.iter().any(|t| letter.original["id"] == json!(t.id)));
    }
    reactor.stop().await;
}
