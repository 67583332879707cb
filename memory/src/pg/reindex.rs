//! Moving memory to another embedding model while it serves.
//!
//! The new model's vectors are written beside the old ones (`reindex_vectors`), a batch of
//! shapes per transaction, while every search keeps comparing the vectors it was answering
//! from. A reindex that stops (a crash, a kill) resumes from what is there. When every shape has
//! a new vector, one transaction moves them into `shapes` and names the new model in
//! `memory_model`: a search sees either every old vector or every new one. Shapes that writers
//! still on the old model add meanwhile are embedded after the switch, and the HNSW index is
//! rebuilt (concurrently) from the new vectors.

use pgvector::HalfVector;
use sqlx::Row;

use super::{PgMemory, unavailable};
use crate::{MemoryError, Shape, ShapeEmbedder};

/// Where a pass writes the vectors it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteTo {
    /// Beside the served ones, in `reindex_vectors`, before the switch.
    Staging,
    /// Over other models' vectors in `shapes`, once the target serves.
    Shapes,
}

/// Shapes embedded per transaction.
const BATCH: i64 = 256;

/// How far a reindex has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReindexProgress {
    /// Shapes with a vector of the new model (before the switch: counting the ones a stopped
    /// reindex left).
    pub done: u64,
    /// Shapes in memory (it grows while writers add shapes).
    pub total: u64,
    /// Whether search has switched to the new model's vectors.
    pub switched: bool,
}

/// What a reindex did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reindexed {
    /// The model memory served before.
    pub from: Option<String>,
    /// The model it serves now.
    pub to: String,
    /// Shapes this run embedded.
    pub embedded: u64,
    /// Shapes in memory at the end.
    pub shapes: u64,
}

impl PgMemory {
    /// Re-embeds every shape with this memory's model and then switches search to those
    /// vectors; `progress` hears after every batch. Resumes from the vectors an earlier,
    /// stopped reindex to the same model left. Searches and writes go on meanwhile.
    pub async fn reindex(
        &self,
        mut progress: impl FnMut(ReindexProgress) + Send,
    ) -> Result<Reindexed, MemoryError> {
        let embedder = self.shapes.as_ref().ok_or(MemoryError::NoEmbedder)?;
        let target = embedder.model().to_owned();
        let from = self.serving_model().await?;
        let mut embedded = 0;
        progress(self.reindex_state(&target).await?);
        if from.as_deref() != Some(target.as_str()) {
            embedded += self
                .pass(embedder, &target, WriteTo::Staging, &mut progress)
                .await?;
            self.switch(&target).await?;
        }
        // Shapes written with another model meanwhile (or before, by a model memory served
        // then): embedded in place now that this model is served.
        embedded += self
            .pass(embedder, &target, WriteTo::Shapes, &mut progress)
            .await?;
        if embedded > 0 {
            self.rebuild_index().await;
        }
        let mut state = self.reindex_state(&target).await?;
        state.switched = true;
        progress(state);
        Ok(Reindexed {
            from,
            to: target,
            embedded,
            shapes: state.total,
        })
    }

