//! `swarm up --postgres` remembers the example swarm's executions in PostgreSQL + pgvector, and
//! `swarm memory search` / `stats` read them back, on the project's PostgreSQL (a fresh database
//! of this test's own).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use swarm_memory::testkit::{database_url, fresh_database, models_dir};
use swarm_tests::{deploy_order_flow, stop_cleanly, swarm_binary};

fn memory(args: &[&str], url: &str) -> Output {
    Command::new(swarm_binary())
        .arg("memory")
        .args(["--postgres", url, "--models"])
        .arg(models_dir())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("swarm runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_remembers_executions_and_memory_search_finds_them() {
    let url = fresh_database(&database_url()).await;
    let units = tempfile::tempdir().expect("units dir");
    deploy_order_flow(units.path());
    let spool = tempfile::tempdir().expect("spool dir");
    let feed = swarm_tests::workspace_root().join("examples/order-flow/signals.jsonl");
    let mut child = Command::new(swarm_binary())
        .args([
            "up",
            "--no-watch",
            "--http",
            "127.0.0.1:0",
            "--postgres",
            &url,
            "--models",
        ])
        .arg(models_dir())
        .arg("--spool")
        .arg(spool.path())
        .arg("--units")
        .arg(units.path())
        .arg("--feed")
        .arg(&feed)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swarm up starts");

    // The feed's four orders make at least one execution each; wait until the count is stable.
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut stable_since) = (0i64, Instant::now());
    loop {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM executions")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        if count != last {
            (last, stable_since) = (count, Instant::now());
        }
        if last >= 4 && stable_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let output = child.wait_with_output().expect("exit");
            panic!(
                "only {last} executions stored; swarm up said: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_cleanly(child);

    let output = memory(
        &["search", "a new order was placed", "-k", "3", "--json"],
        &url,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hits: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let hits = hits.as_array().expect("an array of hits");
    assert_eq!(hits.len(), 3);
    assert_eq!(
        hits[0]["record"]["signal"]["kind"], "order.placed",
        "{hits:#?}"
    );
    assert!(
        hits[0]["similarity"].as_f64().is_some_and(|s| s > 0.3),
        "{hits:#?}"
    );

    // `swarm explain` on the best hit: the logged policy, the signal's executions, standings.
    let id = hits[0]["record"]["id"].as_str().expect("an execution id");
    let unit = hits[0]["record"]["unit"].as_str().expect("a unit");
    let explain = |args: &[&str]| {
        Command::new(swarm_binary())
            .arg("explain")
            .args(args)
            .args(["--postgres", &url, "--models"])
            .arg(models_dir())
            .env_remove("RUST_LOG")
            .output()
            .expect("swarm runs")
    };
    let output = explain(&[id]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains(&format!("execution {id} of `{unit}`")),
        "{text}"
    );
    assert!(
        text.contains("chosen by policy fan_out with propensity 1.000"),
        "{text}"
    );
    assert!(text.contains("nearest past executions"), "{text}");
    let output = explain(&[id, "--json"]);
    let why: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(why["execution"]["id"], id);
    assert!(
        why["standings"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["unit"] == unit)),
        "{why:#}"
    );
    for (arg, expected) in [
        (
            "not-an-id",
            "error: `not-an-id` is not an execution id (a UUID)",
        ),
        (
            "0190a0a0-0000-7000-8000-000000000000",
            "error: no execution 0190a0a0-0000-7000-8000-000000000000 in memory",
        ),
    ] {
        let output = explain(&[arg]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.starts_with(expected), "{stderr}");
    }

    let output = memory(
        &[
            "search",
            "order",
            "--kind",
            "order.placed",
            "--unit",
            "order-validate",
        ],
        &url,
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        table.lines().count() >= 5,
        "a header and four orders: {table}"
    );
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains("order-validate@1.0.0") && l.contains("order.placed")),
        "{table}"
    );

    let output = memory(&["stats", "--json"], &url);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let validate = stats
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["unit"] == "order-validate")
        .expect("order-validate");
    assert_eq!(validate["executions"], 4, "{stats:#?}");
    let total: i64 = stats
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["executions"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, last, "stats add up to the stored executions");

    let output = memory(&["search", "x", "-k", "0"], &url);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: invalid query: k must be between 1 and 1000"),
        "{stderr}"
    );

    // Memory as an earlier model left it: search with this model finds nothing until `swarm
    // memory reindex` has embedded every shape again and switched.
    sqlx::query("UPDATE shapes SET model = 'an-earlier-model'")
        .execute(&pool)
        .await
        .expect("update");
    sqlx::query("UPDATE memory_model SET model = 'an-earlier-model'")
        .execute(&pool)
        .await
        .expect("update");
    let shapes: i64 = sqlx::query_scalar("SELECT count(*) FROM shapes")
        .fetch_one(&pool)
        .await
        .expect("count");
    let search = || {
        memory(
            &["search", "a new order was placed", "-k", "3", "--json"],
            &url,
        )
    };
    let output = search();
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("memory holds another model's vectors"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hits: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(hits.as_array().map(Vec::len), Some(0), "{hits:#}");
    let output = memory(&["reindex"], &url);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("(was an-earlier-model)")
            && said.contains(&format!("{shapes} shapes embedded, {shapes} in all")),
        "{said}"
    );
    let hits: serde_json::Value = serde_json::from_slice(&search().stdout).expect("JSON");
    assert_eq!(
        hits[0]["record"]["signal"]["kind"], "order.placed",
        "{hits:#}"
    );
    let output = memory(&["reindex"], &url);
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains(&format!("0 shapes embedded, {shapes} in all")),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
