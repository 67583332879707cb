//! Benchmarks of the PostgreSQL + pgvector memory, printed in one run:
//!
//! 1. ingest: executions recorded per second through `PgMemory::record` (batches of 2,048,
//!    500 distinct signal shapes, embedded once, as in a running swarm);
//! 2. search: latency p50/p95 and recall@10 against exact search, at 100k and 1M shapes
//!    (HNSW on halfvec(384), at several ef_search values on the same queries, with the index
//!    prewarmed into shared buffers and each connection warmed by other searches, as in a
//!    memory that has been serving; the index as the migrations define it), unfiltered and
//!    filtered by kind (iterative index scans). The vectors are synthetic (clustered unit vectors): a
//!    million real embeddings would take the embedder hours here. Each shape has one execution;
//! 3. the embedder: `benches/embedder.rs` (tract against onnxruntime in the same run) is run
//!    from here too.
//!
//! Needs the project's PostgreSQL (`ops/start-postgres`) and the model (`ops/fetch-model`).
//! Each run makes a fresh database on that server and drops it at the end.
//!
//! Run with: cargo bench -p swarm-memory --bench memory
//! Knobs: BENCH_SIZES (default "100000,1000000"), BENCH_QUERIES (default 100),
//! BENCH_INGEST (executions, default 200000), BENCH_EF_SEARCH (a list, default "40,100,200":
//! each is measured on the same queries), BENCH_KEEP=1 keeps the database for inspection, and
//! BENCH_DATABASE=<url> searches such a kept database again as it is (no ingest, no reload, no
//! index build; BENCH_SIZES must then name the one size it holds), to compare settings without
//! the index build's minutes.

use std::time::{Duration, Instant};

use pgvector::HalfVector;
use swarm_memory::testkit::{fresh_database, record};
use swarm_memory::{Memory, PgMemory, PgMemoryConfig, Probe, SearchQuery};
use swarm_schemas::Signal;

