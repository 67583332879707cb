//! Dead letters: `swarm dead-letters list | replay | purge` on the project's Redis, and the
//! reactor's retention of them (count and age).

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use swarm_mesh::dead_letter_stream;
use swarm_mesh::prelude::*;
use swarm_schemas::{DEAD_LETTER_KIND, DeadLetter, Signal};
use swarm_tests::{TestSwarm, redis_url, swarm_binary, wait_for_async};
use uuid::Uuid;

const STREAM: &str = "swarm:signals";

/// The dead letter of `original` (a signal, or raw text that was not one).
fn letter(original: Value, reason: &str) -> Signal {
    let letter = DeadLetter {
        reason: reason.to_owned(),
        unit: Some("picky".to_owned()),
        attempts: 3,
        failure: None,
        entry_id: "1-0".to_owned(),
        original,
    };
    Signal::new(
        DEAD_LETTER_KIND,
        serde_json::to_value(letter).expect("letter"),
    )
}

fn dead_letters(prefix: &str, args: &[&str]) -> Output {
    Command::new(swarm_binary())
        .args([
            "dead-letters",
            "--redis",
            &redis_url(),
            "--redis-prefix",
            prefix,
        ])
        .args(args)
        .output()
        .expect("swarm dead-letters runs")
}

fn listed(prefix: &str) -> Vec<Value> {
    let output = dead_letters(prefix, &["list", "--json"]);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_and_purged() {
    let (prefix, mesh) = swarm_tests::fresh_mesh().await;
    let dead = dead_letter_stream(STREAM);
    let mut order = Signal::new("order.placed", json!({ "id": 7 }));
    order.partition_key = Some("customer-7".to_owned());
    let refund = Signal::new("refund.asked", json!({ "id": 8 }));
    for signal in [
        letter(
            serde_json::to_value(&order).expect("json"),
            "every unit failed it",
        ),
        letter(
            serde_json::to_value(&refund).expect("json"),
            "its unit is quarantined",
        ),
        letter(
            Value::String("{\"kind\": tru".to_owned()),
            "entry is not a signal",
        ),
    ] {
        mesh.publish(&dead, &signal).await.expect("publish");
    }

    let letters = listed(&prefix);
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(letters[0]["kind"], "order.placed");
    assert_eq!(letters[0]["reason"], "every unit failed it");
    assert_eq!(letters[0]["unit"], "picky");
    assert_eq!(letters[1]["kind"], "refund.asked");
    let id_of = |i: usize| letters[i]["id"].as_str().expect("an id").to_owned();

    // Replayed: published again in its conversation and trace, with its key; the letter goes.
    let output = dead_letters(&prefix, &["replay", &id_of(0)]);
    assert!(output.status.success(), "{output:?}");
    let published = mesh.range(STREAM, None, 10).await.expect("range");
    assert_eq!(published.len(), 1);
    let again = published[0].body.as_ref().expect("a signal");
    assert_eq!(again.kind, "order.placed");
    assert_eq!(again.payload, order.payload);
    assert_eq!(again.correlation_id, order.correlation_id);
    assert_eq!(again.trace_id, order.trace_id);
    assert_eq!(again.partition_key, order.partition_key);
    assert_ne!(again.id, order.id, "a replay is a new signal");
    assert_eq!(again.attempt, 0);
    let left = listed(&prefix);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|l| l["id"] != id_of(0).as_str()));

    // A letter whose original is not a signal cannot be replayed: kept, and the exit says so.
    let output = dead_letters(&prefix, &["replay", &id_of(2)]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not a signal"),
        "{output:?}"
    );
    assert_eq!(listed(&prefix).len(), 2);

    // Names that name nothing get a clear error and change nothing.
    for bad in ["nonsense", "99-0", "1/2-0"] {
        let output = dead_letters(&prefix, &["purge", bad]);
        assert!(!output.status.success(), "{bad}: {output:?}");
        assert!(!output.stderr.is_empty(), "{bad}: an error is printed");
    }
    let output = dead_letters(&prefix, &["purge"]);
    assert!(!output.status.success(), "purge without names or --all");
    assert_eq!(listed(&prefix).len(), 2);

    // Purged, all of them.
    let output = dead_letters(&prefix, &["purge", "--all"]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 dead letter(s) removed"));
    assert!(listed(&prefix).is_empty());
    assert_eq!(mesh.range(STREAM, None, 10).await.expect("range").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reactor_keeps_dead_letters_within_their_retention() {
    let mut swarm = TestSwarm::new();
    swarm.config.trim_every = Duration::from_millis(50);
    swarm.config.dead_letter_max = Some(2);
    swarm.config.dead_letter_max_age = Some(Duration::from_secs(2));
    let dead = dead_letter_stream(&swarm.config.stream);
    let mut sent = Vec::new();
    for n in 0..5 {
        let signal = letter(json!({ "n": n }), "a reason");
        swarm.mesh.publish(&dead, &signal).await.expect("publish");
        sent.push(signal.id);
    }
    let (reactor, _) = swarm.start().await;
    let ids = async || -> Vec<Uuid> {
        swarm
            .mesh
            .range(&dead, None, 10)
            .await
            .expect("range")
            .into_iter()
            .filter_map(|e| e.body.ok().map(|s| s.id))
            .collect()
    };
    // Past the count, the oldest go first.
    let kept = wait_for_async(Duration::from_secs(5), async || {
        let now = ids().await;
        (now.len() == 2).then_some(now)
    })
    .await;
    assert_eq!(kept, Some(sent[3..].to_vec()), "the newest two are kept");
    // Past the age, the rest go too.
    let aged = wait_for_async(Duration::from_secs(10), async || {
        ids().await.is_empty().then_some(())
    })
    .await;
    assert!(
        aged.is_some(),
        "letters older than their retention are removed"
    );
    reactor.stop().await;
}
