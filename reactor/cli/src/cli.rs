//! Command-line parsing and the subcommands. The only place that reads arguments, the
//! environment and files; it hands the library typed configuration.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use swarm_memory::{AuditLog, InProcAudit, InProcMemory, Memory};
use swarm_mesh::{InProcMesh, Mesh, RedisMesh, RedisMeshConfig, dead_letter_stream};
use swarm_reactor::trust::{TrustFile, TrustPolicy};
use swarm_reactor::{Reactor, ReactorConfig, Registry};
use swarm_schemas::{DispatchPolicy, KindPattern, UnitStatus};
use swarm_schemas::{Outcome, Signal, validate_kind};

/// swarm: units react to typed signals; the reactor loads and hot-swaps them.
#[derive(Debug, Parser)]
#[command(name = "swarm", version)]
pub(crate) struct Cli {
    /// Log filter (tracing syntax; default `info` for `up`, `warn` otherwise); RUST_LOG
    /// overrides it.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reactor on a units directory until interrupted.
    Up(Box<UpArgs>),
    /// Run the reactor like `up`, and rebuild and swap in each unit crate of the workspace
    /// when its source is saved.
    Dev(Box<DevArgs>),
    /// Emit one signal through the units and print what happened.
    Emit(EmitArgs),
    /// List the units a directory holds and whether they load.
    Units(UnitsArgs),
    /// Search and summarise the executions remembered in PostgreSQL.
    Memory(crate::memory_cli::MemoryCommand),
    /// Why an execution's unit was chosen: its neighbours in memory, their outcomes, the scores.
    Explain(crate::memory_cli::ExplainArgs),
    /// Check what `swarm up` needs: configuration, units, Redis, PostgreSQL + pgvector, the
    /// model, the inspector's address. Exits 1 if anything is wrong.
    Doctor(Box<crate::doctor_cli::DoctorArgs>),
    /// Create something new: `swarm new unit NAME`.
    #[command(subcommand)]
    New(crate::new_cli::NewCommand),
    /// The trust file: which unit libraries may load (`swarm up --trust FILE`).
    #[command(subcommand)]
    Trust(crate::trust_cli::TrustCommand),
    /// The audit trail of a running swarm: loads, swaps, refusals, enables and disables,
    /// quarantines, trust changes and admin calls — who, from where, when.
    Audit(crate::audit_cli::AuditArgs),
}

#[derive(Debug, Args)]
pub(crate) struct UnitsDir {
    /// Directory of unit libraries.
    #[arg(long = "units", env = "SWARM_UNITS_DIR", default_value = "units")]
    pub(crate) dir: PathBuf,
    /// Load only libraries whose SHA-256 digest is in this file (one `<digest>  <name>` line
    /// each, as `sha256sum` prints; add with `swarm trust add LIB`). Read again at every load.
    #[arg(long = "trust", env = "SWARM_TRUST_FILE", value_name = "FILE")]
    pub(crate) trust: Option<PathBuf>,
    /// Load from a units directory or library that another user owns or that group or others
    /// can write, with a warning instead of a refusal. Anyone who can write there can run code
    /// in the reactor.
    #[arg(long)]
    pub(crate) insecure_units_dir: bool,
}

