//! Signal shapes: what gets embedded instead of each signal.
//!
//! Two `order.placed` signals that differ only in their order id and amount mean the same thing
//! to a ranker and to someone searching. A shape keeps the kind, the key paths and the string
//! values that carry meaning, and masks ids and numbers; its embedding is computed once and
//! shared by every execution of a signal with that shape. That keeps the embedder (milliseconds
//! a call) and index inserts off the path of each execution.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;
use swarm_schemas::Signal;
use xxhash_rust::xxh3::Xxh3;

use crate::{Embedder, MemoryError, Probe};

/// At most this many `path: value` fields describe a shape.
pub const MAX_FIELDS: usize = 48;
/// String values are cut to this many characters.
pub const MAX_VALUE_CHARS: usize = 64;
/// The whole shape text is cut to this many characters.
pub const MAX_SHAPE_CHARS: usize = 1024;
/// Payloads are walked this deep; deeper values are summarised by their path.
const MAX_DEPTH: usize = 8;

/// Stands for a masked id-like string.
const ID: &str = "<id>";
/// Stands for a masked number.
const NUMBER: &str = "<n>";

/// The shape of one signal: its text and the hash that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Stable id of the shape: the first 8 bytes of the BLAKE3 hash of `text`.
    pub id: i64,
    /// The signal's kind.
    pub kind: String,
    /// What gets embedded, such as `payment failed | reason: card refused | amount: <n>`.
    pub text: String,
}

impl Shape {
    /// The shape of `signal`.
    pub fn of(signal: &Signal) -> Self {
        let mut fields = BTreeSet::new();
        collect(&signal.payload, &mut String::new(), 0, &mut fields);
        let mut text = signal.kind.replace(['.', '_', '-'], " ");
        for field in fields.iter().take(MAX_FIELDS) {
            if text.len() + field.len() + 3 > MAX_SHAPE_CHARS {
                break;
            }
            text.push_str(" | ");
            text.push_str(field);
        }
        Self {
            id: shape_id(&text),
            kind: signal.kind.clone(),
            text,
        }
    }

    /// A fingerprint of `signal` from which its shape follows: two signals with equal
    /// fingerprints have equal shapes (not the other way round: strings that differ only past
    /// [`MAX_VALUE_CHARS`], in case or in what [`MAX_FIELDS`] and [`MAX_SHAPE_CHARS`] cut off
    /// give different fingerprints of one shape). It walks what [`Shape::of`] walks, masking ids
    /// and numbers alike, and hashes it as it goes, building no text: a caller that keeps the
    /// shapes it has seen by fingerprint finds a signal's again for a fraction of the cost of
    /// computing it.
    pub fn fingerprint(signal: &Signal) -> u128 {
        let mut hasher = Xxh3::new();
        hash_str(&mut hasher, &signal.kind);
        fingerprint(&signal.payload, 0, &mut hasher);
        hasher.digest128()
    }
}

/// Hashes `value` as [`collect`] walks it (the same depth and array limits), with a tag before
/// each part and the length of each string, so that no two walks hash alike.
fn fingerprint(value: &Value, depth: usize, hasher: &mut Xxh3) {
    match value {
        Value::Object(map) if depth < MAX_DEPTH => {
            hasher.update(b"{");
            for (key, child) in map {
                hash_str(hasher, key);
                fingerprint(child, depth + 1, hasher);
            }
            hasher.update(b"}");
        }
        Value::Array(items) if depth < MAX_DEPTH => {
            hasher.update(b"[");
            for item in items.iter().take(MAX_FIELDS) {
                fingerprint(item, depth + 1, hasher);
            }
            hasher.update(b"]");
        }
        Value::Object(_) | Value::Array(_) => hasher.update(b"~"),
        Value::String(s) => {
            let s = s.trim();
            if looks_like_id(s) {
                hasher.update(b"i");
            } else {
                hasher.update(b"s");
                hash_str(hasher, s);
            }
        }
        Value::Number(_) => hasher.update(b"n"),
        Value::Bool(true) => hasher.update(b"t"),
        Value::Bool(false) => hasher.update(b"f"),
        Value::Null => hasher.update(b"0"),
    }
}

fn hash_str(hasher: &mut Xxh3, s: &str) {
    hasher.update(&(s.len() as u64).to_le_bytes());
    hasher.update(s.as_bytes());
}

