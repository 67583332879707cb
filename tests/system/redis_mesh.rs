//! Reactor processes on a real Redis mesh: two processes share the work; one is SIGKILLed five
//! times while 20k signals flow and nothing is lost; Redis itself is restarted mid-run and the
//! reactor resumes by itself. The Redis servers are started by the project's `ops/start-redis`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use swarm_mesh::prelude::*;
use swarm_mesh::{RedisMesh, RedisMeshConfig, StartAt};
use swarm_schemas::Signal;
use swarm_tests::{OwnRedis, ReactorSpec, deploy, redis_url};
use uuid::Uuid;

const STREAM: &str = "swarm:signals";
const GROUP: &str = "reactor";
const OBSERVER: &str = "observer";

struct Setup {
    spec: ReactorSpec,
    mesh: Arc<RedisMesh>,
    _units: tempfile::TempDir,
    _work: tempfile::TempDir,
}

async fn setup(redis: String, claim_idle: f64) -> Setup {
    let units = tempfile::tempdir().expect("units dir");
    let work = tempfile::tempdir().expect("work dir");
    deploy(units.path(), "fixture-counter-v1", "counter.so");
    let prefix = format!("test-{}", Uuid::now_v7());
    let mut config = RedisMeshConfig::new(redis.clone());
    config.key_prefix.clone_from(&prefix);
    let mesh = Arc::new(
        RedisMesh::connect(config)
            .await
            .expect("the tests need Redis: ops/start-redis"),
    );
    // The reactors trim what every group has acknowledged; this group of the test's own keeps
    // every entry until the test has read it.
    mesh.create_group(STREAM, OBSERVER, StartAt::Beginning)
        .await
        .expect("observer group");
    let spec = ReactorSpec {
        redis,
        prefix,
        units: units.path().to_owned(),
        work: work.path().to_owned(),
        claim_idle,
        extra_args: Vec::new(),
    };
    Setup {
        spec,
        mesh,
        _units: units,
        _work: work,
    }
}

/// Waits until the reactor group exists and has nothing pending or undelivered.
async fn settled(mesh: &RedisMesh, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if mesh
            .group_info(STREAM, GROUP)
            .await
            .is_ok_and(|i| i.pending == 0 && i.lag == 0)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every `tock` on the stream, read through the observer group: tick id -> pids that emitted
/// one for it.
async fn tocks(mesh: &RedisMesh) -> HashMap<Uuid, Vec<u64>> {
    let mut out: HashMap<Uuid, Vec<u64>> = HashMap::new();
    loop {
        let entries = mesh
            .read(STREAM, OBSERVER, "test", 10_000, Duration::ZERO)
            .await
            .expect("read");
        if entries.is_empty() {
            break;
        }
        for signal in entries
            .into_iter()
            .filter_map(|e| e.body.ok())
            .filter(|s| s.kind == "tock")
        {
            let of = signal.payload["of"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("tock names its tick");
            out.entry(of)
                .or_default()
                .push(signal.payload["pid"].as_u64().unwrap_or(0));
        }
    }
    out
}

/// Every execution the counter logged: tick id -> pids that ran it.
fn executions(log: &Path) -> HashMap<Uuid, Vec<u64>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: HashMap<Uuid, Vec<u64>> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        if let (Some(Ok(id)), Some(Ok(pid))) =
            (parts.next().map(str::parse), parts.next().map(str::parse))
        {
            out.entry(id).or_default().push(pid);
        }
    }
    out
}

/// Publishes `total` ticks at about `per_ms` a millisecond, retrying each until Redis takes
/// it; returns the ids Redis acknowledged.
fn publisher(
    mesh: Arc<RedisMesh>,
    total: usize,
    per_ms: usize,
) -> tokio::task::JoinHandle<Vec<Uuid>> {
    tokio::spawn(async move {
        let mut ids = Vec::with_capacity(total);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while ids.len() < total {
            tick.tick().await;
            for _ in 0..per_ms.min(total - ids.len()) {
                let signal = Signal::new("tick", json!({}));
                while mesh.publish(STREAM, &signal).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ids.push(signal.id);
            }
        }
        ids
    })
}

