//! The inspector in a real browser: `swarm up` runs the example order flow on the project's
//! Redis with its memory in PostgreSQL + pgvector; headless Chromium (driven through
//! chromedriver) opens the inspector page while orders are posted over HTTP. The graph must
//! show the example's units and the flows between them, the live feed must fill, and a memory
//! search typed into the page must show executions. Screenshots go to `target/screenshots/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use swarm_memory::testkit::{database_url, fresh_database, models_dir};
use swarm_tests::{
    KillOnDrop, ORDER_FLOW, deploy_order_flow, free_port, redis_url, swarm_binary, workspace_root,
};

fn program(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: install Chromium and chromedriver with ops/install-browser (or set {var})",
        path.display()
    );
    path
}

/// Starts `swarm up` on the example and returns it with the inspector's base URL.
fn start_swarm(
    units: &std::path::Path,
    database: &str,
    spool: &std::path::Path,
) -> (KillOnDrop, String) {
    let prefix = format!("browser-{}", uuid::Uuid::now_v7().simple());
    let mut child = Command::new(swarm_binary())
        .args(["up", "--no-watch", "--http", "127.0.0.1:0", "--redis"])
        .arg(redis_url())
        .args([
            "--redis-prefix",
            &prefix,
            "--consumer",
            "browser",
            "--postgres",
            database,
        ])
        .arg("--models")
        .arg(models_dir())
        .arg("--spool")
        .arg(spool)
        .arg("--units")
        .arg(units)
        .arg("--payload-schemas")
        .arg(workspace_root().join("examples/order-flow/schemas"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swarm up starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("swarm up: {line}");
            if let Some(rest) = line.strip_prefix("inspector on ") {
                let _ = tx.send(rest.trim_end_matches('/').to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("swarm up prints the inspector's address");
    (KillOnDrop(child), base)
}

async fn start_browser() -> (KillOnDrop, Client, tempfile::TempDir) {
    let chromium = program("SWARM_CHROMIUM", "/usr/bin/chromium");
    let driver = program("SWARM_CHROMEDRIVER", "/usr/bin/chromedriver");
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = KillOnDrop(child);
    let profile = tempfile::tempdir().expect("profile dir");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1700",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => break client,
            Err(error) if Instant::now() < deadline => {
                eprintln!("waiting for chromedriver: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot start a Chromium session: {error}"),
        }
    };
    (driver, client, profile)
}

async fn script(client: &Client, source: &str) -> Value {
    client
        .execute(source, Vec::new())
        .await
        .expect("script runs")
}

/// Polls `source` in the page until `done` accepts its value, or panics after `timeout`.
async fn wait_in_page(
    client: &Client,
    source: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let value = script(client, source).await;
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "page never got there: `{source}` is {value}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn save(name: &str, png: &[u8]) -> PathBuf {
    let dir = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_shows_the_live_graph_and_memory_search_in_chromium() {
    let database = fresh_database(&database_url()).await;
    let units = tempfile::tempdir().expect("units dir");
    deploy_order_flow(units.path());
    let spool = tempfile::tempdir().expect("spool dir");
    let (_swarm, base) = start_swarm(units.path(), &database, spool.path());
    let (_driver, client, _profile) = start_browser().await;

    // Orders keep coming while the page is open.
    let poster = {
        let base = base.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for id in 0..40u64 {
                let sku = ["tea", "cake", "piano"][id as usize % 3];
                let order = json!({"kind": "order.placed",
                    "payload": {"id": id, "items": [{"sku": sku, "qty": 1 + id % 3}]}});
                let response = http
                    .post(format!("{base}/v1/signals"))
                    .json(&order)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    client.goto(&format!("{base}/")).await.expect("page opens");

    // The graph: every unit of the example, and traffic along the flow.
    let nodes = wait_in_page(
        &client,
        "return document.querySelector('#graph').dataset.edges || ''",
        Duration::from_secs(30),
        |v| {
            let edges = v.as_str().unwrap_or_default();
            [
                "kind:order.placed->unit:order-validate",
                "unit:order-validate->kind:order.validated",
                "kind:order.validated->unit:order-price",
                "unit:order-price->kind:order.priced",
            ]
            .iter()
            .all(|e| edges.split(' ').any(|x| x == *e))
        },
    )
    .await;
    eprintln!("edges with traffic: {nodes}");
    let nodes = script(
        &client,
        "return document.querySelector('#graph').dataset.nodes",
    )
    .await;
    let nodes = nodes.as_str().unwrap_or_default();
    for unit in ORDER_FLOW {
        assert!(
            nodes.split(' ').any(|n| n == format!("unit:{unit}")),
            "{unit} not in {nodes}"
        );
    }
    // The canvas really drew something: cytoscape holds the elements it renders.
    let drawn = script(
        &client,
        "return state.cy.nodes().length + ':' + state.cy.edges().length",
    )
    .await;
    eprintln!("cytoscape elements: {drawn}");
    // The live feed fills from the websocket, and the units table lists the units.
    wait_in_page(
        &client,
        "return document.querySelectorAll('#feed li').length",
        Duration::from_secs(10),
        |v| v.as_u64().unwrap_or(0) >= 5,
    )
    .await;
    assert_eq!(
        script(
            &client,
            "return document.querySelector('#connection').textContent"
        )
        .await,
        "live"
    );
    let rows = script(
        &client,
        "return document.querySelectorAll('#units tbody tr').length",
    )
    .await;
    assert_eq!(rows.as_u64(), Some(ORDER_FLOW.len() as u64));
    let graph = client
        .find(Locator::Id("graph-panel"))
        .await
        .expect("graph panel");
    save(
        "inspector-graph.png",
        &graph.screenshot().await.expect("graph screenshot"),
    );

    // Memory search typed into the page.
    poster.await.expect("posting finished");
    client
        .find(Locator::Id("search-text"))
        .await
        .expect("search box")
        .send_keys("an order of tea was placed")
        .await
        .expect("typed");
    client
        .find(Locator::Id("search-button"))
        .await
        .expect("search button")
        .click()
        .await
        .expect("clicked");
    let count = wait_in_page(
        &client,
        "return document.querySelectorAll('#search-results tbody tr').length",
        Duration::from_secs(20),
        |v| v.as_u64().unwrap_or(0) > 0,
    )
    .await;
    eprintln!("search results: {count}");
    let first_unit = script(
        &client,
        "return document.querySelector('#search-results tbody tr td:nth-child(2)').textContent",
    )
    .await;
    let first_unit = first_unit.as_str().unwrap_or_default().to_owned();
    assert!(
        ORDER_FLOW.contains(&first_unit.as_str()),
        "first result by {first_unit}"
    );
    let status = script(
        &client,
        "return document.querySelector('#search-status').textContent",
    )
    .await;
    assert!(
        status.as_str().is_some_and(|s| s.ends_with("executions")),
        "{status}"
    );
    save(
        "inspector-page.png",
        &client.screenshot().await.expect("page screenshot"),
    );
    client.close().await.expect("browser closes");
}
