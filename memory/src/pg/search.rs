//! Similarity search: the nearest shapes with an execution passing the filters (HNSW with
//! iterative scans), then the newest such executions of each.

use pgvector::HalfVector;
use sqlx::Row;

use super::rows::{COLUMNS, FILTERS, corrupt, decode};
use super::{DIMENSIONS, PgMemory, unavailable};
use crate::{MemoryError, OutcomeFilter, Probe, SearchHit, SearchQuery};

impl PgMemory {
    /// The same search computed exactly, without the HNSW index: what recall is measured against.
    pub async fn exact_search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, MemoryError> {
        self.search_with(query, true).await
    }

    pub(super) async fn probe_vector(&self, probe: &Probe) -> Result<Vec<f32>, MemoryError> {
        match (probe, &self.shapes) {
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
        let probe = HalfVector::from_f32_slice(&self.probe_vector(&query.probe).await?);
        // The exact search turns the index off for its own transaction (SET LOCAL); the
        // approximate one runs with the session's scan settings, in one round trip.
        let mut tx = if exact {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
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
        // Shapes needed to fill k, asked for four times over (at least 40) up to k = 100.
        let per = per_shape.max(1);
        let needed = (k + per - 1) / per;
        let shapes = if k <= 100 {
            (needed * 4).max(40)
        } else {
            needed
        };
        let sql = format!(
            "WITH near AS MATERIALIZED (
                SELECT s.id, s.text, s.embedding <=> $1 AS distance FROM shapes s
                WHERE ($2::text IS NULL OR s.kind = $2) AND ($10::text IS NULL OR s.model = $10)
                  AND EXISTS (SELECT 1 FROM executions e WHERE e.shape_id = s.id AND {FILTERS})
                ORDER BY s.embedding <=> $1 LIMIT $8
            )
            SELECT {COLUMNS}, near.distance, near.text AS shape_text
            FROM near CROSS JOIN LATERAL (
                SELECT * FROM executions e WHERE e.shape_id = near.id AND {FILTERS}
                ORDER BY e.started_at DESC, e.id DESC LIMIT $9
            ) e
            ORDER BY near.distance, e.started_at DESC, e.id DESC LIMIT $7"
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
            .bind(self.model());
        let rows = match tx.as_mut() {
            Some(tx) => rows.fetch_all(&mut **tx).await,
            None => rows.fetch_all(&self.pool).await,
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
                    shape: row.try_get("shape_text").map_err(corrupt)?,
                    record: decode(row)?,
                })
            })
            .collect()
    }
}
