//! The reactor's side of an isolated unit: its worker process, started, called, restarted and
//! killed.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::{Condvar, Mutex, RwLock};
use swarm_abi::{EVENT_LOAD, STATUS_OK, Status};

use super::{WorkerLimits, wire};
use crate::host::HostCall;
use crate::loader::CallResult;

/// The status of a call whose worker died (or was killed) while it ran; the text says how.
/// Never returned by a unit: the ABI's statuses are small numbers.
pub(crate) const STATUS_CRASHED: Status = 0x5741_0001;

/// How long a new worker may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a worker asked to shut down gets before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How to start a unit's worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    /// The worker program.
    pub program: PathBuf,
    /// The library to load (the reactor's private copy).
    pub library: PathBuf,
    /// Where the worker's socket is made while it connects.
    pub socket_dir: PathBuf,
    /// Calls the worker runs at once (one socket each).
    pub channels: usize,
    /// Its resource limits.
    pub limits: WorkerLimits,
}

/// One running worker process and its sockets.
struct Process {
    child: Mutex<Child>,
    pid: u32,
    /// The call sockets not in use.
    free: Mutex<Vec<UnixStream>>,
    returned: Condvar,
    /// Set once it died or was killed; with why, if the reactor killed it.
    dead: AtomicBool,
    killed: Mutex<Option<String>>,
}

/// An isolated unit: its worker (started again when it dies) and what a restart needs.
pub(crate) struct Worker {
    spec: WorkerSpec,
    /// The worker running now (read without a lock: killing it never waits on a restart).
    process: ArcSwapOption<Process>,
    /// Held while a new worker is started.
    restarting: Mutex<()>,
    host: Arc<RwLock<Option<Arc<dyn HostCall>>>>,
    /// The manifest the library gave first: a restarted worker must give the same.
    manifest: Mutex<Option<Vec<u8>>>,
    /// The configuration the instance was created with.
    config: Mutex<Option<Vec<u8>>>,
    /// Whether its `on_load` succeeded: a restarted instance gets it again.
    hooked: AtomicBool,
    restarts: AtomicU64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("library", &self.spec.library)
            .field("restarts", &self.restarts.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(0);

/// Words for how a process ended.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                4 => " (SIGILL)",
                6 => " (SIGABRT: an abort, a failed allocation or a stack overflow)",
                7 => " (SIGBUS)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV: a segmentation fault)",
                24 => " (SIGXCPU: past its CPU time limit)",
                31 => " (SIGSYS)",
                _ => "",
            };
            format!("was killed by signal {signal}{name}")
        }
        (None, None) => "ended".to_owned(),
    }
}

impl Process {
    /// Starts a worker on `spec` and waits until it has connected every socket.
    fn start(
        spec: &WorkerSpec,
        host: &Arc<RwLock<Option<Arc<dyn HostCall>>>>,
    ) -> Result<Arc<Self>, String> {
        let socket = spec.socket_dir.join(format!(
            "worker-{}-{}.sock",
            std::process::id(),
            NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
        ));
        let listener = UnixListener::bind(&socket)
            .map_err(|e| format!("cannot make the worker's socket {}: {e}", socket.display()))?;
        let result = Self::spawn_and_accept(spec, &socket, &listener, host);
        let _ = std::fs::remove_file(&socket);
        result
    }

    fn spawn_and_accept(
        spec: &WorkerSpec,
        socket: &Path,
        listener: &UnixListener,
        host: &Arc<RwLock<Option<Arc<dyn HostCall>>>>,
    ) -> Result<Arc<Self>, String> {
        let mut child = spawn(spec, socket)?;
        let pid = child.id();
        let mut streams = match accept_all(listener, &mut child, spec.channels + 1) {
            Ok(streams) => streams,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(error);
            }
        };
        // The first socket carries the capability calls the unit makes outside any call (from
        // threads of its own); the others, one request at a time each.
        let background = streams.remove(0);
        let process = Arc::new(Self {
            child: Mutex::new(child),
            pid,
            free: Mutex::new(streams),
            returned: Condvar::new(),
            dead: AtomicBool::new(false),
            killed: Mutex::new(None),
        });
        let (host, weak) = (Arc::clone(host), Arc::downgrade(&process));
        std::thread::Builder::new()
            .name(format!("worker-{pid}-host"))
            .spawn(move || {
                serve_background(background, &host);
                if let Some(process) = weak.upgrade() {
                    process.mark_dead();
                }
            })
            .map_err(|e| format!("cannot start the worker's host thread: {e}"))?;
        Ok(process)
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    fn mark_dead(&self) {
        self.dead.store(true, Ordering::Release);
        self.returned.notify_all();
    }

