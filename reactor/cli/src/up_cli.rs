//! `swarm up` and `swarm dev`: the arguments resolved once into a checked plan, then the
//! reactor, the inspector and the feed started on the mesh and memory they name.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use swarm_memory::{AuditLog, InProcAudit, InProcMemory, Memory};
use swarm_mesh::telemetry::traced;
use swarm_mesh::{InProcMesh, Mesh, Publish};
use swarm_reactor::{Reactor, ReactorConfig, Registry};
use swarm_schemas::{DispatchPolicy, KindPattern, Signal};

use crate::args::{
    MeshArgs, UnitsDir, check_dir, hostname, parse_concentration, parse_dispatch,
    parse_probability, parse_seconds, private_dir,
};
use crate::feed_cli::{publish_feed, read_feed};

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    _config: crate::config_cli::ConfigFile,
    #[command(flatten)]
    units: UnitsDir,
    #[command(flatten)]
    mesh: MeshArgs,
    /// Do not watch the directory for new or replaced units.
    #[arg(long)]
    no_watch: bool,
    /// Publish the signals in this JSON-lines file at start (`-` reads stdin as it comes).
    /// Each line is {"kind": "...", "payload": {...}}.
    #[arg(long)]
    feed: Option<PathBuf>,
    /// Consumer name of this process in the reactor group: keep it stable across restarts, and
    /// give each process on one machine its own (default: the host name).
    #[arg(long, env = "SWARM_CONSUMER")]
    consumer: Option<String>,
    /// Seconds an entry may stay pending with a silent consumer before another takes it over.
    #[arg(long, default_value_t = 30.0)]
    claim_idle: f64,
    /// Dead letters kept per partition, at most (the oldest go first; 0: no bound).
    #[arg(long, default_value_t = 100_000)]
    dead_letter_max: u64,
    /// Days a dead letter is kept (0: no bound).
    #[arg(long, default_value_t = 7.0)]
    dead_letter_days: f64,
    /// Partitions of the signal stream, fixed when the stream is created (a stream that exists
    /// keeps its count): with 1 every process reads the one stream; with more, each partition
    /// is read by one process at a time and each key's signals are handled in publish order.
    /// (default: the count recorded for the stream, or 1 for a new stream).
    #[arg(long, env = "SWARM_PARTITIONS",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(swarm_mesh::partition::MAX_PARTITIONS)))]
    partitions: Option<u32>,
    /// Seconds a partition's lease and a process's membership last unrenewed: how soon a dead
    /// process's partitions are taken over.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    lease_ttl: f64,
    /// Tries per signal and unit before the signal is dead-lettered.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Deliveries of one entry (each restart or takeover that re-reads it counts) before it is
    /// dead-lettered without running: what stops a signal that hangs or crashes every process.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_deliveries: u32,
    /// Seconds one unit call may run, for units whose manifest sets no `.timeout(...)`. A call
    /// past it fails with `timeout` (retried, then dead-lettered); its thread cannot be
    /// stopped and is counted as stuck.
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    call_timeout: f64,
    /// Timeouts of one unit after which it is quarantined: its signals are dead-lettered for
    /// it until a new version is swapped in or it is enabled again (0: never).
    #[arg(long, default_value_t = 5)]
    quarantine_after: u64,
    /// Unit calls stuck past their deadline beyond which the process exits (status 70), for a
    /// supervisor to restart it: the stuck threads cannot be stopped (0: no bound).
    #[arg(long, default_value_t = 64)]
    max_stuck_calls: usize,
    #[command(flatten)]
    isolate: crate::isolate_cli::IsolateArgs,
    /// Signals handled at once. The default lets two reads of 256 run side by side, so one
    /// is called while the other settles.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65536))]
    concurrency: u32,
    /// Dispatch policy for the kinds matching a pattern, overriding the units' manifests:
    /// `PATTERN=fan_out`, `PATTERN=first_success` or `PATTERN=top_k:N` (repeatable; the first
    /// matching pattern wins).
    #[arg(long = "dispatch", value_name = "PATTERN=POLICY", value_parser = parse_dispatch)]
    dispatch: Vec<(KindPattern, DispatchPolicy)>,
    /// Probability that competing units are tried in a uniformly random order instead of the
    /// ranked one (exploration that never switches off).
    #[arg(long, default_value_t = 0.02, value_parser = parse_probability)]
    exploration: f64,
    /// How sharply the ranker samples each unit's posterior under top-k: Beta(c·a, c·b), the
    /// same mean with 1/c of the variance (1: plain Thompson sampling; more settles sooner,
    /// explores less).
    #[arg(long, default_value_t = 4.0, value_parser = parse_concentration)]
    concentration: f64,
    /// The same under first-success, where the fallbacks explore (the default orders units by
    /// their posterior means).
    #[arg(long, default_value_t = 1000.0, value_parser = parse_concentration)]
    first_success_concentration: f64,
    /// Nearest other signal shapes of the same kind whose evidence a shape borrows, by the
    /// similarity of their vectors, from its first signal on (0: each shape is ranked from its
    /// own outcomes and memory's alone).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=64))]
    share_neighbours: u32,
    /// JSON file of unit configuration: {"UNIT-NAME": {...}, ...}. Each unit's constructor gets
    /// its section (checked against the config schema in its manifest, if it has one). The
    /// file is watched: saving it reloads the units whose sections changed.
    #[arg(long, env = "SWARM_UNIT_CONFIG")]
    unit_config: Option<PathBuf>,
    /// Seconds a SIGTERM or Ctrl-C waits for running signals to finish and settle; what has
    /// not settled by then stays pending and is delivered again later.
    #[arg(long, default_value_t = 30.0)]
    shutdown_timeout: f64,
    /// Consecutive failures that open a unit's circuit breaker (0: never).
    #[arg(long, default_value_t = 20)]
    breaker_failures: u32,
    /// Where executions are remembered: PostgreSQL + pgvector with --postgres, else in this
    /// process only.
    #[command(flatten)]
    memory: crate::memory_cli::MemoryArgs,
    #[command(flatten)]
    record: crate::recording_cli::RecordArgs,
    #[command(flatten)]
    http: crate::serve_cli::HttpArgs,
    #[command(flatten)]
    host: crate::host_cli::HostArgs,
    #[command(flatten)]
    telemetry: crate::telemetry_cli::TelemetryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(crate) up: UpArgs,
    /// The workspace whose unit crates are built and watched (default: the nearest one above
    /// the current directory).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Build the units with the release profile (default: the dev profile, quicker to build).
    #[arg(long)]
    release: bool,
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let workspace = match args.workspace {
        Some(dir) => dir,
        None => crate::new_cli::find_workspace(
            &std::env::current_dir().context("no current directory")?,
        )?,
    };
    std::fs::create_dir_all(&args.up.units.dir)
        .with_context(|| format!("cannot create {}", args.up.units.dir.display()))?;
    let dev = crate::dev_cli::DevLoop::new(workspace, args.up.units.dir.clone(), args.release)?;
    dev.build_all().await?;
    let mut up_args = args.up;
    up_args.no_watch = false;
    up(up_args, Some(dev)).await
}

