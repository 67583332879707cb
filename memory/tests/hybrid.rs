//! Hybrid search: the in-process memory ranks words and fuses them as PostgreSQL does. The
//! search-quality corpus (`tests/fixtures/search-quality`) is recorded into both; its shapes'
//! word ranks are compared with `ts_rank` on the server, and the queries' hits with each other.
//! On the server `ops/start-postgres` runs.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sqlx::Row;
use swarm_memory::testkit::{database_url, embedder, fresh_database, record};
use swarm_memory::words::{self, Words};
use swarm_memory::{InProcMemory, Memory, PgMemory, PgMemoryConfig, SearchQuery, Shape};
use swarm_schemas::Signal;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/search-quality")
}

fn lines(name: &str) -> Vec<Value> {
    let path = fixtures().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn signals() -> Vec<Signal> {
    lines("signals.jsonl")
        .iter()
        .map(|l| Signal::new(l["kind"].as_str().expect("kind"), l["payload"].clone()))
        .collect()
}

fn queries() -> Vec<String> {
    lines("queries.jsonl")
        .iter()
        .map(|l| l["query"].as_str().expect("query").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_ranks_match_postgres_ts_rank() {
    let url = fresh_database(&database_url()).await;
    let memory = PgMemory::connect(&url, embedder(), PgMemoryConfig::default())
        .await
        .expect("memory opens");
    let texts: Vec<String> = signals().iter().map(|s| Shape::of(s).text).collect();
    let mut compared = 0;
    for query in queries() {
        let rows = sqlx::query(
            "WITH probe AS (
                SELECT swarm_any_words(plainto_tsquery('simple', lexeme)) AS words
                FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS lexeme)
             SELECT t.text, coalesce(ts_rank(to_tsvector('english', t.text), probe.words), 0) AS rank
             FROM unnest($2::text[]) AS t(text), probe",
        )
        .bind(&query)
        .bind(&texts)
        .fetch_all(memory.pool())
        .await
        .expect("ts_rank");
        let asked = words::query(&query);
        for row in rows {
            let text: String = row.get("text");
            let theirs: f32 = row.get("rank");
            let ours = Words::of(&text).rank(&asked);
            assert!(
                (theirs - ours).abs() < 1e-6,
                "{query:?} on {text:?}: ts_rank {theirs}, in-process {ours}"
            );
            compared += usize::from(theirs > 0.0);
        }
    }
    assert!(
        compared > 100,
        "only {compared} matching pairs were compared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_and_postgres_find_the_same() {
    let url = fresh_database(&database_url()).await;
    let pg = PgMemory::connect(&url, embedder(), PgMemoryConfig::default())
        .await
        .expect("memory opens");
    let inproc = InProcMemory::new().with_embedder(embedder());
    let records: Vec<_> = signals()
        .iter()
        .enumerate()
        .map(|(n, signal)| record(signal, "u", n % 3 != 0, n as i64))
        .collect();
    pg.record(&records).await.expect("record");
    inproc.record(&records).await.expect("record");
    // The free-text queries, and the last two long words of each shape (which the words' half
    // matches).
    let mut asked = queries();
    for signal in signals() {
        let text = Shape::of(&signal).text;
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| w.len() > 3)
            .collect();
        asked.push(
            words
                .iter()
                .rev()
                .take(2)
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    let mut fused = 0;
    for query in asked {
        let query = SearchQuery::text(query).k(5);
        let ours = inproc.search(&query).await.expect("search");
        let theirs = pg.search(&query).await.expect("search");
        let ids =
            |hits: &[swarm_memory::SearchHit]| hits.iter().map(|h| h.record.id).collect::<Vec<_>>();
        assert_eq!(ids(&ours), ids(&theirs), "{:?}", query.probe);
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a.score - b.score).abs() < 1e-9,
                "{} vs {}",
                a.score,
                b.score
            );
            assert!((a.similarity - b.similarity).abs() < 2e-3);
        }
        // A shape in both lists scores above 1/61, the most one list gives.
        fused += usize::from(ours.first().is_some_and(|h| h.score > 1.0 / 61.0 + 1e-9));
    }
    assert!(
        fused > 60,
        "the words' half took part in only {fused} searches"
    );
}
