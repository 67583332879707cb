//! Benchmark of the tract embedder: milliseconds per embedding, one sentence at a time and in
//! batches of 16, on one thread; printed next to onnxruntime on the same model and sentences,
//! measured in the same run (through `.swarm/venv`, set up by `ops/reference-embeddings`).
//!
//! Run with: ops/fetch-model && cargo bench -p swarm-memory --bench embedder

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use swarm_memory::{Embedder, MODEL_FILE, TOKENIZER_FILE, TractEmbedder};

const SENTENCES: &[&str] = &[
    "payment declined",
    "card refused",
    "order shipped",
    "a new order arrived with two items",
    "kind order.placed keys id items.sku items.qty",
    "the credit card was rejected by the bank",
    "inventory is running low",
    "user signed up",
    "login failed three times",
    "refund issued",
    "disk almost full on node seven",
    "temperature sensor reading too high",
    "parcel dispatched",
    "customer asked for their money back",
    "password reset requested",
    "stock level below threshold",
];
const ROUNDS: usize = 20;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn onnxruntime_reference(model: &std::path::Path, tokenizer: &std::path::Path) -> String {
    let python = root().join(".swarm/venv/bin/python");
    let script = r#"
import sys, time, json
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
model, tok_path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
sentences = json.loads(sys.stdin.read())
options = ort.SessionOptions(); options.intra_op_num_threads = 1; options.inter_op_num_threads = 1
sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file(tok_path); tok.no_padding()
rank3 = [o.name for o in sess.get_outputs() if len(o.shape) == 3][0]
encoded = [tok.encode(s) for s in sentences]
def run(e):
    ids = np.array([e.ids], dtype=np.int64); mask = np.array([e.attention_mask], dtype=np.int64)
    h = sess.run([rank3], {"input_ids": ids, "attention_mask": mask})[0]
    m = mask[..., None].astype(np.float32); p = (h * m).sum(1) / m.sum(1)
    return p / np.linalg.norm(p)
for e in encoded: run(e)
start = time.perf_counter()
for _ in range(rounds):
    for e in encoded: run(e)
print(f"{(time.perf_counter() - start) * 1000 / (rounds * len(encoded)):.2f}")
"#;
    let child = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(model)
        .arg(tokenizer)
        .arg(ROUNDS.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return "not measured (no .swarm/venv: run ops/reference-embeddings)".into();
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(
            serde_json::to_string(SENTENCES)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => {
            format!("{} ms", String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => format!(
            "not measured: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => format!("not measured: {e}"),
    }
}

fn main() {
    let dir = swarm_memory::testkit::models_dir();
    let (model, tokenizer) = (dir.join(MODEL_FILE), dir.join(TOKENIZER_FILE));
    let started = Instant::now();
    let embedder = TractEmbedder::load(&model, &tokenizer).expect("model (run ops/fetch-model)");
    println!(
        "tract: model loaded and optimised in {:.0?}",
        started.elapsed()
    );

    for s in SENTENCES {
        embedder.embed(&[s]).expect("warm up");
    }
    let started = Instant::now();
    for _ in 0..ROUNDS {
        for s in SENTENCES {
            embedder.embed(&[s]).expect("embed");
        }
    }
    let single = started.elapsed().as_secs_f64() * 1000.0 / (ROUNDS * SENTENCES.len()) as f64;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        embedder.embed(SENTENCES).expect("embed");
    }
    let batched = started.elapsed().as_secs_f64() * 1000.0 / (ROUNDS * SENTENCES.len()) as f64;
    println!(
        "paraphrase-MiniLM-L3-v2 fp32, one thread, {} short sentences x {ROUNDS}:",
        SENTENCES.len()
    );
    println!("  tract, one at a time:   {single:.2} ms per embedding");
    println!(
        "  tract, batches of {}:   {batched:.2} ms per embedding",
        SENTENCES.len()
    );
    println!(
        "  onnxruntime, one at a time (same run): {}",
        onnxruntime_reference(&model, &tokenizer)
    );
}
