//! Ranking through the reactor, with real unit libraries: first-success falls back down the
//! ranked order, a unit that always fails on one family of payloads is ranked down for that
//! family only, and a unit's circuit breaker opens and recovers, or closes when the unit is
//! swapped.

use std::time::Duration;

use serde_json::json;
use swarm_reactor::ranking::BreakerState;
use swarm_schemas::{DispatchPolicy, ExecutionRecord, KindPattern, Signal};
use swarm_tests::TestSwarm;

const WAIT: Duration = Duration::from_secs(20);

fn picky_swarm(a: serde_json::Value, b: serde_json::Value) -> TestSwarm {
    let mut swarm = TestSwarm::new();
    swarm.config.unit_config.insert("picky-a".into(), a);
    swarm.config.unit_config.insert("picky-b".into(), b);
    swarm.deploy("fixture-picky-a", "picky-a.so");
    swarm.deploy("fixture-picky-b", "picky-b.so");
    swarm
}

/// Publishes `signals`, letting the swarm settle after every `wave` of them, as signals trickle
/// in in a running swarm (signals read in one batch are ranked together, before any of their
/// outcomes is known).
async fn feed(swarm: &TestSwarm, signals: &[Signal], wave: usize) {
    for (n, signal) in signals.iter().enumerate() {
        swarm.publish(signal).await;
        if n % wave == wave - 1 {
            assert!(swarm.settled(WAIT).await);
        }
    }
    assert!(swarm.settled(WAIT).await);
}

