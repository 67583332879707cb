//! The tract embedder against reference embeddings computed with onnxruntime
//! (`tests/fixtures/minilm-l6-reference.json`, made by `ops/reference-embeddings`), on the real
//! model fetched by `ops/fetch-model` (`SWARM_MODELS_DIR`, default `.swarm/models`). A missing
//! model fails these tests; they never skip.

use std::sync::OnceLock;

use serde_json::Value;
use swarm_memory::testkit::models_dir;
use swarm_memory::{Embedder, MODEL_FILE, TOKENIZER_FILE, TractEmbedder, cosine};

fn embedder() -> &'static TractEmbedder {
    static EMBEDDER: OnceLock<TractEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let dir = models_dir();
        TractEmbedder::load_dir(&dir)
            .unwrap_or_else(|e| panic!("the model is needed (run ops/fetch-model): {e}"))
    })
}

fn reference() -> Vec<(String, Vec<u32>, Vec<f32>)> {
    let text = include_str!("fixtures/minilm-l6-reference.json");
    let value: Value = serde_json::from_str(text).expect("fixture is JSON");
    value["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| {
            let ids = case["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect();
            let vector = case["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|v| v.as_f64().expect("f") as f32)
                .collect();
            (case["text"].as_str().expect("text").to_owned(), ids, vector)
        })
        .collect()
}

#[test]
fn tract_matches_onnxruntime_on_every_reference_sentence() {
    let embedder = embedder();
    assert_eq!(embedder.dimensions(), 384);
    let cases = reference();
    assert!(cases.len() >= 20);
    let mut worst = 0f32;
    for (text, ids, expected) in &cases {
        assert_eq!(
            &embedder.token_ids(text).expect("tokenises"),
            ids,
            "tokens of {text:?}"
        );
        let got = embedder.embed(&[text]).expect("embeds").remove(0);
        let norm: f32 = got.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "unit length for {text:?}: {norm}"
        );
        let distance = 1.0 - cosine(&got, expected);
        worst = worst.max(distance);
        assert!(
            distance <= 1e-4,
            "{text:?}: cosine distance {distance} to onnxruntime"
        );
    }
    println!(
        "tract vs onnxruntime: {} sentences, worst cosine distance {worst:e}",
        cases.len()
    );
}

#[test]
fn a_batch_gives_the_same_vectors_as_one_at_a_time() {
    let embedder = embedder();
    let cases = reference();
    let texts: Vec<&str> = cases.iter().map(|(t, _, _)| t.as_str()).collect();
    let batch = embedder.embed(&texts).expect("embeds");
    assert_eq!(batch.len(), texts.len());
    for ((text, _, expected), got) in cases.iter().zip(&batch) {
        let distance = 1.0 - cosine(got, expected);
        assert!(
            distance <= 1e-4,
            "{text:?} in a padded batch: cosine distance {distance}"
        );
    }
    assert!(embedder.embed(&[]).expect("nothing to do").is_empty());
}

#[test]
fn texts_of_many_lengths_alone_match_the_same_texts_in_a_batch() {
    // More distinct lengths than the embedder keeps plans for (some are dropped and made
    // again), past the length where plans stop being exact, each embedded alone twice.
    let embedder = embedder();
    let words = [
        "ants",
        "lay",
        "trails",
        "of",
        "pheromone",
        "that",
        "fade",
        "unless",
        "renewed",
    ];
    let texts: Vec<String> = (1..=60)
        .step_by(3)
        .map(|n| {
            (0..n)
                .map(|i| words[i % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = embedder.embed(&refs).expect("embeds");
    let lengths: std::collections::BTreeSet<usize> = refs
        .iter()
        .map(|t| embedder.token_ids(t).expect("tokenises").len())
        .collect();
    assert!(lengths.len() >= 20, "{lengths:?}");
    for _ in 0..2 {
        for (text, expected) in refs.iter().zip(&batch) {
            let alone = embedder.embed(&[text]).expect("embeds").remove(0);
            let distance = 1.0 - cosine(&alone, expected);
            assert!(
                distance <= 1e-4,
                "{} words alone vs in a batch: cosine distance {distance}",
                text.split(' ').count()
            );
        }
    }
}

#[test]
fn semantically_close_sentences_are_closer() {
    let embedder = embedder();
    let v = embedder
        .embed(&["payment declined", "card refused", "order shipped"])
        .expect("embeds");
    let (refused, shipped) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(
        refused > shipped,
        "`card refused` ({refused}) is closer to `payment declined` than `order shipped` ({shipped})"
    );
}

#[test]
fn missing_files_are_clear_errors() {
    let dir = models_dir();
    let err = TractEmbedder::load(&dir.join("nope.onnx"), &dir.join(TOKENIZER_FILE))
        .err()
        .expect("fails");
    assert!(
        err.to_string().starts_with("cannot load model from "),
        "{err}"
    );
    let err = TractEmbedder::load(&dir.join(MODEL_FILE), &dir.join("nope.json"))
        .err()
        .expect("fails");
    assert!(
        err.to_string().starts_with("cannot load tokenizer from "),
        "{err}"
    );
}