    /// Kills it (SIGKILL), saying why to the calls it was running.
    fn kill(&self, why: &str) {
        self.killed.lock().get_or_insert_with(|| why.to_owned());
        self.mark_dead();
        let mut child = self.child.lock();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Why it died, for the calls it failed.
    fn death(&self) -> String {
        if let Some(why) = self.killed.lock().clone() {
            return format!("the unit's worker process was killed: {why}");
        }
        // Its sockets close as it exits, a moment before it can be reaped.
        let mut child = self.child.lock();
        for _ in 0..200 {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return format!("the unit's worker process {}", describe(status));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => break,
            }
        }
        "the unit's worker process stopped answering".to_owned()
    }

    /// A free call socket; waits while all are in use. `None` once it is dead.
    fn take(&self) -> Option<UnixStream> {
        let mut free = self.free.lock();
        loop {
            if self.is_dead() {
                return None;
            }
            if let Some(stream) = free.pop() {
                return Some(stream);
            }
            self.returned
                .wait_for(&mut free, Duration::from_millis(100));
        }
    }

    fn give_back(&self, stream: UnixStream) {
        self.free.lock().push(stream);
        self.returned.notify_one();
    }

    /// Sends one request and waits for its reply, serving the unit's capability calls
    /// meanwhile on this thread (so they count towards this call). `Err` when the worker died.
    fn request(
        &self,
        host: &RwLock<Option<Arc<dyn HostCall>>>,
        tag: u8,
        code: u32,
        body: &[u8],
    ) -> Result<CallResult, String> {
        let mut stream = self.take().ok_or_else(|| self.death())?;
        let answered = (|| -> std::io::Result<CallResult> {
            wire::write(&mut stream, tag, code, body)?;
            loop {
                let frame = wire::read(&mut stream)?;
                match frame.tag {
                    wire::REPLY => {
                        return Ok(CallResult {
                            status: frame.code,
                            bytes: frame.body,
                        });
                    }
                    wire::HOST_CALL => {
                        let (status, reply) = serve_host(host, frame.code, &frame.body);
                        wire::write(&mut stream, wire::HOST_REPLY, status, &reply)?;
                    }
                    other => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("unexpected frame {other} from the worker"),
                        ));
                    }
                }
            }
        })();
        match answered {
            Ok(result) => {
                self.give_back(stream);
                Ok(result)
            }
            Err(error) => {
                let killed_here = self.killed.lock().is_some();
                if !killed_here && error.kind() == std::io::ErrorKind::InvalidData {
                    // Not an exit: a protocol fault. The worker cannot be trusted any more.
                    self.kill(&format!("it broke the protocol: {error}"));
                }
                self.mark_dead();
                Err(self.death())
            }
        }
    }

    /// Asks it to unload the instance and exit; kills it if it does not in time.
    fn shut_down(&self) {
        if !self.is_dead() {
            let stream = self.free.lock().pop();
            if let Some(mut stream) = stream {
                let _ = stream.set_read_timeout(Some(SHUTDOWN_GRACE));
                if wire::write(&mut stream, wire::SHUTDOWN, 0, &[]).is_ok() {
                    let _ = wire::read(&mut stream);
                }
            }
        }
        self.mark_dead();
        let mut child = self.child.lock();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

/// Starts the worker program of `spec`, told to connect to `socket`.
fn spawn(spec: &WorkerSpec, socket: &Path) -> Result<Child, String> {
    let mut command = Command::new(&spec.program);
    command
        .arg("--socket")
        .arg(socket)
        .arg("--library")
        .arg(&spec.library)
        .arg("--channels")
        .arg(spec.channels.to_string());
    let limits = &spec.limits;
    for (flag, value) in [
        ("--address-space", limits.address_space),
        ("--cpu-seconds", limits.cpu_seconds),
        ("--open-files", limits.open_files),
    ] {
        if let Some(value) = value {
            command.arg(flag).arg(value.to_string());
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))
}

/// Accepts `count` connections on `listener` from `child` (connections from any other process
/// are dropped), within [`CONNECT_TIMEOUT`]; fails if the child exits first.
fn accept_all(
    listener: &UnixListener,
    child: &mut Child,
    count: usize,
) -> Result<Vec<UnixStream>, String> {
    let pid = child.id();
    let mut streams = Vec::with_capacity(count);
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while streams.len() < count {
        match listener.accept() {
            Ok((stream, _)) => {
                // Only the worker started here may connect.
                let peer = rustix::net::sockopt::socket_peercred(&stream)
                    .map_err(|e| format!("cannot check who connected: {e}"))?;
                if peer.pid.as_raw_nonzero().get() as u32 != pid {
                    continue;
                }
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                streams.push(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the worker {} before it connected",
                        describe(status)
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the worker did not connect within {CONNECT_TIMEOUT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("cannot accept the worker's socket: {e}")),
        }
    }
    Ok(streams)
}

/// Serves the capability calls the unit makes from threads of its own, until the worker's
/// background socket closes or breaks the protocol.
fn serve_background(mut stream: UnixStream, host: &RwLock<Option<Arc<dyn HostCall>>>) {
    while let Ok(frame) = wire::read(&mut stream) {
        if frame.tag != wire::HOST_CALL {
            break;
        }
        let (status, reply) = serve_host(host, frame.code, &frame.body);
        if wire::write(&mut stream, wire::HOST_REPLY, status, &reply).is_err() {
            break;
        }
    }
}

/// Runs one capability call of the unit with the host it is bound to.
fn serve_host(
    host: &RwLock<Option<Arc<dyn HostCall>>>,
    op: u32,
    request: &[u8],
) -> (Status, Vec<u8>) {
    let host = host.read().clone();
    match host {
        Some(host) => host.call(op, request),
        None => (
            swarm_abi::STATUS_DENIED,
            b"this unit has no host capabilities".to_vec(),
        ),
    }
}

impl Worker {
    /// Starts the unit's first worker.
    pub(crate) fn start(spec: WorkerSpec) -> Result<Self, String> {
        let host = Arc::new(RwLock::new(None));
        let process = Process::start(&spec, &host)?;
        Ok(Self {
            spec,
            process: ArcSwapOption::from(Some(process)),
            restarting: Mutex::new(()),
            host,
            manifest: Mutex::new(None),
            config: Mutex::new(None),
            hooked: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
        })
    }

    /// Serves the unit's capability calls with `host` from now on.
    pub(crate) fn bind_host(&self, host: Box<dyn HostCall>) {
        *self.host.write() = Some(Arc::from(host));
    }

    /// The worker running now, or a new one started like the last (its manifest checked,
    /// its instance created with the same configuration and told `on_load` again).
    fn live(&self) -> Result<Arc<Process>, String> {
        if let Some(process) = self.process.load_full().filter(|p| !p.is_dead()) {
            return Ok(process);
        }
        let _restarting = self.restarting.lock();
        if let Some(process) = self.process.load_full().filter(|p| !p.is_dead()) {
            // Another call started it meanwhile.
            return Ok(process);
        }
        let process = Process::start(&self.spec, &self.host)?;
        let fail = |process: &Process, why: String| {
            process.kill("it could not be started again");
            why
        };
        let manifest = process.request(&self.host, wire::MANIFEST, 0, &[])?;
        if manifest.status != STATUS_OK || self.manifest.lock().as_ref() != Some(&manifest.bytes) {
            return Err(fail(
                &process,
                "the restarted worker's library gave another manifest".to_owned(),
            ));
        }
        if let Some(config) = self.config.lock().clone() {
            let created = process.request(&self.host, wire::CREATE, 0, &config)?;
            if created.status != STATUS_OK {
                return Err(fail(
                    &process,
                    format!(
                        "the restarted unit's constructor refused: {}",
                        String::from_utf8_lossy(&created.bytes)
                    ),
                ));
            }
            if self.hooked.load(Ordering::Acquire) {
                let loaded = process.request(&self.host, wire::EVENT, EVENT_LOAD, &[])?;
                if loaded.status != STATUS_OK {
                    return Err(fail(
                        &process,
                        format!(
                            "the restarted unit's on_load refused: {}",
                            String::from_utf8_lossy(&loaded.bytes)
                        ),
                    ));
                }
            }
        }
        let restarts = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("swarm_worker_restarts_total").increment(1);
        tracing::warn!(library = %self.spec.library.display(), pid = process.pid, restarts,
            "an isolated unit's worker was started again (its in-memory state is lost)");
        self.process.store(Some(Arc::clone(&process)));
        Ok(process)
    }

    /// One request to the worker, restarting it first if it died. A worker that dies during
    /// the request fails it with [`STATUS_CRASHED`] and the reason.
    pub(crate) fn request(&self, tag: u8, code: u32, body: &[u8]) -> CallResult {
        let crashed = |why: String| CallResult {
            status: STATUS_CRASHED,
            bytes: why.into_bytes(),
        };
        let process = match self.live() {
            Ok(process) => process,
            Err(why) => return crashed(format!("the unit's worker cannot be started: {why}")),
        };
        match process.request(&self.host, tag, code, body) {
            Ok(result) => {
                match tag {
                    wire::MANIFEST if result.status == STATUS_OK => {
                        self.manifest
                            .lock()
                            .get_or_insert_with(|| result.bytes.clone());
                    }
                    wire::CREATE if result.status == STATUS_OK => {
                        *self.config.lock() = Some(body.to_vec());
                    }
                    wire::EVENT if code == EVENT_LOAD && result.status == STATUS_OK => {
                        self.hooked.store(true, Ordering::Release);
                    }
                    _ => {}
                }
                result
            }
            Err(why) => crashed(why),
        }
    }

    /// Kills the worker running now (a call ran past its deadline); the next request starts
    /// a new one.
    pub(crate) fn kill(&self, why: &str) {
        if let Some(process) = self.process.load_full() {
            process.kill(why);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(process) = self.process.swap(None) {
            process.shut_down();
        }
    }
}
