//! Benchmark of the reactor on a real Redis mesh (the project's Redis from `ops/start-redis`,
//! AOF on): end-to-end signals/s through Redis with a no-op unit library, printed next to
//! `redis-benchmark -P 32 XADD` on the same server; publish→invoke latency at a fixed
//! 5k signals/s; and, to show where the time goes, the bare mesh (read + settle, no units) and
//! the publish rate. Prints its figures; asserts nothing about speed.
//!
//! Run with: ops/start-redis && cargo bench -p swarm-tests --bench redis_mesh

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use swarm_memory::InProcMemory;
use swarm_mesh::prelude::*;
use swarm_mesh::{Mesh, RedisMesh, RedisMeshConfig, Settlement, StartAt};
use swarm_reactor::{Reactor, ReactorConfig};
use swarm_schemas::Signal;
use swarm_tests::{deploy, redis_url};
use uuid::Uuid;

const BACKLOG: usize = 100_000;
const STREAM: &str = "swarm:signals";

fn noop(n: usize) -> Signal {
    Signal::new(
        "bench.noop",
        json!({ "n": n, "note": "a small payload, like most signals" }),
    )
}

async fn mesh() -> Arc<RedisMesh> {
    let mut config = RedisMeshConfig::new(redis_url());
    config.key_prefix = format!("bench-{}", Uuid::now_v7());
    Arc::new(
        RedisMesh::connect(config)
            .await
            .expect("the benchmark needs Redis: run ops/start-redis"),
    )
}

/// Publishes `n` signals from 32 concurrent tasks (the multiplexed connection pipelines them).
async fn publish(mesh: &Arc<RedisMesh>, n: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32 {
        let mesh = Arc::clone(mesh);
        tasks.spawn(async move {
            for i in (t..n).step_by(32) {
                mesh.publish(STREAM, &noop(i)).await.expect("publish");
            }
        });
    }
    tasks.join_all().await;
    started.elapsed()
}

async fn settled(mesh: &RedisMesh, group: &str) {
    while !mesh
        .group_info(STREAM, group)
        .await
        .is_ok_and(|i| i.pending == 0 && i.lag == 0)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cleanup(mesh: &RedisMesh) {
    let client = redis::Client::open(redis_url()).expect("url");
    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(mesh.key(STREAM))
            .query_async(&mut conn)
            .await;
    }
}

/// `redis-benchmark -P 32` of XADD with a payload the size of one of our signals.
fn redis_benchmark() -> String {
    let key = format!("bench-xadd-{}", Uuid::now_v7());
    let payload = serde_json::to_string(&noop(0)).unwrap_or_default();
    let result = swarm_tests::redis_benchmark(&[
        "-n", "200000", "-P", "32", "XADD", &key, "*", "s", &payload,
    ]);
    let _ = swarm_tests::redis_benchmark(&["-n", "1", "DEL", &key]);
    match result {
        Ok(rate) => format!("{rate:.0} requests per second"),
        Err(e) => e,
    }
}

async fn reactor(
    mesh: &Arc<RedisMesh>,
    units: &std::path::Path,
    private: &std::path::Path,
) -> (Reactor, Arc<InProcMemory>) {
    let mut config = ReactorConfig::new(units.to_owned(), private.to_owned());
    config.watch = false;
    config.consumer = "bench".to_owned();
    config.batch = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(config.batch);
    config.concurrency = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(config.concurrency);
    let memory = Arc::new(InProcMemory::bounded(BACKLOG * 2));
    let (reactor, report) = Reactor::start(
        config,
        Arc::clone(mesh) as Arc<dyn Mesh>,
        Arc::clone(&memory) as _,
    )
    .await
    .expect("reactor starts");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    (reactor, memory)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    swarm_tests::built_units();
    let units = tempfile::tempdir().expect("units dir");
    let private = tempfile::tempdir().expect("private dir");
    deploy(units.path(), "fixture-noop", "noop.so");

    println!(
        "redis-benchmark -P 32 XADD (same server, signal-sized payload): {}",
        redis_benchmark()
    );

    // The bare mesh: publish, then read + settle in batches of 256 with no unit.
    let bare = mesh().await;
    bare.create_group(STREAM, "g", StartAt::Beginning)
        .await
        .expect("group");
    let took = publish(&bare, BACKLOG).await;
    println!(
        "publish through RedisMesh (32 tasks): {:.0} signals/s",
        BACKLOG as f64 / took.as_secs_f64()
    );
    let started = Instant::now();
    loop {
        let batch = bare
            .read(STREAM, "g", "c", 256, Duration::ZERO)
            .await
            .expect("read");
        if batch.is_empty() {
            break;
        }
        let settlements: Vec<Settlement> = batch
            .iter()
            .map(|d| Settlement {
                id: d.id,
                emits: Vec::new(),
            })
            .collect();
        bare.settle_batch(STREAM, "g", &settlements)
            .await
            .expect("settle");
    }
    let took = started.elapsed();
    println!(
        "mesh alone (read 256 + settle_batch, no units): {:.0} signals/s",
        BACKLOG as f64 / took.as_secs_f64()
    );
    cleanup(&bare).await;

    // End to end: a backlog drained by the reactor through the no-op unit library.
    let e2e = mesh().await;
    publish(&e2e, BACKLOG).await;
    let started = Instant::now();
    let (running, memory) = reactor(&e2e, units.path(), private.path()).await;
    settled(&e2e, "reactor").await;
    let took = started.elapsed();
    running.stop().await;
    println!(
        "reactor end to end through Redis (no-op unit): {BACKLOG} signals in {took:.2?} = {:.0} signals/s ({} executions recorded)",
        BACKLOG as f64 / took.as_secs_f64(),
        memory.len()
    );
    cleanup(&e2e).await;

    // Latency at a fixed 5k signals/s.
    let fixed = mesh().await;
    let (running, memory) = reactor(&fixed, units.path(), private.path()).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..5_000 * 5 {
        if i % 5 == 0 {
            tick.tick().await;
        }
        fixed.publish(STREAM, &noop(i)).await.expect("publish");
    }
    settled(&fixed, "reactor").await;
    running.stop().await;
    let mut micros: Vec<i64> = memory
        .all()
        .iter()
        .map(|r| {
            (r.started_at - r.signal.created_at)
                .num_microseconds()
                .unwrap_or(i64::MAX)
        })
        .collect();
    micros.sort_unstable();
    let at = |p: f64| micros[((micros.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "publish -> invoke through Redis at 5000 signals/s for 5 s ({} signals): p50 {} us, p99 {} us, max {} us",
        micros.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    cleanup(&fixed).await;
}
