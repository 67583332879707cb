//! [`PgMemory`]: executions in PostgreSQL, signal shapes embedded in pgvector `halfvec` columns
//! with an HNSW index.
//!
//! Tables are in `memory/migrations` and applied by [`PgMemory::connect`]. One `record` call is
//! one transaction: the batch's distinct shapes are upserted (the HNSW insert happens only for a
//! shape never seen before), then every execution is inserted with one `UNNEST` statement;
//! executions already present are skipped. A search finds the nearest shapes that have at least
//! one execution passing the filters (HNSW with iterative scans, so filters do not starve the
//! result), then the newest such executions of each. For k up to 100 the index is asked for four
//! times as many shapes as needed (at least 40) and those are re-sorted by exact distance: an approximate
//! scan that stops at exactly k misses more of the true nearest, most of all under filters.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgvector::HalfVector;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use swarm_schemas::{ExecutionId, ExecutionRecord, FailureKind, Outcome, Signal, SignalId};
use uuid::Uuid;

mod audit;

use crate::query::ago;
use crate::{
    Compaction, Embedder, Memory, MemoryError, OutcomeFilter, Probe, Retention, SearchHit,
    SearchQuery, Shape, ShapeEmbedder, UnitStats,
};

/// Dimension of the `halfvec` column the migrations create.
pub const DIMENSIONS: usize = 384;

/// How [`PgMemory`] talks to PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgMemoryConfig {
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long an operation waits for a connection (or for the server to accept one).
    pub acquire_timeout: Duration,
    /// `hnsw.ef_search`: candidates the index keeps while searching (recall against speed).
    pub ef_search: u32,
    /// `hnsw.max_scan_tuples`: how far an iterative scan goes looking for rows that pass filters.
    pub max_scan_tuples: u32,
    /// Shapes whose vectors are kept in this process.
    pub shape_cache: usize,
    /// A shape no execution uses is removed by compaction once it has not been used for this
    /// long (another process may be about to record an execution of it).
    pub shape_grace: Duration,
}

impl Default for PgMemoryConfig {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            ef_search: 100,
            max_scan_tuples: 20_000,
            shape_cache: 65_536,
            shape_grace: Duration::from_secs(3600),
        }
    }
}

/// Executions remembered in PostgreSQL + pgvector.
pub struct PgMemory {
    pool: PgPool,
    /// None for a memory opened only to read, count and compact.
    shapes: Option<ShapeEmbedder>,
    config: PgMemoryConfig,
}

