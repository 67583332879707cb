//! Lifecycle hooks and state across swaps, through real libraries: the `tally` fixture journals
//! every hook to a file and keeps a running total that it snapshots and restores.
//!
//! - hooks run in the documented order on load, disable, enable, swap (both ways) and removal;
//! - a hook that fails or panics, or a snapshot or restore that fails, leaves the old version
//!   serving with its state;
//! - a refused `on_enable` keeps the unit disabled, a failed `on_disable` does not keep it on;
//! - swapping back and forth under load neither loses nor repeats an addition;
//! - a library with an ABI 1.0 table loads, and none of the later entries is called.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use swarm_mesh::prelude::*;
use swarm_reactor::{EnableError, Reactor};
use swarm_schemas::{Signal, UnitState};
use swarm_tests::{TestSwarm, wait_for};

const WAIT: Duration = Duration::from_secs(10);

fn journal(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until the journal holds exactly `expected`.
async fn journal_is(path: &Path, expected: &[&str]) {
    let reached = wait_for(WAIT, || (journal(path) == expected).then_some(())).await;
    assert!(
        reached.is_some(),
        "journal is {:?}, expected {expected:?}",
        journal(path)
    );
}

/// A swarm whose `tally` unit has `config` (plus a journal in `dir`); returns the journal path.
fn tally_swarm(dir: &Path, mut config: Value) -> (TestSwarm, std::path::PathBuf) {
    let path = dir.join("journal");
    config["journal"] = json!(path);
    let mut swarm = TestSwarm::new();
    swarm.config.unit_config.insert("tally".into(), config);
    (swarm, path)
}

/// Publishes `n` additions of 1 and waits until the reactor has settled them.
async fn add(swarm: &TestSwarm, n: usize) {
    for _ in 0..n {
        swarm.publish(&Signal::new("tally.add", json!({}))).await;
    }
    assert!(swarm.settled(WAIT).await, "the additions are settled");
}

/// Every `tally.total` on the stream, as (total, version), in stream order.
async fn totals(swarm: &TestSwarm) -> Vec<(u64, String)> {
    swarm
        .signals(&swarm.config.stream)
        .await
        .into_iter()
        .filter(|s| s.kind == "tally.total")
        .map(|s| {
            (
                s.payload["total"].as_u64().expect("a total"),
                s.payload["version"].as_str().expect("a version").to_owned(),
            )
        })
        .collect()
}

async fn serving(reactor: &Reactor, generation: u64) {
    let slot = reactor.registry().unit("tally").expect("tally is loaded");
    let swapped = wait_for(WAIT, || {
        slot.current()
            .filter(|g| g.number() == generation)
            .map(|_| ())
    })
    .await;
    assert!(swapped.is_some(), "generation {generation} serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_order_and_the_state_crosses_swaps_both_ways() {
    let dir = tempfile::tempdir().expect("dir");
    let (swarm, path) = tally_swarm(dir.path(), json!({}));
    swarm.deploy("fixture-tally-v1", "tally.so");
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    journal_is(&path, &["1.0.0 on_load"]).await;

    add(&swarm, 3).await;
    let registry = reactor.registry();
    registry.set_enabled("tally", false).expect("disable");
    registry.set_enabled("tally", false).expect("disable again");
    registry.set_enabled("tally", true).expect("enable");
    registry.set_enabled("tally", true).expect("enable again");
    journal_is(
        &path,
        &["1.0.0 on_load", "1.0.0 on_disable", "1.0.0 on_enable"],
    )
    .await;

    swarm.deploy("fixture-tally-v2", "tally.so");
    serving(&reactor, 2).await;
    // The old instance is destroyed once nothing holds it; nothing runs on it now.
    let mut expected = vec![
        "1.0.0 on_load",
        "1.0.0 on_disable",
        "1.0.0 on_enable",
        "1.0.0 snapshot 3",
        "2.0.0 restore 3",
        "2.0.0 on_load",
        "2.0.0 on_upgrade 1.0.0",
        "1.0.0 on_unload",
    ];
    journal_is(&path, &expected).await;
    add(&swarm, 1).await;

    // Back to version 1: a swap too, with the state of version 2.
    swarm.deploy("fixture-tally-v1", "tally.so");
    serving(&reactor, 3).await;
    add(&swarm, 1).await;
    std::fs::remove_file(swarm.units.path().join("tally.so")).expect("remove");
    let gone = wait_for(WAIT, || registry.unit("tally").is_none().then_some(())).await;
    assert!(gone.is_some(), "tally unloads when its file is removed");
    expected.extend([
        "2.0.0 snapshot 4",
        "1.0.0 restore 4",
        "1.0.0 on_load",
        "1.0.0 on_upgrade 2.0.0",
        "2.0.0 on_unload",
        "1.0.0 on_unload",
    ]);
    journal_is(&path, &expected).await;
    let expected: Vec<(u64, String)> = [(1, "1.0.0"), (2, "1.0.0"), (3, "1.0.0")]
        .into_iter()
        .chain([(4, "2.0.0"), (5, "1.0.0")])
        .map(|(t, v)| (t, v.to_owned()))
        .collect();
    // Additions published together run concurrently: their totals may reach the stream in
    // any order.
    let mut totals = totals(&swarm).await;
    totals.sort();
    assert_eq!(totals, expected);
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hook_or_state_hand_over_leaves_the_old_version_serving() {
    // (configuration, the refusal the load reports, whether version 2's on_unload runs)
    let cases = [
        (
            json!({"refuse": ["2.0.0:on_upgrade"]}),
            "unit `tally`: on_upgrade failed: on_upgrade refused as configured",
            true,
        ),
        (
            json!({"panic": ["2.0.0:on_load"]}),
            "unit `tally`: on_load panicked: on_load panics as configured",
            false,
        ),
        (
            json!({"refuse": ["1.0.0:snapshot"]}),
            "unit `tally`: snapshot failed: snapshot refused as configured",
            false,
        ),
        (
            json!({"panic": ["2.0.0:restore"]}),
            "unit `tally`: restore panicked: restore panics as configured",
            false,
        ),
    ];
    for (config, refusal, unloads_new) in cases {
        let dir = tempfile::tempdir().expect("dir");
        let (swarm, path) = tally_swarm(dir.path(), config.clone());
        swarm.deploy("fixture-tally-v1", "tally.so");
        let (reactor, _) = swarm.start().await;
        add(&swarm, 2).await;

        swarm.deploy("fixture-tally-v2", "tally.so");
        let registry = reactor.registry();
        let error = wait_for(WAIT, || {
            registry
                .status()
                .into_iter()
                .find(|u| u.name == "tally")
                .and_then(|u| u.last_error)
        })
        .await
        .unwrap_or_else(|| panic!("{config}: the swap is refused"));
        assert!(error.contains(refusal), "{config}: {error}");
        let status = registry.status();
        assert_eq!(
            (status[0].version.as_str(), status[0].generation),
            ("1.0.0", 1),
            "{config}: version 1 still serves"
        );
        add(&swarm, 1).await;
        let last = totals(&swarm).await.pop().expect("a total");
        assert_eq!(
            last,
            (3, "1.0.0".to_owned()),
            "{config}: version 1 kept its state and serves"
        );
        let lines = journal(&path);
        assert_eq!(
            lines.contains(&"2.0.0 on_unload".to_owned()),
            unloads_new,
            "{config}: on_unload runs only after a successful on_load: {lines:?}"
        );
        assert!(
            !lines.contains(&"1.0.0 on_unload".to_owned()),
            "{config}: {lines:?}"
        );
        // Stopping the reactor unloads what serves.
        reactor.stop().await;
        let lines = journal(&path);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("1.0.0 on_unload"),
            "{config}: {lines:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enable_keeps_the_unit_disabled_and_a_failed_disable_still_disables() {
    let dir = tempfile::tempdir().expect("dir");
    let (swarm, _) = tally_swarm(
        dir.path(),
        json!({"refuse": ["1.0.0:on_enable", "1.0.0:on_disable"]}),
    );
    swarm.deploy("fixture-tally-v1", "tally.so");
    let (reactor, _) = swarm.start().await;
    let registry = reactor.registry();

    registry
        .set_enabled("tally", false)
        .expect("disabling cannot be refused");
    let status = &registry.status()[0];
    assert_eq!(status.state, UnitState::Disabled);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("on_disable failed: on_disable refused as configured")),
        "{status:?}"
    );

    let refused = registry.set_enabled("tally", true);
    assert!(
        matches!(&refused, Err(EnableError::Refused { unit, .. }) if unit == "tally"),
        "{refused:?}"
    );
    assert_eq!(registry.status()[0].state, UnitState::Disabled);
    assert!(matches!(
        registry.set_enabled("nobody", true),
        Err(EnableError::UnknownUnit(_))
    ));

    // Disabled, it takes nothing: the addition waits for no one and is settled unhandled.
    add(&swarm, 1).await;
    assert!(totals(&swarm).await.is_empty());
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_back_and_forth_under_load_loses_and_repeats_no_addition() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-tally-v1", "tally.so");
    let (reactor, _) = swarm.start().await;
    let stream = swarm.config.stream.clone();
    let mesh = swarm.mesh.clone();
    const ADDS: u64 = 400;
    let publisher = tokio::spawn(async move {
        for i in 0..ADDS {
            // Some calls take a while, so that swaps find calls running on the old version.
            let payload = if i % 20 == 0 {
                json!({ "sleep_ms": 30 })
            } else {
                json!({})
            };
            mesh.publish(&stream, &Signal::new("tally.add", payload))
                .await
                .expect("publish");
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    for swap in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let package = if swap % 2 == 0 {
            "fixture-tally-v2"
        } else {
            "fixture-tally-v1"
        };
        swarm.deploy(package, "tally.so");
        serving(&reactor, swap + 2).await;
    }
    publisher.await.expect("publisher");
    assert!(swarm.settled(Duration::from_secs(30)).await);

    let totals = totals(&swarm).await;
    let mut seen: Vec<u64> = totals.iter().map(|(t, _)| *t).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=ADDS).collect::<Vec<_>>(),
        "every addition counted once, on one continuous total"
    );
    let versions: std::collections::BTreeSet<&str> =
        totals.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(versions.len(), 2, "both versions counted: {versions:?}");
    assert!(swarm.dead_letters().await.is_empty());
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_with_an_abi_1_0_table_loads_and_serves_without_hooks() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-legacy-abi", "legacy.so");
    let (reactor, report) = swarm.start().await;
    assert!(
        report.failures.is_empty(),
        "its on_load, which refuses, is not called: {:?}",
        report.failures
    );
    swarm.publish(&Signal::new("legacy.ping", json!({}))).await;
    assert!(swarm.settled(WAIT).await);
    let pongs = swarm
        .signals(&swarm.config.stream)
        .await
        .into_iter()
        .filter(|s| s.kind == "legacy.pong")
        .count();
    assert_eq!(pongs, 1);
    // Disabling sends no event it could refuse either.
    reactor
        .registry()
        .set_enabled("legacy", false)
        .expect("disable");
    reactor
        .registry()
        .set_enabled("legacy", true)
        .expect("enable");
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_configuration_reloads_the_unit_with_its_state_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (swarm, path) = tally_swarm(dir.path(), json!({}));
    swarm.deploy("fixture-tally-v1", "tally.so");
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, _) = swarm.start().await;
    let registry = reactor.registry();
    add(&swarm, 2).await;
    let section = |extra: Value| {
        let mut section = json!({ "journal": path });
        if let (Some(section), Some(extra)) = (section.as_object_mut(), extra.as_object()) {
            section.extend(extra.clone());
        }
        section
    };
    let config = |tally: Value| {
        [("tally".to_owned(), tally)]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };

    // The same configuration: nothing reloads.
    let report = registry.set_unit_config(config(section(json!({}))));
    assert!(
        report.changes.is_empty() && report.failures.is_empty(),
        "{report:?}"
    );

    // A changed section: tally is loaded again with it, a swap that carries the total;
    // counter, whose section did not change, is left alone.
    let report = registry.set_unit_config(config(section(json!({"refuse": ["1.0.0:on_disable"]}))));
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(
        report
            .changes
            .iter()
            .map(|(_, c)| c.clone())
            .collect::<Vec<_>>(),
        [swarm_reactor::Change::Swapped {
            name: "tally".into(),
            generation: 2
        }]
    );
    assert_eq!(
        registry
            .unit("counter")
            .and_then(|s| s.current())
            .map(|g| g.number()),
        Some(1)
    );
    add(&swarm, 1).await;
    assert_eq!(totals(&swarm).await.pop(), Some((3, "1.0.0".to_owned())));
    registry
        .set_enabled("tally", false)
        .expect("disabled anyway");
    let status = registry.status();
    let tally = status.iter().find(|u| u.name == "tally").expect("tally");
    assert!(
        tally
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("on_disable refused")),
        "the new section is in effect: {tally:?}"
    );
    registry.set_enabled("tally", true).expect("enabled");

    // A section the schema refuses: refused with the field; the unit serves on as it was.
    let report = registry.set_unit_config(config(json!({ "journal": 7, "surprise": true })));
    assert!(report.changes.is_empty(), "{report:?}");
    let error = report
        .failures
        .first()
        .map(|(_, e)| e.to_string())
        .expect("refused");
    assert!(
        error.contains("its configuration breaks its config schema"),
        "{error}"
    );
    assert!(
        error.contains("/journal: 7 is not of type \"string\""),
        "{error}"
    );
    assert!(error.contains("surprise"), "{error}");
    let status = registry.status();
    let tally = status.iter().find(|u| u.name == "tally").expect("tally");
    assert_eq!(tally.generation, 2);
    assert!(
        tally
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("surprise"))
    );
    add(&swarm, 1).await;
    assert_eq!(totals(&swarm).await.pop(), Some((4, "1.0.0".to_owned())));

    // Fixed: it loads again, with the total.
    let report = registry.set_unit_config(config(section(json!({}))));
    assert!(report.failures.is_empty(), "{report:?}");
    let status = registry.status();
    let tally = status.iter().find(|u| u.name == "tally").expect("tally");
    assert_eq!((tally.generation, tally.last_error.as_deref()), (3, None));
    add(&swarm, 1).await;
    assert_eq!(totals(&swarm).await.pop(), Some((5, "1.0.0".to_owned())));
    reactor.stop().await;
}
