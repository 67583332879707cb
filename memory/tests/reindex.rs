//! Moving a PostgreSQL memory to another model: 10,000 shapes, a reindex that is stopped half
//! way and resumed, searches throughout, writers on the old model meanwhile. On the server
//! `ops/start-postgres` runs.
//!
//! The two models are bag-of-words hashes with different salts and word weights (the real
//! model would take minutes for 10,000 shapes): each finds the shapes sharing a query's words,
//! each model's vectors are meaningless to the other, and a hit's similarity tells which
//! model's vectors answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use swarm_memory::testkit::{database_url, fresh_database, record};
use swarm_memory::{
    EmbedError, Embedder, Memory, PgMemory, PgMemoryConfig, ReindexProgress, SearchQuery, Shape,
};
use swarm_schemas::Signal;

const SHAPES: usize = 10_000;

/// Words as a hashed bag, salted by the model's name; counts the texts it embeds.
struct Hashed {
    model: String,
    texts: AtomicUsize,
}

impl Hashed {
    fn new(model: &str) -> Arc<Self> {
        Arc::new(Self {
            model: model.to_owned(),
            texts: AtomicUsize::new(0),
        })
    }

    fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; 384];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let hash = blake3::hash(format!("{}/{word}", self.model).as_bytes());
            let bytes = hash.as_bytes();
            let dim = usize::from(u16::from_le_bytes([bytes[0], bytes[1]])) % 384;
            // The second model weighs long words more, so the two give different similarities.
            let weight = if self.model == "words-b" {
                word.len() as f32
            } else {
                1.0
            };
            v[dim] += if bytes[2] & 1 == 0 { weight } else { -weight };
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter().map(|x| x / norm).collect()
    }
}

