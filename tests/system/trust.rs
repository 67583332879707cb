//! Unit trust: with a trust file only the libraries on it load, and a units directory or
//! library that others can write is refused with the command that fixes it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use swarm_reactor::TrustPolicy;
use swarm_reactor::trust::TrustFile;
use swarm_tests::{TestSwarm, deploy, sha256sum, wait_for};

/// Runs `swarm` with `args`; returns its exit status code, stdout and stderr.
fn swarm(args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(swarm_tests::swarm_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("swarm runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `swarm units --json` on `dir` with `extra` arguments: the names loaded, and the refusals.
fn units(dir: &Path, extra: &[&str]) -> (Vec<String>, Vec<Value>) {
    let mut args = vec!["units", "--json", "--units", path(dir)];
    args.extend(extra);
    let (status, stdout, stderr) = swarm(&args);
    let listed: Value = serde_json::from_str(&stdout).expect("json");
    let mut names: Vec<String> = listed["units"]
        .as_array()
        .expect("units")
        .iter()
        .filter_map(|u| u["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    let refused = listed["refused"].as_array().expect("refused").clone();
    // Exit status 1 says some library was refused.
    let expected = if refused.is_empty() { 0 } else { 1 };
    assert_eq!(status, Some(expected), "{stderr}");
    (names, refused)
}

#[test]
fn under_a_trust_file_an_unlisted_library_is_refused_with_its_digest() {
    let dir = tempfile::tempdir().expect("dir");
    deploy(dir.path(), "fixture-counter-v1", "counter.so");
    deploy(dir.path(), "fixture-noop", "noop.so");
    let trust = dir.path().join("trust.sha256");
    let trust_arg = path(&trust);
    let counter = dir.path().join("counter.so");
    let (status, stdout, stderr) = swarm(&["trust", "add", path(&counter), "--trust", trust_arg]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.starts_with("trusted: "), "{stdout}");

    let (names, refused) = units(dir.path(), &["--trust", trust_arg]);
    assert_eq!(names, ["counter"]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let noop = dir.path().join("noop.so");
    let why = refused[0].to_string();
    assert!(why.contains(&sha256sum(&noop)), "names the digest: {why}");
    assert!(
        why.contains("swarm trust add"),
        "says how to trust it: {why}"
    );

    // Adding it again changes nothing; adding the other lets both load.
    let (_, stdout, _) = swarm(&["trust", "add", path(&counter), "--trust", trust_arg]);
    assert!(stdout.starts_with("already trusted: "), "{stdout}");
    let (status, _, stderr) = swarm(&["trust", "add", path(&noop), "--trust", trust_arg]);
    assert_eq!(status, Some(0), "{stderr}");
    let (names, refused) = units(dir.path(), &["--trust", trust_arg]);
    assert_eq!(names, ["counter", "noop"]);
    assert!(refused.is_empty(), "{refused:?}");
    // The file is what `sha256sum` prints, so `sha256sum -c` checks the libraries against it.
    let (_, listed, _) = swarm(&["trust", "list", "--trust", trust_arg]);
    assert!(
        listed.contains(&format!("{}  noop.so", sha256sum(&noop))),
        "{listed}"
    );

    // A trust file that is not one is an error at start, not a silent allow-all.
    std::fs::write(&trust, "not a digest  noop.so\n").expect("write");
    let (status, _, stderr) = swarm(&["units", "--units", path(dir.path()), "--trust", trust_arg]);
    assert_ne!(status, Some(0));
    assert!(stderr.contains("line 1"), "{stderr}");
}

/// A running reactor reads the trust file at every load: a refused library loads once it is
/// trusted and deployed again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_reactor_loads_a_library_once_it_is_trusted() {
    let mut swarm = TestSwarm::new();
    let trust = swarm.units.path().join("trust.sha256");
    std::fs::write(&trust, "# nothing yet\n").expect("write");
    swarm.config.trust = TrustPolicy {
        trust_file: Some(trust.clone()),
        insecure_units_dir: false,
    };
    swarm.deploy("fixture-noop", "noop.so");
    let (reactor, report) = swarm.start().await;
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert!(reactor.registry().status().is_empty());
    let library = swarm.units.path().join("noop.so");
    TrustFile::add(&trust, &library).expect("trusted");
    swarm.deploy("fixture-noop", "noop.so");
    let loaded = wait_for(Duration::from_secs(10), || {
        (!reactor.registry().status().is_empty()).then_some(())
    })
    .await;
    assert!(loaded.is_some(), "loaded once trusted");
    reactor.stop_within(Duration::from_secs(5)).await;
}

#[test]
fn a_units_directory_others_can_write_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("dir");
    deploy(dir.path(), "fixture-noop", "noop.so");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let fix = format!("chmod go-w {}", dir.path().display());

    let (status, _, stderr) = swarm(&[
        "up",
        "--no-watch",
        "--http",
        "127.0.0.1:0",
        "--units",
        path(dir.path()),
    ]);
    assert_ne!(status, Some(0), "refused to start");
    assert!(
        stderr.contains("writable by its group and all other users"),
        "{stderr}"
    );
    assert!(stderr.contains(&fix), "{stderr}");

    let (status, _, stderr) = swarm(&["units", "--units", path(dir.path())]);
    assert_ne!(status, Some(0));
    assert!(stderr.contains(&fix), "{stderr}");
    let (status, stdout, _) = swarm(&["doctor", "--units", path(dir.path())]);
    assert_ne!(status, Some(0));
    let line = stdout
        .lines()
        .find(|l| l.contains("units"))
        .unwrap_or_default();
    assert!(line.contains(&fix), "{stdout}");

    // Overridden, loudly.
    let (names, _) = units(dir.path(), &["--insecure-units-dir"]);
    assert_eq!(names, ["noop"]);

    // In a safe directory, a library others can write is refused the same way.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let library = dir.path().join("noop.so");
    std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (names, refused) = units(dir.path(), &[]);
    assert!(names.is_empty());
    let why = refused[0].to_string();
    assert!(
        why.contains(&format!("chmod go-w {}", library.display())),
        "{why}"
    );
}