impl UnitsDir {
    /// What libraries must pass before they are opened; the trust file must be readable.
    pub(crate) fn policy(&self) -> anyhow::Result<TrustPolicy> {
        if let Some(file) = &self.trust {
            TrustFile::read(file)?;
        }
        if self.insecure_units_dir {
            tracing::warn!(
                dir = %self.dir.display(),
                "--insecure-units-dir: libraries load even where other users can write them"
            );
        }
        Ok(TrustPolicy {
            trust_file: self.trust.clone(),
            insecure_units_dir: self.insecure_units_dir,
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct MeshArgs {
    /// Redis URL of a shared mesh (`redis://host:port/db`); without it the mesh is in-process.
    #[arg(long = "redis", env = "SWARM_REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// Hash tag shared by every Redis key of this mesh.
    #[arg(long, env = "SWARM_REDIS_PREFIX", default_value = "swarm")]
    redis_prefix: String,
}

impl MeshArgs {
    async fn redis(&self) -> anyhow::Result<Option<Arc<RedisMesh>>> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        let mut config = RedisMeshConfig::new(url.clone());
        config.key_prefix.clone_from(&self.redis_prefix);
        Ok(Some(Arc::new(RedisMesh::connect(config).await?)))
    }
}

/// This machine's name, for a default consumer name that stays the same across restarts.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "reactor".to_owned())
}

#[derive(Debug, Args)]
struct UpArgs {
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
    /// Signals handled at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
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
    /// How sharply the ranker samples each unit's posterior: Beta(c·a, c·b), the same mean
    /// with 1/c of the variance (1: plain Thompson sampling; more settles sooner, explores
    /// less).
    #[arg(long, default_value_t = 4.0, value_parser = parse_concentration)]
    concentration: f64,
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
    record: crate::memory_cli::RecordArgs,
    #[command(flatten)]
    http: crate::serve_cli::HttpArgs,
    #[command(flatten)]
    host: crate::host_cli::HostArgs,
}

#[derive(Debug, Args)]
struct DevArgs {
    #[command(flatten)]
    up: UpArgs,
    /// The workspace whose unit crates are built and watched (default: the nearest one above
    /// the current directory).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Build the units with the release profile (default: the dev profile, quicker to build).
    #[arg(long)]
    release: bool,
}

#[derive(Debug, Args)]
struct EmitArgs {
    /// Signal kind, such as `order.placed`.
    kind: String,
    /// Payload as JSON.
    payload: String,
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
}

#[derive(Debug, Args)]
struct UnitsArgs {
    #[command(flatten)]
    units: UnitsDir,
    /// Ask the `swarm up` serving at this URL (`http://127.0.0.1:7077`) for its units as they
    /// run — quarantined, with calls stuck past their deadline — instead of loading the units
    /// directory here.
    #[arg(long, env = "SWARM_SERVER")]
    server: Option<String>,
    /// API token (scope `read`) for `--server`.
    #[arg(long, env = "SWARM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Cli {
    pub(crate) fn log_filter(&self) -> &str {
        match (&self.log, &self.command) {
            (Some(filter), _) => filter,
            (None, Command::Up(_)) => "info",
            (None, _) => "warn",
        }
    }
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up(*args, None).await,
        Command::Dev(args) => dev(*args).await,
        Command::Emit(args) => emit(args).await,
        Command::Units(args) => units(args).await,
        Command::Memory(args) => crate::memory_cli::run(args).await,
        Command::Explain(args) => crate::memory_cli::explain(args).await,
        Command::Audit(args) => crate::audit_cli::run(args).await,
        Command::New(command) => crate::new_cli::run(command),
        Command::Doctor(args) => crate::doctor_cli::run(*args).await,
        Command::Trust(command) => crate::trust_cli::run(command),
    }
}

fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!(
            "units directory {} does not exist (pass --units DIR or set SWARM_UNITS_DIR)",
            dir.display()
        );
    }
    Ok(())
}

fn private_dir() -> anyhow::Result<tempfile::TempDir> {
    swarm_reactor::private_dir().context("cannot create a private directory for unit copies")
}

/// Parses one `{"kind": ..., "payload": ...}` line into a root signal.
fn parse_feed_line(line: &str) -> anyhow::Result<Signal> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        kind: String,
        #[serde(default)]
        payload: serde_json::Value,
    }
    let line: Line =
        serde_json::from_str(line).context("expected {\"kind\": \"...\", \"payload\": {...}}")?;
    validate_kind(&line.kind).with_context(|| format!("kind `{}`", line.kind))?;
    Ok(Signal::new(line.kind, line.payload))
}

/// `PATTERN=POLICY` of `--dispatch`.
fn parse_dispatch(text: &str) -> Result<(KindPattern, DispatchPolicy), String> {
    let (pattern, policy) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not PATTERN=POLICY"))?;
    let pattern = KindPattern::parse(pattern).map_err(|e| format!("pattern `{pattern}` {e}"))?;
    let policy = match policy.split_once(':') {
        None if policy == "fan_out" => DispatchPolicy::FanOut,
        None if policy == "first_success" => DispatchPolicy::FirstSuccess,
        Some(("top_k", k)) => match k.parse::<u32>() {
            Ok(k) if k >= 1 => DispatchPolicy::TopK { k },
            _ => return Err(format!("top_k needs a count of at least 1, not `{k}`")),
        },
        _ => {
            return Err(format!(
                "unknown policy `{policy}`: use fan_out, first_success or top_k:N"
            ));
        }
    };
    Ok((pattern, policy))
}

/// A duration in seconds, more than 0 and at most a day.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "`{text}` is not a number of seconds above 0 (at most 86400)"
        )),
    }
}

fn parse_concentration(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(format!("`{text}` is not a positive number")),
    }
}

fn parse_probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a probability between 0 and 1")),
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
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

/// The signals of a feed file (none for `-`, which is read as the reactor runs).
fn read_feed(path: Option<&Path>) -> anyhow::Result<Vec<Signal>> {
    let Some(path) = path.filter(|p| p.as_os_str() != "-") else {
        return Ok(Vec::new());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_feed_line(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

/// Publishes each line of standard input as it comes, from a thread of its own; a bad line is
/// reported and skipped.
fn feed_stdin(mesh: Arc<dyn Mesh>, stream: String) {
    // Taken here: the reading thread is not the runtime's and has no current handle.
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match parse_feed_line(&line) {
                Ok(signal) => {
                    if let Err(error) = handle.block_on(mesh.publish(&stream, &signal)) {
                        eprintln!("stdin:{}: not published: {error}", i + 1);
                    }
                }
                Err(error) => eprintln!("stdin:{}: {error:#}", i + 1),
            }
        }
    });
}

/// The mesh, memory and audit log `swarm up` runs on, as its arguments name them.
struct Backing {
    mesh: Arc<dyn Mesh>,
    memory: Arc<dyn Memory>,
    audit: Arc<dyn AuditLog>,
    /// Set with `--postgres`: closed (spool flushed) after the reactor stops.
    recording: Option<crate::memory_cli::Recording>,
}

