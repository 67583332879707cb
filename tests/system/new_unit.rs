//! `swarm new unit` makes a unit crate a user can test, build and run at once: in a workspace
//! of the test's own (which uses the repository's SDK), the new crate's own test passes, its
//! release build loads in a reactor, and it reacts to a signal.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use swarm_tests::{
    TestSwarm, cargo_in, cargo_target_for_units, deploy_bytes, swarm_binary, user_workspace,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn swarm_new(args: &[&str], workspace: &Path) -> Output {
    Command::new(swarm_binary())
        .args(["new", "unit"])
        .args(args)
        .arg("--workspace")
        .arg(workspace)
        .output()
        .expect("swarm runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_unit_builds_passes_its_test_loads_and_reacts() {
    let workspace = user_workspace();
    let output = swarm_new(
        &[
            "greeter",
            "--subscribes",
            "person.arrived",
            "--emits",
            "person.greeted",
        ],
        workspace.path(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("created unit `greeter`"));
    let manifest = std::fs::read_to_string(workspace.path().join("Cargo.toml")).expect("read");
    assert!(manifest.contains("\"units/greeter\""), "{manifest}");

    let tested = cargo_in(workspace.path(), &["test", "-p", "greeter"]);
    let out = text(&tested.stdout);
    assert!(tested.status.success(), "{out}\n{}", text(&tested.stderr));
    assert!(out.contains("tests::handles_a_signal ... ok"), "{out}");

    let built = cargo_in(workspace.path(), &["build", "--release", "-p", "greeter"]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    let library = cargo_target_for_units()
        .join("release")
        .join(format!("libgreeter{}", std::env::consts::DLL_SUFFIX));
    let bytes = std::fs::read(&library).expect("the built library");

    let swarm = TestSwarm::new();
    deploy_bytes(swarm.units.path(), "greeter.so", &bytes);
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let status = reactor.registry().status();
    assert_eq!(status.len(), 1);
    assert_eq!(
        (status[0].name.as_str(), status[0].version.as_str()),
        ("greeter", "0.1.0")
    );
    let signal = swarm_schemas::Signal::new("person.arrived", serde_json::json!({"name": "ada"}));
    swarm.publish(&signal).await;
    assert!(swarm.settled(Duration::from_secs(10)).await);
    reactor.stop().await;
    let greeted: Vec<swarm_schemas::Signal> = swarm
        .signals(&swarm.config.stream)
        .await
        .into_iter()
        .filter(|s| s.kind == "person.greeted")
        .collect();
    assert_eq!(greeted.len(), 1);
    assert_eq!(greeted[0].correlation_id, signal.id);
    assert_eq!(greeted[0].payload["payload"]["name"], "ada");
}

#[test]
fn bad_names_kinds_and_places_get_one_clear_line() {
    let workspace = user_workspace();
    for (args, expected) in [
        (vec!["Greeter"], "name `Greeter` is invalid"),
        (vec!["a_b"], "name `a_b` is invalid"),
        (
            vec!["ok", "--subscribes", "Bad Kind"],
            "--subscribes `Bad Kind`",
        ),
        (vec!["ok", "--emits", "a..b"], "--emits `a..b`"),
    ] {
        let output = swarm_new(&args, workspace.path());
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{expected}: {stderr}"
        );
    }
    // Twice the same name, and a folder that is no workspace with the SDK.
    assert!(swarm_new(&["twice"], workspace.path()).status.success());
    let again = swarm_new(&["twice"], workspace.path());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let empty = tempfile::tempdir().expect("dir");
    let output = swarm_new(&["lost"], empty.path());
    assert!(
        text(&output.stderr).contains("cannot read"),
        "{}",
        text(&output.stderr)
    );
    std::fs::write(
        empty.path().join("Cargo.toml"),
        "[workspace]\nmembers = []\n",
    )
    .expect("write");
    let output = swarm_new(&["lost"], empty.path());
    assert!(
        text(&output.stderr).contains("has no swarm-sdk in [workspace.dependencies]"),
        "{}",
        text(&output.stderr)
    );
    assert!(!empty.path().join("units/lost").exists());
}
