//! Draining a backlog: `swarm up` with a no-op unit against a bare hand-written redis-rs loop,
//! on the same stream of the project's Redis (AOF on), in one run.
//!
//! `BENCH_SIGNALS` (200,000) signals are published first. The bare loop reads them with
//! `XREADGROUP COUNT 512` in a group of its own, parses each entry's JSON into a `Signal` and
//! acknowledges each batch with one `XACK`: the least any consumer must do. Then `swarm up`
//! (the `noop` unit, in-process memory) drains the same entries in its own group, timed from its
//! first read to its last acknowledgement. For each the benchmark prints the rate, the ratio,
//! and the CPU seconds the consumer and Redis spent (the two share this machine's cores).
//! Asserts nothing.
//!
//! Run with: ops/start-redis && cargo bench -p swarm-tests --bench drain
//! (`BENCH_UP_ARGS` adds arguments to `swarm up`, such as `--concurrency 512`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::streams::{StreamReadOptions, StreamReadReply};
use serde_json::json;
use swarm_mesh::prelude::*;
use swarm_mesh::{RedisMesh, RedisMeshConfig};
use swarm_schemas::Signal;
use swarm_tests::{ReactorSpec, deploy, redis_url};

const STREAM: &str = "swarm:signals";

fn signals() -> usize {
    std::env::var("BENCH_SIGNALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// User plus system CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds Redis has used (`INFO cpu`).
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// Publishes `n` no-op signals from 32 concurrent tasks.
async fn publish(mesh: &Arc<RedisMesh>, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32 {
        let mesh = Arc::clone(mesh);
        tasks.spawn(async move {
            for i in (t..n).step_by(32) {
                let signal = Signal::new(
                    "bench.noop",
                    json!({ "n": i, "note": "a small payload, like most signals" }),
                );
                mesh.publish(STREAM, &signal).await.expect("publish");
            }
        });
    }
    tasks.join_all().await;
}

/// The bare loop: XREADGROUP COUNT 512, a JSON parse of each entry, one XACK per batch.
/// Returns how many it handled.
async fn bare_loop(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> usize {
    let options = StreamReadOptions::default().group("bare", "c").count(512);
    let mut handled = 0;
    loop {
        let reply: StreamReadReply =
            redis::AsyncCommands::xread_options(conn, &[key], &[">"], &options)
                .await
                .expect("XREADGROUP");
        let Some(stream) = reply.keys.into_iter().next().filter(|s| !s.ids.is_empty()) else {
            return handled;
        };
        let mut ids = Vec::with_capacity(stream.ids.len());
        for entry in &stream.ids {
            if let Some(redis::Value::BulkString(bytes)) = entry.map.get("s") {
                let signal: Signal = serde_json::from_slice(bytes).expect("a signal");
                std::hint::black_box(signal);
                handled += 1;
            }
            ids.push(entry.id.as_str());
        }
        let _: i64 = redis::AsyncCommands::xack(conn, key, "bare", &ids)
            .await
            .expect("XACK");
    }
}

/// The `reactor` group's entries read, pending and lag.
async fn group(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<(u64, u64, u64)> {
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await
        .ok()?;
    let reactor = groups.into_iter().find(
        |g| matches!(g.get("name"), Some(redis::Value::BulkString(name)) if name == b"reactor"),
    )?;
    let number = |name: &str| match reactor.get(name) {
        Some(redis::Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    Some((number("entries-read")?, number("pending")?, number("lag")?))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = signals();
    let work = tempfile::tempdir().expect("work dir");
    let units = work.path().join("units");
    std::fs::create_dir_all(&units).expect("units dir");
    deploy(&units, "fixture-noop", "noop.so");
    let prefix = format!("drain-{}", uuid::Uuid::now_v7().simple());
    let mut config = RedisMeshConfig::new(redis_url());
    config.key_prefix.clone_from(&prefix);
    let mesh = Arc::new(
        RedisMesh::connect(config)
            .await
            .expect("the benchmark needs Redis: run ops/start-redis"),
    );
    let key = mesh.key(STREAM);
    let client = redis::Client::open(redis_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut info = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    publish(&mesh, n).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("bare")
        .arg("0")
        .query_async(&mut conn)
        .await
        .expect("XGROUP CREATE");

    // The bare loop, in this process.
    let me = std::process::id();
    let (cpu0, redis0, started) = (cpu_seconds(me), redis_cpu(&mut info).await, Instant::now());
    let handled = bare_loop(&mut conn, &key).await;
    let bare_took = started.elapsed().as_secs_f64();
    let (bare_cpu, bare_redis) = (cpu_seconds(me) - cpu0, redis_cpu(&mut info).await - redis0);

    // `swarm up` on the same stream, in a group of its own.
    let spec = ReactorSpec {
        redis: redis_url(),
        prefix,
        units,
        work: work.path().to_owned(),
        claim_idle: 30.0,
        extra_args: std::env::var("BENCH_UP_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    };
    let reactor = spec.start("drain");
    let pid = reactor.pid();
    let deadline = Instant::now() + Duration::from_secs(600);
    // Timed from the first entry read (after start-up) to the last acknowledged.
    let (cpu0, redis0, started) = loop {
        if group(&mut info, &key)
            .await
            .is_some_and(|(read, _, _)| read > 0)
        {
            break (cpu_seconds(pid), redis_cpu(&mut info).await, Instant::now());
        }
        assert!(Instant::now() < deadline, "swarm up read nothing");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let first_read = group(&mut info, &key).await.map_or(0, |(read, _, _)| read);
    loop {
        if group(&mut info, &key)
            .await
            .is_some_and(|(_, pending, lag)| pending == 0 && lag == 0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "swarm up did not drain the stream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let swarm_took = started.elapsed().as_secs_f64();
    let (swarm_cpu, swarm_redis) = (cpu_seconds(pid) - cpu0, redis_cpu(&mut info).await - redis0);
    reactor.stop();
    let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;

    let timed = n as u64 - first_read.min(n as u64);
    let bare_rate = handled as f64 / bare_took;
    let swarm_rate = timed as f64 / swarm_took;
    let per = |cpu: f64, count: f64| cpu / count * 100_000.0;
    println!("draining {n} signals on one Redis (AOF on), 2 cores shared with Redis:");
    println!(
        "  bare redis-rs loop (XREADGROUP 512, JSON parse, XACK): {bare_rate:>9.0} signals/s; CPU per 100k: loop {:.2} s, Redis {:.2} s",
        per(bare_cpu, handled as f64),
        per(bare_redis, handled as f64)
    );
    println!(
        "  swarm up, no-op unit:                                 {swarm_rate:>9.0} signals/s; CPU per 100k: swarm {:.2} s, Redis {:.2} s ({timed} timed after the first read)",
        per(swarm_cpu, timed as f64),
        per(swarm_redis, timed as f64)
    );
    println!(
        "  swarm / bare: {:.2} (goal ≥ 0.75)",
        swarm_rate / bare_rate
    );
}
