//! Host capabilities through the real ABI: the `probe` fixture unit asks for marks, kv, http
//! and log; the reactor's host answers. The marks and kv cases run against the in-process
//! mesh and against the real Redis started by `ops/start-redis` (one suite); evaporation is
//! checked across two `swarm up` processes on that Redis; http runs against a local server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_memory::{InProcMemory, Memory};
use swarm_mesh::{InProcMesh, Mesh, RedisMesh, RedisMeshConfig, StartAt};
use swarm_reactor::{HostConfig, Reactor, ReactorConfig};
use swarm_schemas::{Capability, ExecutionRecord, Outcome, Signal};
use swarm_tests::{ReactorSpec, deploy, redis_url, request, wait_for_async};
use uuid::Uuid;

const STREAM: &str = "swarm:signals";

/// A reactor running the probe unit on `mesh`, with `host` as its capability configuration.
struct Probe {
    reactor: Option<Reactor>,
    mesh: Arc<dyn Mesh>,
    memory: Arc<InProcMemory>,
    _units: tempfile::TempDir,
    _private: tempfile::TempDir,
}

fn granted(capabilities: &[Capability]) -> HostConfig {
    let mut host = HostConfig::default();
    host.grants
        .insert("probe".into(), capabilities.iter().copied().collect());
    // Long enough that nothing evaporates measurably during a test.
    host.marks_half_life = Duration::from_secs(30 * 86_400);
    host.http_timeout = Duration::from_millis(500);
    host.http_max_bytes = 64 * 1024;
    host
}

impl Probe {
    /// With `isolated`, the probe runs in a worker process of its own: its capability calls
    /// cross to the reactor and must behave the same.
    async fn start(mesh: Arc<dyn Mesh>, host: HostConfig, isolated: bool) -> Self {
        let units = tempfile::tempdir().expect("units dir");
        let private = tempfile::tempdir().expect("private dir");
        deploy(units.path(), "fixture-probe", "probe.so");
        let mut config = ReactorConfig::new(units.path().to_owned(), private.path().to_owned());
        config.watch = false;
        config.block = Duration::from_millis(50);
        config.retry_backoff = Duration::from_millis(1);
        config.trim_every = Duration::from_secs(3600);
        config.host = host;
        if isolated {
            config.isolation.all = true;
            config.isolation.worker = Some(swarm_tests::worker_binary().to_owned());
        }
        let memory = Arc::new(InProcMemory::new());
        let (reactor, report) = Reactor::start(
            config,
            Arc::clone(&mesh),
            Arc::clone(&memory) as Arc<dyn Memory>,
        )
        .await
        .expect("reactor starts");
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        Self {
            reactor: Some(reactor),
            mesh,
            memory,
            _units: units,
            _private: private,
        }
    }