impl Embedder for Hashed {
    fn dimensions(&self) -> usize {
        384
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

/// A word of letters only (shapes mask values with digits as ids).
fn word(mut n: usize) -> String {
    let mut w = String::new();
    loop {
        w.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return w;
        }
    }
}

/// Signal `n`: one of 5 topics, with words of its own.
fn signal(n: usize) -> Signal {
    let topic = ["refund", "parcel", "login", "invoice", "outage"][n % 5];
    Signal::new(
        "ticket.opened",
        json!({ "topic": topic, "subject": format!("{topic} {} {}", word(n), word(n / 7 + 1000)) }),
    )
}

async fn open(url: &str, embedder: Arc<Hashed>) -> PgMemory {
    PgMemory::connect(url, embedder, PgMemoryConfig::default())
        .await
        .expect("connect to the test database")
}

/// The refund searched for: its own words are three letters long ("eab", "fqb").
const REFUND: usize = 680;

/// A search for one refund's words: that refund's shape first, then nine more.
fn refunds() -> SearchQuery {
    SearchQuery::text(format!(
        "refund {} {}",
        word(REFUND),
        word(REFUND / 7 + 1000)
    ))
    .k(10)
}

fn first_refund() -> String {
    Shape::of(&signal(REFUND)).text
}

/// Which model's vectors a search's first hit was compared with: its similarity is the cosine
/// of that model's vectors (to halfvec precision).
fn answered_by(hits: &[swarm_memory::SearchHit]) -> &'static str {
    let SearchQuery {
        probe: swarm_memory::Probe::Text(query),
        ..
    } = refunds()
    else {
        unreachable!("a text search")
    };
    for model in ["words-a", "words-b"] {
        let embedder = Hashed::new(model);
        let cosine =
            swarm_memory::cosine(&embedder.vector(&query), &embedder.vector(&hits[0].shape));
        if (cosine - hits[0].similarity).abs() < 2e-3 {
            return if model == "words-a" {
                "words-a"
            } else {
                "words-b"
            };
        }
    }
    "neither"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reindex_resumes_and_switches_search_while_searches_and_writes_go_on() {
    let url = fresh_database(&database_url()).await;
    let old_model = Hashed::new("words-a");
    let new_model = Hashed::new("words-b");
    let old = Arc::new(open(&url, Arc::clone(&old_model)).await);
    for chunk in (0..SHAPES).collect::<Vec<_>>().chunks(1000) {
        let records: Vec<_> = chunk
            .iter()
            .map(|&n| record(&signal(n), "u", true, 10))
            .collect();
        old.record(&records).await.expect("record");
    }
    assert_eq!(
        old.serving_model().await.expect("model").as_deref(),
        Some("words-a")
    );

    // The process that reindexes, one on the new model that keeps the old one to search with,
    // one on the new model alone, and the old process.
    let reindexer = Arc::new(open(&url, Arc::clone(&new_model)).await);
    let both = Arc::new(
        open(&url, Hashed::new("words-b"))
            .await
            .with_previous(Hashed::new("words-a")),
    );
    let new_only = open(&url, Hashed::new("words-b")).await;
    let before = both.search(&refunds()).await.expect("search");
    assert_eq!(before.len(), 10);
    assert_eq!(before[0].shape, first_refund());
    assert_eq!(answered_by(&before), "words-a");
    assert!(
        new_only
            .search(&refunds())
            .await
            .expect("search")
            .is_empty(),
        "no vectors of the new model yet"
    );

    // Searches run throughout: they never fail, and the process holding both models always
    // finds ten refunds.
    let stop = Arc::new(AtomicBool::new(false));
    let searcher = {
        let (both, old, stop) = (Arc::clone(&both), Arc::clone(&old), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut searches = 0;
            while !stop.load(Ordering::SeqCst) {
                let hits = both
                    .search(&refunds())
                    .await
                    .expect("a search during the reindex");
                assert_eq!(hits.len(), 10, "after {searches} searches");
                assert_eq!(hits[0].shape, first_refund(), "after {searches} searches");
                old.search(&refunds())
                    .await
                    .expect("an old-model search during the reindex");
                searches += 1;
            }
            searches
        })
    };
    // A writer still on the old model adds shapes while the first reindex runs.
    let writer = {
        let old = Arc::clone(&old);
        tokio::spawn(async move {
            for n in SHAPES..SHAPES + 500 {
                old.record(&[record(&signal(n), "u", true, 5)])
                    .await
                    .expect("record");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // The first reindex is stopped half way (its task dropped, as a killed process leaves it).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ReindexProgress>();
    let first = {
        let reindexer = Arc::clone(&reindexer);
        tokio::spawn(async move {
            reindexer
                .reindex(|p| {
                    let _ = tx.send(p);
                })
                .await
        })
    };
    let mut half = None;
    while let Some(progress) = rx.recv().await {
        assert!(!progress.switched, "{progress:?}");
        if progress.done >= (SHAPES / 2) as u64 {
            first.abort();
            half = Some(progress);
            break;
        }
    }
    let half = half.expect("the reindex reached half way");
    let _ = first.await;
    writer.await.expect("the writer");
    let embedded_first = new_model.texts.load(Ordering::SeqCst);
    assert_eq!(
        both.serving_model().await.expect("model").as_deref(),
        Some("words-a"),
        "not switched"
    );
    assert!(
        new_only
            .search(&refunds())
            .await
            .expect("search")
            .is_empty(),
        "staged vectors are not searched"
    );

    // The second run resumes: it starts where the first stopped and embeds only the rest.
    let mut seen = Vec::new();
    let done = reindexer
        .reindex(|p| seen.push(p))
        .await
        .expect("the reindex resumes");
    stop.store(true, Ordering::SeqCst);

    let searches = searcher.await.expect("the searcher");
    assert!(
        seen[0].done >= half.done,
        "resumed from {}, stopped at {}",
        seen[0].done,
        half.done
    );
    let embedded_second = new_model.texts.load(Ordering::SeqCst) - embedded_first;
    let total = done.shapes as usize;
    assert!(total >= SHAPES, "{total}");
    assert!(
        embedded_first + embedded_second <= total + 2 * 256,
        "embedded {embedded_first} then {embedded_second} for {total} shapes"
    );
    assert!(
        embedded_second < total - SHAPES / 2 + 2 * 256,
        "the second run redid the first's work: {embedded_second}"
    );
    assert_eq!(done.from.as_deref(), Some("words-a"));
    assert_eq!(done.to, "words-b");
    assert!(
        seen.last().is_some_and(|p| p.switched && p.done == p.total),
        "{:?}",
        seen.last()
    );
    assert!(searches > 0);

    // Switched: the new model finds everything, the old one only what it writes from now on.
    let hits = new_only.search(&refunds()).await.expect("search");
    assert_eq!(hits.len(), 10);
    assert_eq!(hits[0].shape, first_refund());
    assert_eq!(answered_by(&hits), "words-b");
    let after = both.search(&refunds()).await.expect("search");
    assert_eq!(after.len(), 10);
    assert_eq!(
        after[0].shape,
        first_refund(),
        "the process with both models switched"
    );
    assert_eq!(answered_by(&after), "words-b");
    assert!(
        old.search(&refunds()).await.expect("search").is_empty(),
        "no old vectors are left"
    );
    let old_left: i64 = sqlx::query_scalar("SELECT count(*) FROM shapes WHERE model <> 'words-b'")
        .fetch_one(new_only.pool())
        .await
        .expect("count");
    assert_eq!(
        old_left, 0,
        "shapes the old writer added during the reindex were embedded too"
    );
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM reindex_vectors")
        .fetch_one(new_only.pool())
        .await
        .expect("count");
    assert_eq!(staged, 0);

    // The old process, no longer served, never replaces the new vectors...
    let known = signal(5);
    old.record(&[record(&known, "u", true, 1)])
        .await
        .expect("record");
    let model: String = sqlx::query_scalar("SELECT model FROM shapes WHERE id = $1")
        .bind(Shape::of(&known).id)
        .fetch_one(new_only.pool())
        .await
        .expect("the shape");
    assert_eq!(model, "words-b");
    // ...but still adds the shapes memory lacks, with its vectors; running the reindex again
    // embeds those, and only those.
    old.record(&[record(&signal(SHAPES + 1000), "u", true, 1)])
        .await
        .expect("record");
    let again = new_only.reindex(|_| {}).await.expect("reindex");
    assert_eq!(again.embedded, 1);
    assert_eq!(new_only.reindex(|_| {}).await.expect("reindex").embedded, 0);
}
