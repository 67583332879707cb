//! Draining a backlog: `swarm up` with a no-op unit against a bare hand-written redis-rs loop,
//! on the same streams, in one run: first on the project's Redis (AOF on), then on the
//! project's Redis Cluster (three masters with a replica each, AOF on; `ops/start-redis-cluster`)
//! with the stream in `BENCH_PARTITIONS` (6) partitions.
//!
//! `BENCH_SIGNALS` (200,000) signals are published first. The bare loop reads them with
//! `XREADGROUP COUNT 512` in a group of its own (one loop per partition, side by side), parses
//! each entry's JSON into a `Signal` and acknowledges each batch with one `XACK`: the least any
//! consumer must do. Then `swarm up` (the `noop` unit, in-process memory) drains the same
//! entries in its own group, timed from its first read to its last acknowledgement. For each
//! the benchmark prints the rate, the ratio, and the CPU seconds the consumer and Redis spent
//! (they all share this machine's cores). `BENCH_ROUNDS` (3) rounds are run on each, each on
//! a stream of its own, and the median ratio is printed with the range. Asserts nothing.
//!
//! Run with: ops/start-redis && cargo bench -p swarm-tests --bench drain
//! (`BENCH_UP_ARGS` adds arguments to `swarm up`, such as `--redis-wait-replicas 1`;
//! `BENCH_CLUSTER=0` leaves the cluster out, `BENCH_ONE_REDIS=0` the one Redis).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::streams::{StreamReadOptions, StreamReadReply};
use serde_json::json;
use swarm_mesh::partition::partition_stream;
use swarm_mesh::prelude::*;
use swarm_mesh::{RedisConnection, RedisMesh, RedisMeshConfig};
use swarm_schemas::Signal;
use swarm_tests::{ReactorSpec, deploy, redis_url};

const STREAM: &str = "swarm:signals";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// Where the benchmark runs: the Redis URLs of every server (one, or each node of the
/// cluster), and how the mesh and the bare loop reach it.
struct Target {
    name: &'static str,
    url: String,
    nodes: Vec<String>,
    partitions: u32,
}

impl Target {
    /// CPU seconds every server has used (`INFO cpu`).
    async fn redis_cpu(&self) -> f64 {
        let mut total = 0.0;
        for node in &self.nodes {
            let client = redis::Client::open(node.as_str()).expect("node url");
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let info: String = redis::cmd("INFO")
                .arg("cpu")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            total += info
                .lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
                .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
                .sum::<f64>();
        }
        total
    }
}

/// Publishes `n` no-op signals from 32 concurrent tasks (each its own conversation, so they
/// spread over the partitions).
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

/// The bare loop on one stream key: XREADGROUP COUNT 512, a JSON parse of each entry, one
/// XACK per batch. Returns how many it handled.
async fn bare_loop(mut conn: RedisConnection, key: String) -> usize {
    let options = StreamReadOptions::default().group("bare", "c").count(512);
    let mut handled = 0;
    loop {
        let reply: StreamReadReply =
            redis::AsyncCommands::xread_options(&mut conn, &[&key], &[">"], &options)
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
        let _: i64 = redis::AsyncCommands::xack(&mut conn, &key, "bare", &ids)
            .await
            .expect("XACK");
    }
}

/// The `reactor` group's entries read, pending and lag, summed over `keys`; `None` while some
/// key has no such group.
async fn group(conn: &mut RedisConnection, keys: &[String]) -> Option<(u64, u64, u64)> {
    let mut total = (0, 0, 0);
    for key in keys {
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
        total.0 += number("entries-read")?;
        total.1 += number("pending")?;
        total.2 += number("lag")?;
    }
    Some(total)
}

