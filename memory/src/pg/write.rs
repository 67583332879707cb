//! Writing executions. A batch is prepared first, outside any transaction: the shapes memory
//! already has are looked up (never embedded again), the others embedded. Then one transaction
//! upserts the new shapes, moves the known ones' `last_seen`, and inserts every execution with
//! one `UNNEST` statement.

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

/// A batch ready to write: everything that takes time (embedding, encoding) is done before its
/// transaction opens.
pub(super) struct Batch {
    /// Shapes memory did not have, with their vectors, in id order (one order for every writer,
    /// so that concurrent upserts of the same shapes cannot deadlock).
    new: Vec<(Shape, Arc<[f32]>)>,
    /// Shapes memory has already, in id order: only their `last_seen` moves.
    known: Vec<i64>,
    columns: Columns,
}

impl PgMemory {
    /// Prepares a batch outside any transaction: which of its shapes memory has already (those
    /// are never embedded again), the vectors of the others, the rows.
    pub(super) async fn prepare(&self, records: &[ExecutionRecord]) -> Result<Batch, MemoryError> {
        let shapes: Vec<Shape> = records.iter().map(|r| Shape::of(&r.signal)).collect();
        let (known, unknown) = self.known(&shapes).await?;
        let vectors = self.embed(unknown.iter().copied()).await;
        let new: Vec<(Shape, Arc<[f32]>)> = unknown
            .into_iter()
            .filter_map(|s| vectors.get(&s.id).map(|v| (s.clone(), Arc::clone(v))))
            .collect();
        let mut columns = Columns::default();
        for (record, shape) in records.iter().zip(&shapes) {
            let stored = known.binary_search(&shape.id).is_ok() || vectors.contains_key(&shape.id);
            columns.push(record, stored.then_some(shape.id))?;
        }
        Ok(Batch {
            new,
            known,
            columns,
        })
    }

    /// Embeds the shapes of `records` that memory does not have yet (the vectors wait in the
    /// embedder's cache for [`prepare`](Self::prepare)).
    pub(super) async fn embed_new(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        let shapes: Vec<Shape> = records.iter().map(|r| Shape::of(&r.signal)).collect();
        let (_, unknown) = self.known(&shapes).await?;
        self.embed(unknown.into_iter()).await;
        Ok(())
    }

    /// Which of `shapes` memory has already (their ids, sorted), and the others (distinct, in
    /// id order). Known: stored with this model's vector, or stored at all when this model is
    /// not the one memory serves (its vector would not replace the stored one).
    async fn known<'a>(
        &self,
        shapes: &'a [Shape],
    ) -> Result<(Vec<i64>, Vec<&'a Shape>), MemoryError> {
        let mut ids: Vec<i64> = shapes.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let known: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM shapes WHERE id = ANY($1)
               AND (model = $2 OR $2 IS DISTINCT FROM (SELECT model FROM memory_model))
             ORDER BY id",
        )
        .bind(&ids)
        .bind(self.model().unwrap_or_default())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut unknown: Vec<&Shape> = shapes
            .iter()
            .filter(|s| known.binary_search(&s.id).is_err())
            .collect();
        unknown.sort_by_key(|s| s.id);
        unknown.dedup_by_key(|s| s.id);
        Ok((known, unknown))
    }

    /// The vectors of `shapes` by shape id; none when embedding fails (those executions are
    /// kept, but cannot be found by search).
    async fn embed<'a>(&self, shapes: impl Iterator<Item = &'a Shape>) -> Vectors {
        let embedded = match &self.shapes {
            Some(embedder) => embedder.vectors(shapes).await,
            None => Ok(Default::default()),
        };
        embedded.unwrap_or_else(|error| {
            tracing::warn!(%error, "signal shapes not embedded; these executions cannot be found by search");
            Default::default()
        })
    }
}

impl PgMemory {
    /// Writes the batch in `tx`: new shapes, the known ones' `last_seen`, then the executions.
    pub(super) async fn write(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        batch: Batch,
    ) -> Result<(), MemoryError> {
        upsert_shapes(tx, &batch.new, self.model().unwrap_or_default()).await?;
        if !batch.known.is_empty() {
            sqlx::query(
                "UPDATE shapes SET last_seen = now()
                 WHERE id = ANY($1) AND last_seen < now() - interval '1 minute'",
            )
            .bind(&batch.known)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
        }
        batch.columns.insert(tx).await
    }
}

/// Whether an upsert's vector replaces the stored one: it is of another model, and its model
/// is the one memory serves.
const REPLACES: &str = "(shapes.model <> EXCLUDED.model
    AND EXCLUDED.model IS NOT DISTINCT FROM (SELECT model FROM memory_model))";

/// Adds the shapes memory does not have yet (the HNSW insert happens only for those). A shape
/// stored with another model's vector gets this one's when this model is the one memory serves
/// (`memory_model`), never otherwise; one another writer added meanwhile has its `last_seen`
/// moved, at most once a minute.
async fn upsert_shapes(
    tx: &mut Transaction<'_, Postgres>,
    distinct: &[(Shape, Arc<[f32]>)],
    model: &str,
) -> Result<(), MemoryError> {
    if !distinct.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO shapes (id, kind, text, embedding, model)
             SELECT t.*, $5 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::halfvec[]) AS t
             ON CONFLICT (id) DO UPDATE SET last_seen = now(),
                 embedding = CASE WHEN {REPLACES} THEN EXCLUDED.embedding ELSE shapes.embedding END,
                 model = CASE WHEN {REPLACES} THEN EXCLUDED.model ELSE shapes.model END
             WHERE {REPLACES} OR shapes.last_seen < now() - interval '1 minute'"
        ))
        .bind(distinct.iter().map(|(s, _)| s.id).collect::<Vec<_>>())
        .bind(
            distinct
                .iter()
                .map(|(s, _)| pg_text(&s.kind))
                .collect::<Vec<_>>(),
        )
        .bind(
            distinct
                .iter()
                .map(|(s, _)| pg_text(&s.text))
                .collect::<Vec<_>>(),
        )
        .bind(
            distinct
                .iter()
                .map(|(_, v)| HalfVector::from_f32_slice(v))
                .collect::<Vec<_>>(),
        )
        .bind(model)
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
             ON CONFLICT (id, started_at) DO NOTHING",
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
