//! The behaviour every [`Memory`](crate::Memory) must show, as a suite of tests any
//! implementation can run: `memory_behaviour_suite!(make_memory, embedder)`.
//!
//! `make_memory` is an async function taking an `Arc<dyn Embedder>` and returning a fresh, empty
//! `Arc<dyn Memory>`; `embedder` is a function returning the embedder (a real model: the suite
//! checks that search finds what means the same).

use chrono::{DateTime, Duration, SubsecRound, Utc};
use swarm_schemas::{ExecutionRecord, FailureKind, Outcome, Signal};

/// A record of `unit` handling `signal`, started `seconds_ago` seconds before now (to the
/// microsecond, as stores keep it).
pub fn record(signal: &Signal, unit: &str, success: bool, seconds_ago: i64) -> ExecutionRecord {
    ExecutionRecord {
        id: uuid::Uuid::now_v7(),
        signal: signal.clone(),
        unit: unit.into(),
        unit_version: semver::Version::new(1, 2, 3),
        generation: 1,
        attempt: 0,
        outcome: if success {
            Outcome::Success
        } else {
            Outcome::Failure {
                kind: FailureKind::Error,
                error: format!("{unit} failed"),
            }
        },
        started_at: at(seconds_ago),
        latency_us: 100,
        emitted: vec![],
        policy: "fan_out".into(),
        propensity: 1.0,
        host_calls: Vec::new(),
    }
}

/// Now minus `seconds_ago`, to the microsecond.
pub fn at(seconds_ago: i64) -> DateTime<Utc> {
    (Utc::now() - Duration::seconds(seconds_ago)).trunc_subsecs(6)
}

/// Where the model files are: `SWARM_MODELS_DIR`, else `.swarm/models` in the workspace.
pub fn models_dir() -> std::path::PathBuf {
    std::env::var_os("SWARM_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".swarm")
                .join("models")
        })
}

/// The default embedder (all-MiniLM-L6-v2), loaded once per process. Panics when the model is missing: tests
/// that need it fail rather than skip (`ops/fetch-model` fetches it).
#[cfg(feature = "tract")]
pub fn embedder() -> std::sync::Arc<dyn crate::Embedder> {
    static EMBEDDER: std::sync::OnceLock<std::sync::Arc<crate::TractEmbedder>> =
        std::sync::OnceLock::new();
    let embedder = EMBEDDER.get_or_init(|| {
        let dir = models_dir();
        let loaded = crate::TractEmbedder::load_dir(&dir)
            .unwrap_or_else(|e| panic!("the model is needed (run ops/fetch-model): {e}"));
        std::sync::Arc::new(loaded)
    });
    embedder.clone()
}

/// The PostgreSQL the tests use: `SWARM_TEST_DATABASE_URL` (set by `ops/test`, which starts the
/// project's PostgreSQL + pgvector). Panics when unset: tests that need it fail, never skip.
pub fn database_url() -> String {
    std::env::var("SWARM_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("SWARM_TEST_DATABASE_URL is not set: start PostgreSQL + pgvector with ops/start-postgres (ops/test does)")
    })
}

