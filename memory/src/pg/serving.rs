//! The model memory serves (`memory_model`), and searching with the model a process ran before
//! while memory still serves that one's vectors: during a reindex to the process's own model,
//! until the switch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{PgMemory, unavailable};
use crate::{Embedder, MemoryError, ShapeEmbedder};

/// How long a process trusts what it last read of the model memory serves.
const SERVING_TTL: Duration = Duration::from_secs(1);

/// The previous model, and when memory last said whether it serves it.
pub(super) struct Previous {
    shapes: ShapeEmbedder,
    serving: parking_lot::Mutex<Option<(bool, Instant)>>,
}

impl PgMemory {
    /// Names `model` the one memory serves if none is named yet: the first model to open a
    /// memory is the one it serves.
    pub(super) async fn claim_serving(pool: &sqlx::PgPool, model: &str) -> Result<(), MemoryError> {
        sqlx::query("INSERT INTO memory_model (model) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(model)
            .execute(pool)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// The model whose vectors memory serves (`None` before any process with a model opened it).
    pub async fn serving_model(&self) -> Result<Option<String>, MemoryError> {
        sqlx::query_scalar("SELECT model FROM memory_model")
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    /// The same memory, also holding the model this process ran before: while memory still
    /// serves that model's vectors (a reindex to the new model has not switched yet), searches
    /// embed their probe with it and compare those vectors; after the switch, the new model's.
    pub fn with_previous(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.previous = Some(Previous {
            shapes: ShapeEmbedder::new(embedder, 1024),
            serving: parking_lot::Mutex::new(None),
        });
        self
    }

    /// The embedder searches use, and whether it is the previous model's: that one while memory
    /// serves its vectors (as last read, at most `SERVING_TTL` ago unless `fresh`), else this
    /// process's own.
    pub(super) async fn search_embedder(
        &self,
        fresh: bool,
    ) -> Result<(Option<&ShapeEmbedder>, bool), MemoryError> {
        let Some(previous) = &self.previous else {
            return Ok((self.shapes.as_ref(), false));
        };
        let known = *previous.serving.lock();
        let serves_previous = match known {
            Some((serves, at)) if !fresh && at.elapsed() < SERVING_TTL => serves,
            _ => {
                let serving = self.serving_model().await?;
                let serves = serving.as_deref() == Some(previous.shapes.model());
                *previous.serving.lock() = Some((serves, Instant::now()));
                serves
            }
        };
        Ok(if serves_previous {
            (Some(&previous.shapes), true)
        } else {
            (self.shapes.as_ref(), false)
        })
    }
}
