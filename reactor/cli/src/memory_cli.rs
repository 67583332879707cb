//! Memory options shared by `swarm up` and `swarm memory`, and the `swarm memory` subcommands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use swarm_memory::{
    Embedder, Memory, OutcomeFilter, PgMemory, PgMemoryConfig, Retention, SearchQuery,
    TractEmbedder, WriteBehind, WriteBehindConfig,
};
use swarm_reactor::ranking::{Ranker, RankerConfig};
use swarm_schemas::Outcome;

#[derive(Debug, Args)]
pub(crate) struct MemoryArgs {
    /// PostgreSQL + pgvector URL of the shared memory (`postgres://user@host:port/db`).
    #[arg(long = "postgres", env = "SWARM_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory holding the embedding model and tokenizer (`ops/fetch-model` fetches them).
    #[arg(
        long = "models",
        env = "SWARM_MODELS_DIR",
        default_value = ".swarm/models"
    )]
    pub models_dir: PathBuf,
}

impl MemoryArgs {
    /// Loads the embedding model, with an error that says how to get it.
    pub fn embedder(&self) -> anyhow::Result<Arc<dyn Embedder>> {
        let embedder = TractEmbedder::load_dir(&self.models_dir).with_context(|| {
            format!(
                "cannot load the embedding model from {} (run ops/fetch-model)",
                self.models_dir.display()
            )
        })?;
        Ok(Arc::new(embedder))
    }

    fn url(&self) -> anyhow::Result<&str> {
        match &self.database_url {
            Some(url) => Ok(url),
            None => bail!("no memory database: pass --postgres URL or set SWARM_DATABASE_URL"),
        }
    }

    /// Connects to PostgreSQL (applying migrations) with the embedding model, for recording and
    /// searching; errors when no URL was given.
    pub async fn postgres(&self) -> anyhow::Result<PgMemory> {
        let url = self.url()?;
        let embedder = self.embedder()?;
        PgMemory::connect(url, embedder, PgMemoryConfig::default())
            .await
            .with_context(|| format!("cannot open the memory at {}", redact(url)))
    }

    /// Connects to PostgreSQL without loading the model, for statistics and compaction.
    async fn postgres_without_model(&self) -> anyhow::Result<PgMemory> {
        let url = self.url()?;
        PgMemory::connect_without_embedder(url, PgMemoryConfig::default())
            .await
            .with_context(|| format!("cannot open the memory at {}", redact(url)))
    }
}

/// A URL with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// How `swarm up` writes to memory and what it keeps.
#[derive(Debug, Args)]
pub(crate) struct RecordArgs {
    /// Directory where execution records wait while PostgreSQL is unavailable.
    #[arg(
        long = "spool",
        env = "SWARM_SPOOL_DIR",
        default_value = ".swarm/spool"
    )]
    pub spool_dir: PathBuf,
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

/// Builds a retention from the command line's bounds.
fn retention(days: Option<f64>, rows: Option<u64>) -> anyhow::Result<Retention> {
    let max_age = match days {
        Some(days) if !(days.is_finite() && days > 0.0) => {
            bail!("--retain-days must be a positive number of days")
        }
        Some(days) => Some(Duration::from_secs_f64(days * 86_400.0)),
        None => None,
    };
    Ok(Retention {
        max_age,
        max_rows: rows,
    })
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
            WriteBehindConfig::new(&record.spool_dir),
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

#[derive(Debug, Args)]
pub(crate) struct MemoryCommand {
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(subcommand)]
    command: MemorySubcommand,
}

