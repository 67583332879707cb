//! `swarm up` processes of one test on the real Redis, with the `hang` fixture deployed, and
//! an observer group that counts on the mesh what they do (never through their own API).
//! Each `test.hang` signal with payload `n` makes the fixture emit `test.done` with that `n`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use swarm_mesh::prelude::*;
use swarm_mesh::{EntryId, RedisMesh, StartAt, dead_letter_stream};
use swarm_schemas::{DeadLetter, Signal};

use crate::{ReactorProcess, ReactorSpec, deploy};

/// The stream the reactors read.
pub const STREAM: &str = "swarm:signals";
/// The reactors' group.
pub const GROUP: &str = "reactor";
/// The test's own group: keeps every entry until the test has read it.
pub const OBSERVER: &str = "observer";

/// One test's mesh (its own key prefix) and how to start reactors on it.
pub struct Setup {
    /// How to start `swarm up` on the test's units directory and mesh.
    pub spec: ReactorSpec,
    /// The test's view of the mesh.
    pub mesh: Arc<RedisMesh>,
    _units: tempfile::TempDir,
    _work: tempfile::TempDir,
}

/// A fresh mesh with the `hang` fixture deployed; `extra_args` go to every `swarm up`.
pub async fn setup(extra_args: &[&str]) -> Setup {
    let units = tempfile::tempdir().expect("units dir");
    let work = tempfile::tempdir().expect("work dir");
    deploy(units.path(), "fixture-hang", "hang.so");
    let (prefix, mesh) = crate::fresh_mesh().await;
    // Keeps every entry until the test has read it (the reactors trim what all groups acked).
    mesh.create_group(STREAM, OBSERVER, StartAt::Beginning)
        .await
        .expect("observer group");
    let spec = ReactorSpec::new(
        prefix,
        units.path(),
        work.path(),
        extra_args.iter().map(|a| (*a).to_owned()).collect(),
    );
    Setup {
        spec,
        mesh,
        _units: units,
        _work: work,
    }
}

/// Reactor processes are killed when the test ends, also when it fails.
pub struct Running(pub Option<ReactorProcess>);

impl Running {
    /// What the process wrote to stderr.
    pub fn log(&self) -> String {
        self.0
            .as_ref()
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default()
    }

    /// Kills the process (SIGKILL).
    pub fn kill(mut self) {
        if let Some(process) = self.0.take() {
            process.kill();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(process) = self.0.take() {
            process.kill();
        }
    }
}

/// Publishes a `test.hang` signal with `payload`.
pub async fn publish(mesh: &RedisMesh, payload: Value) -> (Signal, EntryId) {
    let signal = Signal::new("test.hang", payload);
    let id = mesh.publish(STREAM, &signal).await.expect("publish");
    (signal, id)
}

/// The `n` of every `test.done` the observer group has not read yet, with how often each came.
pub async fn done(mesh: &RedisMesh) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    loop {
        let entries = mesh
            .read(STREAM, OBSERVER, "test", 10_000, Duration::ZERO)
            .await
            .expect("read");
        if entries.is_empty() {
            return out;
        }
        for signal in entries.into_iter().filter_map(|e| e.body.ok()) {
            if signal.kind == "test.done" {
                let n = signal.payload["n"].as_u64().expect("done names its n");
                *out.entry(n).or_default() += 1;
            }
        }
    }
}

/// Every dead letter on the mesh.
pub async fn dead_letters(mesh: &RedisMesh) -> Vec<DeadLetter> {
    mesh.range(&dead_letter_stream(STREAM), None, 100_000)
        .await
        .expect("dead letters")
        .into_iter()
        .filter_map(|e| e.body.ok())
        .map(|s| serde_json::from_value(s.payload).expect("a dead letter"))
        .collect()
}

/// Polls `check` until it returns `Some`; fails the test after `timeout`, naming `what`.
pub async fn until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state of the `hang` unit as `GET /v1/units` of the reactor serving on `port` says,
/// asked with `token` if given; `None` while it does not answer or has no such unit.
pub async fn hang_state(port: u16, token: Option<&str>) -> Option<String> {
    let mut request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/v1/units"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let units: Value = request.send().await.ok()?.json().await.ok()?;
    units
        .as_array()?
        .iter()
        .find(|u| u["name"] == "hang")
        .and_then(|u| u["state"].as_str().map(str::to_owned))
}

/// Starts two `swarm up` processes, `a` and `b`, serving on free ports, and waits until the
/// `hang` unit is ready on both (asked with `token`). Returns each with its port.
pub async fn serve_a_and_b(
    spec: &ReactorSpec,
    token: Option<&str>,
) -> ((Running, u16), (Running, u16)) {
    let (port_a, port_b) = (crate::free_port(), crate::free_port());
    let a = Running(Some(
        spec.start_serving("a", &format!("127.0.0.1:{port_a}")),
    ));
    let b = Running(Some(
        spec.start_serving("b", &format!("127.0.0.1:{port_b}")),
    ));
    for port in [port_a, port_b] {
        until("the reactor serves", Duration::from_secs(60), async || {
            hang_state(port, token).await.filter(|s| s == "ready")
        })
        .await;
    }
    ((a, port_a), (b, port_b))
}

/// `GET /v1/health` of the reactor serving on `port`.
pub async fn health(port: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}/v1/health"))
        .await
        .expect("health answers")
        .json()
        .await
        .expect("health is JSON")
}
