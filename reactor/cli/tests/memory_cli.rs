//! `swarm memory` and the memory options of `swarm up`: bad input gets one clear `error:` line
//! and a failing exit status, before anything is started. (Searching a real memory is in
//! `tests/system/cli.rs`.)

use std::process::Command;

fn swarm(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .env_remove("SWARM_DATABASE_URL")
        .output()
        .expect("swarm runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn memory_commands_without_a_database_say_how_to_name_one() {
    let (ok, stderr) = swarm(&["memory", "stats"]);
    assert!(!ok);
    assert!(
        stderr.contains("error: no memory database: pass --postgres URL or set SWARM_DATABASE_URL"),
        "{stderr}"
    );
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let (ok, stderr) = swarm(&[
        "memory",
        "--postgres",
        "postgres://nobody@127.0.0.1:1/none",
        "--models",
        &dir.path().display().to_string(),
        "search",
        "payment declined",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot load the embedding model from"),
        "{stderr}"
    );
    assert!(stderr.contains("ops/fetch-model"), "{stderr}");
}

#[test]
fn compaction_needs_a_retention_and_a_valid_one() {
    let (ok, stderr) = swarm(&[
        "memory",
        "--postgres",
        "postgres://u:pw@127.0.0.1:1/x",
        "compact",
        "--retain-days",
        "-2",
    ]);
    assert!(!ok);
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        !stderr.contains("pw@"),
        "the password is not printed: {stderr}"
    );
}

#[test]
fn bad_search_arguments_are_refused_by_the_parser() {
    let (ok, stderr) = swarm(&["memory", "search", "x", "--since", "yesterday"]);
    assert!(!ok);
    assert!(stderr.contains("--since"), "{stderr}");
    let (ok, stderr) = swarm(&["memory", "search", "x", "--outcome", "maybe"]);
    assert!(!ok);
    assert!(
        stderr.contains("possible values: success, failure"),
        "{stderr}"
    );
}