#[derive(Debug, Subcommand)]
enum MemorySubcommand {
    /// Executions whose signals are most similar to a text, most similar first.
    Search(SearchArgs),
    /// Per-unit statistics of remembered executions.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget executions beyond a retention now.
    Compact {
        /// Forget executions older than this many days.
        #[arg(long, allow_negative_numbers = true)]
        retain_days: Option<f64>,
        /// Keep at most this many executions, the newest.
        #[arg(long)]
        retain_rows: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutcomeArg {
    Success,
    Failure,
}

#[derive(Debug, Args)]
struct SearchArgs {
    /// What to look for, in words.
    text: String,
    /// Only signals of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only executions by this unit.
    #[arg(long)]
    unit: Option<String>,
    /// Only successes or only failures.
    #[arg(long)]
    outcome: Option<OutcomeArg>,
    /// Only executions started at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only executions started before this time (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// How many executions.
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: MemoryCommand) -> anyhow::Result<ExitCode> {
    let args = &command.memory;
    match command.command {
        MemorySubcommand::Search(search_args) => search(&args.postgres().await?, search_args).await,
        MemorySubcommand::Stats { json } => {
            stats(&args.postgres_without_model().await?, json).await
        }
        MemorySubcommand::Compact {
            retain_days,
            retain_rows,
        } => {
            let retention = retention(retain_days, retain_rows)?;
            if retention == Retention::default() {
                bail!("say what to keep: --retain-days N, --retain-rows N, or both");
            }
            let done = args
                .postgres_without_model()
                .await?
                .compact(&retention)
                .await?;
            println!(
                "forgot {} executions and {} unused shapes",
                done.executions, done.shapes
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn search(memory: &PgMemory, args: SearchArgs) -> anyhow::Result<ExitCode> {
    let mut query = SearchQuery::text(args.text)
        .between(args.since, args.until)
        .k(args.k);
    query.kind = args.kind;
    query.unit = args.unit;
    query.outcome = args.outcome.map(|o| match o {
        OutcomeArg::Success => OutcomeFilter::Success,
        OutcomeArg::Failure => OutcomeFilter::Failure,
    });
    let hits = memory.search(&query).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<27} {:<28} {:<24} {:<8} SIGNAL SHAPE",
        "SIM", "STARTED", "UNIT", "KIND", "OUTCOME"
    );
    for hit in &hits {
        let record = &hit.record;
        let outcome = match &record.outcome {
            Outcome::Success => "ok".to_owned(),
            Outcome::Failure { .. } => "failed".to_owned(),
        };
        println!(
            "{:<6.3} {:<27} {:<28} {:<24} {:<8} {}",
            hit.similarity,
            record
                .started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            format!("{}@{}", record.unit, record.unit_version),
            record.signal.kind,
            outcome,
            hit.shape
        );
    }
    if hits.is_empty() {
        eprintln!("no execution matches");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The execution's id (a UUID, as `swarm memory search --json` shows it).
    execution: String,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Neighbours to list.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `swarm explain`: the ranking of one execution recomputed from memory.
pub(crate) async fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let id: uuid::Uuid = args
        .execution
        .parse()
        .with_context(|| format!("`{}` is not an execution id (a UUID)", args.execution))?;
    let memory = args.memory.postgres().await?;
    let ranker = Ranker::new(RankerConfig::default());
    let Some(why) = ranker.explain(&memory, id).await? else {
        bail!("no execution {id} in memory");
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&why)?);
        return Ok(ExitCode::SUCCESS);
    }
    let e = &why.execution;
    println!(
        "execution {} of `{}`@{} on {} signal {}: {}",
        e.id,
        e.unit,
        e.unit_version,
        e.signal.kind,
        e.signal.id,
        match &e.outcome {
            Outcome::Success => "succeeded".to_owned(),
            Outcome::Failure { error, .. } => format!("failed: {error}"),
        }
    );
    println!(
        "chosen by policy {} with propensity {:.3} (the probability the ranker had of choosing it)",
        e.policy, e.propensity
    );
    if why.siblings.len() > 1 {
        println!("every execution of this signal, in order:");
        for s in &why.siblings {
            println!(
                "  {} {:<24} {}",
                s.started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                s.unit,
                if s.outcome.is_success() {
                    "ok"
                } else {
                    "failed"
                }
            );
        }
    }
    println!(
        "standings from memory before it started (neutral prior; the live ranker also counted \
         its own outcomes not yet stored, and each unit's global rate):"
    );
    println!(
        "  {:<24} {:>10} {:>8} {:>8} {:>6} {:>8}",
        "UNIT", "NEIGHBOURS", "WINS", "LOSSES", "MEAN", "P(FIRST)"
    );
    for s in &why.standings {
        println!(
            "  {:<24} {:>10} {:>8.2} {:>8.2} {:>6.3} {:>8.3}",
            s.unit, s.neighbours, s.wins, s.losses, s.mean, s.p_first
        );
    }
    println!("nearest past executions ({} in all):", why.neighbours.len());
    println!(
        "  {:<6} {:<27} {:<24} {:<7} {:>7} {:>7}",
        "SIM", "STARTED", "UNIT", "OUTCOME", "REWARD", "WEIGHT"
    );
    for n in why.neighbours.iter().take(args.show) {
        println!(
            "  {:<6.3} {:<27} {:<24} {:<7} {:>7.3} {:>7.3}",
            n.similarity,
            n.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            n.unit,
            if n.success { "ok" } else { "failed" },
            n.reward,
            n.weight
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats(memory: &PgMemory, json: bool) -> anyhow::Result<ExitCode> {
    let stats = memory.unit_stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>8} {:>12} {:>12}  LAST",
        "UNIT", "EXECUTIONS", "SUCCESSES", "FAILURES", "RATE", "MEAN µs", "P95 µs"
    );
    for unit in &stats {
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>7.1}% {:>12.0} {:>12}  {}",
            unit.unit,
            unit.executions,
            unit.successes,
            unit.failures,
            100.0 * unit.successes as f64 / unit.executions.max(1) as f64,
            unit.mean_latency_us,
            unit.p95_latency_us,
            unit.last_started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://u@h:5/db"), "postgres://u@h:5/db");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn retention_bounds_are_checked() {
        assert!(retention(Some(-1.0), None).is_err());
        assert!(retention(Some(f64::NAN), None).is_err());
        let r = retention(Some(1.0), Some(5)).expect("valid");
        assert_eq!(r.max_age, Some(Duration::from_secs(86_400)));
        assert_eq!(r.max_rows, Some(5));
    }
}
