//! Helpers for swarm's system tests: building real unit libraries with cargo, deploying them
//! into a units directory the way a deployer should (write `.tmp`, then `rename`), running a
//! reactor on the in-process mesh and memory, running `swarm up` processes on a Redis mesh and
//! Redis servers of a test's own, and waiting for conditions.

pub mod observed;
pub mod partitioned;
mod process;

pub use process::{
    KillOnDrop, OwnPostgres, OwnRedis, ReactorProcess, ReactorSpec, free_port, redis_url, sigterm,
    stop_cleanly,
};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use swarm_memory::InProcMemory;
use swarm_mesh::{InProcMesh, Mesh, RedisMesh, RedisMeshConfig};
use swarm_reactor::{LoadReport, Reactor, ReactorConfig};

/// A mesh of a fresh key prefix (a hash tag of its own) on the project's Redis, and the prefix:
/// a test's own streams, apart from every other test's.
pub async fn fresh_mesh() -> (String, Arc<RedisMesh>) {
    let prefix = format!("test-{}", uuid::Uuid::now_v7());
    let mut config = RedisMeshConfig::new(redis_url());
    config.key_prefix.clone_from(&prefix);
    let mesh = RedisMesh::connect(config)
        .await
        .expect("the tests need Redis: ops/start-redis");
    (prefix, Arc::new(mesh))
}

/// The example units (order flow and foraging), as `ops/deploy-units` names them.
pub const EXAMPLE_UNITS: [&str; 6] = [
    "order-validate",
    "order-price",
    "fulfil-express",
    "fulfil-standard",
    "forager",
    "scout",
];

/// Deploys the example units into `units`; returns what `swarm up` is given for them, as
/// `ops/run-example` gives it: the order payload schemas and the foragers' marks grants, and,
/// with `memory` (a database URL), memory in PostgreSQL with the model and a spool in `work`.
pub fn example_reactor_args(units: &Path, work: &Path, memory: Option<&str>) -> Vec<String> {
    std::fs::create_dir_all(units).expect("units dir");
    for unit in EXAMPLE_UNITS {
        deploy(units, unit, &format!("{unit}.so"));
    }
    let mut args: Vec<String> = vec![
        "--payload-schemas".into(),
        workspace_root()
            .join("examples/order-flow/schemas")
            .display()
            .to_string(),
        "--grant".into(),
        "forager=marks".into(),
        "--grant".into(),
        "scout=marks".into(),
    ];
    if let Some(db) = memory {
        args.extend([
            "--postgres".into(),
            db.to_owned(),
            "--models".into(),
            swarm_memory::testkit::models_dir().display().to_string(),
            "--spool".into(),
            work.join("spool").display().to_string(),
        ]);
    }
    args
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
}

/// Every unit package the tests use: the fixtures and the example swarm.
pub const UNIT_PACKAGES: &[&str] = &[
    "fixture-counter-v1",
    "fixture-counter-v2",
    "fixture-counter-ctor-panic",
    "fixture-counter-bad-manifest",
    "fixture-wrong-abi",
    "fixture-flaky",
    "fixture-cycle-a",
    "fixture-cycle-b",
    "fixture-needs-ghost",
    "fixture-noop",
    "fixture-picky-a",
    "fixture-picky-b",
    "fixture-tally-v1",
    "fixture-tally-v2",
    "fixture-legacy-abi",
    "fixture-probe",
    "fixture-hang",
    "fixture-crash",
    "forager",
    "scout",
    ORDER_FLOW[0],
    ORDER_FLOW[1],
    ORDER_FLOW[2],
    ORDER_FLOW[3],
];

/// Runs `cargo build --release` with `args` into a target directory of the tests' own, so it
/// never waits on the build lock of the test run itself. Returns the release output directory.
fn cargo_build(args: &[&str]) -> PathBuf {
    let root = workspace_root();
    let target = cargo_target_for_units();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--target-dir"])
        .arg(&target)
        .args(args)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build {args:?} failed: {status}");
    target.join("release")
}

/// The target directory unit builds share (the tests' own, apart from the test run's).
pub fn cargo_target_for_units() -> PathBuf {
    workspace_root().join("target").join("unit-builds")
}

/// A workspace like a unit author's: the repository's SDK as a path dependency and
/// serde_json, no members yet, the repository's lock file (the same dependency versions).
pub fn user_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("workspace dir");
    let sdk = workspace_root().join("units/sdk");
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = []\n\n[workspace.dependencies]\nserde_json = \"1\"\nswarm-sdk = {{ path = {:?} }}\n",
            sdk.display().to_string()
        ),
    )
    .expect("write Cargo.toml");
    std::fs::copy(
        workspace_root().join("Cargo.lock"),
        dir.path().join("Cargo.lock"),
    )
    .expect("copy Cargo.lock");
    dir
}