impl Backing {
    async fn connect(args: &UpArgs) -> anyhow::Result<Self> {
        let mesh: Arc<dyn Mesh> = match args.mesh.redis().await? {
            Some(redis) => redis,
            None => Arc::new(InProcMesh::new()),
        };
        let recording = match &args.memory.database_url {
            Some(_) => Some(crate::memory_cli::Recording::start(&args.memory, &args.record).await?),
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

async fn up(args: UpArgs, dev: Option<crate::dev_cli::DevLoop>) -> anyhow::Result<ExitCode> {
    let plan = UpPlan::resolve(&args)?;
    let metrics = swarm_inspector::install_metrics_recorder()
        .context("cannot install the metrics recorder")?;
    // Listen before anything starts: a SIGTERM while the reactor is starting (it may already
    // be running signals) then stops it cleanly instead of killing it.
    let stop_signals = StopSignals::listen()?;
    let backing = Backing::connect(&args).await?;
    let stream = plan.config.stream.clone();
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
    for signal in plan.feed {
        backing.mesh.publish(&stream, &signal).await?;
    }
    if args.feed.as_deref().is_some_and(|p| p.as_os_str() == "-") {
        feed_stdin(Arc::clone(&backing.mesh), stream);
    }
    eprintln!(
        "reactor up on {} with {} (Ctrl-C to stop)",
        args.units.dir.display(),
        backing.describe(&args)
    );
    let dev = dev.map(|dev| {
        let handle = reactor.handle();
        tokio::spawn(async move {
            if let Err(error) = dev.run(handle).await {
                eprintln!("error: the dev loop stopped: {error:#}");
            }
        })
    });
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

async fn emit(args: EmitArgs) -> anyhow::Result<ExitCode> {
    validate_kind(&args.kind).with_context(|| format!("kind `{}` is invalid", args.kind))?;
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).context("payload is not valid JSON")?;
    if let Some(redis) = args.mesh.redis().await? {
        let signal = Signal::new(args.kind, payload);
        let stream = ReactorConfig::new(PathBuf::new(), PathBuf::new()).stream;
        let id = redis.publish(&stream, &signal).await?;
        println!(
            "emitted {} {} as entry {id} of {}",
            signal.kind,
            signal.id,
            redis.key(&stream)
        );
        return Ok(ExitCode::SUCCESS);
    }
    check_dir(&args.units.dir)?;
    let private = private_dir()?;
    let mut config = ReactorConfig::new(args.units.dir.clone(), private.path().to_owned());
    config.trust = args.units.policy()?;
    config.watch = false;
    config.block = Duration::from_millis(20);
    config.host = args.host.config()?;
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
    let signal = Signal::new(args.kind, payload);
    mesh.publish(&stream, &signal).await?;
    println!("emitted {} {}", signal.kind, signal.id);

    // The swarm has settled when nothing is pending or waiting in the group.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
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
                args.timeout,
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
async fn print_run(memory: &InProcMemory, mesh: &dyn Mesh, stream: &str) -> anyhow::Result<()> {
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

/// The units of the `swarm up` serving at `server`, as they run.
async fn served_units(server: &str, token: Option<&str>) -> anyhow::Result<Vec<UnitStatus>> {
    crate::api_client::get_json(server, "/v1/units", &[], token, "a list of units").await
}

async fn units(args: UnitsArgs) -> anyhow::Result<ExitCode> {
    let (units, failures) = match &args.server {
        Some(server) => (
            served_units(server, args.token.as_deref()).await?,
            Vec::new(),
        ),
        None => {
            check_dir(&args.units.dir)?;
            let private = private_dir()?;
            let policy = args.units.policy()?;
            if let Err(problem) = policy.check_owner(&args.units.dir) {
                bail!("refusing the units directory: {problem}");
            }
            let registry =
                Registry::new(private.path().to_owned(), Default::default()).with_trust(policy);
            registry
                .load_dir(&args.units.dir)
                .with_context(|| format!("cannot read {}", args.units.dir.display()))?;
            (registry.status(), registry.failures())
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "units": units, "refused": failures })
        );
    } else {
        println!(
            "{:<24} {:<10} {:>4} {:<9} SUBSCRIBES",
            "NAME", "VERSION", "GEN", "STATE"
        );
        for unit in &units {
            let subscribes: Vec<&str> = unit.subscribes.iter().map(|p| p.as_str()).collect();
            println!(
                "{:<24} {:<10} {:>4} {:<9} {}",
                unit.name,
                unit.version,
                unit.generation,
                unit.state,
                subscribes.join(", ")
            );
            if unit.timeouts > 0 || unit.stuck_calls > 0 {
                println!(
                    "  {} calls ran past their deadline; {} still stuck (their threads cannot be stopped)",
                    unit.timeouts, unit.stuck_calls
                );
            }
        }
        for failure in &failures {
            println!("refused {}: {}", failure.file.display(), failure.error);
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
