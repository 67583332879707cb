//! An [`Embedder`] running a MiniLM-family sentence model (ONNX) with tract, tokenised by the
//! model's own `tokenizer.json`: no padding but within a batch, mean pooling over the attention
//! mask, L2 normalisation. Matches onnxruntime to within cosine distance 1e-4 (tested against
//! committed reference embeddings).

use std::path::Path;
use std::sync::Arc;

use quick_cache::sync::Cache;

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::model::translator::Translate;

use crate::embed::{EmbedError, Embedder};

/// The model file in a models directory (`ops/fetch-model` makes it there): all-MiniLM-L6-v2 in
/// fp32.
pub const MODEL_FILE: &str = "all-MiniLM-L6-v2.onnx";
/// The tokenizer file in a models directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Longest input, in tokens; longer texts are cut (the model's position table has 512).
pub const MAX_TOKENS: usize = 256;

/// One text runs on a plan made concrete for its length in tokens: its exact length up to this
/// many tokens, above it the length rounded up to a multiple of [`LONG_STEP`] (padding costs
/// little next to the text there, and it bounds the number of distinct plans).
const EXACT_UP_TO: usize = 32;
const LONG_STEP: usize = 16;

/// Concrete plans kept, the least recently used dropped first. Each holds its own copy of the
/// weights packed for its shapes and takes about 30 ms to make.
const MAX_PLANS: usize = 12;

/// The length a text of `tokens` tokens is padded to when embedded alone.
fn padded_length(tokens: usize) -> usize {
    if tokens <= EXACT_UP_TO {
        tokens.max(1)
    } else {
        tokens.div_ceil(LONG_STEP) * LONG_STEP
    }
}

/// A sentence model loaded and optimised for this machine.
pub struct TractEmbedder {
    tokenizer: Tokenizer,
    /// The model with symbolic batch and sequence sizes, optimised: runs any batch.
    plan: Arc<TypedSimplePlan>,
    /// The decluttered model with symbolic sizes, and its two symbols (batch, sequence).
    typed: TypedModel,
    symbols: (Symbol, Symbol),
    /// Plans made concrete for one text of a padded length, optimised for that shape (tract
    /// picks kernels and drops shape arithmetic when every size is known). Built on first use,
    /// at most [`MAX_PLANS`] kept.
    single: Cache<usize, Arc<TypedSimplePlan>>,
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
            .clone()
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(fail)?;
        Ok(Self {
            tokenizer,
            plan,
            typed,
            symbols: (batch, sequence),
            single: Cache::new(MAX_PLANS),
            token_types: inputs == 3,
            model_id,
            dimensions,
        })
    }

    /// The plan for one text padded to `length` tokens.
    fn single_plan(&self, length: usize) -> Result<Arc<TypedSimplePlan>, EmbedError> {
        self.single.get_or_insert_with(&length, || {
            let run = |e: TractError| EmbedError::Run(format!("{e:?}"));
            let (batch, sequence) = &self.symbols;
            let values = SymbolValues::default()
                .with(batch, 1)
                .with(sequence, length as i64)
                .to_dim_map();
            let concrete = values.translate_model(&self.typed).map_err(run)?;
            concrete
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .map_err(run)
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
        // Texts of one padded length run together (padding a short text to a long one's length
        // costs more than it saves); a length with one text runs its concrete plan.
        let lengths: Vec<usize> = encodings
            .iter()
            .map(|e| padded_length(e.get_ids().len()))
            .collect();
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| lengths[i]);
        let mut out = vec![Vec::new(); encodings.len()];
        for group in order.chunk_by(|&a, &b| lengths[a] == lengths[b]) {
            let members: Vec<&Encoding> = group.iter().map(|&i| &encodings[i]).collect();
            for (&i, vector) in group.iter().zip(self.run(&members, lengths[group[0]])?) {
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
        let plan = if batch == 1 {
            self.single_plan(longest)?
        } else {
            Arc::clone(&self.plan)
        };
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
