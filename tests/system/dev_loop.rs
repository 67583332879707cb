//! `swarm dev` as a unit author uses it: in a workspace of the test's own, a unit made by
//! `swarm new unit` is built and served; an edit to its source is rebuilt and swapped in
//! without a restart; a syntax error prints the compiler's error and the previous version
//! keeps serving.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_tests::{KillOnDrop, cargo_target_for_units, new_unit, swarm_binary, user_workspace};

/// Waits for a stderr line containing `needle`; returns it and every line read meanwhile.
fn wait_line(lines: &Receiver<String>, needle: &str, timeout: Duration) -> (String, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return (line, seen),
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no line with `{needle}` within {timeout:?}; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

async fn greet(http: &reqwest::Client, base: &str) -> Value {
    let response = http
        .post(format!("{base}/v1/signals?wait=10"))
        .json(&json!({"kind": "person.arrived", "payload": {"name": "ada"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let replied: Value = response.json().await.expect("reply");
    assert_eq!(replied["reply"]["kind"], "person.greeted");
    replied["reply"]["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_is_rebuilt_and_swapped_in_and_a_syntax_error_keeps_the_old_version() {
    let workspace = user_workspace();
    new_unit(
        workspace.path(),
        "greeter",
        "person.arrived",
        "person.greeted",
    );
    let mut child = Command::new(swarm_binary())
        .args(["dev", "--http", "127.0.0.1:0", "--workspace"])
        .arg(workspace.path())
        .arg("--units")
        .arg(workspace.path().join("units"))
        .env("CARGO_TARGET_DIR", cargo_target_for_units())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swarm dev starts");
    let stderr = child.stderr.take().expect("stderr");
    let _dev = KillOnDrop(child);
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("swarm dev: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (line, _) = wait_line(&lines, "inspector on ", Duration::from_secs(300));
    let base = line
        .trim_start_matches("inspector on ")
        .trim_end_matches('/')
        .to_owned();
    wait_line(&lines, "watching greeter", Duration::from_secs(30));
    let http = reqwest::Client::new();
    let first = greet(&http, &base).await;
    assert_eq!(first["payload"]["name"], "ada");
    assert!(first.get("version").is_none(), "{first}");

    // Edit and save: the new version serves without a restart.
    let source = workspace.path().join("units/greeter/src/lib.rs");
    let text = std::fs::read_to_string(&source).expect("read");
    let edited = text.replace(
        "\"payload\": signal.payload}",
        "\"payload\": signal.payload, \"version\": 2}",
    );
    assert_ne!(edited, text, "the template changed; update this test");
    std::fs::write(&source, &edited).expect("save");
    let (swapped, _) = wait_line(&lines, "generation 2 serving", Duration::from_secs(120));
    assert!(swapped.contains("after the save"), "{swapped}");
    let second = greet(&http, &base).await;
    assert_eq!(second["version"], 2, "{second}");

    // A save that changes nothing swaps nothing and holds nothing back: the next edit is
    // built and served, and no save is reported as not swapped in.
    std::fs::write(&source, &edited).expect("save");
    std::thread::sleep(Duration::from_millis(300));
    let edited = edited.replace("\"version\": 2}", "\"version\": 3}");
    std::fs::write(&source, &edited).expect("save");
    let (_, between) = wait_line(&lines, "generation 3 serving", Duration::from_secs(120));
    assert!(
        between.iter().all(|l| !l.contains("not swapped in")),
        "{between:#?}"
    );
    let third = greet(&http, &base).await;
    assert_eq!(third["version"], 3, "{third}");

    // A syntax error: the compiler's error is shown and version 3 keeps serving.
    std::fs::write(&source, format!("{edited}\nfn broken( {{\n")).expect("save");
    let (failed, before) = wait_line(
        &lines,
        "build failed; the version serving keeps serving",
        Duration::from_secs(120),
    );
    assert!(failed.starts_with("greeter:"), "{failed}");
    assert!(
        before.iter().any(|l| l.contains("error")) && before.iter().any(|l| l.contains("lib.rs")),
        "the compiler's error is printed: {before:#?}"
    );
    let fourth = greet(&http, &base).await;
    assert_eq!(fourth["version"], 3, "{fourth}");
}