/// `swarm new unit NAME --subscribes TAKES --emits EMITS` in `workspace`; panics with its
/// error if it fails.
pub fn new_unit(workspace: &Path, name: &str, takes: &str, emits: &str) {
    let made = Command::new(swarm_binary())
        .args(["new", "unit", name, "--subscribes", takes, "--emits", emits])
        .arg("--workspace")
        .arg(workspace)
        .output()
        .expect("swarm new runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// `cargo ARGS` in a unit author's `workspace`, sharing compiled dependencies with the tests'
/// other unit builds.
pub fn cargo_in(workspace: &Path, args: &[&str]) -> std::process::Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(cargo)
        .current_dir(workspace)
        .args(args)
        .env("CARGO_TARGET_DIR", cargo_target_for_units())
        .output()
        .expect("cargo runs")
}

/// Builds every unit package once per test process, in release mode. Returns the directory
/// holding the built `lib*.so` files.
pub fn built_units() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let args: Vec<&str> = UNIT_PACKAGES.iter().flat_map(|p| ["-p", p]).collect();
        cargo_build(&args)
    })
}

/// The `swarm` binary: `SWARM_BIN` when set (`ops/test` builds it before the tests run), else
/// built once per test process in release mode.
pub fn swarm_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("SWARM_BIN") {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "SWARM_BIN={} is not a file", bin.display());
            bin
        }
        // With the unit worker beside it, as a release build has it.
        None => cargo_build(&[
            "-p",
            "swarm-cli",
            "--bin",
            "swarm",
            "--bin",
            swarm_reactor::isolate::WORKER_PROGRAM,
        ])
        .join("swarm"),
    })
}

/// The unit worker program (`swarm-unit-worker`) for isolated units: the one beside the
/// `swarm` binary (the test build makes both), else built once per test process.
pub fn worker_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let beside = swarm_binary().with_file_name(swarm_reactor::isolate::WORKER_PROGRAM);
        if beside.is_file() {
            return beside;
        }
        cargo_build(&["-p", "swarm-cli", "--bin", "swarm-unit-worker"])
            .join(swarm_reactor::isolate::WORKER_PROGRAM)
    })
}

