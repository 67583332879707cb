//! An [`Embedder`] running a MiniLM-family sentence model (ONNX) with tract, tokenised by the
//! model's own `tokenizer.json`: no padding but within a batch, mean pooling over the attention
//! mask, L2 normalisation. Matches onnxruntime to within cosine distance 1e-4 (tested against
//! committed reference embeddings).

use std::path::Path;
use std::sync::Arc;

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;

use crate::embed::{EmbedError, Embedder};

/// The model file in a models directory (`ops/fetch-model` makes it there): all-MiniLM-L6-v2 in
/// fp32.
pub const MODEL_FILE: &str = "all-MiniLM-L6-v2.onnx";
/// The tokenizer file in a models directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Longest input, in tokens; longer texts are cut (the model's position table has 512).
pub const MAX_TOKENS: usize = 256;

/// Texts in one group of a batch: at most this many, and the longest at most
/// `GROUP_SLACK` tokens plus a quarter longer than the shortest.
const GROUP_SIZE: usize = 32;
const GROUP_SLACK: usize = 4;

/// `order` (indices sorted by their `lengths`) cut into groups of similar length.
fn similar_lengths<'a>(order: &'a [usize], lengths: &'a [usize]) -> Vec<&'a [usize]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for end in 1..=order.len() {
        let full = end - start == GROUP_SIZE;
        let apart =
            end < order.len() && lengths[order[end]] > lengths[order[start]] * 5 / 4 + GROUP_SLACK;
        if end == order.len() || full || apart {
            groups.push(&order[start..end]);
            start = end;
        }
    }
    groups
}

/// A sentence model loaded and optimised for this machine.
pub struct TractEmbedder {
    tokenizer: Tokenizer,
    /// The model with symbolic batch and sequence sizes, optimised: runs any batch. One copy
    /// of the packed weights serves every text and batch.
    plan: Arc<TypedSimplePlan>,
    /// Whether the model takes `token_type_ids` as a third input.
    token_types: bool,
    /// The model file's name without extension, and the start of its BLAKE3 digest.
    model_id: String,
    dimensions: usize,
}

