//! The example swarm served by `swarm up` on Redis with PostgreSQL memory, driven over HTTP:
//! request/reply on the Redis mesh, and the Grafana dashboard and the Prometheus alert rules in
//! `ops/monitoring`, which name only series that `swarm up` exports.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use swarm_tests::{ReactorSpec, example_reactor_args, free_port, wait_for_async, workspace_root};

/// Every `swarm_*` series name in `text`.
fn series_named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("swarm_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The expressions of the dashboard's panels; each panel has at least one.
fn dashboard_expressions() -> Vec<String> {
    let path = workspace_root().join("ops/monitoring/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    let mut exprs = Vec::new();
    for panel in panels {
        let targets: Vec<String> = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str().map(str::to_owned))
            .collect();
        assert!(!targets.is_empty(), "panel {} has a query", panel["title"]);
        exprs.extend(targets);
    }
    exprs
}

/// The expressions of the alert rules (one `expr:` line each), with the alerts' names.
fn alert_expressions() -> Vec<(String, String)> {
    let path = workspace_root().join("ops/monitoring/alerts.yml");
    let text = std::fs::read_to_string(&path).expect("the alert rules");
    let mut rules = Vec::new();
    let mut alert = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            alert = Some(name.trim().to_owned());
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let name = alert.take().expect("each expr follows its alert");
            rules.push((name, expr.trim().to_owned()));
        }
    }
    rules
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_the_alerts_read_is_exported() {
    let exprs = dashboard_expressions();
    let rules = alert_expressions();
    assert!(rules.len() >= 8, "{rules:?}");
    let mut wanted = BTreeSet::new();
    for expr in exprs.iter().chain(rules.iter().map(|(_, e)| e)) {
        let named = series_named(expr);
        assert!(!named.is_empty(), "`{expr}` reads a swarm series");
        wanted.extend(named);
    }

    let swarm = ExampleSwarm::start().await;
    let (http, base) = (&swarm.http, &swarm.base);
    // A few orders run through the example's units, so that per-unit series exist.
    for id in 0..5 {
        let (status, answer) = swarm
            .post("wait=10&reply=order.fulfilled", &order(id))
            .await;
        assert!(status.is_success(), "{answer}");
    }
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named by the dashboard or the alerts but not exported: {missing:?}\nexported: {exported:?}"
    );
    assert!(wanted.len() >= 15, "{wanted:?}");
    assert!(swarm.reactor.stop(), "swarm up exits cleanly");
}

/// `swarm up` with the example units and PostgreSQL memory, serving HTTP.
struct ExampleSwarm {
    reactor: swarm_tests::ReactorProcess,
    http: reqwest::Client,
    base: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl ExampleSwarm {
    async fn start() -> Self {
        let database =
            swarm_memory::testkit::fresh_database(&swarm_memory::testkit::database_url()).await;
        let units = tempfile::tempdir().expect("units dir");
        let work = tempfile::tempdir().expect("work dir");
        let args = example_reactor_args(units.path(), work.path(), Some(&database));
        let (prefix, _mesh) = swarm_tests::fresh_mesh().await;
        let spec = ReactorSpec::new(prefix, units.path(), work.path(), args);
        let port = free_port();
        let reactor = spec.start_serving("a", &format!("127.0.0.1:{port}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let up = wait_for_async(Duration::from_secs(60), async || {
            let health = http.get(format!("{base}/v1/health")).send().await.ok()?;
            health.status().is_success().then_some(())
        })
        .await;
        assert!(up.is_some(), "swarm up serves");
        Self {
            reactor,
            http,
            base,
            _dirs: (units, work),
        }
    }

    /// Posts `body`, waiting for a reply as `query` asks; the status and the answer.
    async fn post(&self, query: &str, body: &Value) -> (reqwest::StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/signals?{query}", self.base))
            .json(body)
            .send()
            .await
            .expect("post");
        let status = response.status();
        (status, response.json().await.expect("a JSON answer"))
    }
}

fn order(id: u64) -> Value {
    json!({"kind": "order.placed", "payload": {"id": id, "items": [{"sku": "tea", "qty": 1}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_on_redis_waits_for_the_kind_asked_or_for_the_conversation_to_settle() {
    let swarm = ExampleSwarm::start().await;
    let (status, answer) = swarm.post("wait=10&reply=order.fulfilled", &order(1)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"]["kind"], "order.fulfilled", "{answer}");
    // Nothing sends order.shipped: the answer comes when the conversation has settled.
    let started = std::time::Instant::now();
    let (status, answer) = swarm.post("wait=30&reply=order.shipped", &order(2)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert!(answer["reply"].is_null(), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered when it settled: {:?}",
        started.elapsed()
    );
    for execution in answer["executions"].as_array().into_iter().flatten() {
        assert_eq!(
            execution["signal"]["correlation_id"], answer["correlation_id"],
            "{execution}"
        );
    }
    // A kind no unit takes settles at once, with nothing run.
    let (status, answer) = swarm
        .post("wait=30", &json!({"kind": "nobody.listens", "payload": {}}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert!(
        answer["reply"].is_null() && answer.get("executions").is_none(),
        "{answer}"
    );
    assert!(swarm.reactor.stop(), "swarm up exits cleanly");
}