/// What `swarm up` runs with, resolved from its arguments and checked: whatever can be refused
/// is refused here, before anything starts.
struct UpPlan {
    config: ReactorConfig,
    /// Where the reactor copies libraries; removed when the plan is dropped.
    _private: tempfile::TempDir,
    shutdown_timeout: Duration,
    inspector: Option<swarm_inspector::InspectorConfig>,
    /// The whole feed file, read before the start so a bad line refuses the run, not half of it.
    feed: Vec<Signal>,
}

impl UpPlan {
    fn resolve(args: &UpArgs) -> anyhow::Result<Self> {
        check_dir(&args.units.dir)?;
        if !(args.claim_idle.is_finite() && args.claim_idle >= 0.01) {
            bail!("--claim-idle must be at least 0.01 seconds");
        }
        if !(args.shutdown_timeout.is_finite() && args.shutdown_timeout >= 0.0) {
            bail!("--shutdown-timeout must be a number of seconds, 0 or more");
        }
        let private = private_dir()?;
        let mut config = ReactorConfig::new(args.units.dir.clone(), private.path().to_owned());
        config.trust = args.units.policy()?;
        config.watch = !args.no_watch;
        config.consumer = args.consumer.clone().unwrap_or_else(hostname);
        config.claim_idle = Duration::from_secs_f64(args.claim_idle);
        if !(args.dead_letter_days.is_finite() && args.dead_letter_days >= 0.0) {
            bail!("--dead-letter-days must be a number of days, 0 or more");
        }
        config.dead_letter_max = (args.dead_letter_max > 0).then_some(args.dead_letter_max);
        config.dead_letter_max_age = (args.dead_letter_days > 0.0)
            .then(|| Duration::from_secs_f64(args.dead_letter_days * 86_400.0));
        if args.lease_ttl < 0.3 {
            bail!("--lease-ttl must be at least 0.3 seconds");
        }
        config.lease_ttl = Duration::from_secs_f64(args.lease_ttl);
        if let Some(path) = &args.unit_config {
            config.unit_config = crate::unit_config_cli::read(path)?;
        }
        config.max_attempts = args.max_attempts;
        config.max_deliveries = args.max_deliveries;
        config.call_timeout = Duration::from_secs_f64(args.call_timeout);
        config.quarantine_after = args.quarantine_after;
        config.max_stuck_calls = args.max_stuck_calls;
        config.isolation = args.isolate.isolation()?;
        config.concurrency = args.concurrency as usize;
        config.dispatch.clone_from(&args.dispatch);
        config.ranker.exploration = args.exploration;
        config.ranker.concentration = args.concentration;
        config.ranker.first_success_concentration = args.first_success_concentration;
        config.ranker.share_neighbours = args.share_neighbours as usize;
        config.ranker.breaker.failures = args.breaker_failures;
        config.host = args.host.config()?;
        let inspector = args.http.config(&config.stream, &config.group)?;
        Ok(Self {
            config,
            _private: private,
            shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
            inspector,
            feed: read_feed(args.feed.as_deref())?,
        })
    }
}

