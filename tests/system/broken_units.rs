//! Broken libraries dropped into the units directory — garbage bytes, a truncated library, a
//! wrong ABI version, a bad manifest, a constructor that panics — are refused with the reason;
//! the version already serving keeps serving and nothing crashes.

use std::time::Duration;

use serde_json::json;
use swarm_schemas::{Outcome, Signal};
use swarm_tests::{TestSwarm, deploy_bytes, library, wait_for};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_replacements_leave_the_old_version_serving() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, _) = swarm.start().await;
    let registry = reactor.registry();
    let read = |package: &str| std::fs::read(library(package)).expect("built library");
    let v2 = read("fixture-counter-v2");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage bytes",
            b"this is not a library at all".to_vec(),
            "not a shared library (no ELF header)",
        ),
        // Cut inside the loadable segments (debug info at the end of the file is not loaded).
        (
            "a truncated library",
            v2[..64 * 1024].to_vec(),
            "not a loadable shared library",
        ),
        (
            "a wrong ABI version",
            read("fixture-wrong-abi"),
            "unit ABI version 999, this reactor speaks version 1",
        ),
        (
            "a bad manifest",
            read("fixture-counter-bad-manifest"),
            "bad manifest: name `Counter!` is invalid",
        ),
        (
            "a panicking constructor",
            read("fixture-counter-ctor-panic"),
            "unit `counter`: constructor panicked: counter 3 cannot start: the constructor panicked on purpose",
        ),
    ];
    for (what, bytes, reason) in cases {
        deploy_bytes(swarm.units.path(), "counter.so", &bytes);
        let reported = wait_for(WAIT, || {
            registry
                .status()
                .into_iter()
                .find_map(|u| u.last_error.filter(|e| e.contains(reason)))
        })
        .await;
        assert!(
            reported.is_some(),
            "{what}: reason `{reason}` reported; status: {:?}",
            registry.status()
        );
        println!("{what}: {}", reported.unwrap_or_default());

        // The old version still serves.
        let tick = Signal::new("tick", json!({}));
        swarm.publish(&tick).await;
        assert!(swarm.settled(WAIT).await);
        let record = swarm.memory.latest(1).pop().expect("an execution");
        assert_eq!(record.signal.id, tick.id);
        assert_eq!(
            (record.unit_version.to_string().as_str(), record.generation),
            ("1.0.0", 1),
            "{what}"
        );
        assert_eq!(record.outcome, Outcome::Success);
    }

    // A good file after all that still swaps in, and the error clears.
    deploy_bytes(swarm.units.path(), "counter.so", &v2);
    let status = wait_for(WAIT, || {
        registry.status().into_iter().find(|u| u.generation == 2)
    })
    .await;
    let status = status.expect("version 2 swapped in");
    assert_eq!(status.version, "2.0.0");
    assert_eq!(status.last_error, None);
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_new_files_are_reported_without_touching_loaded_units() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    deploy_bytes(swarm.units.path(), "junk.so", b"\x7fELF but not really");
    let (reactor, report) = swarm.start().await;
    let refused: Vec<String> = report
        .failures
        .iter()
        .map(|(p, e)| format!("{}: {e}", p.display()))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("junk.so") && refused[0].contains("not a loadable shared library"),
        "{refused:?}"
    );

    swarm.deploy("fixture-wrong-abi", "future.so");
    let registry = reactor.registry();
    let failures = wait_for(WAIT, || Some(registry.failures()).filter(|f| f.len() == 2)).await;
    let failures = failures.expect("both broken files reported");
    assert!(
        failures[0].file.ends_with("future.so") && failures[0].error.contains("ABI version 999"),
        "{failures:?}"
    );
    assert!(failures[1].file.ends_with("junk.so"), "{failures:?}");
    let status = registry.status();
    assert_eq!(status.len(), 1);
    assert_eq!(
        (
            status[0].name.as_str(),
            status[0].generation,
            status[0].last_error.clone()
        ),
        ("counter", 1, None)
    );
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_breaks_the_units_config_schema_refuses_the_load_with_the_field() {
    let mut swarm = TestSwarm::new();
    swarm.config.unit_config.insert(
        "picky-a".into(),
        json!({"fail_topic": 5, "fail_odd": true, "surprise": 1}),
    );
    swarm
        .config
        .unit_config
        .insert("picky-b".into(), json!({"fail_topic": "refund"}));
    swarm.deploy("fixture-picky-a", "picky-a.so");
    swarm.deploy("fixture-picky-b", "picky-b.so");
    let (reactor, report) = swarm.start().await;
    let names: Vec<String> = reactor
        .registry()
        .status()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["picky-b"], "a valid config loads");
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let error = report.failures[0].1.to_string();
    assert!(
        error.contains("unit `picky-a`: its configuration breaks its config schema"),
        "{error}"
    );
    assert!(
        error.contains("/fail_topic: 5 is not of type \"string\""),
        "{error}"
    );
    assert!(error.contains("surprise"), "{error}");
    reactor.stop().await;

    // Without a section, a unit with a config schema gets `{}`, which this schema accepts.
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-picky-a", "picky-a.so");
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(reactor.registry().status().len(), 1);
    reactor.stop().await;
}
