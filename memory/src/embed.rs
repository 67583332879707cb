//! Embedders: text in, a unit-length vector out.

/// Why an embedding could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model or tokenizer file could not be loaded.
    #[error("cannot load {what} from {path}: {message}")]
    Load {
        /// "model" or "tokenizer".
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Tokenising or running the model failed.
    #[error("embedding failed: {0}")]
    Run(String),
}

/// Turns texts into L2-normalised vectors of a fixed dimension. Synchronous and CPU-bound:
/// async callers run it on the blocking pool.
pub trait Embedder: Send + Sync + 'static {
    /// Length of every vector.
    fn dimensions(&self) -> usize;

    /// Which model makes the vectors: vectors of different models are never compared.
    fn model(&self) -> &str;

    /// One vector per text, in order. Batching several texts is cheaper than one at a time.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Cosine similarity of two vectors (their dot product when both are unit length).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}
