//! What `swarm up --postgres` records into: PostgreSQL behind a write-behind queue and spool,
//! the audit trail beside it, and compaction under the retention bounds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use swarm_memory::{Memory, Retention, WriteBehind, WriteBehindConfig};

use crate::memory_cli::{MemoryArgs, retention};

#[derive(Debug, Args)]
pub(crate) struct RecordArgs {
    /// Directory where execution records wait while PostgreSQL is unavailable.
    #[arg(
        long = "spool",
        env = "SWARM_SPOOL_DIR",
        default_value = ".swarm/spool"
    )]
    pub spool_dir: PathBuf,
    /// Bytes the spool may hold (at least 1 MiB). When it is full the reactor reads no more
    /// from the mesh until PostgreSQL is back and the spool has room: signals wait in Redis.
    #[arg(long, env = "SWARM_SPOOL_MAX_BYTES", default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub spool_max_bytes: u64,
    /// Forget executions older than this many days (compaction runs every --compact-every).
    #[arg(long)]
    pub retain_days: Option<f64>,
    /// Keep at most this many executions, the newest.
    #[arg(long)]
    pub retain_rows: Option<u64>,
    /// Seconds between compactions when a retention is set.
    #[arg(long, default_value_t = 600)]
    pub compact_every: u64,
}

/// The memory `swarm up` records into: PostgreSQL behind a write-behind queue and spool.
pub(crate) struct Recording {
    pub writer: Arc<WriteBehind>,
    /// The audit trail, in the same database.
    pub audit: Arc<dyn swarm_memory::AuditLog>,
    compaction: Option<tokio::task::JoinHandle<()>>,
}

impl Recording {
    pub async fn start(memory: &MemoryArgs, record: &RecordArgs) -> anyhow::Result<Self> {
        let retention = retention(record.retain_days, record.retain_rows)?;
        let postgres = Arc::new(memory.postgres().await?);
        let audit = Arc::clone(&postgres) as Arc<dyn swarm_memory::AuditLog>;
        let store: Arc<dyn Memory> = postgres;
        let writer = WriteBehind::start(
            Arc::clone(&store),
            WriteBehindConfig {
                spool_max_bytes: record.spool_max_bytes,
                ..WriteBehindConfig::new(&record.spool_dir)
            },
        )
        .with_context(|| {
            format!(
                "cannot open the spool directory {}",
                record.spool_dir.display()
            )
        })?;
        let compaction = (retention != Retention::default()).then(|| {
            let every = Duration::from_secs(record.compact_every.max(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match store.compact(&retention).await {
                        Ok(done) => tracing::info!(
                            executions = done.executions,
                            shapes = done.shapes,
                            "memory compacted"
                        ),
                        Err(error) => tracing::warn!(%error, "memory compaction failed"),
                    }
                }
            })
        });
        Ok(Self {
            writer: Arc::new(writer),
            audit,
            compaction,
        })
    }

    /// Writes or spools what is queued.
    pub async fn close(self) {
        if let Some(task) = self.compaction {
            task.abort();
        }
        let status = self.writer.close().await;
        if status.spooled > 0 {
            eprintln!(
                "{} execution records wait in the spool for the memory database",
                status.spooled
            );
        }
        if status.lost > 0 {
            eprintln!("{} execution records were lost (see the log)", status.lost);
        }
    }
}
