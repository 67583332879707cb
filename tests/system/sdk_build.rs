//! The SDK refuses to build a unit with `panic = "abort"`: one panic would then kill the
//! reactor instead of becoming a failure record.

use std::process::Command;

use swarm_tests::workspace_root;

#[test]
fn a_unit_built_with_panic_abort_does_not_compile() {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "fixture-flaky",
            "--config",
            "profile.release.panic=\"abort\"",
            "--target-dir",
        ])
        .arg(root.join("target").join("panic-abort-build"))
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the build must fail:\n{stderr}");
    assert!(
        stderr.contains("swarm units must be built with panic = \"unwind\""),
        "{stderr}"
    );
}