async fn wait_for_group(mesh: &RedisMesh) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while mesh.group_info(STREAM, GROUP).await.is_err() {
        assert!(Instant::now() < deadline, "the reactor created its group");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reactor_processes_share_the_work() {
    let s = setup(redis_url(), 30.0).await;
    let a = s.spec.start("a");
    let b = s.spec.start("b");
    wait_for_group(&s.mesh).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let published = publisher(Arc::clone(&s.mesh), 6_000, 3)
        .await
        .expect("publisher");
    assert!(
        settled(&s.mesh, Duration::from_secs(60)).await,
        "everything handled"
    );
    let (pid_a, pid_b) = (u64::from(a.pid()), u64::from(b.pid()));
    assert!(a.stop() && b.stop(), "both exit cleanly on SIGTERM");

    let tocks = tocks(&s.mesh).await;
    assert!(
        published
            .iter()
            .all(|id| tocks.get(id).map(Vec::len) == Some(1)),
        "one tock per tick"
    );
    let by_a = tocks.values().filter(|pids| pids[0] == pid_a).count();
    let by_b = tocks.values().filter(|pids| pids[0] == pid_b).count();
    println!(
        "shared work: {} ticks, process a took {by_a}, process b took {by_b}",
        published.len()
    );
    assert_eq!(by_a + by_b, published.len());
    let share = by_a.min(by_b) as f64 / published.len() as f64;
    assert!(
        share >= 0.2,
        "each process takes a substantial share: a {by_a}, b {by_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_killed_five_times_loses_nothing() {
    let s = setup(redis_url(), 5.0).await;
    let mut a = s.spec.start("a");
    let b = s.spec.start("b");
    wait_for_group(&s.mesh).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Five kills at random moments while 20k signals flow (about 4 s at 5k/s).
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % 3_400
    };
    let mut moments: Vec<u64> = (0..5).map(|_| 300 + next()).collect();
    moments.sort_unstable();
    let started = tokio::time::Instant::now();
    let feed = publisher(Arc::clone(&s.mesh), 20_000, 5);
    let mut killed = BTreeSet::new();
    for at in &moments {
        tokio::time::sleep_until(started + Duration::from_millis(*at)).await;
        killed.insert(u64::from(a.pid()));
        a.kill();
        a = s.spec.start("a");
    }
    let published = feed.await.expect("publisher");
    assert!(
        settled(&s.mesh, Duration::from_secs(90)).await,
        "everything handled after the kills"
    );
    assert!(a.stop() && b.stop(), "both exit cleanly on SIGTERM");

    let tocks = tocks(&s.mesh).await;
    let executions = executions(&s.spec.counter_log());
    let lost: Vec<&Uuid> = published
        .iter()
        .filter(|id| !tocks.contains_key(id))
        .collect();
    let emitted_twice = tocks.values().filter(|pids| pids.len() > 1).count();
    let run_twice: Vec<(&Uuid, &Vec<u64>)> = executions
        .iter()
        .filter(|(_, pids)| pids.len() > 1)
        .collect();
    println!(
        "crash test (seed {seed}, kills at {moments:?} ms): {} signals, lost {}, emitted twice {emitted_twice}, \
         executed more than once {} (all in flight in a killed process)",
        published.len(),
        lost.len(),
        run_twice.len()
    );
    assert!(lost.is_empty(), "signals lost: {}", lost.len());
    assert_eq!(
        emitted_twice, 0,
        "emits and acks are atomic: nothing is emitted twice"
    );
    for (id, pids) in &run_twice {
        assert!(
            pids.iter().any(|pid| killed.contains(pid)),
            "tick {id} ran twice without a kill: {pids:?}"
        );
    }
    assert!(
        published.iter().all(|id| executions.contains_key(id)),
        "every tick executed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reactor_resumes_by_itself_after_redis_restarts() {
    let redis = OwnRedis::start();
    let s = setup(redis.url(), 2.0).await;
    let mut a = s.spec.start("a");
    wait_for_group(&s.mesh).await;
    let outage = Arc::new(Mutex::new(Duration::ZERO));
    let feed = publisher(Arc::clone(&s.mesh), 4_000, 1);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let down = Instant::now();
    redis.shutdown();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    redis.restart();
    *outage.lock().expect("lock") = down.elapsed();
    let published = feed.await.expect("publisher");
    assert!(
        settled(&s.mesh, Duration::from_secs(60)).await,
        "the reactor resumed and handled everything"
    );
    assert!(a.running(), "the reactor survived the outage");
    assert!(a.stop(), "exits cleanly on SIGTERM");

    let tocks = tocks(&s.mesh).await;
    let lost = published
        .iter()
        .filter(|id| !tocks.contains_key(id))
        .count();
    let emitted_twice = tocks.values().filter(|pids| pids.len() > 1).count();
    println!(
        "redis restart: outage {:?}, {} signals acknowledged by Redis, lost {lost}, emitted twice {emitted_twice} (data dir {})",
        outage.lock().expect("lock"),
        published.len(),
        redis.dir().display()
    );
    assert_eq!(lost, 0, "no acknowledged signal is lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_execution_keeps_its_entry_claimed() {
    // Entries idle for 1 s may be taken over; this call takes 3.5 s, while another process
    // stands ready to claim.
    let s = setup(redis_url(), 1.0).await;
    let a = s.spec.start("a");
    let b = s.spec.start("b");
    wait_for_group(&s.mesh).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slow = Signal::new("tick", json!({ "sleep_ms": 3_500 }));
    s.mesh.publish(STREAM, &slow).await.expect("publish");
    assert!(settled(&s.mesh, Duration::from_secs(30)).await);
    assert!(a.stop() && b.stop());
    let executions = executions(&s.spec.counter_log());
    assert_eq!(
        executions.get(&slow.id).map(Vec::len),
        Some(1),
        "ran once, not redelivered while running"
    );
    assert_eq!(tocks(&s.mesh).await.get(&slow.id).map(Vec::len), Some(1));
}

/// SIGTERM while signals are running: the process stops reading, lets what it started finish
/// and settle, and exits 0. Nothing it started is left pending; what it had not read is handled
/// by the next process, each signal exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_started_signals_settle_and_loses_nothing() {
    let mut s = setup(redis_url(), 30.0).await;
    // At most 64 signals in flight, of 20 ms each: a batch of 256 takes its two lanes of unit
    // calls 2.5 s on this machine's two cores (well within the shutdown's 30 s), and the 1,500
    // it is given about 15 s, so what it has started when the SIGTERM comes is far less than
    // what it was given, however fast the reactor or late the signal on a loaded machine.
    s.spec.extra_args = vec!["--concurrency".into(), "64".into()];
    let a = s.spec.start("a");
    wait_for_group(&s.mesh).await;
    let mut ids = Vec::new();
    for _ in 0..1_500 {
        let signal = Signal::new("tick", json!({"sleep_ms": 20}));
        s.mesh.publish(STREAM, &signal).await.expect("publish");
        ids.push(signal.id);
    }
    // Let it get going, then ask it to stop while executions are running.
    let started = Instant::now();
    while executions(&s.spec.counter_log()).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reactor started work"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.stop(), "exits 0 on SIGTERM");
    let info = s.mesh.group_info(STREAM, GROUP).await.expect("group info");
    assert_eq!(info.pending, 0, "nothing it started is left pending");
    let ran = executions(&s.spec.counter_log());
    println!("stopped after {} of {} ticks", ran.len(), ids.len());
    assert!(
        !ran.is_empty() && ran.len() < ids.len(),
        "stopped part way: {} of {}",
        ran.len(),
        ids.len()
    );
    // Every execution it ran was settled: its tock is on the stream.
    let emitted = tocks(&s.mesh).await;
    for id in ran.keys() {
        assert_eq!(emitted.get(id).map(Vec::len), Some(1), "tock of {id}");
    }
    // The next process handles the rest; every tick ran exactly once in all.
    let b = s.spec.start("b");
    assert!(
        settled(&s.mesh, Duration::from_secs(60)).await,
        "the rest is handled"
    );
    assert!(b.stop(), "exits 0 on SIGTERM");
    let ran = executions(&s.spec.counter_log());
    for id in &ids {
        assert_eq!(ran.get(id).map(Vec::len), Some(1), "tick {id} ran once");
    }
}

/// SIGTERM while a call runs longer than the shutdown deadline: the process exits 0 when the
/// deadline passes, without waiting for the call; the signal stays pending, and the process
/// that comes back under the same consumer name handles it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_deadline_leaves_the_running_signal_pending_for_the_next_process() {
    let mut s = setup(redis_url(), 30.0).await;
    // The 6 s call is within its deadline: this is about shutdown, not hung calls.
    s.spec.extra_args = ["--shutdown-timeout", "0.5", "--call-timeout", "30"]
        .map(str::to_owned)
        .to_vec();
    let a = s.spec.start("a");
    wait_for_group(&s.mesh).await;
    let slow = Signal::new("tick", json!({ "sleep_ms": 6_000 }));
    s.mesh.publish(STREAM, &slow).await.expect("publish");
    let started = Instant::now();
    loop {
        let info = s.mesh.group_info(STREAM, GROUP).await.expect("group info");
        if info.pending == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the call starts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = a.log.clone();
    let stopping = Instant::now();
    assert!(a.stop(), "exits 0 on SIGTERM");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "it did not wait for the 6 s call: {:?}",
        stopping.elapsed()
    );
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        stderr.contains("stay pending and will be delivered again"),
        "{stderr}"
    );
    assert!(
        executions(&s.spec.counter_log()).is_empty(),
        "the call did not finish"
    );
    let info = s.mesh.group_info(STREAM, GROUP).await.expect("group info");
    assert_eq!(info.pending, 1, "the signal is left pending, not lost");

    let again = s.spec.start("a");
    assert!(
        settled(&s.mesh, Duration::from_secs(30)).await,
        "the restarted process handles it"
    );
    assert!(again.stop());
    let ran = executions(&s.spec.counter_log());
    assert_eq!(ran.get(&slow.id).map(Vec::len), Some(1), "handled once");
    assert_eq!(tocks(&s.mesh).await.get(&slow.id).map(Vec::len), Some(1));
}

