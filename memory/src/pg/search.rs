//! Similarity search: the nearest shapes with an execution passing the filters (HNSW with
//! iterative scans), fused by reciprocal rank with the shapes that hold every word of the probe
//! (GIN over `to_tsvector('english', text)`, ranked by `ts_rank` with the words joined by OR),
//! then the newest such executions of each shape.

use pgvector::HalfVector;
use sqlx::Row;

use super::rows::{COLUMNS, FILTERS, corrupt, decode};
use super::{DIMENSIONS, PgMemory, pg_text, unavailable};
use crate::words::{RRF_K, TEXT_CANDIDATES};
use crate::{MemoryError, OutcomeFilter, Probe, SearchHit, SearchQuery, ShapeEmbedder};

/// Which shapes a search considers (on `shapes s`): of the kind asked for, embedded by the
/// searcher's model, with at least one execution passing the filters.
fn shape_filters() -> String {
    format!(
        "($2::text IS NULL OR s.kind = $2) AND ($10::text IS NULL OR s.model = $10)
         AND EXISTS (SELECT 1 FROM executions e WHERE e.shape_id = s.id AND {FILTERS})"
    )
}

impl PgMemory {
    /// The same search computed exactly, without the HNSW index: what recall is measured against.
    pub async fn exact_search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, MemoryError> {
        self.search_with(query, true).await
    }

    async fn probe_vector(
        probe: &Probe,
        embedder: Option<&ShapeEmbedder>,
    ) -> Result<Vec<f32>, MemoryError> {
        match (probe, embedder) {
            // A vector needs no embedder: a memory opened without one can still search by vector.
            (Probe::Vector(vector), _) => Ok(vector.clone()),
            (_, Some(embedder)) => embedder.probe(probe).await,
            (_, None) => Err(MemoryError::NoEmbedder),
        }
    }

    pub(super) async fn search_with(
        &self,
        query: &SearchQuery,
        exact: bool,
    ) -> Result<Vec<SearchHit>, MemoryError> {
        query.validate(DIMENSIONS)?;
        let (embedder, previous) = self.search_embedder(false).await?;
        let hits = self.search_by(query, exact, embedder).await?;
        // A reindex may have switched since this process last looked: a short answer from the
        // previous model's vectors is checked, and asked again of the new model's.
        if previous && hits.len() < query.k {
            let (embedder, previous) = self.search_embedder(true).await?;
            if !previous {
                return self.search_by(query, exact, embedder).await;
            }
        }
        Ok(hits)
    }

    async fn search_by(
        &self,
        query: &SearchQuery,
        exact: bool,
        embedder: Option<&ShapeEmbedder>,
    ) -> Result<Vec<SearchHit>, MemoryError> {
        let model = embedder.map(ShapeEmbedder::model);
        let probe = HalfVector::from_f32_slice(&Self::probe_vector(&query.probe, embedder).await?);
        // The exact search turns the index off for its own transaction (SET LOCAL); the
        // approximate one runs with the session's scan settings, in one round trip.
        let mut tx = if exact {
            let mut tx = self.reader().begin().await.map_err(unavailable)?;
            sqlx::query(
                "SELECT set_config('enable_indexscan', 'off', true), \
                 set_config('enable_bitmapscan', 'off', true)",
            )
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            Some(tx)
        } else {
            None
        };
        let success = query.outcome.map(|o| o == OutcomeFilter::Success);
        let k = i64::try_from(query.k).unwrap_or(i64::MAX);
        let per_shape = i64::try_from(query.shape_limit()).unwrap_or(i64::MAX);
        let shapes = i64::try_from(query.shape_candidates()).unwrap_or(i64::MAX);
        let words = query.words().map(|w| pg_text(&w));
        let shape_filters = shape_filters();
        let sql = format!(
            "WITH near AS MATERIALIZED (
                SELECT s.id, s.embedding <=> $1 AS distance FROM shapes s
                WHERE {shape_filters}
                ORDER BY s.embedding <=> $1 LIMIT $8
            ),
            probe AS (
                SELECT plainto_tsquery('english', $11) AS every_word,
                       (SELECT swarm_any_words(plainto_tsquery('simple', lexeme))
                        FROM unnest(tsvector_to_array(to_tsvector('english', $11))) AS lexeme)
                           AS any_word
            ),
            matched AS MATERIALIZED (
                SELECT m.id, ts_rank(m.words, probe.any_word) AS rank
                FROM (
                    SELECT s.id, s.words FROM shapes s, probe
                    WHERE $11::text IS NOT NULL AND s.words @@ probe.every_word AND {shape_filters}
                    LIMIT {TEXT_CANDIDATES}
                ) m, probe
                ORDER BY rank DESC, m.id LIMIT $8
            ),
            fused AS (
                SELECT id, sum(1.0::float8 / ({RRF_K} + r)) AS score FROM (
                    SELECT id, row_number() OVER (ORDER BY distance, id) AS r FROM near
                    UNION ALL
                    SELECT id, row_number() OVER (ORDER BY rank DESC, id) AS r FROM matched
                ) ranked GROUP BY id
            )
            SELECT {COLUMNS}, s.embedding <=> $1 AS distance, s.text AS shape_text, fused.score
            FROM fused JOIN shapes s ON s.id = fused.id CROSS JOIN LATERAL (
                SELECT * FROM executions e WHERE e.shape_id = s.id AND {FILTERS}
                ORDER BY e.started_at DESC, e.id DESC LIMIT $9
            ) e
            ORDER BY fused.score DESC, distance, s.id, e.started_at DESC, e.id DESC LIMIT $7"
        );
        let rows = sqlx::query(&sql)
            .bind(probe)
            .bind(query.kind.as_deref())
            .bind(query.unit.as_deref())
            .bind(success)
            .bind(query.since)
            .bind(query.until)
            .bind(k)
            .bind(shapes)
            .bind(per_shape)
            .bind(model)
            .bind(words);
        let rows = match tx.as_mut() {
            Some(tx) => rows.fetch_all(&mut **tx).await,
            None => rows.fetch_all(self.reader()).await,
        }
        .map_err(unavailable)?;
        if let Some(tx) = tx {
            tx.commit().await.map_err(unavailable)?;
        }
        rows.iter()
            .map(|row| {
                let distance: f64 = row.try_get("distance").map_err(corrupt)?;
                Ok(SearchHit {
                    similarity: (1.0 - distance) as f32,
                    score: row.try_get("score").map_err(corrupt)?,
                    shape: row.try_get("shape_text").map_err(corrupt)?,
                    record: decode(row)?,
                })
            })
            .collect()
    }
}