/// The URL of the project's read replica (`ops/start-postgres-replica`, which this runs: it is
/// idempotent), naming the database the primary's URL names. Panics when the script fails.
pub fn replica_url() -> String {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/start-postgres-replica");
    let output = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", script.display()));
    assert!(
        output.status.success(),
        "ops/start-postgres-replica: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `url` with its database replaced by the one `like` names (a database of the primary, on a
/// replica of it).
pub fn same_database(url: &str, like: &str) -> String {
    match (url.rsplit_once('/'), like.rsplit_once('/')) {
        (Some((server, _)), Some((_, name))) => format!("{server}/{name}"),
        _ => panic!("{url} or {like} names no database"),
    }
}

/// A new, empty database on the server of `url`, named `swarm_test_…`; returns its URL.
/// `ops/test` drops these databases before each run.
#[cfg(feature = "postgres")]
pub async fn fresh_database(url: &str) -> String {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is needed (ops/start-postgres): {e}"));
    let name = format!("swarm_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let _ = admin.close().await;
    match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("{url} does not name a database"),
    }
}

/// The fixed corpus the semantic search cases use: (kind, payload).
pub fn corpus() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    vec![
        (
            "payment.failed",
            json!({"reason": "card refused by the issuing bank", "order": "ord-1"}),
        ),
        (
            "order.shipped",
            json!({"carrier": "parcel service", "status": "on its way", "order": "ord-2"}),
        ),
        (
            "user.signed_up",
            json!({"plan": "free trial", "source": "newsletter"}),
        ),
        (
            "inventory.low",
            json!({"item": "blue widgets", "warehouse": "north"}),
        ),
        ("email.bounced", json!({"reason": "mailbox full"})),
        (
            "review.posted",
            json!({"rating": 5, "text": "great product, fast delivery"}),
        ),
    ]
}

/// Runs the memory behaviour suite against one implementation.
#[macro_export]
macro_rules! memory_behaviour_suite {
    ($make:path, $embedder:path) => {
        mod memory_behaviour {
            use std::sync::Arc;

            use serde_json::json;
            use swarm_memory::testkit::{at, corpus, record};
            use swarm_memory::{
                Fusion, Memory, MemoryError, OutcomeFilter, Probe, Retention, SearchQuery,
            };
            use swarm_schemas::{FailureKind, Outcome, Signal};

            async fn memory() -> Arc<dyn Memory> {
                $make($embedder()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn records_are_idempotent_by_execution_id() {
                let memory = memory().await;
                let signal = Signal::new("a.b", json!({"n": 1}));
                let first = record(&signal, "u", true, 2);
                let second = record(&signal, "v", true, 1);
                memory.record(&[first.clone(), first.clone()]).await.expect("record");
                memory.record(&[second.clone(), first.clone()]).await.expect("record");
                memory.record(&[]).await.expect("an empty batch is fine");
                assert_eq!(memory.count().await.expect("count"), 2);
                assert_eq!(memory.execution(first.id).await.expect("read"), Some(first.clone()));
                assert_eq!(memory.execution(uuid::Uuid::now_v7()).await.expect("read"), None);
                assert_eq!(memory.executions_of(signal.id).await.expect("read"), vec![first.clone(), second.clone()]);
                assert_eq!(memory.recent(1).await.expect("read"), vec![second.clone()]);
                assert_eq!(memory.recent(10).await.expect("read"), vec![second, first]);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn per_shape_limits_each_shape_to_its_newest_executions() {
                let memory = memory().await;
                let refused = Signal::new("payment.failed", json!({"reason": "card refused by the bank"}));
                let expired = Signal::new("payment.failed", json!({"reason": "the card has expired"}));
                let shipped = Signal::new("order.shipped", json!({"status": "parcel on its way"}));
                let mut records = Vec::new();
                for n in 0..6 {
                    records.push(record(&refused, "a", true, 100 - n));
                    records.push(record(&expired, "b", true, 100 - n));
                }
                records.push(record(&shipped, "c", true, 1));
                memory.record(&records).await.expect("record");
                let query = SearchQuery::signal(refused.clone()).k(5);
                let hits = memory.search(&query).await.expect("search");
                assert!(hits.iter().all(|h| h.record.unit == "a"), "without a limit the nearest shape fills k");
                let hits = memory.search(&query.clone().per_shape(2)).await.expect("search");
                let units: Vec<&str> = hits.iter().map(|h| h.record.unit.as_str()).collect();
                assert_eq!(units, ["a", "a", "b", "b", "c"], "two of each shape, nearest shape first");
                let newest: Vec<_> = records.iter().filter(|r| r.unit == "a").rev().take(2).map(|r| r.id).collect();
                assert_eq!(hits[..2].iter().map(|h| h.record.id).collect::<Vec<_>>(), newest, "the newest of a shape");
                let err = memory.search(&query.per_shape(0)).await.expect_err("per_shape 0 is refused");
                assert!(matches!(err, MemoryError::InvalidQuery(_)), "{err}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_field_of_a_record_survives() {
                let memory = memory().await;
                let parent = Signal::new("order.placed", json!({"order": "ord-9"}));
                let signal = parent.child(uuid::Uuid::now_v7(), swarm_schemas::Emit {
                    kind: "order.priced".into(),
                    payload: json!({"total": 12.5, "lines": [{"sku": "A-1", "qty": 2}], "note": null}),
                });
                let mut failed = record(&signal, "pricer", false, 0);
                failed.unit_version = "2.0.0-beta.1+build.5".parse().expect("version");
                failed.generation = 7;
                failed.attempt = 2;
                failed.outcome = Outcome::Failure { kind: FailureKind::Panic, error: "boom (at src/lib.rs:1:2)".into() };
                failed.latency_us = 123_456;
                failed.emitted = vec![uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
                failed.policy = "top_k".into();
                failed.propensity = 0.25;
                failed.host_calls = vec![
                    swarm_schemas::HostCalls { capability: swarm_schemas::Capability::Marks, calls: 3, errors: 1, denied: 0, micros: 412 },
                    swarm_schemas::HostCalls { capability: swarm_schemas::Capability::Http, calls: 1, errors: 0, denied: 1, micros: 9 },
                ];
                memory.record(std::slice::from_ref(&failed)).await.expect("record");
                assert_eq!(memory.execution(failed.id).await.expect("read"), Some(failed));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn search_ranks_what_means_the_same_first() {
                let memory = memory().await;
                let records: Vec<_> = corpus()
                    .into_iter()
                    .enumerate()
                    .map(|(n, (kind, payload))| record(&Signal::new(kind, payload), "u", true, n as i64))
                    .collect();
                memory.record(&records).await.expect("record");
                let hits = memory.search(&SearchQuery::text("payment declined").k(6)).await.expect("search");
                let kinds: Vec<&str> = hits.iter().map(|h| h.record.signal.kind.as_str()).collect();
                assert_eq!(kinds.len(), 6, "{kinds:?}");
                assert_eq!(kinds[0], "payment.failed", "{kinds:?}");
                let shipped = kinds.iter().position(|k| *k == "order.shipped").expect("shipped is found");
                assert!(shipped > 0);
                assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "best fused score first");
                assert!(hits[0].shape.contains("card refused"), "{}", hits[0].shape);
                let by_vector = memory.search(&SearchQuery::text("payment declined").fusion(Fusion::Vector).k(6)).await.expect("search");
                assert!(by_vector.windows(2).all(|w| w[0].similarity >= w[1].similarity), "by vector: most similar first");
                assert_eq!(by_vector[0].record.signal.kind, "payment.failed");

                let hits = memory.search(&SearchQuery::text("parcel delivery is on the way").k(1)).await.expect("search");
                assert_eq!(hits[0].record.signal.kind, "order.shipped");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hybrid_search_fuses_shared_words_with_vectors() {
                let memory = memory().await;
                let mut records: Vec<_> = corpus()
                    .into_iter()
                    .enumerate()
                    .map(|(n, (kind, payload))| record(&Signal::new(kind, payload), "u", true, n as i64))
                    .collect();
                // A word the model has never seen, in one shape only.
                let coded = Signal::new("inventory.low", json!({"item": "quixotry flanges", "warehouse": "south"}));
                records.push(record(&coded, "u", true, 50));
                memory.record(&records).await.expect("record");
                let query = SearchQuery::text("quixotry").k(3);
                let hybrid = memory.search(&query).await.expect("search");
                assert!(hybrid[0].shape.contains("quixotry"), "{:?}", hybrid.iter().map(|h| &h.shape).collect::<Vec<_>>());
                // First by words, and somewhere by vector: at least 1/61 + 1/(60 + 7).
                assert!(hybrid[0].score > 1.0 / 61.0 + 1.0 / 68.0, "{}", hybrid[0].score);
                assert!(hybrid.windows(2).all(|w| w[0].score >= w[1].score));
                // Words in no shape leave the vector order alone.
                let unmatched = memory.search(&SearchQuery::text("zzyzx wibblequanch").k(7)).await.expect("search");
                let by_vector = memory.search(&SearchQuery::text("zzyzx wibblequanch").fusion(Fusion::Vector).k(7)).await.expect("search");
                assert_eq!(unmatched, by_vector);
                // Stop words alone match nothing either.
                let stop = memory.search(&SearchQuery::text("the of and").k(7)).await.expect("search");
                let stop_by_vector = memory.search(&SearchQuery::text("the of and").fusion(Fusion::Vector).k(7)).await.expect("search");
                assert_eq!(stop.iter().map(|h| h.record.id).collect::<Vec<_>>(), stop_by_vector.iter().map(|h| h.record.id).collect::<Vec<_>>());
                // Filters hold for the words' half too.
                let filtered = memory.search(&query.clone().kind("email.bounced")).await.expect("search");
                assert!(filtered.iter().all(|h| h.record.signal.kind == "email.bounced"));
                // Odd text (quotes, operators, NUL, URLs) is only words.
                for odd in ["it's & | ! <-> :*", "a\0'b\\", "http://x.example/a?b=1&c=2 'quixotry'", "\u{0}quixotry"] {
                    let hits = memory.search(&SearchQuery::text(odd).k(3)).await.expect("odd text is searched");
                    assert!(!hits.is_empty(), "{odd}");
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn search_by_signal_finds_its_shape() {
                let memory = memory().await;
                let placed: Vec<_> = (0..5)
                    .map(|n| record(&Signal::new("order.placed", json!({"order": format!("ord-{n}"), "tier": "gold"})), "u", true, n))
                    .collect();
                let other = record(&Signal::new("order.placed", json!({"order": "ord-7", "tier": "silver"})), "u", true, 9);
                memory.record(&placed).await.expect("record");
                memory.record(std::slice::from_ref(&other)).await.expect("record");
                let probe = Signal::new("order.placed", json!({"order": "ord-12345", "tier": "gold"}));
                let by_shape = memory.search(&SearchQuery::shape(swarm_memory::Shape::of(&probe)).k(5)).await.expect("search");
                let hits = memory.search(&SearchQuery::signal(probe).k(5)).await.expect("search");
                assert_eq!(hits, by_shape, "a signal and its shape find the same");
                assert_eq!(hits.len(), 5);
                assert!(hits.iter().all(|h| h.record.signal.payload["tier"] == "gold"));
                assert!(hits.iter().all(|h| h.similarity > 0.99), "{:?}", hits.iter().map(|h| h.similarity).collect::<Vec<_>>());
                let newest_first: Vec<_> = placed.iter().map(|r| r.id).collect();
                assert_eq!(hits.iter().map(|h| h.record.id).collect::<Vec<_>>(), newest_first, "equal similarity: newest first");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn filters_narrow_a_search_and_still_fill_k() {
                let memory = memory().await;
                let mut records = Vec::new();
                for (n, (kind, payload)) in corpus().into_iter().enumerate() {
                    for copy in 0..4i64 {
                        let unit = if copy % 2 == 0 { "even" } else { "odd" };
                        records.push(record(&Signal::new(kind, payload.clone()), unit, copy != 3, n as i64 * 100 + copy));
                    }
                }
                memory.record(&records).await.expect("record");

                let by_kind = memory.search(&SearchQuery::text("payment declined").kind("review.posted").k(10)).await.expect("search");
                assert_eq!(by_kind.len(), 4);
                assert!(by_kind.iter().all(|h| h.record.signal.kind == "review.posted"));

                let by_unit = memory.search(&SearchQuery::text("payment declined").unit("odd").k(3)).await.expect("search");
                assert_eq!(by_unit.len(), 3);
                assert!(by_unit.iter().all(|h| h.record.unit == "odd"));
                assert_eq!(by_unit[0].record.signal.kind, "payment.failed");

                let failures = memory.search(&SearchQuery::text("payment declined").outcome(OutcomeFilter::Failure).k(100)).await.expect("search");
                assert_eq!(failures.len(), corpus().len());
                assert!(failures.iter().all(|h| !h.record.outcome.is_success()));
                let successes = memory.search(&SearchQuery::text("x y").outcome(OutcomeFilter::Success).k(100)).await.expect("search");
                assert_eq!(successes.len(), corpus().len() * 3);

                // Started in the last 250 s: the first three corpus entries (0..4 s, 100..104 s, 200..204 s ago).
                let recent = memory.search(&SearchQuery::text("mailbox full").between(Some(at(250)), None).k(100)).await.expect("search");
                assert_eq!(recent.len(), 12);
                let old = memory.search(&SearchQuery::text("mailbox full").between(None, Some(at(250))).k(100)).await.expect("search");
                assert_eq!(old.len(), 12);
                assert_eq!(old[0].record.signal.kind, "email.bounced");

                let none = memory.search(&SearchQuery::text("anything").unit("nobody").k(5)).await.expect("search");
                assert!(none.is_empty());
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn invalid_searches_are_refused_clearly() {
                let memory = memory().await;
                let bad = [
                    SearchQuery::text("x").k(0),
                    SearchQuery::text("x").k(swarm_memory::MAX_K + 1),
                    SearchQuery::text("   "),
                    SearchQuery::text("x").between(Some(at(0)), Some(at(10))),
                    SearchQuery { probe: Probe::Vector(vec![0.5; 3]), ..SearchQuery::text("x") },
                    SearchQuery { probe: Probe::Vector(vec![f32::NAN; 384]), ..SearchQuery::text("x") },
                ];
                for query in bad {
                    match memory.search(&query).await {
                        Err(MemoryError::InvalidQuery(message)) => assert!(!message.is_empty()),
                        other => panic!("{query:?} gave {other:?}"),
                    }
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unit_statistics_add_up() {
                let memory = memory().await;
                let signal = Signal::new("s", json!({}));
                let mut records = Vec::new();
                for n in 0..20u64 {
                    let mut r = record(&signal, "alpha", n % 4 != 0, n as i64);
                    r.latency_us = (n + 1) * 10;
                    records.push(r);
                }
                records.push(record(&signal, "beta", true, 0));
                memory.record(&records).await.expect("record");
                let stats = memory.unit_stats().await.expect("stats");
                assert_eq!(stats.iter().map(|s| s.unit.as_str()).collect::<Vec<_>>(), ["alpha", "beta"]);
                let alpha = &stats[0];
                assert_eq!((alpha.executions, alpha.successes, alpha.failures), (20, 15, 5));
                assert!((alpha.mean_latency_us - 105.0).abs() < 1e-9, "{}", alpha.mean_latency_us);
                assert_eq!(alpha.p95_latency_us, 190);
                assert_eq!(alpha.last_started_at, records[0].started_at);
                assert_eq!(stats[1].executions, 1);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn compaction_keeps_what_retention_asks() {
                let memory = memory().await;
                let records: Vec<_> = (0..10)
                    .map(|n| record(&Signal::new(&format!("kind.k{n}"), json!({"n": "word"})), "u", true, n * 3600))
                    .collect();
                memory.record(&records).await.expect("record");
                let nothing = memory.compact(&Retention::default()).await.expect("compact");
                assert_eq!(nothing.executions, 0);

                let by_age = Retention { max_age: Some(std::time::Duration::from_secs(5 * 3600 + 60)), max_rows: None };
                let removed = memory.compact(&by_age).await.expect("compact");
                assert_eq!(removed.executions, 4);
                assert_eq!(removed.shapes, 4);
                assert_eq!(memory.count().await.expect("count"), 6);

                let by_rows = Retention { max_age: None, max_rows: Some(2) };
                let removed = memory.compact(&by_rows).await.expect("compact");
                assert_eq!(removed.executions, 4);
                let kept: Vec<_> = memory.recent(10).await.expect("read").into_iter().map(|r| r.id).collect();
                assert_eq!(kept, vec![records[0].id, records[1].id]);
                let hits = memory.search(&SearchQuery::text("kind").k(10)).await.expect("search");
                assert_eq!(hits.len(), 2, "forgotten executions are not found");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn odd_payloads_and_text_are_recorded_and_found() {
                let memory = memory().await;
                let payloads = [
                    json!(42),
                    json!("just a string"),
                    json!([1, "two", {"three": 3}]),
                    json!(null),
                    json!({"huge": "lorem ipsum ".repeat(100_000)}),
                    json!({"nul": "a\u{0}b", "emoji": "🦀", "bidi": "\u{202e}txet"}),
                ];
                let mut records: Vec<_> = payloads
                    .iter()
                    .enumerate()
                    .map(|(n, p)| record(&Signal::new("odd.input", p.clone()), "u", true, n as i64))
                    .collect();
                records[5].outcome = Outcome::Failure {
                    kind: FailureKind::BadOutput,
                    error: "reply is not UTF-8: \u{fffd}\u{fffd} and a NUL \u{0} byte".into(),
                };
                memory.record(&records).await.expect("record");
                assert_eq!(memory.count().await.expect("count"), 6);
                for record in &records[..5] {
                    assert_eq!(memory.execution(record.id).await.expect("read").as_ref(), Some(record));
                }
                let stored = memory.execution(records[5].id).await.expect("read").expect("recorded");
                assert_eq!(stored.signal, records[5].signal, "the signal is kept as sent, NUL included");
                let Outcome::Failure { error, .. } = &stored.outcome else { panic!("{stored:?}") };
                assert_eq!(error, "reply is not UTF-8: \u{fffd}\u{fffd} and a NUL \u{fffd} byte");
                let hits = memory.search(&SearchQuery::text("lorem ipsum").kind("odd.input").k(6)).await.expect("search");
                assert_eq!(hits.len(), 6);
                assert_eq!(hits[0].record.id, records[4].id);
            }
        }
    };
}