const DIMENSIONS: usize = 384;
const CLUSTERS: usize = 2_000;
const KINDS: usize = 20;
/// Searches for other points run before any is timed.
const WARM_UP: usize = 200;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so every run searches the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly normal, from the sum of uniforms.
    fn gauss(&mut self) -> f32 {
        (0..4)
            .map(|_| (self.next() >> 11) as f32 / (1u64 << 53) as f32)
            .sum::<f32>()
            - 2.0
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

struct Corpus {
    centres: Vec<Vec<f32>>,
    rng: Rng,
}

impl Corpus {
    fn new() -> Self {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let centres = (0..CLUSTERS)
            .map(|_| normalised((0..DIMENSIONS).map(|_| rng.gauss()).collect()))
            .collect();
        Self { centres, rng }
    }

    /// A point near a random centre.
    fn point(&mut self) -> (usize, Vec<f32>) {
        let cluster = (self.rng.next() % CLUSTERS as u64) as usize;
        let spread = 0.35;
        let v = self.centres[cluster]
            .iter()
            .map(|c| c + spread * self.rng.gauss() / (DIMENSIONS as f32).sqrt() * 4.0)
            .collect();
        (cluster, normalised(v))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn ingest(memory: &PgMemory, total: usize) {
    let shapes: Vec<Signal> = (0..500)
        .map(|n| {
            Signal::new(
                format!("bench.kind{}", n % KINDS),
                serde_json::json!({ "variant": format!("variant {}", n) }),
            )
        })
        .collect();
    // Embed the shapes first, as a running swarm has them cached after the first minutes.
    let warm: Vec<_> = shapes.iter().map(|s| record(s, "warm", true, 0)).collect();
    let started = Instant::now();
    memory.record(&warm).await.expect("warm up");
    println!(
        "ingest: 500 distinct shapes embedded and stored in {:.1?}",
        started.elapsed()
    );

    let batch = 2_048;
    let mut done = 0;
    let started = Instant::now();
    while done < total {
        let n = batch.min(total - done);
        let records: Vec<_> = (0..n)
            .map(|i| {
                let template = &shapes[(done + i) % shapes.len()];
                let mut signal = Signal::new(template.kind.clone(), template.payload.clone());
                signal.payload["order"] = serde_json::json!(format!("ord-{}", done + i));
                record(&signal, ["alpha", "beta", "gamma"][i % 3], i % 7 != 0, 0)
            })
            .collect();
        memory.record(&records).await.expect("record");
        done += n;
    }
    let took = started.elapsed();
    println!(
        "ingest: {total} executions in batches of {batch}: {:.0} executions/s ({:.1?})",
        total as f64 / took.as_secs_f64(),
        took
    );
}

/// Grows the shapes table to `size` rows of synthetic vectors, each with one execution.
async fn grow(pool: &sqlx::PgPool, corpus: &mut Corpus, from: usize, size: usize) {
    let chunk = 5_000;
    let mut n = from;
    while n < size {
        let count = chunk.min(size - n);
        let mut ids = Vec::with_capacity(count);
        let mut kinds = Vec::with_capacity(count);
        let mut texts = Vec::with_capacity(count);
        let mut vectors = Vec::with_capacity(count);
        for i in n..n + count {
            let (cluster, v) = corpus.point();
            let text = format!("synthetic {i} cluster {cluster}");
            ids.push(swarm_memory::shape_id(&text));
            kinds.push(format!("synthetic.kind{}", i % KINDS));
            texts.push(text);
            vectors.push(HalfVector::from_f32_slice(&v));
        }
        sqlx::query(
            "INSERT INTO shapes (id, kind, text, embedding)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::halfvec[]) ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(&kinds)
        .bind(&texts)
        .bind(&vectors)
        .execute(pool)
        .await
        .expect("insert shapes");
        sqlx::query(
            "INSERT INTO executions (id, signal_id, kind, shape_id, unit, unit_version, generation, attempt,
                 success, started_at, latency_us, emitted, policy, propensity, signal)
             SELECT gen_random_uuid(), sid, k, s, 'unit' || (s & 3), '1.0.0', 1, 0, true,
                 now(), 100, '{}', 'fan_out', 1.0,
                 json_build_object('id', sid, 'kind', k, 'payload', '{}'::json, 'correlation_id', sid,
                     'trace_id', sid, 'attempt', 0, 'created_at', now())
             FROM (SELECT s, k, gen_random_uuid() AS sid
                   FROM UNNEST($1::bigint[], $2::text[]) AS t(s, k)) AS rows",
        )
        .bind(&ids)
        .bind(&kinds)
        .execute(pool)
        .await
        .expect("insert executions");
        n += count;
    }
}

/// One search of the benchmark and the executions exact search returns for it.
struct Case {
    query: SearchQuery,
    truth: std::collections::HashSet<uuid::Uuid>,
}

/// `queries` searches near the corpus, unfiltered or filtered by kind, with their exact answers
/// (computed once and shared by every `ef_search` measured).
async fn cases(
    memory: &PgMemory,
    corpus: &mut Corpus,
    queries: usize,
    filtered: bool,
) -> Vec<Case> {
    let mut cases = Vec::with_capacity(queries);
    for q in 0..queries {
        let (_, probe) = corpus.point();
        let mut query = SearchQuery {
            probe: Probe::Vector(probe),
            ..SearchQuery::text("unused")
        }
        .k(10);
        if filtered {
            query.kind = Some(format!("synthetic.kind{}", q % KINDS));
        }
        let exact = memory.exact_search(&query).await.expect("exact search");
        let truth = exact.iter().map(|h| h.record.id).collect();
        cases.push(Case { query, truth });
    }
    cases
}

async fn search_at(url: &str, corpus: &mut Corpus, size: usize, queries: usize, ef: &[u32]) {
    // Warm-up probes: other points than the measured ones. The first setting measured would
    // otherwise pay for the caches a memory that has been serving has warm (one run at 1M:
    // p95 17 ms for the first setting, 5–6 ms for the next ones), so all of them run through
    // one connection before anything is timed, and some through each pool measured.
    let warm_up: Vec<SearchQuery> = (0..WARM_UP)
        .map(|_| SearchQuery {
            probe: Probe::Vector(corpus.point().1),
            ..SearchQuery::text("unused")
        })
        .collect();
    let exact = PgMemory::connect_without_embedder(url, PgMemoryConfig::default())
        .await
        .expect("connect");
    for query in &warm_up {
        exact.search(query).await.expect("warm-up search");
    }
    for filtered in [false, true] {
        let cases = cases(&exact, corpus, queries, filtered).await;
        for &ef_search in ef {
            let config = PgMemoryConfig {
                ef_search,
                ..PgMemoryConfig::default()
            };
            let memory = PgMemory::connect_without_embedder(url, config)
                .await
                .expect("connect");
            // A memory that has been serving has its connections open and pgvector loaded in
            // them: the first search on a new connection pays for both, once.
            for query in warm_up.iter().take(16) {
                memory.search(query).await.expect("warm-up search");
            }
            let mut latencies = Vec::with_capacity(queries);
            let mut recall_sum = 0.0;
            for case in &cases {
                let started = Instant::now();
                let hits = memory.search(&case.query).await.expect("search");
                latencies.push(started.elapsed());
                let found = hits
                    .iter()
                    .filter(|h| case.truth.contains(&h.record.id))
                    .count();
                recall_sum += found as f64 / case.truth.len().max(1) as f64;
            }
            latencies.sort();
            println!(
                "search at {size} shapes{}, ef_search {ef_search}: p50 {:.2?}, p95 {:.2?}, recall@10 {:.3} ({queries} queries)",
                if filtered {
                    ", filtered by kind (1 in 20)"
                } else {
                    ""
                },
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.95),
                recall_sum / queries as f64
            );
        }
    }
}

/// Loads the shapes table and its indexes into shared buffers, as they are in a memory that has
/// been serving for a while (`pg_prewarm`, shipped with PostgreSQL). The HNSW index goes last,
/// so that it is what stays if they do not all fit; their sizes are printed.
async fn prewarm(pool: &sqlx::PgPool, url: &str) {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(pool)
        .await
        .expect("pg_prewarm");
    let mut sizes = Vec::new();
    for relation in [
        "shapes",
        "shapes_pkey",
        "executions_shape",
        "shapes_embedding",
    ] {
        let (size,): (String,) =
            sqlx::query_as("SELECT pg_size_pretty(pg_relation_size($1::regclass))")
                .bind(relation)
                .fetch_one(pool)
                .await
                .expect("relation size");
        sqlx::query("SELECT pg_prewarm($1)")
            .bind(relation)
            .execute(pool)
            .await
            .expect("prewarm");
        sizes.push(format!("{relation} {size}"));
    }
    // Huge pages halve search latency at 1M shapes (ops/start-postgres): say which it was.
    let server = PgMemory::probe(url, Duration::from_secs(10))
        .await
        .expect("probe the server");
    println!(
        "prewarmed into {} of shared buffers (huge pages: {}): {}",
        server.shared_buffers,
        server.huge_pages.as_deref().unwrap_or("not reported"),
        sizes.join(", ")
    );
}

/// Builds the HNSW index the migrations define (`definition`), with memory and workers for a
/// large build.
async fn build_index(url: &str, definition: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    for setting in [
        "SET maintenance_work_mem = '4GB'",
        "SET max_parallel_maintenance_workers = 2",
    ] {
        sqlx::query(setting)
            .execute(&mut conn)
            .await
            .expect("setting");
    }
    sqlx::query(definition)
        .execute(&mut conn)
        .await
        .expect("build the index");
}

/// Searches a database a run kept (`BENCH_KEEP=1`) as it is: the corpus is replayed up to the
/// size it holds, so the queries are the ones a run that had just loaded it would ask.
async fn search_kept(
    memory: &PgMemory,
    url: &str,
    corpus: &mut Corpus,
    sizes: &[usize],
    queries: usize,
    ef: &[u32],
) {
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM shapes")
        .fetch_one(memory.pool())
        .await
        .expect("count the kept shapes");
    let Ok(size) = usize::try_from(held) else {
        panic!("a negative count of shapes");
    };
    assert!(
        sizes == [size],
        "BENCH_DATABASE holds {size} shapes: set BENCH_SIZES={size}"
    );
    for _ in 0..size {
        corpus.point();
    }
    println!("search: the kept database's {size} shapes, index as it is");
    prewarm(memory.pool(), url).await;
    search_at(url, corpus, size, queries, ef).await;
}

fn run_embedder_bench() {
    // In the profile this benchmark was built in (`cargo bench --profile dev` builds no second
    // copy of tract).
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "bench"
    };
    let status = std::process::Command::new(env!("CARGO"))
        .args(["bench", "-q", "--profile", profile])
        .args(["-p", "swarm-memory", "--bench", "embedder"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!("embedder: the embedder benchmark failed");
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let queries = env_or("BENCH_QUERIES", 100usize);
    let ingest_total = env_or("BENCH_INGEST", 200_000usize);
    let server = std::env::var("SWARM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/swarm".into());
    let kept = std::env::var("BENCH_DATABASE").ok();
    let url = match &kept {
        Some(url) => url.clone(),
        None => fresh_database(&server).await,
    };
    let config = PgMemoryConfig::default();
    let ef_search: Vec<u32> = std::env::var("BENCH_EF_SEARCH")
        .map(|list| {
            list.split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|_| vec![40, config.ef_search, 200]);
    println!(
        "memory benchmark on {url} (ef_search {ef_search:?}, max_scan_tuples {})",
        config.max_scan_tuples
    );
    let memory = PgMemory::connect(&url, swarm_memory::testkit::embedder(), config)
        .await
        .expect("connect");

    let mut corpus = Corpus::new();
    if kept.is_some() {
        search_kept(&memory, &url, &mut corpus, &sizes, queries, &ef_search).await;
        return;
    }

    ingest(&memory, ingest_total).await;

    // Search on synthetic shapes only.
    sqlx::query("TRUNCATE executions, shapes")
        .execute(memory.pool())
        .await
        .expect("truncate");
    let mut have = 0;
    // The index exactly as the migrations define it, rebuilt after each bulk load.
    let index: String = sqlx::query_scalar("SELECT pg_get_indexdef('shapes_embedding'::regclass)")
        .fetch_one(memory.pool())
        .await
        .expect("the migrations' HNSW index");
    for size in sizes {
        // Bulk loads build the index afterwards, as an operator would for a large import.
        let started = Instant::now();
        sqlx::query("DROP INDEX IF EXISTS shapes_embedding")
            .execute(memory.pool())
            .await
            .expect("drop index");
        grow(memory.pool(), &mut corpus, have, size).await;
        have = size;
        let loaded = started.elapsed();
        let started = Instant::now();
        build_index(&url, &index).await;
        sqlx::query("VACUUM ANALYZE shapes")
            .execute(memory.pool())
            .await
            .ok();
        sqlx::query("VACUUM ANALYZE executions")
            .execute(memory.pool())
            .await
            .ok();
        println!(
            "search: {size} shapes loaded in {loaded:.1?}, HNSW index built in {:.1?}",
            started.elapsed()
        );
        prewarm(memory.pool(), &url).await;
        search_at(&url, &mut corpus, size, queries, &ef_search).await;
    }
    drop(memory);

    run_embedder_bench();

    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept {url}");
        return;
    }
    let name = url.rsplit('/').next().unwrap_or_default().to_owned();
    if let Ok(mut admin) = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}
