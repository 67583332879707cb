//! Search quality on a held-out corpus (`tests/fixtures/search-quality`): 120 signals in 12
//! topics recorded into PostgreSQL, then each of 36 free-text queries asked of `swarm memory
//! search -k 3` (hybrid, the default) and of `--vector-only`; precision@3 is the share of the
//! hits whose signal is of the query's topic.
//! In the same run `ops/search-quality-reference` computes the bare models' precision@3 on
//! the same shape texts with onnxruntime. Prints figures, asserts nothing.
//!
//! Run with: ops/start-postgres && cargo bench -p swarm-tests --bench search_quality
//! (`SWARM_TEST_DATABASE_URL`, as `ops/test` sets it; `SWARM_BIN`, else a release build).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use swarm_memory::testkit::{database_url, embedder, fresh_database, models_dir, record};
use swarm_memory::{Memory, PgMemory, PgMemoryConfig, Shape};
use swarm_schemas::{Signal, SignalId};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/search-quality")
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().expect(key).to_owned()
}

/// The corpus as signals, with their topics.
fn corpus() -> Vec<(String, Signal)> {
    lines(&fixtures().join("signals.jsonl"))
        .iter()
        .map(|l| {
            (
                text(l, "topic"),
                Signal::new(text(l, "kind"), l["payload"].clone()),
            )
        })
        .collect()
}

/// The topics of the signals `swarm memory search` returns for `query`, best first.
fn search(
    url: &str,
    query: &str,
    extra: &[&str],
    topics: &HashMap<SignalId, String>,
) -> Vec<String> {
    let out = Command::new(swarm_tests::swarm_binary())
        .args(["memory", "search", query, "-k", "3", "--json"])
        .args(extra)
        .env("SWARM_DATABASE_URL", url)
        .env("SWARM_MODELS_DIR", models_dir())
        .output()
        .expect("swarm runs");
    assert!(
        out.status.success(),
        "swarm memory search: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: Vec<Value> = serde_json::from_slice(&out.stdout).expect("search JSON");
    hits.iter()
        .map(|h| {
            let id: SignalId =
                serde_json::from_value(h["record"]["signal"]["id"].clone()).expect("a signal id");
            topics.get(&id).cloned().unwrap_or_default()
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let url = fresh_database(&database_url()).await;
    let memory = PgMemory::connect(&url, embedder(), PgMemoryConfig::default())
        .await
        .expect("memory opens");
    let corpus = corpus();
    let records: Vec<_> = corpus
        .iter()
        .map(|(_, signal)| record(signal, "triage", true, 60))
        .collect();
    memory.record(&records).await.expect("records");
    let topics: HashMap<SignalId, String> = corpus
        .iter()
        .map(|(topic, signal)| (signal.id, topic.clone()))
        .collect();

    let queries = lines(&fixtures().join("queries.jsonl"));
    let (mut right, mut right_by_vector) = (0, 0);
    let mut misses = Vec::new();
    for q in &queries {
        let (query, topic) = (text(q, "query"), text(q, "topic"));
        let got = search(&url, &query, &[], &topics);
        let hits = got.iter().filter(|t| **t == topic).count();
        right += hits;
        if hits < 3 {
            misses.push(format!("  {query:?} ({topic}): {got:?}"));
        }
        let by_vector = search(&url, &query, &["--vector-only"], &topics);
        right_by_vector += by_vector.iter().filter(|t| **t == topic).count();
    }
    let swarm = right as f64 / (3 * queries.len()) as f64;
    let swarm_by_vector = right_by_vector as f64 / (3 * queries.len()) as f64;

    // The bare models on the same shape texts.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/search-quality");
    std::fs::create_dir_all(&dir).expect("target dir");
    let shapes = dir.join("shapes.jsonl");
    let text: String = corpus
        .iter()
        .map(|(topic, signal)| {
            serde_json::json!({ "topic": topic, "text": Shape::of(signal).text }).to_string() + "\n"
        })
        .collect();
    std::fs::write(&shapes, text).expect("shapes written");
    let reference =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/search-quality-reference"))
            .arg(&shapes)
            .arg(fixtures().join("queries.jsonl"))
            .output()
            .expect("the reference script runs");
    assert!(
        reference.status.success(),
        "ops/search-quality-reference: {}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let bare: Vec<Value> = String::from_utf8_lossy(&reference.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();

    println!(
        "search quality: {} signals in {} topics, {} queries, precision@3",
        corpus.len(),
        topics
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        queries.len()
    );
    println!("  swarm memory search (PostgreSQL, tract)     {swarm:.3}  (hybrid, the default)");
    println!("  swarm memory search --vector-only           {swarm_by_vector:.3}");
    let mut l6 = None;
    for b in &bare {
        let p = b["precision_at_3"].as_f64().unwrap_or(f64::NAN);
        let model = b["model"].as_str().unwrap_or("?");
        if model == "all-MiniLM-L6-v2.onnx" {
            l6 = Some(p);
        }
        println!(
            "  bare {model:<38} {p:.3}  ({})",
            b["runtime"].as_str().unwrap_or("?")
        );
    }
    if let Some(l6) = l6 {
        println!("  swarm / bare all-MiniLM-L6-v2: {:.3}", swarm / l6);
    }
    println!("queries with a hit of another topic:");
    for miss in misses {
        println!("{miss}");
    }
}