fn load_error(what: &'static str, path: &Path, message: impl ToString) -> EmbedError {
    EmbedError::Load {
        what,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

impl TractEmbedder {
    /// Loads the ONNX model and the tokenizer. The model must take `input_ids` and
    /// `attention_mask` (and optionally `token_type_ids`) of shape `[batch, sequence]` and
    /// produce a rank-3 float output `[batch, sequence, dimensions]`.
    pub fn load(model: &Path, tokenizer_file: &Path) -> Result<Self, EmbedError> {
        let mut tokenizer = Tokenizer::from_file(tokenizer_file)
            .map_err(|e| load_error("tokenizer", tokenizer_file, e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| load_error("tokenizer", tokenizer_file, e))?;

        let fail = |e: TractError| load_error("model", model, format!("{e:?}"));
        let bytes = std::fs::read(model).map_err(|e| load_error("model", model, e))?;
        let model_id = format!(
            "{}@{}",
            model
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model"),
            &blake3::hash(&bytes).to_hex()[..12]
        );
        let mut graph = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(fail)?;
        let inputs = graph.input_outlets().map_err(fail)?.len();
        if !(2..=3).contains(&inputs) {
            return Err(load_error(
                "model",
                model,
                format!("expected 2 or 3 inputs, found {inputs}"),
            ));
        }
        let (batch, sequence) = (graph.sym("B"), graph.sym("S"));
        for input in 0..inputs {
            let fact = InferenceFact::dt_shape(
                i64::datum_type(),
                tvec![batch.to_dim(), sequence.to_dim()],
            );
            graph.set_input_fact(input, fact).map_err(fail)?;
        }
        let typed = graph.into_typed().map_err(fail)?;
        // Keep only the token embeddings: the rank-3 float output.
        let outputs = typed.output_outlets().map_err(fail)?.to_vec();
        let mut chosen = None;
        for outlet in outputs {
            let fact = typed.outlet_fact(outlet).map_err(fail)?;
            if fact.rank() == 3 && fact.datum_type == f32::datum_type() {
                chosen = Some((outlet, fact.shape[2].to_usize().ok()));
            }
        }
        let Some((outlet, Some(dimensions))) = chosen else {
            return Err(load_error(
                "model",
                model,
                "no rank-3 float output with a fixed last dimension",
            ));
        };
        let typed = typed
            .with_output_outlets(&[outlet])
            .and_then(|m| m.into_decluttered())
            .map_err(fail)?;
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(fail)?;
        Ok(Self {
            tokenizer,
            plan,
            token_types: inputs == 3,
            model_id,
            dimensions,
        })
    }

    /// Loads [`MODEL_FILE`] and [`TOKENIZER_FILE`] from a models directory.
    pub fn load_dir(dir: &Path) -> Result<Self, EmbedError> {
        Self::load(&dir.join(MODEL_FILE), &dir.join(TOKENIZER_FILE))
    }

    /// Token ids of `text`, as the model sees them (for tests and tools).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }
}

impl Embedder for TractEmbedder {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn model(&self) -> &str {
        &self.model_id
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        // Texts run in groups of similar length, each padded to its longest (padding a short
        // text to a much longer one's length costs more than it saves).
        let lengths: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| lengths[i]);
        let mut out = vec![Vec::new(); encodings.len()];
        for group in similar_lengths(&order, &lengths) {
            let members: Vec<&Encoding> = group.iter().map(|&i| &encodings[i]).collect();
            let longest = group.iter().map(|&i| lengths[i]).max().unwrap_or(1).max(1);
            for (&i, vector) in group.iter().zip(self.run(&members, longest)?) {
                out[i] = vector;
            }
        }
        Ok(out)
    }
}

impl TractEmbedder {
    /// Embeds texts already tokenised, padded to `longest` tokens (at least each one's length).
    fn run(&self, encodings: &[&Encoding], longest: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let run = |e: TractError| EmbedError::Run(format!("{e:?}"));
        let batch = encodings.len();
        let plan = &self.plan;
        // Padded positions have mask 0: attention ignores them and they do not count in the
        // mean.
        let mut ids = vec![0i64; batch * longest];
        let mut mask = vec![0i64; batch * longest];
        for (row, encoding) in encodings.iter().enumerate() {
            for (col, (id, m)) in encoding
                .get_ids()
                .iter()
                .zip(encoding.get_attention_mask())
                .enumerate()
            {
                ids[row * longest + col] = i64::from(*id);
                mask[row * longest + col] = i64::from(*m);
            }
        }
        let tensor = |data: Vec<i64>| -> Result<TValue, EmbedError> {
            tract_ndarray::Array2::from_shape_vec((batch, longest), data)
                .map(|a| a.into_tensor().into_tvalue())
                .map_err(|e| EmbedError::Run(e.to_string()))
        };
        let mut inputs: TVec<TValue> = tvec![tensor(ids)?, tensor(mask.clone())?];
        if self.token_types {
            inputs.push(tensor(vec![0i64; batch * longest])?);
        }
        let outputs = plan.run(inputs).map_err(run)?;
        let hidden = outputs[0].to_plain_array_view::<f32>().map_err(run)?;
        let mut out = Vec::with_capacity(batch);
        for row in 0..batch {
            let mut pooled = vec![0f32; self.dimensions];
            let mut count = 0f32;
            for col in 0..longest {
                if mask[row * longest + col] == 0 {
                    continue;
                }
                count += 1.0;
                for (d, value) in pooled.iter_mut().enumerate() {
                    *value += hidden[[row, col, d]];
                }
            }
            let count = count.max(1.0);
            pooled.iter_mut().for_each(|v| *v /= count);
            let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            pooled.iter_mut().for_each(|v| *v /= norm);
            out.push(pooled);
        }
        Ok(out)
    }
}
