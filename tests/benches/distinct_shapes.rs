//! Distinct shapes through `swarm up`: signals whose free text is all different (so every one
//! is a new shape to embed) posted over HTTP to a `swarm up` on Redis with memory in
//! PostgreSQL, each handled by the `noop` unit. Prints, once a second, what was posted, the
//! mesh's backlog and what memory holds; then distinct shapes/s embedded and recorded, the HTTP
//! posts' latency and refusals, the reactor's RSS; then the two engines alone on the texts swarm
//! embeds (the signals' shape texts), on every core, in the same run: onnxruntime's batched
//! throughput (`ops/embedding-throughput-reference`) and tract's through the reactor's own
//! `ShapeEmbedder`. Asserts nothing.
//!
//! Run with: ops/start-redis && ops/start-postgres &&
//!   cargo bench -p swarm-tests --bench distinct_shapes
//! `BENCH_SIGNALS` (20000) and `BENCH_RATE` (posts/s, 1000) change the load.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use swarm_memory::testkit::{database_url, fresh_database, models_dir};
use swarm_memory::{Shape, ShapeEmbedder, TractEmbedder};
use swarm_mesh::prelude::*;
use swarm_mesh::{RedisMesh, RedisMeshConfig};
use swarm_schemas::Signal;
use swarm_tests::{ReactorSpec, deploy, free_port, redis_url};

const WORDS: &[&str] = &[
    "order",
    "customer",
    "parcel",
    "refund",
    "payment",
    "card",
    "declined",
    "late",
    "broken",
    "address",
    "invoice",
    "password",
    "login",
    "account",
    "stock",
    "warehouse",
    "server",
    "error",
    "delivery",
    "courier",
    "return",
    "subscription",
    "cancel",
    "renewal",
    "discount",
    "coupon",
    "price",
    "shipping",
    "tracking",
    "package",
    "damaged",
    "missing",
    "wrong",
    "size",
    "colour",
    "jacket",
    "shoes",
    "kettle",
    "lamp",
    "chair",
    "table",
    "phone",
    "tablet",
    "screen",
    "battery",
    "charger",
    "cable",
    "headphones",
    "speaker",
    "camera",
    "printer",
    "paper",
    "ink",
    "coffee",
    "tea",
    "mug",
    "plate",
    "glass",
    "bottle",
    "bag",
    "box",
    "label",
    "receipt",
    "bank",
    "transfer",
    "balance",
    "fee",
    "tax",
    "company",
    "office",
    "home",
    "street",
    "city",
    "country",
    "urgent",
    "again",
    "still",
    "never",
    "please",
    "help",
    "thanks",
    "today",
    "tomorrow",
    "yesterday",
    "week",
    "month",
    "morning",
    "evening",
    "slow",
    "fast",
    "cheap",
    "expensive",
    "new",
    "old",
    "small",
    "large",
    "blue",
    "red",
    "green",
    "black",
    "white",
    "quiet",
    "loud",
];

/// Free text of 6 to 14 words, different for each `n` (words only: digits would be masked).
fn text(rng: &mut SmallRng, n: usize) -> String {
    let mut words: Vec<&str> = (0..rng.random_range(6..15))
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    // `n` written in words of the list makes every text distinct.
    let mut rest = n;
    loop {
        words.push(WORDS[rest % WORDS.len()]);
        rest /= WORDS.len();
        if rest == 0 {
            break;
        }
    }
    words.join(" ")
}

