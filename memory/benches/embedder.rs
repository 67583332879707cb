//! Benchmark of the tract embedder: milliseconds per embedding, one sentence at a time and all
//! 16 in one call (batched by token length, without padding), on one thread; printed next to
//! onnxruntime doing the same on the same model and sentences, measured in the same run
//! (through `.swarm/venv`, set up by `ops/reference-embeddings`).
//! The two are measured in turns, several times, and compared pair by pair: the machine's speed
//! drifts more between runs than the two engines differ.
//!
//! Run with: ops/fetch-model && cargo bench -p swarm-memory --bench embedder

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
/// Passes over the sentences in one measurement.
const ROUNDS: usize = 10;
/// Measurements of each engine, alternating tract and onnxruntime, so that both see the same
/// machine (its speed drifts by a third over a minute on a shared host).
const REPEATS: usize = 9;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// onnxruntime on the same model and sentences, in a Python process kept open: each line
/// written to it runs `ROUNDS` passes and answers milliseconds per embedding.
struct Onnxruntime {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const ONNXRUNTIME: &str = r#"
import sys, time, json
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
model, tok_path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
sentences = json.loads(sys.stdin.readline())
options = ort.SessionOptions(); options.intra_op_num_threads = 1; options.inter_op_num_threads = 1
sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file(tok_path); tok.no_padding()
rank3 = [o.name for o in sess.get_outputs() if len(o.shape) == 3][0]
def run(s):
    e = tok.encode(s)
    ids = np.array([e.ids], dtype=np.int64); mask = np.array([e.attention_mask], dtype=np.int64)
    h = sess.run([rank3], {"input_ids": ids, "attention_mask": mask})[0]
    m = mask[..., None].astype(np.float32); p = (h * m).sum(1) / m.sum(1)
    return p / np.linalg.norm(p)
def run_batch(group):
    ids = np.array([e.ids for e in group], dtype=np.int64)
    mask = np.array([e.attention_mask for e in group], dtype=np.int64)
    h = sess.run([rank3], {"input_ids": ids, "attention_mask": mask})[0]
    m = mask[..., None].astype(np.float32); p = (h * m).sum(1) / m.sum(1)
    return p / np.linalg.norm(p, axis=1, keepdims=True)
def batched():
    # As the tract embedder batches: texts of one length together, without padding.
    groups = {}
    for e in (tok.encode(s) for s in sentences): groups.setdefault(len(e.ids), []).append(e)
    for group in groups.values(): run_batch(group)
for s in sentences: run(s)
batched()
print("ready", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    for _ in range(rounds):
        if line.strip() == "batch": batched()
        else:
            for s in sentences: run(s)
    print((time.perf_counter() - start) * 1000 / (rounds * len(sentences)), flush=True)
"#;

impl Onnxruntime {
    fn start(model: &Path, tokenizer: &Path) -> Result<Self, String> {
        let python = root().join(".swarm/venv/bin/python");
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(ONNXRUNTIME)
            .arg(model)
            .arg(tokenizer)
            .arg(ROUNDS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e} (run ops/reference-embeddings)", python.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to the reference process".into());
        };
        let mut reference = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let sentences = serde_json::to_string(SENTENCES).map_err(|e| e.to_string())?;
        writeln!(reference.stdin, "{sentences}").map_err(|e| e.to_string())?;
        match reference.line()?.as_str() {
            "ready" => Ok(reference),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the reference process exited (see its error above)".into()),
            Ok(_) => Ok(line.trim().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Milliseconds per embedding over one measurement, one text at a time or in batches.
    fn measure(&mut self, batched: bool) -> Result<f64, String> {
        let what = if batched { "batch" } else { "single" };
        writeln!(self.stdin, "{what}").map_err(|e| e.to_string())?;
        let line = self.line()?;
        line.parse()
            .map_err(|_| format!("unexpected answer {line:?}"))
    }
}

impl Drop for Onnxruntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Milliseconds per embedding over one measurement: every sentence alone, or all in one call,
/// `ROUNDS` times.
fn tract(embedder: &TractEmbedder, batched: bool) -> f64 {
    let started = Instant::now();
    for _ in 0..ROUNDS {
        if batched {
            embedder.embed(SENTENCES).expect("embed");
        } else {
            for s in SENTENCES {
                embedder.embed(&[s]).expect("embed");
            }
        }
    }
    started.elapsed().as_secs_f64() * 1000.0 / (ROUNDS * SENTENCES.len()) as f64
}

/// Both engines measured in turns, [`REPEATS`] times: (tract, onnxruntime, paired ratios).
fn alternate(
    embedder: &TractEmbedder,
    reference: &mut Result<Onnxruntime, String>,
    batched: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut tract_ms, mut ort_ms, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let t = tract(embedder, batched);
        tract_ms.push(t);
        if let Ok(r) = reference {
            match r.measure(batched) {
                Ok(o) => {
                    ort_ms.push(o);
                    ratios.push(t / o);
                }
                Err(e) => {
                    println!("onnxruntime: stopped: {e}");
                    *reference = Err(e);
                }
            }
        }
    }
    (tract_ms, ort_ms, ratios)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
    let tokens: Vec<usize> = SENTENCES
        .iter()
        .map(|s| embedder.token_ids(s).map_or(0, |ids| ids.len()))
        .collect();
    for s in SENTENCES {
        embedder.embed(&[s]).expect("warm up");
    }
    let mut reference = Onnxruntime::start(&model, &tokenizer);
    if let Err(e) = &reference {
        println!("onnxruntime: not measured: {e}");
    }

    println!(
        "{MODEL_FILE} (fp32), one thread, {} short sentences ({}–{} tokens), {REPEATS} \
         alternating measurements of {ROUNDS} passes each:",
        SENTENCES.len(),
        tokens.iter().min().unwrap_or(&0),
        tokens.iter().max().unwrap_or(&0),
    );
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.2}–{hi:.2}")
    };
    for (batched, what) in [
        (false, "one at a time".to_owned()),
        (
            true,
            format!("all {} in one call (batches by length)", SENTENCES.len()),
        ),
    ] {
        let (tract_ms, ort_ms, ratios) = alternate(&embedder, &mut reference, batched);
        println!("  {what}:");
        println!(
            "    tract:        median {:.2} ms per embedding ({} ms)",
            median(&mut tract_ms.clone()),
            spread(&tract_ms)
        );
        if !ort_ms.is_empty() {
            println!(
                "    onnxruntime:  median {:.2} ms per embedding ({} ms)",
                median(&mut ort_ms.clone()),
                spread(&ort_ms)
            );
            println!(
                "    tract / onnxruntime, paired: median {:.2} ({})",
                median(&mut ratios.clone()),
                spread(&ratios)
            );
        }
    }
}
