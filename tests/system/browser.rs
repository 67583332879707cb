//! The inspector in a real browser: `swarm up` runs the example order flow and sixteen more
//! units made by `swarm new unit` (twenty in all) on the project's Redis with its memory in
//! PostgreSQL + pgvector; headless Chromium (driven through chromedriver) opens the inspector
//! page at 1280×800 while orders are posted over HTTP. The graph must show every unit and the
//! flows between them, whole, with every label drawn at 11 px or more; the live feed must fill;
//! a memory search typed into the page must show executions, and clicking one must show its
//! conversation as a tree. Screenshots go to `target/screenshots/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use swarm_memory::testkit::{database_url, fresh_database, models_dir};
use swarm_tests::{
    KillOnDrop, ORDER_FLOW, cargo_in, cargo_target_for_units, deploy_bytes, deploy_order_flow,
    free_port, new_unit, redis_url, swarm_binary, user_workspace, workspace_root,
};

/// Units besides the order flow: made by `swarm new unit`, each subscribed to `order.fulfilled`
/// or `order.validated` and emitting a kind of its own.
const LISTENERS: usize = 16;

fn listener(i: usize) -> (String, String, String) {
    let takes = if i % 2 == 0 {
        "order.fulfilled"
    } else {
        "order.validated"
    };
    (
        format!("listener-{i:02}"),
        takes.to_owned(),
        format!("listener.{i:02}"),
    )
}

/// Makes the listener units with `swarm new unit` in a workspace of their own, builds them, and
/// deploys them into `units`.
fn deploy_listeners(units: &std::path::Path) {
    let workspace = user_workspace();
    for i in 0..LISTENERS {
        let (name, takes, emits) = listener(i);
        new_unit(workspace.path(), &name, &takes, &emits);
    }
    let built = cargo_in(workspace.path(), &["build", "--release", "--workspace"]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    for i in 0..LISTENERS {
        let (name, _, _) = listener(i);
        let library = cargo_target_for_units()
            .join("release")
            .join(format!("lib{}.so", name.replace('-', "_")));
        let bytes = std::fs::read(&library).expect("the built listener");
        deploy_bytes(units, &format!("{name}.so"), &bytes);
    }
}

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
                "--disable-sync", "--no-first-run", "--window-size=1280,800",
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
    deploy_listeners(units.path());
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
    client
        .set_window_size(1280, 800)
        .await
        .expect("a 1280×800 window");
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
                "kind:order.fulfilled->unit:listener-00",
                "kind:order.validated->unit:listener-01",
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
    let listeners = (0..LISTENERS).map(|i| listener(i).0);
    for unit in ORDER_FLOW.map(str::to_owned).into_iter().chain(listeners) {
        assert!(
            nodes.split(' ').any(|n| n == format!("unit:{unit}")),
            "{unit} not in {nodes}"
        );
    }
    // Every label as drawn: cytoscape draws a label at its font size times the zoom. The whole
    // graph lies inside its panel, across most of its width.
    let drawn = script(
        &client,
        r#"const cy = state.cy, graph = document.querySelector('#graph');
           const labeled = cy.elements().filter((e) => (e.data('label') || '') !== '');
           const drawn = labeled.map((e) => parseFloat(e.style('font-size')) * cy.zoom());
           const rendered = labeled.map((e) => parseFloat(e.renderedStyle('font-size')));
           const box = cy.elements().renderedBoundingBox({ includeLabels: true });
           return { units: cy.nodes('[kind = "unit"]').length, labels: labeled.length,
                    smallest: Math.min(...drawn), smallest_rendered: Math.min(...rendered),
                    zoom: cy.zoom(), width: graph.clientWidth, height: graph.clientHeight,
                    box: [box.x1, box.y1, box.x2, box.y2] };"#,
    )
    .await;
    eprintln!("graph as drawn: {drawn}");
    assert_eq!(
        drawn["units"],
        json!(ORDER_FLOW.len() + LISTENERS),
        "{drawn}"
    );
    let number = |key: &str| drawn[key].as_f64().expect("a number");
    assert!(number("labels") >= 40.0, "{drawn}");
    assert!(
        number("smallest") >= 11.0,
        "labels drawn under 11 px: {drawn}"
    );
    assert!(
        number("smallest_rendered") >= 11.0,
        "labels drawn under 11 px: {drawn}"
    );
    let (width, height) = (number("width"), number("height"));
    assert!(width >= 1000.0, "the graph spans the window: {drawn}");
    let corner = |i: usize| drawn["box"][i].as_f64().expect("a corner");
    assert!(
        corner(0) >= 0.0 && corner(1) >= 0.0 && corner(2) <= width && corner(3) <= height,
        "the whole graph is inside its panel: {drawn}"
    );
    assert!(
        corner(2) - corner(0) >= 0.5 * width,
        "the graph fills its panel: {drawn}"
    );
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
    assert_eq!(rows.as_u64(), Some((ORDER_FLOW.len() + LISTENERS) as u64));
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
        ORDER_FLOW.contains(&first_unit.as_str()) || first_unit.starts_with("listener-"),
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

    // A result clicked: its conversation as a tree, from memory, the clicked execution marked.
    client
        .find(Locator::Css("#search-results tbody tr"))
        .await
        .expect("a result")
        .click()
        .await
        .expect("clicked");
    let tree = wait_in_page(
        &client,
        r#"const units = [...document.querySelectorAll('#conversation li.execution')]
             .map((li) => li.dataset.unit);
           return { units, focus: document.querySelectorAll('#conversation .focus').length,
                    signals: document.querySelectorAll('#conversation li.signal').length,
                    root: (document.querySelector('#conversation .tree > li.signal > .line') || {}).textContent || '' };"#,
        Duration::from_secs(20),
        |v| v["units"].as_array().is_some_and(|u| u.len() >= 3),
    )
    .await;
    eprintln!("conversation: {tree}");
    let units: Vec<&str> = tree["units"]
        .as_array()
        .expect("units")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for unit in ["order-validate", "order-price"] {
        assert!(units.contains(&unit), "{unit} in {units:?}");
    }
    assert!(
        units.iter().any(|u| u.starts_with("fulfil-")),
        "a fulfilment unit in {units:?}"
    );
    assert!(
        units.iter().any(|u| u.starts_with("listener-")),
        "a listener in {units:?}"
    );
    assert_eq!(
        tree["focus"],
        json!(1),
        "the clicked execution is marked: {tree}"
    );
    assert!(
        tree["root"]
            .as_str()
            .is_some_and(|r| r.starts_with("order.placed")),
        "the tree starts at the order: {tree}"
    );
    let conversation = client
        .find(Locator::Id("conversation-panel"))
        .await
        .expect("conversation panel");
    save(
        "inspector-conversation.png",
        &conversation
            .screenshot()
            .await
            .expect("conversation screenshot"),
    );
    client.close().await.expect("browser closes");
}