    /// Posts a probe.run with `payload` and returns the probe.result it led to, with the
    /// signal's id.
    async fn ask(&self, payload: Value) -> (Value, Signal) {
        let signal = Signal::new("probe.run", payload.clone());
        let result = request(&*self.mesh, STREAM, &signal, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no probe.result for {payload}"));
        assert_eq!(result.kind, "probe.result");
        (result.payload, signal)
    }

    /// The execution records of `signal`, once there are `n`.
    async fn executions(&self, signal: &Signal, n: usize) -> Vec<ExecutionRecord> {
        let memory = Arc::clone(&self.memory);
        let id = signal.id;
        wait_for_async(Duration::from_secs(10), || {
            let memory = Arc::clone(&memory);
            async move {
                let records = memory.executions_of(id).await.ok()?;
                (records.len() >= n).then_some(records)
            }
        })
        .await
        .unwrap_or_else(|| panic!("{n} executions of {} were not recorded", signal.id))
    }

    async fn stop(mut self) {
        if let Some(reactor) = self.reactor.take() {
            reactor.stop().await;
        }
    }
}

fn ok(result: &Value) -> &Value {
    assert!(result.get("error").is_none(), "the call failed: {result}");
    &result["ok"]
}

/// Checks that a probe's call failed with the error `kind` and a message saying each of `says`.
fn refused(result: &Value, kind: &str, says: &[&str]) {
    assert_eq!(result["kind"], kind, "{result}");
    let message = result["error"].as_str().unwrap_or_default();
    for part in says {
        assert!(message.contains(part), "`{part}` missing from: {result}");
    }
}

fn close(got: &Value, want: f64) -> bool {
    got.as_f64().is_some_and(|v| (v - want).abs() < 1e-6)
}

async fn redis_mesh() -> Arc<dyn Mesh> {
    let mut config = RedisMeshConfig::new(redis_url());
    config.key_prefix = format!("test-{}", Uuid::now_v7());
    Arc::new(
        RedisMesh::connect(config)
            .await
            .unwrap_or_else(|e| panic!("the tests need Redis (ops/start-redis): {e}")),
    )
}

async fn inproc_mesh() -> Arc<dyn Mesh> {
    Arc::new(InProcMesh::new())
}

/// Deposits, senses, prefix reads and the strongest mark, through the unit; the execution
/// record counts the calls.
async fn marks_through_the_abi(mesh: Arc<dyn Mesh>, isolated: bool) {
    let probe = Probe::start(mesh, granted(&[Capability::Marks]), isolated).await;
    let (first, signal) = probe
        .ask(json!({"do": "deposit", "key": "site.north", "amount": 2.0}))
        .await;
    assert!(close(&ok(&first)["value"], 2.0), "{first}");
    let (second, _) = probe
        .ask(json!({"do": "deposit", "key": "site.north", "amount": 3.0}))
        .await;
    assert!(close(&ok(&second)["value"], 5.0), "{second}");
    probe
        .ask(json!({"do": "deposit", "key": "site.south", "amount": 7.0}))
        .await;
    probe
        .ask(json!({"do": "deposit", "key": "other", "amount": 9.0}))
        .await;
    let (sensed, _) = probe.ask(json!({"do": "sense", "key": "site.north"})).await;
    assert!(close(&ok(&sensed)["value"], 5.0), "{sensed}");
    let (strongest, _) = probe
        .ask(json!({"do": "strongest", "prefix": "site."}))
        .await;
    assert_eq!(ok(&strongest)["key"], "site.south", "{strongest}");
    let (listed, _) = probe.ask(json!({"do": "prefix", "prefix": "site."})).await;
    let keys: Vec<&str> = ok(&listed)["marks"]
        .as_array()
        .expect("marks")
        .iter()
        .filter_map(|m| m[0].as_str())
        .collect();
    assert_eq!(keys, ["site.south", "site.north"]);
    let (batch, _) = probe
        .ask(json!({"do": "deposits", "key": "b", "n": 50, "batched": true}))
        .await;
    assert!(close(&ok(&batch)["last"], 50.0), "{batch}");

    let record = &probe.executions(&signal, 1).await[0];
    assert_eq!(record.host_calls.len(), 1, "{:?}", record.host_calls);
    let calls = &record.host_calls[0];
    assert_eq!(calls.capability, Capability::Marks);
    assert_eq!((calls.calls, calls.errors, calls.denied), (1, 0, 0));
    assert!(calls.micros > 0);
    probe.stop().await;
}

/// Set, get, expire and delete, through the unit.
async fn kv_through_the_abi(mesh: Arc<dyn Mesh>, isolated: bool) {
    let probe = Probe::start(mesh, granted(&[Capability::Kv]), isolated).await;
    let value = json!({"seen": [1, 2, 3], "name": "nord"});
    let (none, _) = probe.ask(json!({"do": "kv_get", "key": "k"})).await;
    assert_eq!(ok(&none)["value"], Value::Null);
    probe
        .ask(json!({"do": "kv_set", "key": "k", "value": value}))
        .await;
    let (got, _) = probe.ask(json!({"do": "kv_get", "key": "k"})).await;
    assert_eq!(ok(&got)["value"], value);
    probe
        .ask(json!({"do": "kv_set", "key": "brief", "value": 1, "ttl_ms": 100}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (expired, _) = probe.ask(json!({"do": "kv_get", "key": "brief"})).await;
    assert_eq!(ok(&expired)["value"], Value::Null, "expired");
    let (removed, _) = probe.ask(json!({"do": "kv_delete", "key": "k"})).await;
    assert_eq!(ok(&removed)["removed"], true);
    let (bad, _) = probe.ask(json!({"do": "kv_get", "key": ""})).await;
    refused(&bad, "BadRequest", &["empty"]);
    probe.stop().await;
}

/// A unit that is not granted a capability gets an error, not a crash; the denial is in its
/// execution record; a unit that returns the error fails that signal only.
async fn denied_capabilities(mesh: Arc<dyn Mesh>, isolated: bool) {
    let probe = Probe::start(mesh, granted(&[]), isolated).await;
    for payload in [
        json!({"do": "deposit", "key": "site.a"}),
        json!({"do": "kv_get", "key": "k"}),
        json!({"do": "http", "url": "http://127.0.0.1:9/"}),
    ] {
        let (result, signal) = probe.ask(payload).await;
        refused(&result, "Denied", &["not granted", "--grant probe="]);
        let record = &probe.executions(&signal, 1).await[0];
        assert!(record.outcome.is_success());
        assert_eq!(record.host_calls[0].denied, 1, "{:?}", record.host_calls);
    }
    // Returned as the unit's error: that signal fails (and is retried), the reactor goes on.
    let signal = Signal::new(
        "probe.run",
        json!({"do": "deposit", "key": "x", "fail": true}),
    );
    probe.mesh.publish(STREAM, &signal).await.expect("publish");
    let records = probe.executions(&signal, 3).await;
    for record in &records {
        match &record.outcome {
            Outcome::Failure { error, .. } => assert!(error.contains("not granted"), "{error}"),
            Outcome::Success => panic!("a denied call succeeded"),
        }
    }
    let (after, _) = probe
        .ask(json!({"do": "log", "message": "still here"}))
        .await;
    assert_eq!(after, json!({"ok": {}}), "log needs no grant");
    probe.stop().await;
}

macro_rules! on_both_meshes {
    ($($case:ident),*) => {
        mod inproc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::inproc_mesh().await, false).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::redis_mesh().await, false).await;
                }
            )*
        }
        /// The unit in a worker process, on the real Redis.
        mod isolated {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::redis_mesh().await, true).await;
                }
            )*
        }
    };
}