/// The id of a shape text.
pub fn shape_id(text: &str) -> i64 {
    let hash = blake3::hash(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

/// Walks a payload, adding one `path: value` field per leaf (a set: repeated array elements
/// with the same shape count once).
fn collect(value: &Value, path: &mut String, depth: usize, fields: &mut BTreeSet<String>) {
    if fields.len() >= MAX_FIELDS * 4 {
        return;
    }
    let leaf = |fields: &mut BTreeSet<String>, path: &str, shown: &str| {
        let name = if path.is_empty() { "value" } else { path };
        fields.insert(format!("{name}: {shown}"));
    };
    match value {
        Value::Object(map) if depth < MAX_DEPTH => {
            for (key, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.extend(key.chars().take(MAX_VALUE_CHARS));
                collect(child, path, depth + 1, fields);
                path.truncate(len);
            }
        }
        Value::Array(items) if depth < MAX_DEPTH => {
            let len = path.len();
            path.push_str("[]");
            for item in items.iter().take(MAX_FIELDS) {
                collect(item, path, depth + 1, fields);
            }
            path.truncate(len);
        }
        Value::Object(_) | Value::Array(_) => leaf(fields, path, "…"),
        Value::String(s) => leaf(fields, path, &mask(s)),
        Value::Number(_) => leaf(fields, path, NUMBER),
        Value::Bool(b) => leaf(fields, path, if *b { "true" } else { "false" }),
        Value::Null => leaf(fields, path, "null"),
    }
}

/// A string value as it appears in a shape: ids masked, long text cut.
fn mask(value: &str) -> String {
    let value = value.trim();
    if looks_like_id(value) {
        return ID.to_owned();
    }
    value
        .chars()
        .take(MAX_VALUE_CHARS)
        .collect::<String>()
        .to_lowercase()
}

/// Whether a (trimmed) string value is masked as an id: one word with a digit in it, or longer
/// than [`MAX_VALUE_CHARS`].
fn looks_like_id(value: &str) -> bool {
    !value.is_empty()
        && !value.contains(char::is_whitespace)
        && (value.chars().any(|c| c.is_ascii_digit()) || value.chars().count() > MAX_VALUE_CHARS)
}

/// Embeds shapes and free text, remembering the vectors of shapes it has seen. Texts to embed
/// are sorted by length and cut into batches (little padding within a batch), and the batches
/// run on the blocking pool, at most one per core at a time across every caller.
pub struct ShapeEmbedder {
    embedder: Arc<dyn Embedder>,
    cache: quick_cache::sync::Cache<i64, Arc<[f32]>>,
    /// One permit per core: how many embedder calls run at once.
    cores: Arc<tokio::sync::Semaphore>,
}

/// Texts handed to the embedder in one call.
const EMBED_BATCH: usize = 16;

impl ShapeEmbedder {
    /// The model that makes the vectors.
    pub fn model(&self) -> &str {
        self.embedder.model()
    }

    /// Remembers the vectors of up to `capacity` shapes.
    pub fn new(embedder: Arc<dyn Embedder>, capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            embedder,
            cache: quick_cache::sync::Cache::new(capacity.max(16)),
            cores: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    /// Length of every vector.
    pub fn dimensions(&self) -> usize {
        self.embedder.dimensions()
    }

    /// The vector of every distinct shape in `shapes`, embedding those not cached (batches of
    /// similar length, in parallel on the blocking pool).
    pub async fn vectors<'a>(
        &self,
        shapes: impl IntoIterator<Item = &'a Shape>,
    ) -> Result<HashMap<i64, Arc<[f32]>>, MemoryError> {
        let mut found = HashMap::new();
        let mut missing: HashMap<i64, String> = HashMap::new();
        for shape in shapes {
            if found.contains_key(&shape.id) || missing.contains_key(&shape.id) {
                continue;
            }
            match self.cache.get(&shape.id) {
                Some(vector) => {
                    found.insert(shape.id, vector);
                }
                None => {
                    missing.insert(shape.id, shape.text.clone());
                }
            }
        }
        let mut missing: Vec<(i64, String)> = missing.into_iter().collect();
        missing.sort_by_key(|(id, text)| (text.len(), *id));
        let mut batches = tokio::task::JoinSet::new();
        for chunk in missing.chunks(EMBED_BATCH) {
            let (ids, texts): (Vec<i64>, Vec<String>) = chunk.iter().cloned().unzip();
            let embedding = self.embed_blocking(texts);
            batches.spawn(async move { embedding.await.map(|vectors| (ids, vectors)) });
        }
        while let Some(done) = batches.join_next().await {
            let (ids, vectors) =
                done.map_err(|e| MemoryError::Embed(format!("an embedding task failed: {e}")))??;
            for (id, vector) in ids.into_iter().zip(vectors) {
                let vector: Arc<[f32]> = vector.into();
                self.cache.insert(id, Arc::clone(&vector));
                found.insert(id, vector);
            }
        }
        Ok(found)
    }

    /// The vector a search looks for: a text embedded as it is, a signal by its shape.
    pub async fn probe(&self, probe: &Probe) -> Result<Vec<f32>, MemoryError> {
        match probe {
            Probe::Text(text) => self.text(text).await,
            Probe::Signal(signal) => self.shape(&Shape::of(signal)).await,
            Probe::Shape(shape) => self.shape(shape).await,
            Probe::Vector(vector) => Ok(vector.clone()),
        }
    }

    /// The vector of one shape (cached).
    async fn shape(&self, shape: &Shape) -> Result<Vec<f32>, MemoryError> {
        let found = self.vectors([shape]).await?;
        found
            .get(&shape.id)
            .map(|v| v.to_vec())
            .ok_or_else(|| MemoryError::Embed("no vector".into()))
    }

    /// The vector of one free text.
    pub async fn text(&self, text: &str) -> Result<Vec<f32>, MemoryError> {
        let mut vectors = self.embed_blocking(vec![text.to_owned()]).await?;
        vectors
            .pop()
            .ok_or_else(|| MemoryError::Embed("the embedder returned no vector".into()))
    }

    /// Embeds `texts` on the blocking pool once a core is free. The future owns what it needs,
    /// so batches can run as tasks of their own.
    fn embed_blocking(
        &self,
        texts: Vec<String>,
    ) -> impl std::future::Future<Output = Result<Vec<Vec<f32>>, MemoryError>> + Send + 'static
    {
        let embedder = Arc::clone(&self.embedder);
        let cores = Arc::clone(&self.cores);
        let dimensions = self.dimensions();
        async move {
            let count = texts.len();
            let _core = cores
                .acquire_owned()
                .await
                .map_err(|e| MemoryError::Embed(format!("the embedder is closed: {e}")))?;
            let vectors = tokio::task::spawn_blocking(move || {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                embedder.embed(&texts)
            })
            .await
            .map_err(|e| MemoryError::Embed(format!("the embedder task failed: {e}")))?
            .map_err(|e| MemoryError::Embed(e.to_string()))?;
            if vectors.len() != count || vectors.iter().any(|v| v.len() != dimensions) {
                return Err(MemoryError::Embed(format!(
                    "the embedder returned {} vectors for {count} texts, or vectors of the wrong length",
                    vectors.len()
                )));
            }
            Ok(vectors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(kind: &str, payload: Value) -> Shape {
        Shape::of(&Signal::new(kind, payload))
    }

    #[test]
    fn ids_and_numbers_are_masked_so_instances_share_a_shape() {
        let a = shape(
            "order.placed",
            json!({"order": "ord-1001", "total": 12.5, "tier": "Gold"}),
        );
        let b = shape(
            "order.placed",
            json!({"order": "ord-2002", "total": 99, "tier": "gold"}),
        );
        assert_eq!(a, b);
        assert_eq!(
            a.text,
            "order placed | order: <id> | tier: gold | total: <n>"
        );
        let c = shape(
            "order.placed",
            json!({"order": "ord-1001", "total": 12.5, "tier": "silver"}),
        );
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn uuids_and_long_tokens_are_ids_but_words_are_kept() {
        let s = shape(
            "payment.failed",
            json!({"id": "0192f0c4-8a4e-7b4c-9d6f-1f2e3d4c5b6a", "token": "x".repeat(200), "reason": "Card refused"}),
        );
        assert_eq!(
            s.text,
            "payment failed | id: <id> | reason: card refused | token: <id>"
        );
    }

    #[test]
    fn arrays_nesting_and_scalars_have_paths() {
        let s = shape(
            "cart.updated",
            json!({"items": [{"sku": "A1"}, {"sku": "B2"}], "gift": true, "note": null}),
        );
        assert_eq!(
            s.text,
            "cart updated | gift: true | items[].sku: <id> | note: null"
        );
        assert_eq!(shape("tick", json!(42)).text, "tick | value: <n>");
        assert_eq!(
            shape("tick", json!("hello there")).text,
            "tick | value: hello there"
        );
    }

    #[test]
    fn huge_payloads_give_bounded_shapes() {
        let wide: serde_json::Map<String, Value> = (0..10_000)
            .map(|n| (format!("field{n:05}"), json!(format!("word {n}"))))
            .collect();
        let s = shape("wide", Value::Object(wide));
        assert!(s.text.len() <= MAX_SHAPE_CHARS, "{}", s.text.len());
        let long = shape("long", json!({"text": "lorem ipsum ".repeat(100_000)}));
        assert!(long.text.len() < 200, "{}", long.text);
        let mut deep = json!("bottom");
        for _ in 0..100 {
            deep = json!({ "d": deep });
        }
        // The walk stops at MAX_DEPTH (serde_json itself refuses to parse documents nested
        // deeper than 128).
        let deep_shape = shape("deep", deep);
        assert!(deep_shape.text.ends_with(": …"), "{}", deep_shape.text);
    }
}
