//! `swarm doctor` against the real things: every check passes on a good setup (the example's
//! units, the project's Redis and PostgreSQL + pgvector, the fetched model, a free port), and
//! each check fails, with what to do, for a real reason.

use std::path::Path;
use std::process::{Command, Output};

use swarm_memory::testkit::{database_url, models_dir};
use swarm_tests::{deploy_bytes, deploy_order_flow, redis_url, swarm_binary};

fn doctor(args: &[&str], units: &Path) -> Output {
    Command::new(swarm_binary())
        .arg("doctor")
        .arg("--units")
        .arg(units)
        .args(args)
        .env_remove("SWARM_REDIS_URL")
        .env_remove("SWARM_DATABASE_URL")
        .env_remove("SWARM_HTTP")
        .output()
        .expect("swarm runs")
}

fn lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn line_of<'a>(lines: &'a [String], check: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .unwrap_or_else(|| panic!("no line for {check}: {lines:#?}"))
}

#[test]
fn every_check_passes_on_a_good_setup() {
    let units = tempfile::tempdir().expect("units dir");
    deploy_order_flow(units.path());
    let models = models_dir();
    let output = doctor(
        &[
            "--redis",
            &redis_url(),
            "--postgres",
            &database_url(),
            "--models",
            &models.to_string_lossy(),
            "--http",
            "127.0.0.1:0",
        ],
        units.path(),
    );
    let lines = lines(&output);
    assert!(output.status.success(), "{lines:#?}");
    assert_eq!(lines.len(), 6, "one line per check: {lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with("ok ")), "{lines:#?}");
    assert!(line_of(&lines, "units").contains("4 units load"));
    assert!(line_of(&lines, "postgres").contains("pgvector"));
    assert!(line_of(&lines, "model").contains("384 dimensions"));
}

/// The postgres line says how the server holds its shared memory, as the server itself reports
/// it (ops/start-postgres puts it in huge pages where it can).
#[tokio::test]
async fn the_postgres_line_says_whether_shared_memory_is_in_huge_pages() {
    let units = tempfile::tempdir().expect("units dir");
    let url = database_url();
    let output = doctor(&["--postgres", &url], units.path());
    let lines = lines(&output);
    let postgres = line_of(&lines, "postgres");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let (buffers, huge): (String, String) = sqlx::query_as(
        "SELECT current_setting('shared_buffers'), current_setting('huge_pages_status')",
    )
    .fetch_one(&pool)
    .await
    .expect("settings");
    assert!(postgres.starts_with("ok "), "{lines:#?}");
    assert!(
        postgres.contains(&format!("shared buffers {buffers} ")),
        "{postgres}"
    );
    let expected = if huge == "on" {
        "in huge pages"
    } else {
        "in ordinary pages"
    };
    assert!(
        postgres.contains(expected),
        "server says {huge}: {postgres}"
    );
}

#[test]
fn each_check_fails_for_a_real_reason_and_says_what_to_do() {
    let units = tempfile::tempdir().expect("units dir");
    deploy_order_flow(units.path());
    deploy_bytes(units.path(), "garbage.so", b"not a library");
    let tokens = units.path().join("tokens.json");
    std::fs::write(
        &tokens,
        r#"[{"name": "ci", "token": "short", "scopes": ["read"]}]"#,
    )
    .expect("write");
    // A port nothing listens on, for Redis; a port something holds, for the inspector.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let held_addr = held.local_addr().expect("addr").to_string();
    let mut missing_db = database_url();
    let slash = missing_db.rfind('/').expect("a database in the URL");
    missing_db.replace_range(slash + 1.., "swarm_no_such_database");
    let empty_models = tempfile::tempdir().expect("models dir");

    // The configuration check reads the tokens file; the inspector check then has no config.
    let output = doctor(
        &[
            "--api-tokens",
            &tokens.to_string_lossy(),
            "--redis",
            &format!("redis://{closed}/"),
            "--postgres",
            &missing_db,
            "--models",
            &empty_models.path().to_string_lossy(),
        ],
        units.path(),
    );
    let lines = lines(&output);
    assert_eq!(output.status.code(), Some(1), "{lines:#?}");
    for (check, expected) in [
        ("config", "shorter than 16 characters"),
        ("units", "garbage.so"),
        ("redis", "Connection refused"),
        ("postgres", "swarm_no_such_database"),
        ("model", "tokenizer"),
    ] {
        let line = line_of(&lines, check);
        assert!(line.starts_with("FAIL"), "{line}");
        assert!(line.contains(expected), "{check}: `{expected}` in {line}");
        assert!(line.contains(" → "), "{check} says what to do: {line}");
    }
    assert!(line_of(&lines, "units").contains("4 units load, 1 refused"));
    assert!(
        lines.last().is_some_and(|l| l == "5 of 6 checks failed"),
        "{lines:#?}"
    );

    // The inspector's address is taken; a units directory that does not exist.
    let output = doctor(&["--http", &held_addr], &units.path().join("nowhere"));
    let lines = self::lines(&output);
    assert_eq!(output.status.code(), Some(1), "{lines:#?}");
    let inspector = line_of(&lines, "inspector");
    assert!(
        inspector.starts_with("FAIL") && inspector.contains("in use"),
        "{inspector}"
    );
    let missing = line_of(&lines, "units");
    assert!(
        missing.starts_with("FAIL") && missing.contains("nowhere"),
        "{missing}"
    );
    // Without Redis or PostgreSQL configured, those checks are skipped, not failed.
    assert!(line_of(&lines, "redis").starts_with("skip"));
    assert!(line_of(&lines, "postgres").starts_with("skip"));
    drop(held);
}