fn of(records: &[ExecutionRecord], signal: &Signal) -> Vec<ExecutionRecord> {
    let mut mine: Vec<_> = records
        .iter()
        .filter(|r| r.signal.id == signal.id)
        .cloned()
        .collect();
    mine.sort_by_key(|r| r.started_at);
    mine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_success_falls_back_to_the_next_unit_and_dead_letters_when_all_fail() {
    let swarm = picky_swarm(
        json!({"fail_flag": "broken"}),
        json!({"fail_flag": "hopeless"}),
    );
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{report:?}");
    let stream = swarm.config.stream.clone();
    let tasks: Vec<Signal> = (0..40)
        .map(|n| Signal::new("task", json!({"n": n, "broken": true, "hopeless": n >= 36})))
        .collect();
    feed(&swarm, &tasks, 4).await;
    let records = swarm.memory.all();
    let done = swarm.signals(&stream).await;
    for task in &tasks[..36] {
        let runs = of(&records, task);
        let units: Vec<&str> = runs.iter().map(|r| r.unit.as_str()).collect();
        assert!(
            units == ["picky-b"] || units == ["picky-a", "picky-b"],
            "{units:?}"
        );
        assert!(!runs[0].outcome.is_success() || runs[0].unit == "picky-b");
        assert!(runs.last().is_some_and(|r| r.outcome.is_success()));
        for r in &runs {
            assert_eq!(r.policy, "first_success");
            assert!(
                r.propensity > 0.0 && r.propensity <= 1.0,
                "{}",
                r.propensity
            );
        }
        let emitted: Vec<_> = done
            .iter()
            .filter(|s| s.kind == "task.done" && s.payload["n"] == task.payload["n"])
            .collect();
        assert_eq!(emitted.len(), 1, "one success, one emit");
        assert_eq!(emitted[0].payload["by"], "picky-b");
    }
    // picky-a fails every task: the ranker learns to try picky-b first.
    let firsts: Vec<String> = tasks[20..36]
        .iter()
        .map(|t| of(&records, t)[0].unit.clone())
        .collect();
    let b_first = firsts.iter().filter(|u| *u == "picky-b").count();
    assert!(
        b_first >= 12,
        "picky-b first in {b_first} of 16 late tasks: {firsts:?}"
    );

    // Both fail: each is tried once, then a dead letter names both.
    let dead = swarm.dead_letters().await;
    assert_eq!(dead.len(), 4, "{dead:?}");
    for (letter, task) in dead.iter().zip(&tasks[36..]) {
        assert_eq!(of(&records, task).len(), 2);
        assert!(
            letter.reason.contains("picky-a") && letter.reason.contains("picky-b"),
            "{}",
            letter.reason
        );
        assert!(
            letter.reason.contains("is broken") && letter.reason.contains("is hopeless"),
            "{}",
            letter.reason
        );
    }
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_failing_one_family_is_ranked_down_for_that_family_only() {
    // picky-a fails every refund and nothing else; picky-b fails every odd task, half of each
    // topic.
    let swarm = picky_swarm(json!({"fail_topic": "refund"}), json!({"fail_odd": true}));
    let (reactor, _) = swarm.start().await;
    let tasks: Vec<Signal> = (0..240u64)
        .map(|n| {
            let topic = if n % 4 < 2 { "refund" } else { "delivery" };
            Signal::new("task", json!({"n": n, "topic": topic}))
        })
        .collect();
    feed(&swarm, &tasks, 16).await;
    let records = swarm.memory.all();
    let late = &tasks[120..];
    let first_of = |topic: &str, unit: &str| {
        let of_topic: Vec<_> = late
            .iter()
            .filter(|t| t.payload["topic"] == topic)
            .collect();
        let hits = of_topic
            .iter()
            .filter(|t| of(&records, t).first().is_some_and(|r| r.unit == unit))
            .count();
        hits as f64 / of_topic.len() as f64
    };
    let b_on_refunds = first_of("refund", "picky-b");
    let a_on_deliveries = first_of("delivery", "picky-a");
    assert!(
        b_on_refunds >= 0.85,
        "refunds go to picky-b first: {b_on_refunds}"
    );
    assert!(
        a_on_deliveries >= 0.85,
        "deliveries still go to picky-a first: {a_on_deliveries}"
    );
    reactor.stop().await;
}

/// `picky-a` failing tasks flagged `broken` and `picky-b` failing none, both fired once on every
/// task (fan-out); `picky-a`'s breaker opens after 3 failures in a row, for `open_for`.
fn breaker_swarm(open_for: Duration) -> TestSwarm {
    let mut swarm = picky_swarm(json!({"fail_flag": "broken"}), json!({}));
    swarm.config.dispatch = vec![(
        KindPattern::parse("task").expect("pattern"),
        DispatchPolicy::FanOut,
    )];
    swarm.config.max_attempts = 1;
    swarm.config.ranker.breaker.failures = 3;
    swarm.config.ranker.breaker.open_for = open_for;
    swarm
}

/// Publishes a task and waits until the swarm has settled it.
async fn settle_task(swarm: &TestSwarm, payload: serde_json::Value) -> Signal {
    let task = Signal::new("task", payload);
    swarm.publish(&task).await;
    assert!(swarm.settled(WAIT).await);
    task
}

/// Fails `picky-a` three times in a row, which opens its breaker; then a task goes to `picky-b`
/// alone (kept as a dead letter for `picky-a`).
async fn open_breaker(swarm: &TestSwarm, reactor: &swarm_reactor::Reactor) {
    for n in 0..3 {
        settle_task(swarm, json!({"n": n, "broken": true})).await;
    }
    assert_eq!(
        reactor.ranker().breaker_state("picky-a"),
        BreakerState::Open
    );
    let skipped = settle_task(swarm, json!({"n": 3})).await;
    let runs = of(&swarm.memory.all(), &skipped);
    assert_eq!(
        runs.iter().map(|r| r.unit.as_str()).collect::<Vec<_>>(),
        ["picky-b"],
        "picky-a is skipped while its breaker is open"
    );
    let dead = swarm.dead_letters().await;
    assert!(
        dead.iter().any(|d| d.unit.as_deref() == Some("picky-a")
            && d.reason.contains("circuit breaker is open")),
        "{dead:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_opens_skips_the_unit_and_recovers() {
    let swarm = breaker_swarm(Duration::from_millis(500));
    let (reactor, _) = swarm.start().await;
    open_breaker(&swarm, &reactor).await;
    // After open_for, one probe goes through; it succeeds and the breaker closes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let probe = settle_task(&swarm, json!({"n": 4})).await;
    let runs = of(&swarm.memory.all(), &probe);
    assert!(
        runs.iter()
            .any(|r| r.unit == "picky-a" && r.outcome.is_success()),
        "{runs:?}"
    );
    assert_eq!(
        reactor.ranker().breaker_state("picky-a"),
        BreakerState::Closed
    );
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_closes_the_circuit_breaker_of_the_unit() {
    // Open far longer than the test: only the swap can close it.
    let swarm = breaker_swarm(Duration::from_secs(600));
    let (reactor, _) = swarm.start().await;
    open_breaker(&swarm, &reactor).await;
    // A new configuration swaps in a new generation of picky-a, which no longer fails.
    let mut config = swarm.config.unit_config.clone();
    config.insert("picky-a".into(), json!({}));
    let report = reactor.registry().set_unit_config(config);
    assert!(
        report.changes.iter().any(
            |(_, c)| matches!(c, swarm_reactor::Change::Swapped { name, .. } if name == "picky-a")
        ),
        "{report:?}"
    );
    assert_eq!(
        reactor.ranker().breaker_state("picky-a"),
        BreakerState::Closed,
        "the new generation starts with a closed breaker"
    );
    let fixed = settle_task(&swarm, json!({"n": 4, "broken": true})).await;
    let runs = of(&swarm.memory.all(), &fixed);
    assert!(
        runs.iter()
            .any(|r| r.unit == "picky-a" && r.outcome.is_success()),
        "the swapped unit runs at once: {runs:?}"
    );
    reactor.stop().await;
}
