//! Many distinct shapes at once through the shape embedder: every one gets its vector.

use swarm_memory::testkit::embedder;
use swarm_memory::{Shape, ShapeEmbedder};
use swarm_schemas::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_distinct_shapes_all_get_vectors() {
    let shapes = ShapeEmbedder::new(embedder(), 10_000);
    let words = [
        "order", "parcel", "refund", "card", "late", "broken", "address", "stock",
    ];
    let batch: Vec<Shape> = (0..1000usize)
        .map(|n| {
            let text: Vec<&str> = (0..8).map(|i| words[(n >> (i * 3)) % words.len()]).collect();
            Shape::of(&Signal::new("bench.noop", serde_json::json!({ "text": format!("{} {n}", text.join(" ")).replace(char::is_numeric, "") + &"x".repeat(n % 7) })))
        })
        .collect();
    let distinct: std::collections::HashSet<i64> = batch.iter().map(|s| s.id).collect();
    let got = tokio::time::timeout(std::time::Duration::from_secs(120), shapes.vectors(&batch))
        .await
        .expect("embedding finishes")
        .expect("embeds");
    assert_eq!(got.len(), distinct.len());
}
