//! The Grafana dashboard and the Prometheus alert rules in `ops/monitoring` name only series that
//! `swarm up` exports: the example swarm runs on Redis with PostgreSQL memory, takes a few orders,
//! and every `swarm_*` name the two files use is on its `/metrics`.

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
    // A few orders run through the example's units, so that per-unit series exist.
    for id in 0..5 {
        let order = json!({"kind": "order.placed", "payload": {"id": id, "items": [{"sku": "tea", "qty": 1}]}});
        let replied = http
            .post(format!("{base}/v1/signals?wait=10&reply=order.fulfilled"))
            .json(&order)
            .send()
            .await
            .expect("post");
        assert!(replied.status().is_success(), "{replied:?}");
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
    assert!(reactor.stop(), "swarm up exits cleanly");
}
