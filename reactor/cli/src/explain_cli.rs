//! `swarm explain`: why an execution's unit was chosen, recomputed from memory.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use swarm_reactor::ranking::{Ranker, RankerConfig};
use swarm_schemas::Outcome;

use crate::memory_cli::MemoryArgs;

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
