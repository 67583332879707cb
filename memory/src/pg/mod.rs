//! [`PgMemory`]: executions in PostgreSQL, signal shapes embedded in pgvector `halfvec` columns
//! with an HNSW index. This file holds the handle: its connections (the primary, and a read
//! replica for searches if one is given), the migrations in `memory/migrations` applied at
//! connect, and the `Memory` trait over the parts:
//! - `write.rs`: a batch's shapes looked up or embedded outside any transaction, then one
//!   transaction for the new shapes and every execution;
//! - `search.rs`: hybrid search, the HNSW neighbours fused with the shapes holding every word;
//! - `serving.rs`: the model memory serves, and searching with the previous one until a switch;
//! - `reindex.rs`: moving memory to another model while it serves;
//! - `retention.rs`: compaction;
//! - `rows.rs`, `audit.rs`: decoding rows, the audit table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use swarm_schemas::{ExecutionId, ExecutionRecord, SignalId};

mod audit;
mod days;
mod reindex;
mod retention;
mod rows;
mod search;
mod serving;
mod write;

pub use reindex::{ReindexProgress, Reindexed};
pub use retention::{CompactStep, StepDone};

use rows::{COLUMNS, corrupt, decode};
use serving::Previous;

use crate::{
    Compaction, Embedder, Memory, MemoryError, Retention, SearchHit, SearchQuery, ShapeEmbedder,
    UnitStats,
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
    /// A read-only replica for searches, if one was given.
    read: Option<PgPool>,
    /// None for a memory opened only to read, count and compact.
    shapes: Option<ShapeEmbedder>,
    /// The model this process ran before, kept to search with while memory still serves its
    /// vectors (during a reindex to `shapes`' model).
    previous: Option<Previous>,
    config: PgMemoryConfig,
    /// Days whose executions partition exists.
    days: days::KnownDays,
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
    /// The model whose vectors this memory writes and searches (none without an embedder: then
    /// a search by vector compares with every shape).
    pub fn model(&self) -> Option<&str> {
        self.shapes.as_ref().map(ShapeEmbedder::model)
    }

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
        Self::claim_serving(&pool, embedder.model()).await?;
        Ok(Self {
            pool,
            read: None,
            shapes: Some(ShapeEmbedder::new(embedder, config.shape_cache)),
            previous: None,
            config,
            days: days::KnownDays::default(),
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
            read: None,
            shapes: None,
            previous: None,
            config,
            days: days::KnownDays::default(),
        })
    }

    async fn open(url: &str, config: &PgMemoryConfig) -> Result<PgPool, MemoryError> {
        let pool = Self::connect_pool(url, config).await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| MemoryError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(pool)
    }

    /// A pool whose connections carry the HNSW scan settings.
    async fn connect_pool(url: &str, config: &PgMemoryConfig) -> Result<PgPool, MemoryError> {
        let scan = [
            config.ef_search.to_string(),
            config.max_scan_tuples.to_string(),
        ];
        PgPoolOptions::new()
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
            .map_err(unavailable)
    }

    /// The same memory, sending similarity searches (and so the ranker's refreshes) to a
    /// read-only replica of its database at `url`, such as a streaming standby; writes,
    /// reindexing and everything else stay on the primary. A replica answers with what it has
    /// replayed: an execution recorded a moment ago may not be found yet.
    pub async fn with_read_replica(mut self, url: &str) -> Result<Self, MemoryError> {
        self.read = Some(Self::connect_pool(url, &self.config).await?);
        Ok(self)
    }

    /// Where searches read: the replica if there is one, else the primary.
    fn reader(&self) -> &PgPool {
        self.read.as_ref().unwrap_or(&self.pool)
    }

    /// Closes the connections to the primary and to the replica, if any, waiting for them to
    /// end.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(read) = &self.read {
            read.close().await;
        }
    }

    /// The connection pool of the primary (for tools and benchmarks that need SQL of their own).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Memory for PgMemory {
    async fn record(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        if records.is_empty() {
            return Ok(());
        }
        self.ensure_days(records.iter().map(|r| r.started_at))
            .await?;
        let batch = self.prepare(records).await?;
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        self.write(&mut tx, batch).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn embed_ahead(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        self.embed_new(records).await
    }

    async fn shape_vectors(
        &self,
        shapes: &[crate::Shape],
    ) -> Result<std::collections::HashMap<i64, Arc<[f32]>>, MemoryError> {
        match &self.shapes {
            Some(embedder) => embedder.vectors(shapes).await,
            None => Ok(std::collections::HashMap::new()),
        }
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
        self.forget_beyond(retention).await
    }
}