on_both_meshes!(
    marks_through_the_abi,
    kv_through_the_abi,
    denied_capabilities
);

/// A local server: a page, a slow page, a huge page.
async fn test_server() -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/ok", get(|| async { "hello from the test server" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        )
        .route("/huge", get(|| async { "x".repeat(10 << 20) }))
        .route(
            "/echo",
            axum::routing::post(|body: String| async move { format!("echo: {body}") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("127.0.0.1:{port}"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_allowed_refused_slow_and_huge() {
    http_through_the_host(false).await;
}

/// The isolated worker may open no socket of its own, and its HTTP capability still works:
/// the reactor makes the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_an_isolated_worker() {
    http_through_the_host(true).await;
}

async fn http_through_the_host(isolated: bool) {
    let (address, server) = test_server().await;
    let port = address.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    let probe = Probe::start(inproc_mesh().await, granted(&[Capability::Http]), isolated).await;

    let (page, signal) = probe
        .ask(json!({"do": "http", "url": format!("http://{address}/ok")}))
        .await;
    assert_eq!(ok(&page)["status"], 200, "{page}");
    assert_eq!(ok(&page)["body"], "hello from the test server");
    let record = &probe.executions(&signal, 1).await[0];
    assert_eq!(record.host_calls[0].capability, Capability::Http);
    assert_eq!(record.host_calls[0].calls, 1);

    let (echo, _) = probe
        .ask(json!({"do": "http", "method": "POST", "url": format!("http://{address}/echo"), "body": "ping"}))
        .await;
    assert_eq!(ok(&echo)["body"], "echo: ping");

    // The same server by another name is not on the allowlist (`127.0.0.1` is).
    let (denied, _) = probe
        .ask(json!({"do": "http", "url": format!("http://localhost:{port}/ok")}))
        .await;
    refused(&denied, "Denied", &["localhost", "allowlist"]);

    let started = Instant::now();
    let (slow, _) = probe
        .ask(json!({"do": "http", "url": format!("http://{address}/slow")}))
        .await;
    refused(&slow, "Failed", &["timed out"]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout did not cut the wait"
    );

    let (huge, _) = probe
        .ask(json!({"do": "http", "url": format!("http://{address}/huge")}))
        .await;
    refused(&huge, "Failed", &["larger than the limit"]);

    let (bad, _) = probe
        .ask(json!({"do": "http", "url": "ftp://127.0.0.1/x"}))
        .await;
    refused(&bad, "BadRequest", &["only http:// URLs"]);

    // The reactor is healthy: ten requests at once all answer.
    let mut asks = Vec::new();
    for _ in 0..10 {
        asks.push(probe.ask(json!({"do": "http", "url": format!("http://{address}/ok")})));
    }
    for (page, _) in futures_util::future::join_all(asks).await {
        assert_eq!(ok(&page)["status"], 200);
    }
    probe.stop().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_calls_are_counted_per_unit_in_the_metrics() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("recorder");
    let probe = Probe::start(inproc_mesh().await, granted(&[Capability::Marks]), false).await;
    probe.ask(json!({"do": "deposit", "key": "a"})).await;
    probe.ask(json!({"do": "deposit", "key": "a"})).await;
    probe.ask(json!({"do": "kv_get", "key": "k"})).await;
    let text = handle.render();
    let line = |capability: &str, outcome: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("swarm_host_calls_total")
                    && l.contains("unit=\"probe\"")
                    && l.contains(&format!("capability=\"{capability}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    assert_eq!(line("marks", "ok").as_deref(), Some("2"), "{text}");
    assert_eq!(line("kv", "denied").as_deref(), Some("1"), "{text}");
    assert!(text.contains("swarm_host_call_seconds"), "{text}");
    probe.stop().await;
}

/// A mark deposited by one `swarm up` process and sensed by another after one half-life reads
/// half: exactly `amount × 2^(−Δ/h)` for the Δ Redis's clock saw, with Δ at least h.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_evaporates_across_two_reactor_processes() {
    let units = tempfile::tempdir().expect("units dir");
    let work = tempfile::tempdir().expect("work dir");
    deploy(units.path(), "fixture-probe", "probe.so");
    let prefix = format!("test-{}", Uuid::now_v7());
    let mut config = RedisMeshConfig::new(redis_url());
    config.key_prefix.clone_from(&prefix);
    let mesh: Arc<dyn Mesh> = Arc::new(
        RedisMesh::connect(config)
            .await
            .expect("the tests need Redis: ops/start-redis"),
    );
    // The reactors trim what every group has acknowledged: a group of the test's own keeps
    // the results until the test has read them.
    mesh.create_group(STREAM, "observer", StartAt::Beginning)
        .await
        .expect("observer group");
    let half_life = 2.0;
    let spec = ReactorSpec::new(
        prefix,
        units.path(),
        work.path(),
        vec![
            "--grant".into(),
            "probe=marks".into(),
            "--marks-half-life".into(),
            half_life.to_string(),
        ],
    );
    let ask = async |payload: Value| {
        let signal = Signal::new("probe.run", payload);
        let result = request(&*mesh, STREAM, &signal, Duration::from_secs(30))
            .await
            .expect("a probe.result");
        assert_eq!(result.kind, "probe.result");
        result.payload
    };

    let first = spec.start("first");
    let deposited = ask(json!({"do": "deposit", "key": "trail", "amount": 8.0})).await;
    // The unit's log record reaches the process's log, tagged with the unit and version.
    ask(json!({"do": "log", "message": "left a trail"})).await;
    let log_file = first.log.clone();
    assert!(first.stop(), "the first process exits cleanly");
    let log = std::fs::read_to_string(&log_file).expect("log");
    let line = log
        .lines()
        .find(|l| l.contains("left a trail"))
        .unwrap_or_else(|| panic!("the unit's record is not in the log:\n{log}"));
    for tag in [
        "WARN",
        "unit=\"probe\"",
        "version=\"1.0.0\"",
        "signal=",
        "probe",
    ] {
        assert!(line.contains(tag), "`{tag}` missing from: {line}");
    }
    let deposited = ok(&deposited).clone();

    let second = spec.start("second");
    tokio::time::sleep(Duration::from_secs_f64(half_life)).await;
    let sensed = ask(json!({"do": "sense", "key": "trail"})).await;
    assert!(second.stop(), "the second process exits cleanly");
    let sensed = ok(&sensed).clone();

    let at = |v: &Value| v["at_ms"].as_f64().expect("at_ms");
    let elapsed_ms = at(&sensed) - at(&deposited);
    let h_ms = half_life * 1000.0;
    assert!(
        elapsed_ms >= h_ms,
        "a half-life passed, Redis saw {elapsed_ms} ms"
    );
    let value = sensed["value"].as_f64().expect("value");
    let expected = 8.0 * (-elapsed_ms / h_ms).exp2();
    assert!(
        (value - expected).abs() < 1e-9 * expected,
        "after {elapsed_ms} ms: {value}, expected {expected}"
    );
    assert!(
        elapsed_ms < 3.0 * h_ms,
        "about one half-life, not {elapsed_ms} ms"
    );
    assert!(value <= 4.0 + 1e-9, "at most half is left: {value}");
}

/// The foraging example: foragers lay trails on `site.*` marks, scouts follow the strongest;
/// neither unit knows the other, they meet only in the field of marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foragers_and_scouts_coordinate_through_marks_alone() {
    let units = tempfile::tempdir().expect("units dir");
    let private = tempfile::tempdir().expect("private dir");
    deploy(units.path(), "forager", "forager.so");
    deploy(units.path(), "scout", "scout.so");
    let mut config = ReactorConfig::new(units.path().to_owned(), private.path().to_owned());
    config.watch = false;
    config.block = Duration::from_millis(50);
    config.trim_every = Duration::from_secs(3600);
    config.host.marks_half_life = Duration::from_secs(30 * 86_400);
    for unit in ["forager", "scout"] {
        config
            .host
            .grants
            .insert(unit.into(), [Capability::Marks].into());
    }
    let mesh: Arc<dyn Mesh> = Arc::new(InProcMesh::new());
    let memory: Arc<dyn Memory> = Arc::new(InProcMemory::new());
    let (reactor, report) = Reactor::start(config, Arc::clone(&mesh), memory)
        .await
        .expect("reactor starts");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let reply = async |kind: &str, payload: Value| {
        request(
            &*mesh,
            STREAM,
            &Signal::new(kind, payload),
            Duration::from_secs(10),
        )
        .await
        .expect("a reply")
    };
    let idle = reply("scout.tick", json!({})).await;
    assert_eq!(idle.kind, "scout.idle", "no trail yet");
    for (site, amount) in [("north", 1.0), ("south", 5.0), ("north", 1.0)] {
        let laid = reply("food.found", json!({"site": site, "amount": amount})).await;
        assert_eq!(laid.kind, "trail.laid");
    }
    let sent = reply("scout.tick", json!({})).await;
    assert_eq!(sent.kind, "scout.sent");
    assert_eq!(sent.payload["site"], "south", "{}", sent.payload);
    let laid = reply("food.found", json!({"site": "north", "amount": 10.0})).await;
    assert!(close(&laid.payload["strength"], 12.0), "{}", laid.payload);
    let sent = reply("scout.tick", json!({})).await;
    assert_eq!(
        sent.payload["site"], "north",
        "the scouts follow the new strongest trail"
    );
    reactor.stop().await;
}