/// A signal published in MessagePack is stored as MessagePack (field `m`), handled by a unit
/// that only ever sees JSON, and what the unit emits travels in MessagePack too; a JSON signal
/// beside it stays JSON (field `s`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_signals_pass_through_units_that_see_json() {
    let s = setup(redis_url(), 30.0).await;
    let a = s.spec.start("a");
    wait_for_group(&s.mesh).await;
    let packed = Signal::new("tick", json!({ "note": "packed" }))
        .with_encoding(swarm_schemas::Encoding::MessagePack);
    let plain = Signal::new("tick", json!({ "note": "plain" }));
    s.mesh.publish(STREAM, &packed).await.expect("publish");
    s.mesh.publish(STREAM, &plain).await.expect("publish");
    assert!(settled(&s.mesh, Duration::from_secs(30)).await);
    assert!(a.stop());

    // What Redis holds: one field per entry, named for its encoding.
    let client = redis::Client::open(redis_url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // (entry id, [(field, bytes)]) per entry.
    type RawEntry = (String, Vec<(String, Vec<u8>)>);
    let raw: Vec<RawEntry> = redis::cmd("XRANGE")
        .arg(s.mesh.key(STREAM))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    let mut fields_by_kind: Vec<(String, String)> = Vec::new();
    for (_, fields) in &raw {
        let (field, bytes) = &fields[0];
        let signal: Signal = if field == "m" {
            rmp_serde::from_slice(bytes).expect("MessagePack")
        } else {
            serde_json::from_slice(bytes).expect("JSON")
        };
        let note = if signal.id == packed.id
            || signal.payload["of"].as_str() == Some(&packed.id.to_string())
        {
            "packed"
        } else {
            "plain"
        };
        fields_by_kind.push((format!("{} {note}", signal.kind), field.clone()));
    }
    fields_by_kind.sort();
    assert_eq!(
        fields_by_kind,
        [
            ("tick packed".to_owned(), "m".to_owned()),
            ("tick plain".to_owned(), "s".to_owned()),
            ("tock packed".to_owned(), "m".to_owned()),
            ("tock plain".to_owned(), "s".to_owned()),
        ]
    );
    // The unit saw the payload the sender packed.
    let ran = executions(&s.spec.counter_log());
    assert_eq!(ran.get(&packed.id).map(Vec::len), Some(1));
    let tocks = tocks(&s.mesh).await;
    assert_eq!(tocks.get(&packed.id).map(Vec::len), Some(1));
}