/// The kind of every signal posted (the noop unit takes it).
const KIND: &str = "bench.noop";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let signals = env("BENCH_SIGNALS", 20_000);
    let rate = env("BENCH_RATE", 1_000).max(1);
    let db = fresh_database(&database_url()).await;
    let work = tempfile::tempdir().expect("work dir");
    let units = work.path().join("units");
    std::fs::create_dir_all(&units).expect("units dir");
    deploy(&units, "fixture-noop", "noop.so");
    let prefix = format!("shapes-{}", uuid::Uuid::now_v7().simple());
    let port = free_port();
    let spec = ReactorSpec {
        redis: redis_url(),
        prefix: prefix.clone(),
        units,
        work: work.path().to_owned(),
        claim_idle: 30.0,
        extra_args: vec![
            "--postgres".into(),
            db.clone(),
            "--models".into(),
            models_dir().display().to_string(),
            "--spool".into(),
            work.path().join("spool").display().to_string(),
            // One client posts everything: the per-client limit must not be what refuses.
            "--rate-limit".into(),
            (rate * 10).to_string(),
        ],
    };
    let reactor = spec.start_serving("shapes", &format!("127.0.0.1:{port}"));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    swarm_tests::wait_serving(&client, &base).await;

    let mut config = RedisMeshConfig::new(redis_url());
    config.key_prefix.clone_from(&prefix);
    let mesh = RedisMesh::connect(config).await.expect("redis");
    let pool = sqlx::PgPool::connect(&db).await.expect("postgres");

    // The texts, made up front; the engines alone get what swarm embeds: their shapes' texts.
    let mut rng = SmallRng::seed_from_u64(7);
    let texts: Vec<String> = (0..signals).map(|n| text(&mut rng, n)).collect();
    let shapes: Vec<Shape> = texts
        .iter()
        .map(|text| Shape::of(&Signal::new(KIND, json!({ "text": text }))))
        .collect();
    let reference_texts = work.path().join("texts.txt");
    let shape_texts: Vec<&str> = shapes.iter().map(|s| s.text.as_str()).collect();
    std::fs::write(&reference_texts, shape_texts.join("\n")).expect("texts written");

    // Post at `rate`, each post on a task of its own, latencies kept.
    let posted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let poster = {
        let (client, base, posted, refused) = (
            client.clone(),
            base.clone(),
            Arc::clone(&posted),
            Arc::clone(&refused),
        );
        tokio::spawn(async move {
            let mut posts = tokio::task::JoinSet::new();
            for (n, text) in texts.into_iter().enumerate() {
                tokio::time::sleep_until(
                    (started + Duration::from_secs_f64(n as f64 / rate as f64)).into(),
                )
                .await;
                let (client, url, posted, refused) = (
                    client.clone(),
                    format!("{base}/v1/signals"),
                    Arc::clone(&posted),
                    Arc::clone(&refused),
                );
                posts.spawn(async move {
                    let sent = Instant::now();
                    let body = json!({ "kind": KIND, "payload": { "text": text } });
                    let ok = client
                        .post(url)
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    posted.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.elapsed().as_secs_f64() * 1e3
                });
            }
            let mut latencies = Vec::new();
            while let Some(ms) = posts.join_next().await {
                latencies.extend(ms.ok());
            }
            latencies.sort_by(f64::total_cmp);
            latencies
        })
    };

    println!(
        "{signals} signals of distinct free text posted at {rate}/s to swarm up (Redis mesh, memory in PostgreSQL, noop unit)"
    );
    println!("   t s   posted   backlog   shapes   executions");
    let (mut shapes_held, mut executions) = (0i64, 0i64);
    let mut first_shape_at = None;
    let deadline = Duration::from_secs(900);
    while (executions as usize) < signals && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let info = mesh
            .group_info("swarm:signals", "reactor")
            .await
            .unwrap_or_default();
        shapes_held = sqlx::query_scalar("SELECT count(*) FROM shapes")
            .fetch_one(&pool)
            .await
            .unwrap_or(shapes_held);
        executions = sqlx::query_scalar("SELECT count(*) FROM executions")
            .fetch_one(&pool)
            .await
            .unwrap_or(executions);
        if shapes_held > 0 && first_shape_at.is_none() {
            first_shape_at = Some(started.elapsed());
        }
        println!(
            "{:6.0} {:8} {:9} {:8} {:12}",
            started.elapsed().as_secs_f64(),
            posted.load(Ordering::Relaxed),
            info.pending + info.lag,
            shapes_held,
            executions
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let latencies = poster.await.unwrap_or_default();
    let memory = swarm_tests::proc_status(reactor.pid());
    let (rss_now, rss_peak) = (memory.rss_mb, memory.peak_mb);
    println!(
        "memory holds {executions} executions and {shapes_held} shapes after {elapsed:.1} s: {:.0} distinct shapes/s embedded and recorded end to end",
        shapes_held as f64 / elapsed
    );
    println!(
        "HTTP posts: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} refused",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        refused.load(Ordering::Relaxed)
    );
    println!("reactor RSS after the feed: {rss_now:.0} MB (peak {rss_peak:.0} MB)");
    let _ = reactor.stop();

    let swarm_rate = shapes_held as f64 / elapsed;

    let reference = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/embedding-throughput-reference"),
    )
    .arg(&reference_texts)
    .output()
    .expect("the reference script runs");
    let line = String::from_utf8_lossy(&reference.stdout);
    let ort = match serde_json::from_str::<Value>(line.trim()) {
        Ok(r) => {
            let ort = r["texts_per_second"].as_f64().unwrap_or(f64::NAN);
            println!(
                "onnxruntime alone, the same shape texts, batches of 16 on {} threads: {ort:.0} texts/s",
                r["threads"]
            );
            ort
        }
        Err(_) => {
            println!(
                "onnxruntime reference failed: {}",
                String::from_utf8_lossy(&reference.stderr)
            );
            f64::NAN
        }
    };
    let tract = tract_alone(&shapes).await;
    println!(
        "swarm end to end / onnxruntime alone: {:.2}; tract alone / onnxruntime alone: {:.2}",
        swarm_rate / ort,
        tract / ort
    );
}

/// Texts per second of tract alone on `shapes`, through the reactor's `ShapeEmbedder` (batches
/// by length, one per core at a time), the model loaded first.
async fn tract_alone(shapes: &[Shape]) -> f64 {
    let embedder = TractEmbedder::load_dir(&models_dir()).expect("the model (ops/fetch-model)");
    let embedder = ShapeEmbedder::new(Arc::new(embedder), shapes.len());
    let started = Instant::now();
    let vectors = embedder.vectors(shapes).await.expect("embedded");
    let rate = vectors.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "tract alone, the same shape texts, as the reactor batches them on every core: {rate:.0} texts/s"
    );
    rate
}