    async fn reindex_state(&self, target: &str) -> Result<ReindexProgress, MemoryError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM shapes) AS total,
                    (SELECT count(*) FROM shapes WHERE model = $1)
                  + (SELECT count(*) FROM reindex_vectors r JOIN shapes s ON s.id = r.shape_id
                     WHERE r.model = $1 AND s.model <> $1) AS done,
                    (SELECT model FROM memory_model) IS NOT DISTINCT FROM $1 AS switched",
        )
        .bind(target)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let count = |name: &str| {
            row.try_get::<i64, _>(name)
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(unavailable)
        };
        Ok(ReindexProgress {
            done: count("done")?,
            total: count("total")?,
            switched: row.try_get("switched").map_err(unavailable)?,
        })
    }

    /// One pass over the shapes in id order, embedding those still of another model (and, for
    /// staging, without a staged vector) and writing their new vectors where `into` says.
    /// Staging reports progress after every batch. Returns how many it wrote.
    async fn pass(
        &self,
        embedder: &ShapeEmbedder,
        target: &str,
        into: WriteTo,
        progress: &mut (dyn FnMut(ReindexProgress) + Send),
    ) -> Result<u64, MemoryError> {
        let sql = match into {
            // Joined with `shapes`: a shape compaction removed meanwhile is skipped.
            WriteTo::Staging => {
                "INSERT INTO reindex_vectors (shape_id, model, embedding)
                 SELECT t.id, $3, t.embedding
                 FROM UNNEST($1::bigint[], $2::halfvec[]) AS t(id, embedding)
                 JOIN shapes s ON s.id = t.id
                 ON CONFLICT (shape_id) DO UPDATE
                     SET model = EXCLUDED.model, embedding = EXCLUDED.embedding"
            }
            WriteTo::Shapes => {
                "UPDATE shapes s SET embedding = t.embedding, model = $3
                 FROM UNNEST($1::bigint[], $2::halfvec[]) AS t(id, embedding)
                 WHERE s.id = t.id AND s.model <> $3"
            }
        };
        let mut after = i64::MIN;
        let mut written = 0;
        loop {
            let shapes = self.unstaged(target, after).await?;
            let Some(last) = shapes.last() else {
                return Ok(written);
            };
            after = last.id;
            let (ids, vectors) = embed(embedder, &shapes).await?;
            let done = sqlx::query(sql)
                .bind(ids)
                .bind(vectors)
                .bind(target)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            written += done.rows_affected();
            if into == WriteTo::Staging {
                progress(self.reindex_state(target).await?);
            }
        }
    }

    /// Up to a batch of shapes after `after` (by id) of another model, without a staged vector
    /// of `target`.
    async fn unstaged(&self, target: &str, after: i64) -> Result<Vec<Shape>, MemoryError> {
        let rows = sqlx::query(
            "SELECT s.id, s.kind, s.text FROM shapes s
             WHERE s.id > $2 AND s.model <> $1
               AND NOT EXISTS (SELECT 1 FROM reindex_vectors r WHERE r.shape_id = s.id AND r.model = $1)
             ORDER BY s.id LIMIT $3",
        )
        .bind(target)
        .bind(after)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                Ok(Shape {
                    id: row.try_get("id").map_err(unavailable)?,
                    kind: row.try_get("kind").map_err(unavailable)?,
                    text: row.try_get("text").map_err(unavailable)?,
                })
            })
            .collect()
    }

    /// Moves the staged vectors into `shapes` and names `target` the model memory serves, in
    /// one transaction.
    async fn switch(&self, target: &str) -> Result<(), MemoryError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            "UPDATE shapes s SET embedding = r.embedding, model = r.model
             FROM reindex_vectors r WHERE r.shape_id = s.id AND r.model = $1 AND s.model <> $1",
        )
        .bind(target)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("DELETE FROM reindex_vectors")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO memory_model (model) VALUES ($1)
             ON CONFLICT (only_row) DO UPDATE SET model = EXCLUDED.model, switched_at = now()",
        )
        .bind(target)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    /// Rebuilds the HNSW index without blocking reads or writes. After the switch it still
    /// holds the old model's vectors (dead rows until vacuumed) linked with the new ones: a
    /// graph built of the new vectors alone finds their neighbours better. A failure leaves
    /// the old index, which still answers.
    async fn rebuild_index(&self) {
        if let Err(error) = sqlx::query("REINDEX INDEX CONCURRENTLY shapes_embedding")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(%error, "the shapes' index was not rebuilt after the reindex");
        }
    }
}

/// The vectors of `shapes`, as ids and vectors; a shape the model fails on fails the reindex
/// (it could never switch otherwise).
async fn embed(
    embedder: &ShapeEmbedder,
    shapes: &[Shape],
) -> Result<(Vec<i64>, Vec<HalfVector>), MemoryError> {
    let vectors = embedder.vectors(shapes.iter()).await?;
    Ok(vectors
        .into_iter()
        .map(|(id, v)| (id, HalfVector::from_f32_slice(&v)))
        .unzip())
}
