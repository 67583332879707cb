//! Writing executions: one batch in one transaction, its distinct shapes upserted first, then
//! every execution with one `UNNEST` statement.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pgvector::HalfVector;
use sqlx::{Postgres, Transaction};
use swarm_schemas::{ExecutionRecord, Outcome};
use uuid::Uuid;

use super::{PgMemory, pg_text, unavailable};
use crate::{MemoryError, Shape};

/// Embeddings by shape id.
type Vectors = HashMap<i64, Arc<[f32]>>;

impl PgMemory {
    /// Writes one batch in `tx`: the batch's distinct embedded shapes, then its executions.
    pub(super) async fn insert(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        records: &[ExecutionRecord],
    ) -> Result<(), MemoryError> {
        let shapes: Vec<Shape> = records.iter().map(|r| Shape::of(&r.signal)).collect();
        let vectors = self.embed(&shapes).await;
        let mut distinct: Vec<&Shape> = shapes
            .iter()
            .filter(|s| vectors.contains_key(&s.id))
            .collect();
        // One order for every writer, so that concurrent upserts of the same shapes cannot deadlock.
        distinct.sort_by_key(|s| s.id);
        distinct.dedup_by_key(|s| s.id);
        upsert_shapes(tx, &distinct, &vectors).await?;
        let mut columns = Columns::default();
        for (record, shape) in records.iter().zip(&shapes) {
            columns.push(record, vectors.contains_key(&shape.id).then_some(shape.id))?;
        }
        columns.insert(tx).await
    }

    /// The vectors of `shapes` by shape id; none when embedding fails (those executions are
    /// kept, but cannot be found by search).
    async fn embed(&self, shapes: &[Shape]) -> Vectors {
        let embedded = match &self.shapes {
            Some(embedder) => embedder.vectors(shapes.iter()).await,
            None => Ok(Default::default()),
        };
        embedded.unwrap_or_else(|error| {
            tracing::warn!(%error, "signal shapes not embedded; these executions cannot be found by search");
            Default::default()
        })
    }
}

/// Adds the shapes memory does not have yet (the HNSW insert happens only for those); a
/// shape seen again has its `last_seen` moved, at most once a minute.
async fn upsert_shapes(
    tx: &mut Transaction<'_, Postgres>,
    distinct: &[&Shape],
    vectors: &Vectors,
) -> Result<(), MemoryError> {
    if !distinct.is_empty() {
        sqlx::query(
            "INSERT INTO shapes (id, kind, text, embedding)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::halfvec[])
             ON CONFLICT (id) DO UPDATE SET last_seen = now()
             WHERE shapes.last_seen < now() - interval '1 minute'",
        )
        .bind(distinct.iter().map(|s| s.id).collect::<Vec<_>>())
        .bind(
            distinct
                .iter()
                .map(|s| pg_text(&s.kind))
                .collect::<Vec<_>>(),
        )
        .bind(
            distinct
                .iter()
                .map(|s| pg_text(&s.text))
                .collect::<Vec<_>>(),
        )
        .bind(
            distinct
                .iter()
                .map(|s| HalfVector::from_f32_slice(&vectors[&s.id]))
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

/// One array per column, for an `UNNEST` insert.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    signal_id: Vec<Uuid>,
    kind: Vec<String>,
    shape_id: Vec<Option<i64>>,
    unit: Vec<String>,
    unit_version: Vec<String>,
    generation: Vec<i64>,
    attempt: Vec<i32>,
    success: Vec<bool>,
    failure_kind: Vec<Option<String>>,
    error: Vec<Option<String>>,
    started_at: Vec<DateTime<Utc>>,
    latency_us: Vec<i64>,
    /// Postgres array literals (`{…}`): UNNEST cannot take an array of arrays of varying length.
    emitted: Vec<String>,
    parent_execution: Vec<Option<Uuid>>,
    policy: Vec<String>,
    propensity: Vec<f64>,
    signal: Vec<String>,
    host_calls: Vec<String>,
}

impl Columns {
    fn push(&mut self, r: &ExecutionRecord, shape: Option<i64>) -> Result<(), MemoryError> {
        let signal =
            serde_json::to_string(&r.signal).map_err(|e| MemoryError::Corrupt(e.to_string()))?;
        let (failure_kind, error) = match &r.outcome {
            Outcome::Success => (None, None),
            Outcome::Failure { kind, error } => {
                let kind = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned));
                (kind, Some(pg_text(error)))
            }
        };
        self.id.push(r.id);
        self.signal_id.push(r.signal.id);
        self.kind.push(pg_text(&r.signal.kind));
        self.shape_id.push(shape);
        self.unit.push(pg_text(&r.unit));
        self.unit_version.push(r.unit_version.to_string());
        self.generation
            .push(i64::try_from(r.generation).unwrap_or(i64::MAX));
        self.attempt
            .push(i32::try_from(r.attempt).unwrap_or(i32::MAX));
        self.success.push(r.outcome.is_success());
        self.failure_kind.push(failure_kind);
        self.error.push(error);
        self.started_at.push(r.started_at);
        self.latency_us
            .push(i64::try_from(r.latency_us).unwrap_or(i64::MAX));
        let ids: Vec<String> = r.emitted.iter().map(Uuid::to_string).collect();
        self.emitted.push(format!("{{{}}}", ids.join(",")));
        self.parent_execution.push(r.signal.parent_execution);
        self.policy.push(pg_text(&r.policy));
        self.propensity.push(r.propensity);
        self.signal.push(signal);
        self.host_calls.push(
            serde_json::to_string(&r.host_calls)
                .map_err(|e| MemoryError::Corrupt(e.to_string()))?,
        );
        Ok(())
    }
    /// Inserts the rows in one `UNNEST` statement; executions already present are skipped.
    async fn insert(self, tx: &mut Transaction<'_, Postgres>) -> Result<(), MemoryError> {
        sqlx::query(
            "INSERT INTO executions (id, signal_id, kind, shape_id, unit, unit_version, generation, attempt,
                 success, failure_kind, error, started_at, latency_us, emitted, parent_execution, policy,
                 propensity, signal, host_calls)
             SELECT id, signal_id, kind, shape_id, unit, unit_version, generation, attempt, success,
                 failure_kind, error, started_at, latency_us, emitted::uuid[], parent_execution, policy,
                 propensity, signal::json, host_calls::jsonb
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                 $7::bigint[], $8::integer[], $9::boolean[], $10::text[], $11::text[], $12::timestamptz[],
                 $13::bigint[], $14::text[], $15::uuid[], $16::text[], $17::float8[], $18::text[],
                 $19::text[])
               AS t(id, signal_id, kind, shape_id, unit, unit_version, generation, attempt, success,
                 failure_kind, error, started_at, latency_us, emitted, parent_execution, policy,
                 propensity, signal, host_calls)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(self.id)
        .bind(self.signal_id)
        .bind(self.kind)
        .bind(self.shape_id)
        .bind(self.unit)
        .bind(self.unit_version)
        .bind(self.generation)
        .bind(self.attempt)
        .bind(self.success)
        .bind(self.failure_kind)
        .bind(self.error)
        .bind(self.started_at)
        .bind(self.latency_us)
        .bind(self.emitted)
        .bind(self.parent_execution)
        .bind(self.policy)
        .bind(self.propensity)
        .bind(self.signal)
        .bind(self.host_calls)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
