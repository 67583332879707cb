//! The example reactor's footprint: `swarm up` with the six example units (order flow and
//! foraging), Redis, memory in PostgreSQL and the embedding model, fed both examples'
//! `signals.jsonl` as `ops/run-example` does. Once memory holds every execution and stops
//! growing, prints the reactor's resident memory (RSS), its peak (VmHWM), threads, and the same
//! for a reactor without memory (no model) on the same units, in the same run. The goal is an
//! RSS of at most 200 MB after the feed. Asserts nothing.
//!
//! Run with: ops/start-redis && ops/start-postgres && ops/fetch-model &&
//!   cargo bench -p swarm-tests --bench footprint

use std::path::Path;
use std::time::{Duration, Instant};

use swarm_memory::testkit::{database_url, fresh_database};
use swarm_tests::{
    ProcStatus, ReactorProcess, ReactorSpec, example_reactor_args, free_port, proc_status,
    redis_url, workspace_root,
};

/// Starts the example reactor; `memory`: with PostgreSQL and the model.
fn start(work: &Path, memory: Option<&str>) -> (ReactorProcess, String) {
    let units = work.join("units");
    let mut extra_args = example_reactor_args(&units, work, memory);
    let feed = work.join("feed.jsonl");
    let mut signals = String::new();
    for example in ["order-flow", "foraging"] {
        let path = workspace_root()
            .join("examples")
            .join(example)
            .join("signals.jsonl");
        signals.push_str(&std::fs::read_to_string(&path).expect("the example's signals"));
    }
    std::fs::write(&feed, signals).expect("feed written");
    extra_args.extend(["--feed".into(), feed.display().to_string()]);
    let prefix = format!("footprint-{}", uuid::Uuid::now_v7().simple());
    let spec = ReactorSpec {
        redis: redis_url(),
        prefix,
        units,
        work: work.to_owned(),
        claim_idle: 30.0,
        extra_args,
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    (
        spec.start_serving("example", &format!("127.0.0.1:{port}")),
        base,
    )
}

/// Waits until `count` has been the same, and above zero, for two seconds.
async fn settled(mut count: impl AsyncFnMut() -> i64) -> i64 {
    let start = Instant::now();
    let mut last = (-1, Instant::now());
    loop {
        let n = count().await;
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_secs(2) {
            return n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the feed did not settle ({n})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    let client = reqwest::Client::new();

    let db = fresh_database(&database_url()).await;
    let work = tempfile::tempdir().expect("work dir");
    let (reactor, _) = start(work.path(), Some(&db));
    let pool = sqlx::PgPool::connect(&db).await.expect("postgres");
    let executions = settled(async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM executions")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
    })
    .await;
    let pid = reactor.pid();
    let ProcStatus {
        rss_mb: rss,
        peak_mb: peak,
        threads,
    } = proc_status(pid);
    reactor.stop();

    let bare_work = tempfile::tempdir().expect("work dir");
    let (bare, bare_base) = start(bare_work.path(), None);
    // Nine signals and their emits: handled within moments of the inspector answering.
    swarm_tests::wait_serving(&client, &bare_base).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bare_pid = bare.pid();
    let ProcStatus {
        rss_mb: bare_rss,
        peak_mb: bare_peak,
        threads: bare_threads,
    } = proc_status(bare_pid);
    bare.stop();

    println!("the example reactor (6 units, Redis), after its feed:");
    println!(
        "  with memory (PostgreSQL, the model): RSS {rss:.0} MB, peak {peak:.0} MB, {threads} threads, {executions} executions recorded"
    );
    println!(
        "  without memory:                      RSS {bare_rss:.0} MB, peak {bare_peak:.0} MB, {bare_threads} threads"
    );
    println!(
        "  memory and the model add {:.0} MB; goal: RSS ≤ 200 MB with memory ({})",
        rss - bare_rss,
        if rss <= 200.0 { "met" } else { "not met" }
    );
}