/// The mesh, memory and audit log `swarm up` runs on, as its arguments name them.
struct Backing {
    mesh: Arc<dyn Mesh>,
    memory: Arc<dyn Memory>,
    audit: Arc<dyn AuditLog>,
    /// Set with `--postgres`: closed (spool flushed) after the reactor stops.
    recording: Option<crate::recording_cli::Recording>,
}

impl Backing {
    async fn connect(args: &UpArgs) -> anyhow::Result<Self> {
        let mesh: Arc<dyn Mesh> = match args.mesh.redis().await? {
            Some(redis) => redis,
            None => Arc::new(InProcMesh::new()),
        };
        let recording = match &args.memory.database_url {
            Some(_) => {
                Some(crate::recording_cli::Recording::start(&args.memory, &args.record).await?)
            }
            None => None,
        };
        let (memory, audit): (Arc<dyn Memory>, Arc<dyn AuditLog>) = match &recording {
            Some(recording) => (
                Arc::clone(&recording.writer) as Arc<dyn Memory>,
                Arc::clone(&recording.audit),
            ),
            None => (
                Arc::new(InProcMemory::bounded(100_000)),
                Arc::new(InProcAudit::new()),
            ),
        };
        Ok(Self {
            mesh,
            memory,
            audit,
            recording,
        })
    }

    /// Where it runs, in words.
    fn describe(&self, args: &UpArgs) -> String {
        let mesh = args.mesh.redis_url.as_deref().map_or_else(
            || "the in-process mesh".to_owned(),
            |url| format!("Redis {url}"),
        );
        let memory = if self.recording.is_some() {
            "memory in PostgreSQL"
        } else {
            "memory in this process"
        };
        format!("{mesh} and {memory}")
    }
}

/// One line per refused file and per loaded unit, on stderr.
fn print_loaded(report: &swarm_reactor::LoadReport, registry: &Registry) {
    for (path, error) in &report.failures {
        eprintln!("refused {}: {error}", path.display());
    }
    for unit in registry.status() {
        let subscribes: Vec<&str> = unit.subscribes.iter().map(|p| p.as_str()).collect();
        eprintln!(
            "loaded {} {} (generation {}) on {}",
            unit.name,
            unit.version,
            unit.generation,
            subscribes.join(", ")
        );
    }
}