/// The digest `sha256sum` prints for `file`: a reference computed outside the project.
pub fn sha256sum(file: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("sha256sum runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_owned()
}

/// The built library of `package`.
pub fn library(package: &str) -> PathBuf {
    built_units().join(format!(
        "lib{}{}",
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ))
}

/// Deploys `bytes` as `name` in `dir`: written to `name.tmp`, then renamed over `name`.
/// Returns the moment of the rename.
pub fn deploy_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Instant {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write the temporary file");
    // Whatever the umask: the reactor refuses a library that group or others can write.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let at = Instant::now();
    std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
    at
}

/// The example order flow's units, in the order a signal passes through them.
pub const ORDER_FLOW: [&str; 4] = [
    "order-validate",
    "order-price",
    "fulfil-express",
    "fulfil-standard",
];

/// Deploys the example order flow's units into `dir`, each as `<package>.so`.
pub fn deploy_order_flow(dir: &Path) {
    for unit in ORDER_FLOW {
        deploy(dir, unit, &format!("{unit}.so"));
    }
}

/// Deploys the built library of `package` as `name` in `dir`; returns the moment of the rename.
pub fn deploy(dir: &Path, package: &str, name: &str) -> Instant {
    let bytes = std::fs::read(library(package)).expect("read the built library");
    deploy_bytes(dir, name, &bytes)
}

/// Polls `check` every 2 ms until it returns `Some`, or `timeout` passes.
pub async fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Publishes `signal` on `stream` and waits up to `timeout` for its reply: the first other
/// signal of its correlation on that stream. `None` if none came.
pub async fn request(
    mesh: &dyn Mesh,
    stream: &str,
    signal: &swarm_schemas::Signal,
    timeout: Duration,
) -> Option<swarm_schemas::Signal> {
    mesh.publish(stream, signal).await.expect("publish");
    wait_for_async(timeout, async || {
        let entries = mesh.range(stream, None, usize::MAX).await.ok()?;
        entries
            .into_iter()
            .filter_map(|e| e.body.ok())
            .find(|s| s.correlation_id == signal.correlation_id && s.id != signal.id)
    })
    .await
}

/// What a process's `/proc/<pid>/status` says of it: memory, now and at its peak, in MB.
#[derive(Debug, Clone, Copy)]
pub struct ProcStatus {
    /// Resident memory (`VmRSS`).
    pub rss_mb: f64,
    /// The most resident memory so far (`VmHWM`).
    pub peak_mb: f64,
    /// Threads.
    pub threads: f64,
}

/// Reads `/proc/<pid>/status`; a field it cannot read is NaN.
pub fn proc_status(pid: u32) -> ProcStatus {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    ProcStatus {
        rss_mb: field("VmRSS:") / 1024.0,
        peak_mb: field("VmHWM:") / 1024.0,
        threads: field("Threads:"),
    }
}

/// Waits up to a minute for the inspector at `base` (`http://host:port`) to answer
/// `/v1/health`; panics if it never does.
pub async fn wait_serving(client: &reqwest::Client, base: &str) {
    let answered = wait_for_async(Duration::from_secs(60), async || {
        client.get(format!("{base}/v1/health")).send().await.ok()
    })
    .await;
    assert!(answered.is_some(), "swarm up did not serve on {base}");
}

/// Like [`wait_for`], for checks that need to await.
pub async fn wait_for_async<T>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A reactor on the in-process mesh (or the tests' Redis) and the in-process memory, over a
/// units directory of its own.
pub struct TestSwarm<M: Mesh = InProcMesh> {
    /// The units directory.
    pub units: tempfile::TempDir,
    /// Where the reactor copies libraries.
    pub private: tempfile::TempDir,
    /// The mesh.
    pub mesh: Arc<M>,
    /// The memory.
    pub memory: Arc<InProcMemory>,
    /// The reactor's configuration.
    pub config: ReactorConfig,
}

impl TestSwarm {
    /// An empty units directory and a configuration for tests: quick retries, nothing trimmed
    /// (tests read the whole stream), everything else as in production.
    pub fn new() -> Self {
        // Units are deployed by rename; on a disk-backed filesystem under write load the rename
        // itself can take hundreds of milliseconds (ext4 flushes a file's data when it is renamed
        // over another), which would be timed as swap latency. A memory-backed directory keeps
        // the deployer's filesystem out of what the swap tests measure.
        let units = swarm_reactor::private_dir().expect("units dir");
        let private = swarm_reactor::private_dir().expect("private dir");
        let mut config = ReactorConfig::new(units.path().to_owned(), private.path().to_owned());
        config.block = Duration::from_millis(50);
        config.retry_backoff = Duration::from_millis(1);
        config.trim_every = Duration::from_secs(3600);
        Self {
            units,
            private,
            mesh: Arc::new(InProcMesh::new()),
            memory: Arc::new(InProcMemory::new()),
            config,
        }
    }

    /// The same swarm on the tests' Redis, under a key prefix of its own.
    pub async fn on_redis(self) -> TestSwarm<RedisMesh> {
        let mut config = RedisMeshConfig::new(redis_url());
        config.key_prefix = format!("test-{}", uuid::Uuid::now_v7());
        let mesh = RedisMesh::connect(config)
            .await
            .expect("the tests need Redis: ops/start-redis");
        TestSwarm {
            units: self.units,
            private: self.private,
            mesh: Arc::new(mesh),
            memory: self.memory,
            config: self.config,
        }
    }
}

impl<M: Mesh + 'static> TestSwarm<M> {
    /// The same swarm with every unit run in a worker process of its own.
    pub fn isolated(mut self) -> Self {
        self.config.isolation.all = true;
        self.config.isolation.worker = Some(worker_binary().to_owned());
        self
    }

    /// Deploys a built package into the units directory.
    pub fn deploy(&self, package: &str, name: &str) -> Instant {
        deploy(self.units.path(), package, name)
    }

    /// Starts a reactor on this swarm.
    pub async fn start(&self) -> (Reactor, LoadReport) {
        Reactor::start(
            self.config.clone(),
            Arc::clone(&self.mesh) as Arc<dyn Mesh>,
            Arc::clone(&self.memory) as _,
        )
        .await
        .expect("reactor starts")
    }

    /// Publishes `signal` on the swarm's stream.
    pub async fn publish(&self, signal: &swarm_schemas::Signal) {
        self.mesh
            .publish(&self.config.stream, signal)
            .await
            .expect("publish");
    }

    /// Waits until the reactor's group has nothing pending or undelivered.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self
                .mesh
                .group_info(&self.config.stream, &self.config.group)
                .await;
            if info.is_ok_and(|i| i.pending == 0 && i.lag == 0) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The dead letters of the reactor's stream.
    pub async fn dead_letters(&self) -> Vec<swarm_schemas::DeadLetter> {
        self.signals(&swarm_mesh::dead_letter_stream(&self.config.stream))
            .await
            .into_iter()
            .map(|s| serde_json::from_value(s.payload).expect("a dead letter"))
            .collect()
    }

    /// Every signal on the stream.
    pub async fn signals(&self, stream: &str) -> Vec<swarm_schemas::Signal> {
        let entries = self
            .mesh
            .range(stream, None, usize::MAX)
            .await
            .expect("range");
        entries.into_iter().filter_map(|e| e.body.ok()).collect()
    }
}

impl Default for TestSwarm {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `redis-benchmark -q` against the tests' Redis with `args` (options, then the command)
/// and returns its requests per second.
pub fn redis_benchmark(args: &[&str]) -> Result<f64, String> {
    let url = process::redis_url();
    let host_port = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6390")
        .to_owned();
    let (host, port) = host_port.split_once(':').unwrap_or(("127.0.0.1", "6390"));
    let out = Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-q"])
        .args(args)
        .output()
        .map_err(|e| format!("could not run redis-benchmark: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last progress line ends in `…: 16625.11 requests per second, p50=…`; the command
    // before it may hold colons of its own.
    text.split(['\r', '\n'])
        .filter_map(|l| l.find(" requests per second").map(|at| &l[..at]))
        .next_back()
        .and_then(|l| l.split_whitespace().next_back())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("redis-benchmark printed no rate: {text}"))
}