/// Data and constraint errors (SQLSTATE classes 22 and 23) are the records' fault; anything else
/// is the store's.
fn unavailable(error: sqlx::Error) -> MemoryError {
    let refused = matches!(&error, sqlx::Error::Database(db)
        if db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23")));
    if refused {
        MemoryError::Rejected(error.to_string())
    } else {
        MemoryError::Unavailable(error.to_string())
    }
}

/// PostgreSQL text cannot hold NUL; anything else a unit or client sent is kept.
fn pg_text(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// What a PostgreSQL server offers memory, found without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgProbe {
    /// The server's version (`SHOW server_version`).
    pub server_version: String,
    /// The version of pgvector the server can install, if any.
    pub vector_available: Option<String>,
    /// The version of pgvector installed in the database, if it is.
    pub vector_installed: Option<String>,
    /// `shared_buffers`, as the server shows it (`2GB`).
    pub shared_buffers: String,
    /// Whether shared memory is in huge pages (`huge_pages_status`: `on` or `off`; `None` before
    /// PostgreSQL 17, which does not say). Searching a large HNSW index on ordinary pages takes
    /// about twice as long.
    pub huge_pages: Option<String>,
}

impl PgMemory {
    /// Connects once (within `timeout`) and reports the server's version and pgvector, without
    /// applying migrations or changing anything: for `swarm doctor`.
    pub async fn probe(url: &str, timeout: std::time::Duration) -> Result<PgProbe, MemoryError> {
        use sqlx::Connection;
        let connect = sqlx::PgConnection::connect(url);
        let mut conn = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| {
                MemoryError::Unavailable(format!("no answer within {} s", timeout.as_secs_f64()))
            })?
            .map_err(unavailable)?;
        let server_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await
            .map_err(unavailable)?;
        let vector: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'vector'",
        )
        .fetch_optional(&mut conn)
        .await
        .map_err(unavailable)?;
        let (shared_buffers, huge_pages): (String, Option<String>) = sqlx::query_as(
            "SELECT current_setting('shared_buffers'), current_setting('huge_pages_status', true)",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(unavailable)?;
        let _ = conn.close().await;
        Ok(PgProbe {
            server_version,
            vector_available: vector.as_ref().map(|(v, _)| v.clone()),
            vector_installed: vector.and_then(|(_, installed)| installed),
            shared_buffers,
            huge_pages,
        })
    }

    /// Connects, applies the migrations (serialised across processes by an advisory lock) and
    /// checks that the embedder's vectors fit the table.
    pub async fn connect(
        url: &str,
        embedder: Arc<dyn Embedder>,
        config: PgMemoryConfig,
    ) -> Result<Self, MemoryError> {
        if embedder.dimensions() != DIMENSIONS {
            return Err(MemoryError::InvalidQuery(format!(
                "the embedder makes {}-dimensional vectors; the memory stores {DIMENSIONS}",
                embedder.dimensions()
            )));
        }
        let pool = Self::open(url, &config).await?;
        Ok(Self {
            pool,
            shapes: Some(ShapeEmbedder::new(embedder, config.shape_cache)),
            config,
        })
    }

    /// Connects without an embedder, for reading, statistics and compaction: `search` answers
    /// [`MemoryError::NoEmbedder`], and executions recorded through it cannot be found by search.
    pub async fn connect_without_embedder(
        url: &str,
        config: PgMemoryConfig,
    ) -> Result<Self, MemoryError> {
        let pool = Self::open(url, &config).await?;
        Ok(Self {
            pool,
            shapes: None,
            config,
        })
    }

    async fn open(url: &str, config: &PgMemoryConfig) -> Result<PgPool, MemoryError> {
        let scan = [
            config.ef_search.to_string(),
            config.max_scan_tuples.to_string(),
        ];
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            // The HNSW scan settings are the session's, set once per connection, so a search is
            // one statement and one round trip. (Until pgvector's library is loaded in the
            // backend they are placeholders, which it adopts when it loads.)
            .after_connect(move |conn, _| {
                let scan = scan.clone();
                Box::pin(async move {
                    sqlx::query(
                        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', false), \
                         set_config('hnsw.ef_search', $1, false), \
                         set_config('hnsw.max_scan_tuples', $2, false)",
                    )
                    .bind(&scan[0])
                    .bind(&scan[1])
                    .execute(conn)
                    .await
                    .map(drop)
                })
            })
            .connect(url)
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| MemoryError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(pool)
    }

    /// The connection pool (for tools and benchmarks that need SQL of their own).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The same search computed exactly, without the HNSW index: what recall is measured against.
    pub async fn exact_search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, MemoryError> {
        self.search_with(query, true).await
    }

    async fn probe_vector(&self, probe: &Probe) -> Result<Vec<f32>, MemoryError> {
        match (probe, &self.shapes) {
            // A vector needs no embedder: a memory opened without one can still search by vector.
            (Probe::Vector(vector), _) => Ok(vector.clone()),
            (_, Some(embedder)) => embedder.probe(probe).await,
            (_, None) => Err(MemoryError::NoEmbedder),
        }
    }

    async fn search_with(
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
                WHERE ($2::text IS NULL OR s.kind = $2)
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
            .bind(per_shape);
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

    async fn insert(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        records: &[ExecutionRecord],
    ) -> Result<(), MemoryError> {
        let shapes: Vec<Shape> = records.iter().map(|r| Shape::of(&r.signal)).collect();
        let embedded = match &self.shapes {
            Some(embedder) => embedder.vectors(shapes.iter()).await,
            None => Ok(Default::default()),
        };
        let vectors = match embedded {
            Ok(vectors) => vectors,
            Err(error) => {
                tracing::warn!(%error, "signal shapes not embedded; these executions cannot be found by search");
                Default::default()
            }
        };
        let mut distinct: Vec<&Shape> = shapes
            .iter()
            .filter(|s| vectors.contains_key(&s.id))
            .collect();
        // One order for every writer, so that concurrent upserts of the same shapes cannot deadlock.
        distinct.sort_by_key(|s| s.id);
        distinct.dedup_by_key(|s| s.id);
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

        let mut columns = Columns::default();
        for (record, shape) in records.iter().zip(&shapes) {
            columns.push(record, vectors.contains_key(&shape.id).then_some(shape.id))?;
        }
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
        .bind(columns.id)
        .bind(columns.signal_id)
        .bind(columns.kind)
        .bind(columns.shape_id)
        .bind(columns.unit)
        .bind(columns.unit_version)
        .bind(columns.generation)
        .bind(columns.attempt)
        .bind(columns.success)
        .bind(columns.failure_kind)
        .bind(columns.error)
        .bind(columns.started_at)
        .bind(columns.latency_us)
        .bind(columns.emitted)
        .bind(columns.parent_execution)
        .bind(columns.policy)
        .bind(columns.propensity)
        .bind(columns.signal)
        .bind(columns.host_calls)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
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
}

/// Columns every read selects from `executions e`.
const COLUMNS: &str = "e.id, e.signal::text AS signal_text, e.unit, e.unit_version, e.generation, e.attempt, \
    e.success, e.failure_kind, e.error, e.started_at, e.latency_us, e.emitted, e.policy, e.propensity, e.host_calls::text AS host_calls_text";

/// The filters of a search, on `executions e` (parameters $3..$6).
const FILTERS: &str = "($3::text IS NULL OR e.unit = $3) AND ($4::boolean IS NULL OR e.success = $4) \
    AND ($5::timestamptz IS NULL OR e.started_at >= $5) AND ($6::timestamptz IS NULL OR e.started_at < $6)";

fn corrupt(error: sqlx::Error) -> MemoryError {
    MemoryError::Corrupt(error.to_string())
}

fn decode(row: &PgRow) -> Result<ExecutionRecord, MemoryError> {
    let text: String = row.try_get("signal_text").map_err(corrupt)?;
    let signal: Signal =
        serde_json::from_str(&text).map_err(|e| MemoryError::Corrupt(format!("signal: {e}")))?;
    let version: String = row.try_get("unit_version").map_err(corrupt)?;
    let outcome = if row.try_get::<bool, _>("success").map_err(corrupt)? {
        Outcome::Success
    } else {
        let kind: Option<String> = row.try_get("failure_kind").map_err(corrupt)?;
        let kind: FailureKind =
            serde_json::from_value(serde_json::Value::String(kind.unwrap_or_default()))
                .map_err(|e| MemoryError::Corrupt(format!("failure kind: {e}")))?;
        let error: Option<String> = row.try_get("error").map_err(corrupt)?;
        Outcome::Failure {
            kind,
            error: error.unwrap_or_default(),
        }
    };
    let non_negative = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(ExecutionRecord {
        id: row.try_get("id").map_err(corrupt)?,
        signal,
        unit: row.try_get("unit").map_err(corrupt)?,
        unit_version: version
            .parse()
            .map_err(|e| MemoryError::Corrupt(format!("unit version {version:?}: {e}")))?,
        generation: non_negative(row.try_get("generation").map_err(corrupt)?),
        attempt: u32::try_from(row.try_get::<i32, _>("attempt").map_err(corrupt)?).unwrap_or(0),
        outcome,
        started_at: row.try_get("started_at").map_err(corrupt)?,
        latency_us: non_negative(row.try_get("latency_us").map_err(corrupt)?),
        emitted: row.try_get("emitted").map_err(corrupt)?,
        policy: row.try_get("policy").map_err(corrupt)?,
        propensity: row.try_get("propensity").map_err(corrupt)?,
        host_calls: serde_json::from_str(
            &row.try_get::<String, _>("host_calls_text")
                .map_err(corrupt)?,
        )
        .map_err(|e| MemoryError::Corrupt(format!("host calls: {e}")))?,
    })
}

#[async_trait]
impl Memory for PgMemory {
    async fn record(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        self.insert(&mut tx, records).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, MemoryError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM executions e WHERE e.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(decode).transpose()
    }

    async fn executions_of(&self, signal: SignalId) -> Result<Vec<ExecutionRecord>, MemoryError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM executions e WHERE e.signal_id = $1 ORDER BY e.started_at, e.id"
        ))
        .bind(signal)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(decode).collect()
    }

    async fn recent(&self, limit: usize) -> Result<Vec<ExecutionRecord>, MemoryError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM executions e ORDER BY e.started_at DESC, e.id DESC LIMIT $1"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(decode).collect()
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, MemoryError> {
        self.search_with(query, false).await
    }

    async fn unit_stats(&self) -> Result<Vec<UnitStats>, MemoryError> {
        let rows = sqlx::query(
            "SELECT unit, count(*) AS executions, count(*) FILTER (WHERE success) AS successes,
                    avg(latency_us)::float8 AS mean_latency,
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_us) AS p95_latency,
                    max(started_at) AS last_started_at
             FROM executions GROUP BY unit ORDER BY unit COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let count = |name: &str| {
                    row.try_get::<i64, _>(name)
                        .map(|n| u64::try_from(n).unwrap_or(0))
                };
                let executions = count("executions").map_err(corrupt)?;
                let successes = count("successes").map_err(corrupt)?;
                Ok(UnitStats {
                    unit: row.try_get("unit").map_err(corrupt)?,
                    executions,
                    successes,
                    failures: executions - successes,
                    mean_latency_us: row.try_get("mean_latency").map_err(corrupt)?,
                    p95_latency_us: count("p95_latency").map_err(corrupt)?,
                    last_started_at: row.try_get("last_started_at").map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn count(&self) -> Result<u64, MemoryError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM executions")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn compact(&self, retention: &Retention) -> Result<Compaction, MemoryError> {
        let mut removed = Compaction::default();
        if let Some(age) = retention.max_age {
            let cutoff = ago(age);
            let done = sqlx::query("DELETE FROM executions WHERE started_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            removed.executions += done.rows_affected();
        }
        if let Some(max) = retention.max_rows {
            let done = sqlx::query(
                "DELETE FROM executions WHERE (started_at, id) <= (
                     SELECT started_at, id FROM executions ORDER BY started_at DESC, id DESC OFFSET $1 LIMIT 1)",
            )
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
            removed.executions += done.rows_affected();
        }
        let done = sqlx::query(
            "DELETE FROM shapes s WHERE s.last_seen < $1
               AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.shape_id = s.id)",
        )
        .bind(ago(self.config.shape_grace))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        removed.shapes = done.rows_affected();
        Ok(removed)
    }
}
