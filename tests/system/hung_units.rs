//! A unit that never returns cannot stop the swarm: `swarm up` processes on the real Redis
//! with the `hang` fixture, counted on the mesh (not through the reactor's API). Call
//! deadlines, dead letters with `timeout`, quarantine and `/v1/health`; an entry that hangs
//! every process that runs it, dead-lettered across restarts and by a consumer that claims it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use swarm_mesh::prelude::*;
use swarm_mesh::{EntryId, RedisMesh};
use swarm_schemas::{FailureKind, Signal};
use swarm_tests::observed::{
    GROUP, Running, STREAM, dead_letters, done, health, publish, setup, until,
};
use swarm_tests::{deploy, free_port, redis_url};

/// Runs the `swarm` command; its standard output.
fn swarm(args: &[&str]) -> String {
    let output = std::process::Command::new(swarm_tests::swarm_binary())
        .args(args)
        .output()
        .expect("swarm runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signal_in_2000_hangs_its_unit_and_the_other_1999_are_handled() {
    let s = setup(&["--call-timeout", "1", "--quarantine-after", "5"]).await;
    let port = free_port();
    let reactor = Running(Some(
        s.spec.start_serving("hung-a", &format!("127.0.0.1:{port}")),
    ));
    let mut hung = None;
    for n in 0..2000u64 {
        let payload = if n == 1000 {
            json!({ "n": n, "hang": true })
        } else {
            json!({ "n": n })
        };
        let (signal, _) = publish(&s.mesh, payload).await;
        if n == 1000 {
            hung = Some(signal);
        }
    }
    let hung = hung.expect("the hanging signal");

    // Every other signal is handled once, counted on the mesh.
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 1999 {
        for (n, times) in done(&s.mesh).await {
            *seen.entry(n).or_default() += times;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 1,999 handled in 60 s; reactor log:\n{}",
            seen.len(),
            reactor.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!seen.contains_key(&1000), "the hung signal emitted nothing");
    assert_eq!(seen.len(), 1999);
    assert!(seen.values().all(|&t| t == 1), "each handled once");

    // The hung one: tried three times, each abandoned at its deadline, then dead-lettered.
    let letter = until(
        "the hung signal's dead letter",
        Duration::from_secs(30),
        async || dead_letters(&s.mesh).await.into_iter().next(),
    )
    .await;
    assert_eq!(letter.unit.as_deref(), Some("hang"));
    assert_eq!(letter.failure, Some(FailureKind::Timeout), "{letter:?}");
    assert_eq!(letter.attempts, 3, "{letter:?}");
    assert!(
        letter.reason.contains("deadline of 1000 ms"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.original["id"], json!(hung.id));
    group_settled(&s.mesh).await;

    // Three calls are stuck: degraded, not yet quarantined (5 timeouts quarantine).
    let h = health(port).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["problems"][0]["unit"], "hang", "{h}");
    assert_eq!(h["problems"][0]["state"], "ready", "{h}");
    assert_eq!(h["problems"][0]["stuck_calls"], 3, "{h}");

    // Two more hanging signals: the fifth timeout quarantines the unit, which stops retrying.
    publish(&s.mesh, json!({ "n": 5000, "hang": true })).await;
    publish(&s.mesh, json!({ "n": 5001, "hang": true })).await;
    until(
        "the unit quarantined",
        Duration::from_secs(30),
        async || {
            let h = health(port).await;
            (h["problems"][0]["state"] == "quarantined").then_some(h)
        },
    )
    .await;
    let h = health(port).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["problems"][0]["unit"], "hang", "{h}");
    // Both signals' first tries may time out together, past the fifth.
    let timeouts = h["problems"][0]["timeouts"].as_u64().expect("timeouts");
    assert!((5..=6).contains(&timeouts), "{h}");
    assert!(
        h["problems"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("quarantined")),
        "{h}"
    );
    // The command line says so too: the running units, and the doctor.
    let server = format!("http://127.0.0.1:{port}");
    let units = swarm(&["units", "--server", &server]);
    assert!(units.contains("quarantined"), "{units}");
    assert!(units.contains("still stuck"), "{units}");
    let doctor = swarm(&["doctor", "--http", &format!("127.0.0.1:{port}")]);
    assert!(
        doctor.contains("is degraded: unit `hang`: quarantined"),
        "{doctor}"
    );
    until(
        "both hanging signals dead-lettered",
        Duration::from_secs(30),
        async || (dead_letters(&s.mesh).await.len() == 3).then_some(()),
    )
    .await;
    // Each timeout stranded a thread, the first signal's three included.
    let stuck = health(port).await["problems"][0]["stuck_calls"]
        .as_u64()
        .expect("stuck calls");
    assert!((5..=6).contains(&stuck), "{stuck}");

    // Quarantined: its signals are dead-lettered for it, not run.
    for n in 6000..6010u64 {
        publish(&s.mesh, json!({ "n": n })).await;
    }
    let letters = until(
        "ten signals dead-lettered for the quarantined unit",
        Duration::from_secs(30),
        async || {
            let letters = dead_letters(&s.mesh).await;
            (letters.len() == 13).then_some(letters)
        },
    )
    .await;
    for letter in &letters[3..] {
        assert_eq!(letter.unit.as_deref(), Some("hang"));
        assert_eq!(letter.attempts, 0, "not run");
        assert!(
            letter.reason.contains("is quarantined"),
            "{}",
            letter.reason
        );
    }
    assert!(
        done(&s.mesh).await.is_empty(),
        "a quarantined unit runs nothing"
    );

    // Enabled again, it serves; its stuck calls still show.
    let client = reqwest::Client::new();
    let enabled = client
        .post(format!("http://127.0.0.1:{port}/v1/units/hang/enable"))
        .send()
        .await
        .expect("enable answers");
    assert!(enabled.status().is_success(), "{enabled:?}");
    publish(&s.mesh, json!({ "n": 7000 })).await;
    until(
        "a signal handled after the quarantine is lifted",
        Duration::from_secs(30),
        async || done(&s.mesh).await.contains_key(&7000).then_some(()),
    )
    .await;
    let h = health(port).await;
    assert_eq!(h["problems"][0]["state"], "ready", "{h}");
    assert_eq!(
        h["problems"][0]["stuck_calls"], stuck,
        "every abandoned call still sleeps: {h}"
    );
    assert_eq!(
        h["problems"][0]["timeouts"], 0,
        "enabling forgets the timeouts: {h}"
    );
    reactor.kill();
}

/// Waits until the reactor group has read every entry and settled it.
async fn group_settled(mesh: &RedisMesh) {
    until("the group settled", Duration::from_secs(30), async || {
        let info = mesh.group_info(STREAM, GROUP).await.ok()?;
        (info.pending == 0 && info.lag == 0).then_some(())
    })
    .await;
}

/// Pending entries of the reactor group: (entry, consumer, deliveries).
async fn pending(mesh: &RedisMesh) -> Vec<(String, String, u64)> {
    let client = redis::Client::open(redis_url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("XPENDING")
        .arg(mesh.key(STREAM))
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async::<Vec<(String, String, u64, u64)>>(&mut conn)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(id, consumer, _idle, deliveries)| (id, consumer, deliveries))
        .collect()
}

/// Waits until `entry` has been delivered `deliveries` times (the process has read it).
async fn delivered(mesh: &RedisMesh, entry: EntryId, deliveries: u64) {
    let entry = entry.to_string();
    until(
        &format!("delivery {deliveries}"),
        Duration::from_secs(30),
        async || {
            pending(mesh)
                .await
                .into_iter()
                .any(|(id, _, d)| id == entry && d >= deliveries)
                .then_some(())
        },
    )
    .await;
}

/// Publishes an ordinary signal and returns how long it took to be handled.
async fn handled_within(mesh: &RedisMesh, n: u64) -> Duration {
    let started = Instant::now();
    publish(mesh, json!({ "n": n })).await;
    until(
        &format!("signal {n} handled"),
        Duration::from_secs(30),
        async || done(mesh).await.contains_key(&n).then_some(()),
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_hangs_every_process_is_dead_lettered_across_restarts() {
    // A deadline long enough that every process is killed while it is still trying.
    let s = setup(&["--call-timeout", "3", "--max-deliveries", "3"]).await;
    let (hung, entry) = publish(&s.mesh, json!({ "n": 0, "hang": true })).await;
    for deliveries in 1..=3u64 {
        let reactor = Running(Some(s.spec.start("restarted")));
        delivered(&s.mesh, entry, deliveries).await;
        // The hanging entry runs beside new signals: nothing waits on it.
        let took = handled_within(&s.mesh, deliveries).await;
        assert!(
            took < Duration::from_secs(3),
            "process {deliveries} was held up {took:?} by the hanging entry"
        );
        assert!(dead_letters(&s.mesh).await.is_empty(), "still trying");
        reactor.kill();
    }
    // The third restart reads it a fourth time: dead-lettered, not run.
    let started = Instant::now();
    let reactor = Running(Some(s.spec.start("restarted")));
    let letter = until("the dead letter", Duration::from_secs(30), async || {
        dead_letters(&s.mesh).await.into_iter().next()
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        letter.reason.contains("delivered 4 times"),
        "{}",
        letter.reason
    );
    assert!(
        letter.reason.contains("max_deliveries = 3"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.original["id"], json!(hung.id));
    // Every entry on the stream read and settled (the `test.done` signals too), so that the
    // next process reads only the entry published for it.
    group_settled(&s.mesh).await;
    reactor.kill();

    // Another consumer that claims an entry a dead process left is bound the same way.
    let (claimed, entry) = publish(&s.mesh, json!({ "n": 1, "hang": true })).await;
    let reactor = Running(Some(s.spec.start("first")));
    delivered(&s.mesh, entry, 1).await;
    reactor.kill();
    let mut other = s.spec.clone();
    other.claim_idle = 0.5;
    other.extra_args = ["--call-timeout", "3", "--max-deliveries", "1"]
        .map(str::to_owned)
        .to_vec();
    let reactor = Running(Some(other.start("other")));
    let letter = until(
        "the claimed entry's dead letter",
        Duration::from_secs(30),
        async || dead_letters(&s.mesh).await.into_iter().nth(1),
    )
    .await;
    assert_eq!(
        letter.original["id"],
        json!(claimed.id),
        "{letter:?}; dead letters: {:?}",
        dead_letters(&s.mesh).await
    );
    assert!(
        letter.reason.contains("delivered 2 times"),
        "{}",
        letter.reason
    );
    assert!(pending(&s.mesh).await.is_empty(), "settled");
    reactor.kill();
}

/// In process: the hung call's lane is left to it, and the calls queued behind it in that lane
/// move to a new one; the whole batch settles, the hung call as a `timeout` failure.
/// Runs `test` on a runtime of its own that, at the end, leaves behind the threads stuck in unit
/// calls (dropping it would wait for them forever, as `swarm` does not).
fn leaving_stuck_threads(test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(test);
    runtime.shutdown_timeout(Duration::from_millis(100));
}

#[test]
fn a_call_past_its_deadline_fails_and_the_rest_of_its_batch_settles() {
    leaving_stuck_threads(a_call_past_its_deadline());
}

async fn a_call_past_its_deadline() {
    let mut swarm = swarm_tests::TestSwarm::new();
    swarm.config.call_timeout = Duration::from_millis(200);
    swarm.config.max_attempts = 1;
    // One lane: every call of the batch queues behind the hung one.
    swarm.config.unit_threads = 1;
    swarm.deploy("fixture-hang", "hang.so");
    for n in 0..20u64 {
        let payload = if n == 5 {
            json!({ "n": n, "hang": true })
        } else {
            json!({ "n": n })
        };
        swarm.publish(&Signal::new("test.hang", payload)).await;
    }
    let (reactor, _) = swarm.start().await;
    assert!(
        swarm.settled(Duration::from_secs(10)).await,
        "the batch settled"
    );
    let done: Vec<u64> = swarm
        .signals(STREAM)
        .await
        .into_iter()
        .filter(|s| s.kind == "test.done")
        .filter_map(|s| s.payload["n"].as_u64())
        .collect();
    assert_eq!(done.len(), 19, "{done:?}");
    assert!(!done.contains(&5));
    let letters = swarm.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].failure, Some(FailureKind::Timeout));
    let status = reactor.registry().status();
    assert_eq!((status[0].timeouts, status[0].stuck_calls), (1, 1));
    reactor.stop_within(Duration::from_secs(5)).await;
}

#[test]
fn past_the_bound_of_stuck_calls_the_reactor_says_it_must_exit() {
    leaving_stuck_threads(past_the_bound_of_stuck_calls());
}

async fn past_the_bound_of_stuck_calls() {
    let mut swarm = swarm_tests::TestSwarm::new();
    swarm.config.call_timeout = Duration::from_millis(100);
    swarm.config.max_attempts = 1;
    swarm.config.quarantine_after = 0;
    swarm.config.max_stuck_calls = 2;
    swarm.deploy("fixture-hang", "hang.so");
    let (reactor, _) = swarm.start().await;
    for n in 0..2u64 {
        swarm
            .publish(&Signal::new("test.hang", json!({ "n": n, "hang": true })))
            .await;
    }
    assert!(swarm.settled(Duration::from_secs(10)).await);
    let within = tokio::time::timeout(Duration::from_millis(300), reactor.fatal()).await;
    assert!(within.is_err(), "two stuck calls are within a bound of 2");
    swarm
        .publish(&Signal::new("test.hang", json!({ "n": 2, "hang": true })))
        .await;
    let why = tokio::time::timeout(Duration::from_secs(10), reactor.fatal())
        .await
        .expect("the third stuck call passes the bound");
    assert!(why.contains("3 unit calls are stuck"), "{why}");
    assert!(why.contains("`hang`"), "{why}");
    reactor.stop_within(Duration::from_secs(5)).await;
}

/// `swarm up` exits with status 70 past the bound, saying why, for a supervisor to restart it.
#[test]
fn swarm_up_exits_non_zero_past_the_bound_of_stuck_calls() {
    let units = tempfile::tempdir().expect("units dir");
    deploy(units.path(), "fixture-hang", "hang.so");
    let feed = units.path().join("feed.jsonl");
    let line = json!({ "kind": "test.hang", "payload": { "hang": true } }).to_string();
    std::fs::write(&feed, format!("{line}\n{line}\n")).expect("feed");
    let started = Instant::now();
    let output = std::process::Command::new(swarm_tests::swarm_binary())
        .args(["up", "--no-watch", "--http", "127.0.0.1:0"])
        .args(["--call-timeout", "0.2", "--max-attempts", "1"])
        .args(["--quarantine-after", "0", "--max-stuck-calls", "1"])
        .arg("--units")
        .arg(units.path())
        .arg("--feed")
        .arg(&feed)
        .env("RUST_LOG", "warn")
        .output()
        .expect("swarm up runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(70), "{stderr}");
    assert!(
        stderr.contains("2 unit calls are stuck past their deadline"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The same load with the unit isolated (`--isolate hang`): the calls that hang and spin are
/// stopped by killing their worker, so no thread is stuck, the process stays healthy and stops
/// at once; every other signal is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_unit_that_hangs_leaves_nothing_stuck() {
    let s = setup(&[
        "--call-timeout",
        "1",
        "--quarantine-after",
        "0",
        "--isolate",
        "hang",
    ])
    .await;
    let port = free_port();
    let mut reactor = Running(Some(
        s.spec
            .start_serving("isolated-a", &format!("127.0.0.1:{port}")),
    ));
    for n in 0..2000u64 {
        let payload = match n {
            700 => json!({ "n": n, "hang": true }),
            1400 => json!({ "n": n, "hang": "spin" }),
            _ => json!({ "n": n }),
        };
        publish(&s.mesh, payload).await;
    }
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 1998 {
        for (n, times) in done(&s.mesh).await {
            *seen.entry(n).or_default() += times;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 1,998 handled in 60 s; reactor log:\n{}",
            seen.len(),
            reactor.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!seen.contains_key(&700) && !seen.contains_key(&1400));
    assert!(seen.values().all(|&t| t == 1), "each handled once");
    let letters = until("both dead letters", Duration::from_secs(30), async || {
        let letters = dead_letters(&s.mesh).await;
        (letters.len() == 2).then_some(letters)
    })
    .await;
    // A hanging call fails with `timeout` when its own deadline passes; when the other hanging
    // call's deadline kills the worker they share first, it fails with `crash`, saying so.
    assert!(
        letters.iter().all(|l| l.attempts == 3
            && (l.failure == Some(FailureKind::Timeout)
                || (l.failure == Some(FailureKind::Crash)
                    && l.reason.contains("killed: a call ran past its")))),
        "{letters:?}"
    );
    let h = health(port).await;
    assert_eq!(h["status"], "ok", "no call is stuck: {h}");
    let units: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/v1/units"))
        .await
        .expect("units")
        .json()
        .await
        .expect("json");
    assert_eq!(units[0]["isolated"], true, "{units}");
    assert_eq!(units[0]["state"], "ready", "{units}");
    // Nothing holds up a clean stop.
    let stopping = Instant::now();
    let process = reactor.0.take().expect("running");
    assert!(process.stop(), "clean exit");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        stopping.elapsed()
    );
}
