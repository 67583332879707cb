//! Capability call overhead, from one unit: `marks` deposits and senses per second, one
//! operation per call and batched, timed inside the `probe` unit (so the figure is what the
//! calls cost the unit, through the ABI, the host and the store). On the real Redis started by
//! `ops/start-redis` it is printed beside `redis-benchmark` running the same script with the
//! same arguments from one client (`-c 1`, no pipelining): the ceiling a unit's sequential
//! calls could reach. On the in-process mesh it shows the host's own overhead.
//!
//! Run with: `cargo bench -p swarm-tests --bench host_calls` (Redis must be running).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use swarm_memory::{InProcMemory, Memory};
use swarm_mesh::{InProcMesh, Mesh, RedisMarks, RedisMesh, RedisMeshConfig};
use swarm_reactor::{Reactor, ReactorConfig};
use swarm_schemas::{Capability, Signal};
use swarm_tests::{deploy, redis_url, request};
use uuid::Uuid;

const STREAM: &str = "swarm:signals";
const OPS: u64 = 20_000;
const BATCH: u64 = 100;
const HALF_LIFE_S: u64 = 3600;

async fn start(mesh: Arc<dyn Mesh>, units: &std::path::Path, private: &std::path::Path) -> Reactor {
    let mut config = ReactorConfig::new(units.to_owned(), private.to_owned());
    config.watch = false;
    config.block = Duration::from_millis(20);
    config.trim_every = Duration::from_secs(3600);
    config.host.marks_half_life = Duration::from_secs(HALF_LIFE_S);
    config
        .host
        .grants
        .insert("probe".into(), [Capability::Marks].into());
    let memory: Arc<dyn Memory> = Arc::new(InProcMemory::new());
    let (reactor, report) = Reactor::start(config, mesh, memory)
        .await
        .expect("reactor starts");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    reactor
}

/// Runs one load in the unit; returns operations per second and microseconds per call.
async fn load(mesh: &Arc<dyn Mesh>, mode: &str, batch: u64) -> (f64, f64) {
    let signal = Signal::new(
        "probe.run",
        json!({"do": "load", "mode": mode, "key": "bench", "n": OPS, "batch": batch}),
    );
    let result = request(&**mesh, STREAM, &signal, Duration::from_secs(600))
        .await
        .expect("the load finished");
    let ok: &Value = &result.payload["ok"];
    let seconds = ok["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("the load failed: {}", result.payload));
    let calls = ok["calls"].as_f64().unwrap_or(1.0);
    (OPS as f64 / seconds, seconds * 1e6 / calls)
}

async fn measure(name: &str, mesh: Arc<dyn Mesh>) {
    let units = tempfile::tempdir().expect("units dir");
    let private = tempfile::tempdir().expect("private dir");
    deploy(units.path(), "fixture-probe", "probe.so");
    let reactor = start(Arc::clone(&mesh), units.path(), private.path()).await;
    // Warm the connection and the script cache.
    load(&mesh, "deposit", BATCH).await;
    for (mode, batch) in [
        ("deposit", 1),
        ("sense", 1),
        ("deposit", BATCH),
        ("sense", BATCH),
    ] {
        let (rate, per_call) = load(&mesh, mode, batch).await;
        println!(
            "{name:9} {mode:7} {batch:>3} op/call: {rate:>10.0} ops/s  {per_call:>8.1} µs/call"
        );
    }
    reactor.stop().await;
}

/// `redis-benchmark -c 1` of the same EVALSHA the host sends, for `batch` operations a call;
/// returns operations per second.
fn reference(sha: &str, keys: (&str, &str), mode: &str, batch: u64) -> Result<f64, String> {
    let half_life = (HALF_LIFE_S * 1000).to_string();
    let mut args: Vec<String> = [
        "-n", "20000", "-c", "1", "EVALSHA", sha, "2", keys.0, keys.1, &half_life,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let op = if mode == "deposit" { "d" } else { "s" };
    for _ in 0..batch {
        args.extend([op.to_owned(), "bench".to_owned(), "1".to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    swarm_tests::redis_benchmark(&args).map(|rps| rps * batch as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    swarm_tests::built_units();
    println!("{OPS} operations from one unit, timed inside it (marks; half-life {HALF_LIFE_S} s)");

    let mut config = RedisMeshConfig::new(redis_url());
    config.key_prefix = format!("bench-{}", Uuid::now_v7());
    let redis = Arc::new(
        RedisMesh::connect(config)
            .await
            .expect("the benchmark needs Redis: ops/start-redis"),
    );
    measure("redis", Arc::clone(&redis) as Arc<dyn Mesh>).await;
    measure("in-proc", Arc::new(InProcMesh::new())).await;

    // The same script, loaded under its SHA, driven by redis-benchmark from one client.
    let client = redis::Client::open(redis_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(RedisMarks::apply_script())
        .query_async(&mut conn)
        .await
        .expect("script load");
    let marks = RedisMarks::keys_of(&format!("bench-ref-{}", Uuid::now_v7()));
    for (mode, batch) in [
        ("deposit", 1),
        ("sense", 1),
        ("deposit", BATCH),
        ("sense", BATCH),
    ] {
        match reference(&sha, (&marks.0, &marks.1), mode, batch) {
            Ok(rate) => println!(
                "redis-benchmark -c 1 EVALSHA {mode:7} {batch:>3} op/call: {rate:>10.0} ops/s  {:>8.1} µs/call",
                1e6 * batch as f64 / rate
            ),
            Err(e) => println!("redis-benchmark {mode} {batch}: {e}"),
        }
    }
    for key in [&marks.0, &marks.1] {
        let _: Result<i64, _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
    }
}
