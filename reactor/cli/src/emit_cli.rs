//! `swarm emit`: one signal onto a Redis mesh, or through the units directory in this process
//! with every execution printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use swarm_memory::{InProcMemory, Memory};
use swarm_mesh::prelude::*;
use swarm_mesh::telemetry::traced;
use swarm_mesh::{InProcMesh, Mesh, dead_letter_stream};
use swarm_reactor::{Reactor, ReactorConfig};
use swarm_schemas::{Outcome, Signal, validate_kind};

use crate::args::{MeshArgs, UnitsDir, check_dir, private_dir};

#[derive(Debug, Args)]
pub(crate) struct EmitArgs {
    /// Signal kind, such as `order.placed`.
    kind: String,
    /// Payload as JSON.
    payload: String,
    /// What orders the signal on a partitioned stream: signals with one key are handled in the
    /// order they were emitted (default: its own conversation).
    #[arg(long)]
    partition_key: Option<String>,
    #[command(flatten)]
    units: UnitsDir,
    /// With a Redis mesh the signal is published there for the running reactors; without one it
    /// runs through the units directory in this process and every execution is printed.
    #[command(flatten)]
    mesh: MeshArgs,
    /// Give up waiting for the swarm to settle after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[command(flatten)]
    host: crate::host_cli::HostArgs,
    #[command(flatten)]
    telemetry: crate::telemetry_cli::TelemetryArgs,
}

pub(crate) async fn emit(args: EmitArgs) -> anyhow::Result<ExitCode> {
    validate_kind(&args.kind).with_context(|| format!("kind `{}` is invalid", args.kind))?;
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).context("payload is not valid JSON")?;
    if let Some(key) = &args.partition_key {
        swarm_schemas::validate_partition_key(key)?;
    }
    let mut signal = Signal::new(args.kind, payload);
    signal.partition_key = args.partition_key;
    // With tracing on, the signal's `send` is the root of its conversation's trace.
    let tracing = args.telemetry.start("emit")?;
    let result = send(
        &args.units,
        &args.mesh,
        &args.host,
        args.timeout,
        tracing.as_ref(),
        signal,
    )
    .await;
    if let Some(tracing) = tracing {
        tracing.shutdown().await;
    }
    result
}

async fn send(
    units: &UnitsDir,
    mesh: &MeshArgs,
    host: &crate::host_cli::HostArgs,
    timeout: u64,
    tracing: Option<&crate::telemetry_cli::Tracing>,
    signal: Signal,
) -> anyhow::Result<ExitCode> {
    let telemetry = tracing.map(|t| t.telemetry.clone());
    if let Some(redis) = mesh.redis().await? {
        let stream = ReactorConfig::new(PathBuf::new(), PathBuf::new()).stream;
        let id = traced(Arc::clone(&redis) as Arc<dyn Publish>, telemetry.as_ref())
            .publish(&stream, &signal)
            .await?;
        let partitions = redis.partitions(&stream, None).await?;
        let partition = swarm_mesh::partition::partition_of(&signal, partitions);
        println!(
            "emitted {} {} as entry {id} of {}",
            signal.kind,
            signal.id,
            redis.key(&swarm_mesh::partition::partition_stream(
                &stream, partition, partitions
            ))
        );
        return Ok(ExitCode::SUCCESS);
    }
    check_dir(&units.dir)?;
    let private = private_dir()?;
    let mut config = ReactorConfig::new(units.dir.clone(), private.path().to_owned());
    config.trust = units.policy()?;
    config.watch = false;
    config.block = Duration::from_millis(20);
    config.host = host.config()?;
    config.telemetry.clone_from(&telemetry);
    let (stream, group) = (config.stream.clone(), config.group.clone());
    let mesh = Arc::new(InProcMesh::new());
    let memory = Arc::new(InProcMemory::new());
    let (reactor, report) = Reactor::start(
        config,
        Arc::clone(&mesh) as Arc<dyn Mesh>,
        Arc::clone(&memory) as Arc<dyn Memory>,
    )
    .await?;
    for (path, error) in &report.failures {
        eprintln!("refused {}: {error}", path.display());
    }
    traced(Arc::clone(&mesh) as Arc<dyn Publish>, telemetry.as_ref())
        .publish(&stream, &signal)
        .await?;
    println!("emitted {} {}", signal.kind, signal.id);

    // The swarm has settled when nothing is pending or waiting in the group.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let info = mesh.group_info(&stream, &group).await?;
        if info.pending == 0 && info.lag == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            reactor.stop().await;
            bail!(
                "the swarm did not settle within {} s ({} pending, {} waiting)",
                timeout,
                info.pending,
                info.lag
            );
        }
    }
    reactor.stop().await;
    print_run(&memory, mesh.as_ref(), &stream).await?;
    Ok(ExitCode::SUCCESS)
}

/// What a one-shot run did: each execution (with what it emitted), then each dead letter.
pub(crate) async fn print_run(
    memory: &InProcMemory,
    mesh: &dyn Mesh,
    stream: &str,
) -> anyhow::Result<()> {
    for record in memory.all() {
        let outcome = match &record.outcome {
            Outcome::Success => "ok".to_owned(),
            Outcome::Failure { kind, error } => {
                format!("{kind:?} (attempt {}): {error}", record.attempt + 1)
            }
        };
        println!(
            "{} {}@{} <- {} {} [{} us] {}",
            record.id,
            record.unit,
            record.unit_version,
            record.signal.kind,
            record.signal.id,
            record.latency_us,
            outcome
        );
        for id in &record.emitted {
            println!("    emitted {id}");
        }
    }
    for entry in mesh
        .range(&dead_letter_stream(stream), None, usize::MAX)
        .await?
    {
        if let Ok(letter) = entry.body {
            println!(
                "dead letter: {}",
                letter.payload["reason"].as_str().unwrap_or("(no reason)")
            );
        }
    }
    Ok(())
}