pub(crate) async fn up(
    args: UpArgs,
    dev: Option<crate::dev_cli::DevLoop>,
) -> anyhow::Result<ExitCode> {
    let mut plan = UpPlan::resolve(&args)?;
    let metrics = swarm_inspector::install_metrics_recorder()
        .context("cannot install the metrics recorder")?;
    // Listen before anything starts: a SIGTERM while the reactor is starting (it may already
    // be running signals) then stops it cleanly instead of killing it.
    let stop_signals = StopSignals::listen()?;
    let backing = Backing::connect(&args).await?;
    let tracing = args.telemetry.start(&plan.config.consumer)?;
    plan.config.telemetry = tracing.as_ref().map(|t| t.telemetry.clone());
    // What the inspector and the feed publish through: traced when tracing is on.
    let publish = traced(
        Arc::clone(&backing.mesh) as Arc<dyn Publish>,
        plan.config.telemetry.as_ref(),
    );
    let stream = plan.config.stream.clone();
    let partitions = backing.mesh.partitions(&stream, args.partitions).await?;
    if let Some(asked) = args.partitions.filter(|&asked| asked != partitions) {
        bail!(
            "the stream `{stream}` has {partitions} partitions, fixed when it was created; \
             --partitions {asked} cannot change that (leave it out to use the stream's count)"
        );
    }
    plan.config.partitions = partitions;
    if let Some(inspector) = plan.inspector.as_mut() {
        inspector.partitions = partitions;
    }
    let (reactor, report) = Reactor::start_audited(
        plan.config.clone(),
        Arc::clone(&backing.mesh),
        Arc::clone(&backing.memory),
        Arc::clone(&backing.audit),
    )
    .await?;
    let inspector = match plan.inspector {
        Some(config) => Some(
            crate::serve_cli::start(
                config,
                reactor.handle(),
                Arc::clone(&backing.mesh),
                Arc::clone(&publish),
                Arc::clone(&backing.memory),
                metrics,
            )
            .await?,
        ),
        None => None,
    };
    // Saving the unit config file reconfigures the units whose sections changed.
    let _config_watch = args
        .unit_config
        .as_ref()
        .filter(|_| !args.no_watch)
        .map(|path| crate::unit_config_cli::watch(path.clone(), Arc::clone(reactor.registry())))
        .transpose()?;
    print_loaded(&report, reactor.registry());
    let from_stdin = args.feed.as_deref().is_some_and(|p| p.as_os_str() == "-");
    publish_feed(&publish, stream, plan.feed, from_stdin).await?;
    if let Some(tracing) = &tracing {
        eprintln!("traces to {}", tracing.endpoint);
    }
    eprintln!(
        "reactor up on {} with {} (Ctrl-C to stop)",
        args.units.dir.display(),
        backing.describe(&args)
    );
    let dev = dev.map(|dev| dev.spawn(reactor.handle()));
    let fatal = tokio::select! {
        () = stop_signals.wait() => None,
        why = reactor.fatal() => Some(why),
    };
    if let Some(why) = &fatal {
        eprintln!("error: {why}; exiting for a supervisor to restart the process");
    }
    if let Some(dev) = dev {
        dev.abort();
    }
    if let Some(inspector) = inspector {
        inspector.stop().await;
    }
    stop_reactor(reactor, plan.shutdown_timeout).await;
    if let Some(recording) = backing.recording {
        recording.close().await;
    }
    if let Some(tracing) = tracing {
        tracing.shutdown().await;
    }
    Ok(if fatal.is_some() {
        ExitCode::from(EXIT_STUCK)
    } else {
        ExitCode::SUCCESS
    })
}

/// Stops `reactor`, waiting up to `timeout` for the signals it runs; says what it left.
async fn stop_reactor(reactor: Reactor, timeout: Duration) {
    eprintln!("stopping: no new signals are read; waiting for the running ones to settle");
    if !reactor.stop_within(timeout).await {
        eprintln!(
            "signals still running after {} s stay pending and will be delivered again",
            timeout.as_secs_f64()
        );
    }
}

/// Exit status of `swarm up` when too many unit calls are stuck past their deadline
/// (EX_SOFTWARE).
const EXIT_STUCK: u8 = 70;

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment this is made: one that arrives
/// before [`StopSignals::wait`] is kept, not acted on by the default handler.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
        })
    }

    /// Waits for either.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
