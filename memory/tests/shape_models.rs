//! PostgreSQL memory and the model behind each shape's vector: a shape is embedded once per
//! model, search compares only vectors of the model in use, a model memory does not serve never
//! replaces a vector, and one it serves replaces another model's when it records the shape.
//! On the server `ops/start-postgres` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use swarm_memory::testkit::{database_url, embedder, fresh_database, record};
use swarm_memory::{EmbedError, Embedder, Memory, PgMemory, PgMemoryConfig, SearchQuery, Shape};
use swarm_schemas::Signal;

/// The real model under a name of its own, counting the texts it embeds.
struct Counted {
    inner: Arc<dyn Embedder>,
    model: String,
    texts: AtomicUsize,
}

impl Counted {
    fn new(model: &str) -> Arc<Self> {
        Arc::new(Self {
            inner: embedder(),
            model: model.to_owned(),
            texts: AtomicUsize::new(0),
        })
    }

    fn texts(&self) -> usize {
        self.texts.load(Ordering::SeqCst)
    }
}

impl Embedder for Counted {
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.inner.embed(texts)
    }
}

async fn open(url: &str, embedder: Arc<Counted>) -> PgMemory {
    PgMemory::connect(url, embedder, PgMemoryConfig::default())
        .await
        .expect("connect to the test database")
}

fn refund() -> Signal {
    Signal::new(
        "support.ticket",
        json!({ "subject": "Refund please", "body": "I returned the jacket and want my money back" }),
    )
}

async fn found(memory: &PgMemory, signal: &Signal) -> bool {
    let hits = memory
        .search(&SearchQuery::text("customer wants their money back").k(5))
        .await
        .expect("search");
    hits.iter().any(|h| h.shape == Shape::of(signal).text)
}

#[tokio::test]
async fn a_shape_memory_has_is_never_embedded_again() {
    let url = fresh_database(&database_url()).await;
    let signal = refund();
    let first = Counted::new("model-a");
    open(&url, Arc::clone(&first))
        .await
        .record(&[record(&signal, "triage", true, 10)])
        .await
        .expect("record");
    assert_eq!(first.texts(), 1);
    // A new process (nothing cached) records the same shape: memory has it, so no embedding
    // (searching embeds only the query).
    let second = Counted::new("model-a");
    let memory = open(&url, Arc::clone(&second)).await;
    memory
        .record(&[
            record(&signal, "triage", true, 5),
            record(&signal, "other", false, 4),
        ])
        .await
        .expect("record");
    assert_eq!(second.texts(), 0, "the stored shape was embedded again");
    assert!(found(&memory, &signal).await);
    let hits = memory
        .search(&SearchQuery::text("customer wants their money back").k(5))
        .await
        .expect("search");
    assert_eq!(
        hits.len(),
        3,
        "all three executions share the stored shape: {hits:?}"
    );
}

#[tokio::test]
async fn search_compares_only_vectors_of_the_model_in_use() {
    let url = fresh_database(&database_url()).await;
    let signal = refund();
    let old = Counted::new("model-old");
    let old_memory = open(&url, Arc::clone(&old)).await;
    old_memory
        .record(&[record(&signal, "triage", true, 10)])
        .await
        .expect("record");
    assert!(found(&old_memory, &signal).await);
    assert_eq!(
        old_memory.serving_model().await.expect("model").as_deref(),
        Some("model-old"),
        "the first model to open memory is the one it serves"
    );

    // Another model: the shape's vector is the old model's, so it is not compared, and
    // recording the shape again does not replace the vector memory serves.
    let new = Counted::new("model-new");
    let new_memory = open(&url, Arc::clone(&new)).await;
    assert!(!found(&new_memory, &signal).await);
    let before = new.texts();
    new_memory
        .record(&[record(&signal, "triage", true, 5)])
        .await
        .expect("record");
    assert_eq!(
        new.texts() - before,
        0,
        "a model memory does not serve embeds no known shape"
    );
    assert!(!found(&new_memory, &signal).await);
    assert!(found(&old_memory, &signal).await);

    // A reindex moves memory to the new model.
    let before = new.texts();
    let done = new_memory.reindex(|_| {}).await.expect("reindex");
    assert_eq!((done.embedded, done.shapes), (1, 1));
    assert_eq!(new.texts() - before, 1);
    assert!(found(&new_memory, &signal).await);
    assert!(
        !found(&old_memory, &signal).await,
        "the old model no longer finds a vector that is not its own"
    );

    // A shape the old process adds now is embedded again by the model memory serves when that
    // one records it.
    let late = Signal::new(
        "support.ticket",
        json!({ "subject": "Money back", "body": "refund the boots" }),
    );
    old_memory
        .record(&[record(&late, "triage", true, 3)])
        .await
        .expect("record");
    let before = new.texts();
    new_memory
        .record(&[record(&late, "triage", true, 2)])
        .await
        .expect("record");
    assert_eq!(
        new.texts() - before,
        1,
        "the served model replaces another model's vector"
    );
    assert!(found(&new_memory, &late).await);
}
