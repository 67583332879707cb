//! Reactor processes (`swarm up` on a Redis mesh) and Redis servers of a test's own, for tests
//! that kill, restart and share work across processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{swarm_binary, workspace_root};

/// The Redis the tests use: `SWARM_TEST_REDIS_URL`, or database 15 of the project's Redis.
pub fn redis_url() -> String {
    std::env::var("SWARM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390/15".to_owned())
}

/// A `swarm up` process on a Redis mesh.
pub struct ReactorProcess {
    child: Child,
    /// Its consumer name.
    pub consumer: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// How to start reactor processes of one test.
#[derive(Clone)]
pub struct ReactorSpec {
    /// Redis URL.
    pub redis: String,
    /// Key prefix (hash tag) of the test's mesh.
    pub prefix: String,
    /// Units directory.
    pub units: PathBuf,
    /// Directory for logs and the counter's execution log.
    pub work: PathBuf,
    /// `--claim-idle` in seconds.
    pub claim_idle: f64,
    /// More arguments for `swarm up`.
    pub extra_args: Vec<String>,
}

impl ReactorSpec {
    /// A spec on the tests' Redis ([`redis_url`]) with mesh `prefix`, the units of `units`,
    /// logs in `work`, `--claim-idle 30` and `extra_args`.
    pub fn new(prefix: String, units: &Path, work: &Path, extra_args: Vec<String>) -> Self {
        Self {
            redis: redis_url(),
            prefix,
            units: units.to_owned(),
            work: work.to_owned(),
            claim_idle: 30.0,
            extra_args,
        }
    }

    /// The file the counter fixture appends its executions to.
    pub fn counter_log(&self) -> PathBuf {
        self.work.join("executions.log")
    }

    /// Starts `swarm up` with consumer name `consumer`; its stderr is appended to
    /// `<work>/<consumer>.log`.
    pub fn start(&self, consumer: &str) -> ReactorProcess {
        self.start_serving(consumer, "127.0.0.1:0")
    }

    /// Like [`start`](Self::start), with its inspector on `http` (`host:port`).
    pub fn start_serving(&self, consumer: &str, http: &str) -> ReactorProcess {
        let log = self.work.join(format!("{consumer}.log"));
        let stderr = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(swarm_binary())
            .args([
                "up",
                "--no-watch",
                "--consumer",
                consumer,
                "--redis",
                &self.redis,
                "--redis-prefix",
                &self.prefix,
                "--http",
                http,
            ])
            .arg("--claim-idle")
            .arg(self.claim_idle.to_string())
            .arg("--units")
            .arg(&self.units)
            .args(&self.extra_args)
            .env("COUNTER_LOG", self.counter_log())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("swarm up starts");
        ReactorProcess {
            child,
            consumer: consumer.to_owned(),
            log,
        }
    }
}

impl ReactorProcess {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        let _ = sigterm(self.child.id());
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ReactorProcess {
    /// A test that fails half way leaves no process behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends SIGTERM to a process; whether `kill` succeeded.
pub fn sigterm(pid: u32) -> bool {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends SIGTERM to a `swarm up` whose stderr is piped, waits for it, checks that it exited
/// cleanly, and returns its stderr.
pub fn stop_cleanly(child: Child) -> String {
    assert!(sigterm(child.id()), "kill -TERM {}", child.id());
    let output = child.wait_with_output().expect("swarm up exits");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "clean exit on SIGTERM: {stderr}");
    stderr
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A Redis server of the test's own (started by `ops/start-redis` on a free port, with its own
/// data directory), so it can be stopped and restarted without disturbing other tests.
pub struct OwnRedis {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    /// Starts one.
    pub fn start() -> Self {
        let port = free_port();
        let redis = Self {
            port,
            dir: tempfile::tempdir().expect("data dir"),
        };
        redis.restart();
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it again (after [`OwnRedis::shutdown`]) on the same port and data directory.
    pub fn restart(&self) {
        let status = Command::new(workspace_root().join("ops").join("start-redis"))
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("ops/start-redis runs");
        assert!(status.success(), "ops/start-redis failed");
    }

    /// Shuts it down cleanly (the append-only file is flushed) and waits until it is gone.
    pub fn shutdown(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .status();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis on port {} did not stop", self.port);
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .status();
    }
}

/// A PostgreSQL + pgvector server of the test's own (started by `ops/start-postgres` on a free
/// port, with its own data directory), so it can be stopped and restarted without disturbing
/// other tests. Its database `swarm` has the `vector` extension.
pub struct OwnPostgres {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OwnPostgres {
    /// Initialises and starts one.
    pub fn start() -> Self {
        let port = free_port();
        let postgres = Self {
            port,
            dir: tempfile::tempdir().expect("data dir"),
        };
        postgres.restart();
        postgres
    }

    /// Its URL (database `swarm`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/swarm", self.port)
    }

    /// Starts it (again) on the same port and data directory.
    pub fn restart(&self) {
        let status = Command::new(workspace_root().join("ops").join("start-postgres"))
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("ops/start-postgres runs");
        assert!(status.success(), "ops/start-postgres failed");
    }

    /// Stops it (fast shutdown: clients are disconnected) and waits until it is gone.
    pub fn stop(&self) {
        let output = Command::new(workspace_root().join("ops").join("start-postgres"))
            .arg("--bin")
            .output()
            .expect("ops/start-postgres runs");
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "swarm-pg", "--"]).arg(bin.join("pg_ctl"));
            c
        } else {
            Command::new(bin.join("pg_ctl"))
        };
        let status = command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl stop failed");
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            self.stop();
        }
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