/// Rates and CPU of the bare loop and of `swarm up` on one target, in one round (a stream of
/// its own); returns the ratio of their rates.
async fn measure(target: &Target, n: usize, round: usize) -> f64 {
    let work = tempfile::tempdir().expect("work dir");
    let units = work.path().join("units");
    std::fs::create_dir_all(&units).expect("units dir");
    deploy(&units, "fixture-noop", "noop.so");
    let prefix = format!("drain-{}", uuid::Uuid::now_v7().simple());
    let mut config = RedisMeshConfig::new(target.url.clone());
    config.key_prefix.clone_from(&prefix);
    let mesh = Arc::new(
        RedisMesh::connect(config)
            .await
            .unwrap_or_else(|e| panic!("the benchmark needs {}: {e}", target.name)),
    );
    let partitions = target.partitions;
    mesh.partitions(STREAM, Some(partitions))
        .await
        .expect("partitions");
    let keys: Vec<String> = (0..partitions)
        .map(|k| mesh.key(&partition_stream(STREAM, k, partitions)))
        .collect();
    let mut conn = mesh.open_connection().await.expect("a connection");
    publish(&mesh, n).await;
    for key in &keys {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg("bare")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await
            .expect("XGROUP CREATE");
    }

    // The bare loop, in this process, one per partition.
    let me = std::process::id();
    let (cpu0, redis0, started) = (cpu_seconds(me), target.redis_cpu().await, Instant::now());
    let mut loops = tokio::task::JoinSet::new();
    for key in &keys {
        let conn = mesh.open_connection().await.expect("a connection");
        loops.spawn(bare_loop(conn, key.clone()));
    }
    let handled: usize = loops.join_all().await.into_iter().sum();
    let bare_took = started.elapsed().as_secs_f64();
    let (bare_cpu, bare_redis) = (cpu_seconds(me) - cpu0, target.redis_cpu().await - redis0);

    // `swarm up` on the same streams, in a group of its own.
    let mut extra_args: Vec<String> = std::env::var("BENCH_UP_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    extra_args.extend(["--partitions".to_owned(), partitions.to_string()]);
    let spec = ReactorSpec {
        redis: target.url.clone(),
        prefix,
        units,
        work: work.path().to_owned(),
        claim_idle: 30.0,
        extra_args,
    };
    let reactor = spec.start("drain");
    let pid = reactor.pid();
    let deadline = Instant::now() + Duration::from_secs(600);
    // Timed from the first entry read (after start-up) to the last acknowledged.
    let (cpu0, redis0, started) = loop {
        if group(&mut conn, &keys)
            .await
            .is_some_and(|(read, _, _)| read > 0)
        {
            break (cpu_seconds(pid), target.redis_cpu().await, Instant::now());
        }
        assert!(Instant::now() < deadline, "swarm up read nothing");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let first_read = group(&mut conn, &keys).await.map_or(0, |(read, _, _)| read);
    loop {
        if group(&mut conn, &keys)
            .await
            .is_some_and(|(read, pending, lag)| read >= n as u64 && pending == 0 && lag == 0)
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
    let (swarm_cpu, swarm_redis) = (cpu_seconds(pid) - cpu0, target.redis_cpu().await - redis0);
    reactor.stop();
    for key in &keys {
        let _: Result<i64, _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
    }

    let timed = n as u64 - first_read.min(n as u64);
    let bare_rate = handled as f64 / bare_took;
    let swarm_rate = timed as f64 / swarm_took;
    let per = |cpu: f64, count: f64| cpu / count * 100_000.0;
    println!(
        "draining {n} signals on {} in {partitions} partition(s), 2 cores shared with Redis, round {round}:",
        target.name
    );
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
    let ratio = swarm_rate / bare_rate;
    println!("  swarm / bare: {ratio:.2}");
    ratio
}

/// `BENCH_ROUNDS` rounds on one target, each a bare loop then `swarm up` on a stream of its
/// own; prints the median ratio and the range. The two share the machine with Redis and with
/// whatever else runs on it, so one pair alone moves by ±10%.
async fn rounds(target: &Target, n: usize, goal: Option<f64>) {
    let rounds = env_number("BENCH_ROUNDS", 3).max(1);
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        ratios.push(measure(target, n, round).await);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let goal = goal.map_or(String::new(), |g| format!(" (goal: ≥ {g:.2})"));
    println!(
        "swarm / bare on {} over {rounds} round(s): median {median:.2}, {:.2}–{:.2}{goal}",
        target.name,
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_number("BENCH_SIGNALS", 200_000);
    let one = Target {
        name: "one Redis (AOF on)",
        url: redis_url(),
        nodes: vec![redis_url()],
        partitions: 1,
    };
    if std::env::var("BENCH_ONE_REDIS").as_deref() != Ok("0") {
        rounds(&one, n, Some(0.75)).await;
    }
    if std::env::var("BENCH_CLUSTER").as_deref() == Ok("0") {
        return;
    }
    let url = swarm_tests::partitioned::start_cluster(None);
    let nodes: Vec<String> = url
        .trim_start_matches("redis+cluster://")
        .trim_end_matches('/')
        .split(',')
        .map(|node| format!("redis://{node}/"))
        .collect();
    let cluster = Target {
        name: "the Redis Cluster (3 masters + 3 replicas, AOF on)",
        url,
        nodes,
        partitions: u32::try_from(env_number("BENCH_PARTITIONS", 6)).unwrap_or(6),
    };
    rounds(&cluster, n, None).await;
}
