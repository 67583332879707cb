//! An [`Embedder`] running a MiniLM-family sentence model (ONNX) with tract, tokenised by the
//! model's own `tokenizer.json`: no padding but within a batch, mean pooling over the attention
//! mask, L2 normalisation. Matches onnxruntime to within cosine distance 1e-4 (tested against
//! committed reference embeddings).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::model::translator::Translate;

use crate::embed::{EmbedError, Embedder};

/// The model file in a models directory (`ops/fetch-model` puts it there).
pub const MODEL_FILE: &str = "paraphrase-MiniLM-L3-v2.onnx";
/// The tokenizer file in a models directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Longest input, in tokens; longer texts are cut (the model's position table has 512).
pub const MAX_TOKENS: usize = 256;

/// One text is padded up to a multiple of this many tokens, so that a few plans made concrete
/// for those lengths serve every text.
const LENGTH_STEP: usize = 8;

/// A sentence model loaded and optimised for this machine.
pub struct TractEmbedder {
    tokenizer: Tokenizer,
    /// The model with symbolic batch and sequence sizes, optimised: runs any batch.
    plan: Arc<TypedSimplePlan>,
    /// The decluttered model with symbolic sizes, and its two symbols (batch, sequence).
    typed: TypedModel,
    symbols: (Symbol, Symbol),
    /// Plans made concrete for one text of a padded length, optimised for that shape (tract
    /// picks kernels and drops shape arithmetic when every size is known). Built on first use.
    single: Mutex<HashMap<usize, Arc<TypedSimplePlan>>>,
    /// Whether the model takes `token_type_ids` as a third input.
    token_types: bool,
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
        let mut graph = tract_onnx::onnx().model_for_path(model).map_err(fail)?;
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
            single: Mutex::default(),
            token_types: inputs == 3,
            dimensions,
        })
    }

    /// The plan for one text padded to `length` tokens.
    fn single_plan(&self, length: usize) -> Result<Arc<TypedSimplePlan>, EmbedError> {
        let mut plans = self.single.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(&length) {
            return Ok(Arc::clone(plan));
        }
        let run = |e: TractError| EmbedError::Run(format!("{e:?}"));
        let (batch, sequence) = &self.symbols;
        let values = SymbolValues::default()
            .with(batch, 1)
            .with(sequence, length as i64)
            .to_dim_map();
        let concrete = values.translate_model(&self.typed).map_err(run)?;
        let plan = concrete
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(run)?;
        plans.insert(length, Arc::clone(&plan));
        Ok(plan)
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

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let run = |e: TractError| EmbedError::Run(format!("{e:?}"));
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        let (batch, longest) = (
            encodings.len(),
            encodings
                .iter()
                .map(|e| e.get_ids().len())
                .max()
                .unwrap_or(0),
        );
        // Pad within the batch only (one text: to the next step, for a concrete plan); padded
        // positions have mask 0: attention ignores them and they do not count in the mean.
        let (longest, plan) = if batch == 1 {
            let padded = longest.div_ceil(LENGTH_STEP).max(1) * LENGTH_STEP;
            (padded, self.single_plan(padded)?)
        } else {
            (longest, Arc::clone(&self.plan))
        };
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
