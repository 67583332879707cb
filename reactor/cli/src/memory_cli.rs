//! Memory options shared by `swarm up`, `swarm memory` and `swarm explain`, and the `swarm
//! memory` subcommands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use swarm_memory::{
    Embedder, Fusion, Memory, OutcomeFilter, PgMemory, PgMemoryConfig, Retention, SearchQuery,
    StepDone, TractEmbedder,
};
use swarm_schemas::Outcome;

#[derive(Debug, Args)]
pub(crate) struct MemoryArgs {
    /// PostgreSQL + pgvector URL of the shared memory (`postgres://user@host:port/db`).
    #[arg(long = "postgres", env = "SWARM_DATABASE_URL")]
    pub database_url: Option<String>,
    /// A read-only replica of that database (a streaming standby): similarity searches and the
    /// ranker's refreshes read there, everything else from `--postgres`.
    #[arg(long = "postgres-read", env = "SWARM_DATABASE_READ_URL")]
    pub read_url: Option<String>,
    /// Directory holding the embedding model and tokenizer (`ops/fetch-model` fetches them).
    #[arg(
        long = "models",
        env = "SWARM_MODELS_DIR",
        default_value = ".swarm/models"
    )]
    pub models_dir: PathBuf,
    /// Directory of the model this memory was embedded with before `--models`: while a
    /// `swarm memory reindex` to the new model runs, searches keep answering with it.
    #[arg(long = "previous-models", env = "SWARM_PREVIOUS_MODELS_DIR")]
    pub previous_models_dir: Option<PathBuf>,
}

impl MemoryArgs {
    /// Loads the embedding model, with an error that says how to get it.
    pub fn embedder(&self) -> anyhow::Result<Arc<dyn Embedder>> {
        load_model(&self.models_dir)
    }

    fn url(&self) -> anyhow::Result<&str> {
        match &self.database_url {
            Some(url) => Ok(url),
            None => bail!("no memory database: pass --postgres URL or set SWARM_DATABASE_URL"),
        }
    }

    /// Connects to PostgreSQL (applying migrations) with the embedding model, for recording and
    /// searching; errors when no URL was given. Warns when memory serves another model.
    pub async fn postgres(&self) -> anyhow::Result<PgMemory> {
        let mut memory = self.postgres_with_model().await?;
        if let Some(dir) = &self.previous_models_dir {
            memory = memory.with_previous(load_model(dir)?);
        }
        if let Some(url) = &self.read_url {
            memory = memory
                .with_read_replica(url)
                .await
                .with_context(|| format!("cannot open the read replica at {}", redact(url)))?;
        }
        let serving = memory.serving_model().await?;
        let model = memory.model().unwrap_or_default();
        if self.previous_models_dir.is_none() && serving.as_deref().is_some_and(|s| s != model) {
            tracing::warn!(
                serving = serving.as_deref().unwrap_or_default(),
                model,
                "memory holds another model's vectors: until `swarm memory reindex` runs with \
                 this model, searches find only shapes this model embedded"
            );
        }
        Ok(memory)
    }

    /// Connects to PostgreSQL with the embedding model alone: what a reindex needs (it never
    /// searches, so neither the previous model nor the replica).
    async fn postgres_with_model(&self) -> anyhow::Result<PgMemory> {
        let url = self.url()?;
        PgMemory::connect(url, self.embedder()?, PgMemoryConfig::default())
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

/// Loads the embedding model in `dir`, with an error that says how to get it.
fn load_model(dir: &std::path::Path) -> anyhow::Result<Arc<dyn Embedder>> {
    let embedder = TractEmbedder::load_dir(dir).with_context(|| {
        format!(
            "cannot load the embedding model from {} (run ops/fetch-model)",
            dir.display()
        )
    })?;
    Ok(Arc::new(embedder))
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
/// Builds a retention from the command line's bounds.
pub(crate) fn retention(days: Option<f64>, rows: Option<u64>) -> anyhow::Result<Retention> {
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

#[derive(Debug, Args)]
pub(crate) struct MemoryCommand {
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(subcommand)]
    command: MemorySubcommand,
}

#[derive(Debug, Subcommand)]
enum MemorySubcommand {
    /// Executions whose signals are most like a text, best first: the vector neighbours fused by
    /// reciprocal rank with the shapes that hold every word of the text.
    Search(SearchArgs),
    /// Per-unit statistics of remembered executions.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-embed every shape with the model in `--models`, then switch search to those vectors.
    /// Searches and writes go on meanwhile; a reindex that stops resumes where it stopped.
    Reindex,
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
    /// Rank by vector alone, without fusing in the shapes that hold every word of the text.
    #[arg(long)]
    vector_only: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: MemoryCommand) -> anyhow::Result<ExitCode> {
    let args = &command.memory;
    match command.command {
        MemorySubcommand::Search(search_args) => search(&args.postgres().await?, search_args).await,
        MemorySubcommand::Reindex => reindex(&args.postgres_with_model().await?).await,
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
            let memory = args.postgres_without_model().await?;
            let done = compact(&memory, &retention).await?;
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
    if args.vector_only {
        query.fusion = Fusion::Vector;
    }
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

/// Compacts memory with a spinner that says each step as it is done (drawn only on a
/// terminal).
async fn compact(
    memory: &PgMemory,
    retention: &Retention,
) -> anyhow::Result<swarm_memory::Compaction> {
    let spinner = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")?,
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner.set_message("forgetting what the retention does not keep");
    let done = memory
        .compact_reporting(retention, |step| {
            let did = match step.done {
                StepDone::DroppedDay { day, executions } => {
                    format!("dropped {day} ({executions} executions)")
                }
                StepDone::DeletedOlder { executions } => {
                    format!("deleted {executions} older executions")
                }
                StepDone::DeletedBeyondRows { executions } => {
                    format!("deleted {executions} executions beyond the rows kept")
                }
                StepDone::DeletedShapes { shapes } => format!("deleted {shapes} unused shapes"),
            };
            spinner.set_message(format!(
                "{did}; {} executions forgotten so far",
                step.removed.executions
            ));
        })
        .await;
    spinner.finish_and_clear();
    Ok(done?)
}

async fn reindex(memory: &PgMemory) -> anyhow::Result<ExitCode> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} shapes ({per_sec}, {eta} left)",
        )?
        .progress_chars("=> "),
    );
    bar.set_message("embedding");
    let done = memory
        .reindex(|progress| {
            bar.set_length(progress.total);
            bar.set_position(progress.done);
            if progress.switched {
                bar.set_message("switched");
            }
        })
        .await?;
    bar.finish();
    match &done.from {
        Some(from) if *from != done.to => println!(
            "memory serves {} (was {from}): {} shapes embedded, {} in all",
            done.to, done.embedded, done.shapes
        ),
        _ => println!(
            "memory serves {}: {} shapes embedded, {} in all",
            done.to, done.embedded, done.shapes
        ),
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
