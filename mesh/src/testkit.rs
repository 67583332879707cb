//! The behaviour suite every [`Mesh`] implementation must pass.
//!
//! Each case takes a mesh and a stream name of its own, so cases can run side by side on one
//! server. [`mesh_behaviour_suite!`](crate::mesh_behaviour_suite) turns the cases into
//! `#[tokio::test]`s for an implementation.

use std::time::Duration;

use serde_json::json;
use swarm_schemas::{Encoding, Signal};

use crate::{EntryId, Mesh, MeshError, Settlement, StartAt, dead_letter_stream};

const G: &str = "group";
const NO_WAIT: Duration = Duration::from_millis(1);

fn signal(n: u64) -> Signal {
    Signal::new("test.signal", json!({ "n": n }))
}

fn n_of(body: &crate::Body) -> u64 {
    body.as_ref()
        .ok()
        .and_then(|s| s.payload["n"].as_u64())
        .unwrap_or(u64::MAX)
}

async fn publish_n(mesh: &dyn Mesh, stream: &str, n: u64) -> Vec<EntryId> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(mesh.publish(stream, &signal(i)).await.expect("publish"));
    }
    ids
}

/// Entries are delivered once per group, in order, with one delivery counted.
pub async fn delivers_in_order_once(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    let ids = publish_n(mesh, stream, 5).await;
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let got = mesh.read(stream, G, "c1", 3, NO_WAIT).await.expect("read");
    assert_eq!(
        got.iter().map(|d| n_of(&d.body)).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(got.iter().all(|d| d.deliveries == 1));
    let rest = mesh.read(stream, G, "c1", 10, NO_WAIT).await.expect("read");
    assert_eq!(
        rest.iter().map(|d| n_of(&d.body)).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(
        mesh.read(stream, G, "c1", 10, NO_WAIT)
            .await
            .expect("read")
            .is_empty()
    );
}

/// Delivered entries stay pending until acknowledged; acknowledging twice counts once.
pub async fn pending_until_acked(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    publish_n(mesh, stream, 4).await;
    let got = mesh.read(stream, G, "c1", 10, NO_WAIT).await.expect("read");
    let info = mesh.group_info(stream, G).await.expect("info");
    assert_eq!((info.pending, info.lag), (4, 0));
    assert_eq!(info.consumers.len(), 1);
    assert_eq!(
        mesh.ack(stream, G, &[got[0].id, got[1].id])
            .await
            .expect("ack"),
        2
    );
    assert_eq!(mesh.ack(stream, G, &[got[0].id]).await.expect("ack"), 0);
    assert_eq!(mesh.group_info(stream, G).await.expect("info").pending, 2);
}

/// An entry is settled once the group has delivered it and it was acknowledged since: not
/// before it is read, not while it is pending.
pub async fn settled_is_delivered_and_acknowledged(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    let mut ids = Vec::new();
    for n in 0..3 {
        let signal = Signal::new("t", json!({ "n": n }));
        ids.push(mesh.publish(stream, &signal).await.expect("publish"));
    }
    let settled =
        |ids: Vec<EntryId>| async move { mesh.settled(stream, G, &ids).await.expect("settled") };
    assert_eq!(
        settled(ids.clone()).await,
        [false, false, false],
        "none delivered"
    );
    let got = mesh.read(stream, G, "c1", 2, NO_WAIT).await.expect("read");
    assert_eq!(
        settled(ids.clone()).await,
        [false, false, false],
        "two pending"
    );
    mesh.ack(stream, G, &[got[0].id]).await.expect("ack");
    assert_eq!(settled(ids.clone()).await, [true, false, false]);
    mesh.ack(stream, G, &[got[1].id]).await.expect("ack");
    assert_eq!(
        settled(ids.clone()).await,
        [true, true, false],
        "the third is not delivered"
    );
    assert!(matches!(
        mesh.settled(stream, "no-such-group", &ids).await,
        Err(MeshError::NoGroup { .. })
    ));
}

/// Consumers of one group share the entries; separate groups each see all of them.
pub async fn groups_share_and_consumers_split(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    mesh.create_group(stream, "other", StartAt::Beginning)
        .await
        .expect("group");
    publish_n(mesh, stream, 6).await;
    let a = mesh.read(stream, G, "a", 3, NO_WAIT).await.expect("read");
    let b = mesh.read(stream, G, "b", 10, NO_WAIT).await.expect("read");
    let mut seen: Vec<u64> = a.iter().chain(&b).map(|d| n_of(&d.body)).collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!((a.len(), b.len()), (3, 3));
    let other = mesh
        .read(stream, "other", "x", 10, NO_WAIT)
        .await
        .expect("read");
    assert_eq!(other.len(), 6);
}

/// A group created at the end sees only later entries; creating a group twice is harmless.
pub async fn group_start_positions(mesh: &dyn Mesh, stream: &str) {
    publish_n(mesh, stream, 2).await;
    mesh.create_group(stream, G, StartAt::End)
        .await
        .expect("group");
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group again");
    mesh.publish(stream, &signal(7)).await.expect("publish");
    let got = mesh.read(stream, G, "c", 10, NO_WAIT).await.expect("read");
    assert_eq!(
        got.iter().map(|d| n_of(&d.body)).collect::<Vec<_>>(),
        vec![7]
    );
}

/// Reading from a group that does not exist is an error, not an empty result.
pub async fn missing_group_is_an_error(mesh: &dyn Mesh, stream: &str) {
    mesh.publish(stream, &signal(0)).await.expect("publish");
    let err = mesh
        .read(stream, "nope", "c", 1, NO_WAIT)
        .await
        .expect_err("no group");
    assert!(matches!(err, MeshError::NoGroup { .. }), "{err}");
}

/// A restarted consumer gets its own pending entries again, with the delivery counted.
pub async fn own_pending_is_redelivered(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    publish_n(mesh, stream, 3).await;
    let mine = mesh.read(stream, G, "me", 2, NO_WAIT).await.expect("read");
    mesh.read(stream, G, "you", 1, NO_WAIT).await.expect("read");
    mesh.ack(stream, G, &[mine[0].id]).await.expect("ack");
    let again = mesh
        .read_own_pending(stream, G, "me", EntryId::ZERO, 10)
        .await
        .expect("pending");
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].deliveries), (mine[1].id, 2));
    assert_eq!(n_of(&again[0].body), 1);
    // Page by page: after the last id read, nothing more is pending for `me`.
    let next = mesh
        .read_own_pending(stream, G, "me", again[0].id, 10)
        .await
        .expect("pending");
    assert!(next.is_empty(), "{next:?}");
    let from_start = mesh
        .read_own_pending(stream, G, "me", EntryId::ZERO, 10)
        .await
        .expect("pending");
    assert_eq!(from_start.len(), 1, "still pending: only acks remove it");
    assert_eq!(from_start[0].deliveries, 3);
}

/// Entries idle long enough are claimed by another consumer with the delivery counted; fresh
/// ones and kept-alive ones are not.
pub async fn idle_entries_are_claimed(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    publish_n(mesh, stream, 3).await;
    let got = mesh
        .read(stream, G, "dead", 3, NO_WAIT)
        .await
        .expect("read");
    let idle = Duration::from_millis(200);
    assert!(
        mesh.claim_idle(stream, G, "rescuer", idle, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        mesh.keep_alive(stream, G, "dead", &[got[2].id])
            .await
            .expect("keep alive"),
        Vec::<EntryId>::new()
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let claimed = mesh
        .claim_idle(stream, G, "rescuer", idle, 10)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![got[0].id, got[1].id]
    );
    assert!(claimed.iter().all(|d| d.deliveries == 2));
    let info = mesh.group_info(stream, G).await.expect("info");
    let rescuer = info
        .consumers
        .iter()
        .find(|c| c.name == "rescuer")
        .map(|c| c.pending);
    assert_eq!(rescuer, Some(2));
    // The claimed entries are no longer the first consumer's to keep alive, nor is one
    // settled: they are named and left alone.
    mesh.ack(stream, G, &[got[2].id]).await.expect("ack");
    assert_eq!(
        mesh.keep_alive(stream, G, "dead", &[got[0].id, got[1].id, got[2].id])
            .await
            .expect("keep alive"),
        vec![got[0].id, got[1].id, got[2].id]
    );
    let info = mesh.group_info(stream, G).await.expect("info");
    assert_eq!(info.pending, 2);
}

/// Settling adds the emitted signals and acknowledges the entry together.
pub async fn settle_emits_and_acks(mesh: &dyn Mesh, stream: &str) {
    let out = format!("{stream}:out");
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    publish_n(mesh, stream, 1).await;
    let got = mesh.read(stream, G, "c", 1, NO_WAIT).await.expect("read");
    let emits = vec![(out.clone(), signal(10)), (out.clone(), signal(11))];
    let ids = mesh
        .settle(stream, G, got[0].id, &emits)
        .await
        .expect("settle");
    assert_eq!(ids.len(), 2);
    assert_eq!(mesh.group_info(stream, G).await.expect("info").pending, 0);
    let entries = mesh.range(&out, None, 10).await.expect("range");
    assert_eq!(
        entries.iter().map(|e| n_of(&e.body)).collect::<Vec<_>>(),
        vec![10, 11]
    );
    assert_eq!(mesh.len(&out).await.expect("len"), 2);
}

/// A signal keeps its encoding and its data through publish, read, settle, range and tail,
/// whichever encoding it travels in.
pub async fn encodings_round_trip(mesh: &dyn Mesh, stream: &str) {
    let out = format!("{stream}:out");
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    let payload =
        json!({ "n": 1, "text": "é ✓", "f": -2.5, "big": u64::MAX, "nested": [{}, [null, true]] });
    let packed = Signal::new("test.signal", payload.clone()).with_encoding(Encoding::MessagePack);
    let plain = Signal::new("test.signal", payload);
    mesh.publish(stream, &packed).await.expect("publish");
    mesh.publish(stream, &plain).await.expect("publish");
    let got = mesh.read(stream, G, "c", 10, NO_WAIT).await.expect("read");
    let bodies: Vec<Signal> = got
        .iter()
        .map(|d| d.body.clone().expect("decodes"))
        .collect();
    assert_eq!(bodies, [packed.clone(), plain.clone()]);
    // Any id stands for the execution that emitted it.
    let child = packed.child(
        packed.id,
        swarm_schemas::Emit::new("test.out", json!({"k": 1})),
    );
    assert_eq!(
        child.encoding,
        Encoding::MessagePack,
        "children travel as their parent"
    );
    mesh.settle(stream, G, got[0].id, &[(out.clone(), child.clone())])
        .await
        .expect("settle");
    let entries = mesh.range(&out, None, 10).await.expect("range");
    assert_eq!(entries[0].body, Ok(child.clone()));
    let tailed = mesh
        .tail(&out, EntryId::ZERO, 10, NO_WAIT)
        .await
        .expect("tail");
    assert_eq!(tailed[0].body, Ok(child));
}

/// Settling a batch adds every entry's emits and acknowledges every entry together.
pub async fn settle_batch_emits_and_acks_all(mesh: &dyn Mesh, stream: &str) {
    let out = format!("{stream}:out");
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    publish_n(mesh, stream, 3).await;
    let got = mesh.read(stream, G, "c", 3, NO_WAIT).await.expect("read");
    let settlements = vec![
        Settlement {
            id: got[0].id,
            emits: vec![(out.clone(), signal(10)), (out.clone(), signal(11))],
        },
        Settlement {
            id: got[1].id,
            emits: vec![],
        },
        Settlement {
            id: got[2].id,
            emits: vec![(out.clone(), signal(12))],
        },
    ];
    let ids = mesh
        .settle_batch(stream, G, &settlements)
        .await
        .expect("settle");
    assert_eq!(ids.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 0, 1]);
    assert_eq!(mesh.group_info(stream, G).await.expect("info").pending, 0);
    let entries = mesh.range(&out, None, 10).await.expect("range");
    assert_eq!(
        entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids.concat()
    );
    assert_eq!(
        entries.iter().map(|e| n_of(&e.body)).collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
}

/// Dead-lettering acknowledges the entry and keeps the letter on the dead-letter stream.
pub async fn dead_letters_are_kept(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    publish_n(mesh, stream, 1).await;
    let got = mesh.read(stream, G, "c", 1, NO_WAIT).await.expect("read");
    let letter = Signal::new("swarm.dead_letter", json!({"reason": "testing"}));
    mesh.dead_letter(stream, G, got[0].id, &letter)
        .await
        .expect("dead letter");
    assert_eq!(mesh.group_info(stream, G).await.expect("info").pending, 0);
    let dead = mesh
        .range(&dead_letter_stream(stream), None, 10)
        .await
        .expect("range");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body.as_ref().ok().map(|s| s.id), Some(letter.id));
}

/// A retention trims by age, then by length, pending or not; deleting removes named entries.
pub async fn retention_and_deletion(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    let ids = publish_n(mesh, stream, 6).await;
    // Delivered and never acknowledged: a retention does not care.
    mesh.read(stream, G, "c", 6, NO_WAIT).await.expect("read");
    let left = async || {
        mesh.range(stream, None, 10)
            .await
            .expect("range")
            .iter()
            .map(|e| n_of(&e.body))
            .collect::<Vec<_>>()
    };
    let removed = mesh
        .trim_retained(stream, None, Some(ids[2]))
        .await
        .expect("trim by age");
    assert_eq!(removed, 2);
    assert_eq!(left().await, vec![2, 3, 4, 5]);
    let removed = mesh
        .trim_retained(stream, Some(3), None)
        .await
        .expect("trim by length");
    assert_eq!(removed, 1);
    assert_eq!(left().await, vec![3, 4, 5]);
    let removed = mesh
        .delete(stream, &[ids[4], ids[0]])
        .await
        .expect("delete");
    assert_eq!(removed, 1, "only entries that exist are counted");
    assert_eq!(left().await, vec![3, 5]);
    assert_eq!(
        mesh.trim_retained("never-written", Some(0), Some(ids[5]))
            .await
            .expect("a stream that does not exist"),
        0
    );
}

/// Trimming removes only entries every group has delivered and acknowledged.
pub async fn trimming_keeps_unacknowledged(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    mesh.create_group(stream, "slow", StartAt::Beginning)
        .await
        .expect("group");
    let ids = publish_n(mesh, stream, 6).await;
    let got = mesh.read(stream, G, "c", 6, NO_WAIT).await.expect("read");
    // G acknowledges all but entry 3; "slow" has delivered 0..4 and acknowledged 0..2.
    let acked: Vec<EntryId> = got
        .iter()
        .map(|d| d.id)
        .filter(|id| *id != ids[3])
        .collect();
    mesh.ack(stream, G, &acked).await.expect("ack");
    let slow = mesh
        .read(stream, "slow", "s", 4, NO_WAIT)
        .await
        .expect("read");
    mesh.ack(stream, "slow", &[slow[0].id, slow[1].id])
        .await
        .expect("ack");
    assert_eq!(mesh.trim_acknowledged(stream).await.expect("trim"), 2);
    let left = mesh.range(stream, None, 10).await.expect("range");
    assert_eq!(
        left.iter().map(|e| n_of(&e.body)).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    // Everything still owed is still readable.
    let rest = mesh
        .read(stream, "slow", "s", 10, NO_WAIT)
        .await
        .expect("read");
    assert_eq!(
        rest.iter().map(|d| n_of(&d.body)).collect::<Vec<_>>(),
        vec![4, 5]
    );
}

/// A blocked reader wakes when an entry arrives.
pub async fn blocked_read_wakes_on_publish(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    let reader = mesh.read(stream, G, "c", 10, Duration::from_secs(10));
    let writer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        mesh.publish(stream, &signal(42)).await.expect("publish");
    };
    let (got, ()) = tokio::join!(reader, writer);
    let got = got.expect("read");
    assert_eq!(
        got.iter().map(|d| n_of(&d.body)).collect::<Vec<_>>(),
        vec![42]
    );
}

/// A tail sees what comes after its start, outside any group: nothing before it, entries added
/// while it waits, and nothing twice when it moves on from the last id it saw.
pub async fn tail_follows_the_stream(mesh: &dyn Mesh, stream: &str) {
    assert_eq!(mesh.last_id(stream).await.expect("last id"), EntryId::ZERO);
    let before = publish_n(mesh, stream, 2).await;
    let start = mesh.last_id(stream).await.expect("last id");
    assert_eq!(start, before[1]);
    assert!(
        mesh.tail(stream, start, 10, NO_WAIT)
            .await
            .expect("tail")
            .is_empty()
    );
    let waiting = mesh.tail(stream, start, 10, Duration::from_secs(10));
    let writer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        mesh.publish(stream, &signal(7)).await.expect("publish")
    };
    let (got, added) = tokio::join!(waiting, writer);
    let got = got.expect("tail");
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![added]);
    assert_eq!(n_of(&got[0].body), 7);
    publish_n(mesh, stream, 3).await;
    let next = mesh.tail(stream, added, 2, NO_WAIT).await.expect("tail");
    assert_eq!(
        next.iter().map(|e| n_of(&e.body)).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let rest = mesh
        .tail(stream, next[1].id, 10, NO_WAIT)
        .await
        .expect("tail");
    assert_eq!(
        rest.iter().map(|e| n_of(&e.body)).collect::<Vec<_>>(),
        vec![2]
    );
    // A tail from the start of the stream reads it all, like a range.
    assert_eq!(
        mesh.tail(stream, EntryId::ZERO, 100, NO_WAIT)
            .await
            .expect("tail")
            .len(),
        6
    );
}

/// A deposit adds to what is there; a sense reads it; a batch applies in order, as one step.
pub async fn marks_deposit_and_sense(mesh: &dyn Mesh, _stream: &str) {
    use swarm_schemas::MarkOp;
    let marks = mesh.marks(Duration::from_secs(3600));
    let deposit = |key: &str, amount: f64| MarkOp::Deposit {
        key: key.into(),
        amount,
    };
    let sense = |key: &str| MarkOp::Sense { key: key.into() };
    let first = marks
        .apply(&[deposit("site.a", 2.0)])
        .await
        .expect("deposit");
    assert_eq!(first.values.len(), 1);
    assert!((first.values[0] - 2.0).abs() < 1e-9, "{first:?}");
    let batch = marks
        .apply(&[
            deposit("site.a", 3.0),
            sense("site.a"),
            deposit("site.a", -1.5),
            sense("nowhere"),
        ])
        .await
        .expect("batch");
    // The mark evaporates between calls (a few parts in a million over milliseconds at this
    // half-life): what is expected follows the store's own clock, `at_ms`.
    let evaporation = |from: f64, to: f64| (-(to - from) / 3_600_000.0).exp2();
    let close = |got: f64, want: f64| (got - want).abs() < 1e-9;
    assert!(batch.at_ms >= first.at_ms, "the clock runs forward");
    let before = 2.0 * evaporation(first.at_ms, batch.at_ms);
    assert_eq!(batch.values.len(), 4, "{batch:?}");
    assert!(close(batch.values[0], before + 3.0), "{batch:?}");
    assert!(close(batch.values[1], before + 3.0), "{batch:?}");
    assert!(close(batch.values[2], before + 1.5), "{batch:?}");
    assert!((batch.values[2] - 3.5).abs() < 1e-3, "{batch:?}");
    assert_eq!(batch.values[3], 0.0, "an unknown mark reads 0");
    // Another handle on the same mesh sees the same field.
    let other = mesh.marks(Duration::from_secs(3600));
    let seen = other.apply(&[sense("site.a")]).await.expect("sense");
    assert!(
        close(
            seen.values[0],
            batch.values[2] * evaporation(batch.at_ms, seen.at_ms)
        ),
        "{seen:?}"
    );
}

/// Bad operations are refused whole, with a clear error, and change nothing.
pub async fn marks_refuse_bad_operations(mesh: &dyn Mesh, _stream: &str) {
    use crate::StoreError;
    use swarm_schemas::MarkOp;
    let marks = mesh.marks(Duration::from_secs(3600));
    let ok = MarkOp::Deposit {
        key: "kept".into(),
        amount: 1.0,
    };
    for (bad, says) in [
        (
            MarkOp::Deposit {
                key: "x".into(),
                amount: f64::NAN,
            },
            "finite",
        ),
        (
            MarkOp::Deposit {
                key: "x".into(),
                amount: f64::INFINITY,
            },
            "finite",
        ),
        (MarkOp::Sense { key: String::new() }, "empty"),
        (
            MarkOp::Sense {
                key: "k".repeat(crate::stores::MAX_KEY_BYTES + 1),
            },
            "at most",
        ),
    ] {
        match marks.apply(&[ok.clone(), bad]).await {
            Err(StoreError::Invalid(message)) => assert!(message.contains(says), "{message}"),
            other => panic!("expected a refusal saying `{says}`, got {other:?}"),
        }
    }
    let kept = marks
        .apply(&[MarkOp::Sense { key: "kept".into() }])
        .await
        .expect("sense");
    assert_eq!(kept.values, vec![0.0], "a refused batch deposits nothing");
    // A field set up with one half-life refuses a process configured with another.
    let other = mesh.marks(Duration::from_secs(60));
    match other.apply(&[MarkOp::Sense { key: "kept".into() }]).await {
        Err(StoreError::HalfLife {
            stored_ms,
            configured_ms,
        }) => {
            assert_eq!(stored_ms, 3_600_000.0);
            assert_eq!(configured_ms, 60_000.0);
        }
        other => panic!("expected a half-life refusal, got {other:?}"),
    }
}

/// A mark evaporates exponentially: after one half-life it reads half, exactly as the formula
/// says for the time the field's own clock saw pass.
pub async fn marks_evaporate(mesh: &dyn Mesh, _stream: &str) {
    use swarm_schemas::MarkOp;
    let half_life = Duration::from_millis(400);
    let marks = mesh.marks(half_life);
    let deposited = marks
        .apply(&[MarkOp::Deposit {
            key: "trail".into(),
            amount: 8.0,
        }])
        .await
        .expect("deposit");
    tokio::time::sleep(half_life).await;
    let sensed = marks
        .apply(&[MarkOp::Sense {
            key: "trail".into(),
        }])
        .await
        .expect("sense");
    let elapsed_ms = sensed.at_ms - deposited.at_ms;
    assert!(
        elapsed_ms >= 400.0,
        "slept a half-life, the field saw {elapsed_ms} ms"
    );
    let expected = 8.0 * (-elapsed_ms / 400.0).exp2();
    let got = sensed.values[0];
    assert!(
        (got - expected).abs() < 1e-9 * expected,
        "after {elapsed_ms} ms: {got}, expected {expected}"
    );
    assert!(
        got <= 4.0 + 1e-9,
        "at least one half-life: at most half is left ({got})"
    );
}

/// A prefix read finds the marks whose keys start with the prefix, literally, strongest first.
pub async fn marks_sense_prefix(mesh: &dyn Mesh, _stream: &str) {
    use swarm_schemas::MarkOp;
    let marks = mesh.marks(Duration::from_secs(3600));
    let deposits: Vec<MarkOp> = [
        ("site.a", 1.0),
        ("site.b", 3.0),
        ("site.c", 2.0),
        ("sites", 9.0),
        ("other.x", 10.0),
        ("a*b", 1.0),
        ("aXb", 1.0),
    ]
    .into_iter()
    .map(|(key, amount)| MarkOp::Deposit {
        key: key.into(),
        amount,
    })
    .collect();
    marks.apply(&deposits).await.expect("deposit");
    let read = marks.sense_prefix("site.").await.expect("prefix");
    let keys: Vec<&str> = read.marks.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["site.b", "site.c", "site.a"]);
    // Evaporated for the few milliseconds between the deposit and the read: within 1e-4 of 3
    // is within about 170 ms.
    assert!((read.marks[0].value - 3.0).abs() < 1e-4, "{read:?}");
    let literal = marks.sense_prefix("a*").await.expect("prefix");
    let keys: Vec<&str> = literal.marks.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["a*b"], "a prefix is not a pattern");
    assert!(
        marks
            .sense_prefix("none.")
            .await
            .expect("prefix")
            .marks
            .is_empty()
    );
}

/// The key-value store: set, get, delete, namespaces apart, expiry, limits.
pub async fn kv_set_get_delete(mesh: &dyn Mesh, _stream: &str) {
    use crate::StoreError;
    let kv = mesh.kv();
    let value = json!({"count": 3, "name": "café", "list": [1.5, null]});
    assert_eq!(kv.get("unit-a", "k").await, Ok(None));
    kv.set("unit-a", "k", &value, None).await.expect("set");
    assert_eq!(kv.get("unit-a", "k").await, Ok(Some(value.clone())));
    assert_eq!(
        kv.get("unit-b", "k").await,
        Ok(None),
        "namespaces are apart"
    );
    assert_eq!(kv.delete("unit-a", "k").await, Ok(true));
    assert_eq!(kv.delete("unit-a", "k").await, Ok(false));
    assert_eq!(kv.get("unit-a", "k").await, Ok(None));

    kv.set(
        "unit-a",
        "brief",
        &json!(1),
        Some(Duration::from_millis(150)),
    )
    .await
    .expect("set");
    assert_eq!(kv.get("unit-a", "brief").await, Ok(Some(json!(1))));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(kv.get("unit-a", "brief").await, Ok(None), "expired");

    let huge = json!("x".repeat(crate::stores::MAX_VALUE_BYTES));
    assert!(matches!(
        kv.set("unit-a", "huge", &huge, None).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        kv.get("unit-a", "").await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(kv.get("unit-a", "huge").await, Ok(None));
}

/// Whatever is pending, with any consumer and however recently delivered, can be taken over
/// page by page, oldest first, each delivery counted.
pub async fn pending_is_taken_over_from_any_consumer(mesh: &dyn Mesh, stream: &str) {
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    publish_n(mesh, stream, 5).await;
    mesh.read(stream, G, "old-1", 2, NO_WAIT)
        .await
        .expect("read");
    mesh.read(stream, G, "old-2", 2, NO_WAIT)
        .await
        .expect("read");
    let first = mesh
        .claim_pending(stream, G, "new", EntryId::ZERO, 3)
        .await
        .expect("claim");
    assert_eq!(
        first.iter().map(|d| n_of(&d.body)).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(first.iter().all(|d| d.deliveries == 2));
    let after = first.last().map(|d| d.id).expect("a page");
    let second = mesh
        .claim_pending(stream, G, "new", after, 3)
        .await
        .expect("claim");
    assert_eq!(
        second.iter().map(|d| n_of(&d.body)).collect::<Vec<_>>(),
        vec![3]
    );
    let last = second.last().map(|d| d.id).expect("a page");
    assert!(
        mesh.claim_pending(stream, G, "new", last, 3)
            .await
            .expect("claim")
            .is_empty()
    );
    let info = mesh.group_info(stream, G).await.expect("info");
    assert_eq!(info.pending, 4);
    assert_eq!(info.lag, 1, "the undelivered entry is left for reading");
    // What is still pending, among some ids (acknowledged, pending, never delivered).
    let mut ids: Vec<EntryId> = first.iter().chain(&second).map(|d| d.id).collect();
    mesh.ack(stream, G, &ids[..2]).await.expect("ack");
    let undelivered = mesh.range(stream, Some(last), 1).await.expect("range")[0].id;
    ids.push(undelivered);
    ids.reverse();
    assert_eq!(
        mesh.pending_among(stream, G, &ids).await.expect("pending"),
        vec![second[0].id, first[2].id],
        "in the order asked"
    );
    let owners: Vec<_> = info.consumers.iter().filter(|c| c.pending > 0).collect();
    assert_eq!(owners.len(), 1);
    assert_eq!((owners[0].name.as_str(), owners[0].pending), ("new", 4));
}

/// A stream's partition count is recorded by the first to ask for one and kept; a stream none
/// was recorded for has one partition, and nothing is recorded by asking.
pub async fn partition_counts_are_recorded_once(mesh: &dyn Mesh, stream: &str) {
    let other = format!("{stream}:other");
    assert_eq!(mesh.partitions(&other, None).await, Ok(1));
    assert_eq!(mesh.partitions(stream, Some(4)).await, Ok(4));
    assert_eq!(mesh.partitions(stream, Some(8)).await, Ok(4));
    assert_eq!(mesh.partitions(stream, None).await, Ok(4));
    assert_eq!(
        mesh.partitions(&other, Some(2)).await,
        Ok(2),
        "asking recorded nothing"
    );
    for bad in [0, crate::partition::MAX_PARTITIONS + 1] {
        assert!(matches!(
            mesh.partitions(&format!("{stream}:bad"), Some(bad)).await,
            Err(MeshError::Partitions(_))
        ));
    }
}

/// A signal published to a partitioned stream lands in its key's partition, each partition in
/// publish order; a partition settles (emits, dead letters, acknowledgements) like any stream.
pub async fn signals_land_in_their_partition(mesh: &dyn Mesh, stream: &str) {
    use crate::partition::{partition_of, partition_stream};
    const P: u32 = 4;
    assert_eq!(mesh.partitions(stream, Some(P)).await, Ok(P));
    for k in 0..P {
        mesh.create_group(&partition_stream(stream, k, P), G, StartAt::Beginning)
            .await
            .expect("group");
    }
    let mut published = Vec::new();
    for n in 0..40u64 {
        let mut s = signal(n);
        s.partition_key = Some(format!("key-{}", n % 7));
        mesh.publish(stream, &s).await.expect("publish");
        published.push(s);
    }
    assert_eq!(
        mesh.len(stream).await.expect("len"),
        0,
        "nothing in the base stream"
    );
    let mut seen = 0;
    for k in 0..P {
        let part = partition_stream(stream, k, P);
        let got = mesh.read(&part, G, "c", 100, NO_WAIT).await.expect("read");
        let ns: Vec<u64> = got.iter().map(|d| n_of(&d.body)).collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "publish order: {ns:?}");
        for n in &ns {
            assert_eq!(partition_of(&published[*n as usize], P), k);
        }
        seen += ns.len();
        let Some(first) = got.first() else { continue };
        let emits = vec![
            (part.clone(), signal(100)),
            (dead_letter_stream(&part), signal(101)),
        ];
        mesh.settle(&part, G, first.id, &emits)
            .await
            .expect("settle");
        assert_eq!(
            mesh.group_info(&part, G).await.expect("info").pending,
            got.len() as u64 - 1
        );
        assert_eq!(mesh.len(&dead_letter_stream(&part)).await.expect("len"), 1);
    }
    assert_eq!(seen, 40);
}

/// A lease has one owner at a time, who may keep it, give it up, or let it run out.
pub async fn leases_are_exclusive_and_expire(mesh: &dyn Mesh, stream: &str) {
    let long = Duration::from_secs(30);
    assert_eq!(mesh.lease_owner(stream, 0).await, Ok(None));
    assert_eq!(mesh.lease(stream, 0, "a", long).await, Ok(true));
    assert_eq!(mesh.lease(stream, 0, "b", long).await, Ok(false));
    assert_eq!(
        mesh.lease(stream, 1, "b", long).await,
        Ok(true),
        "another partition"
    );
    assert_eq!(mesh.lease(stream, 0, "a", long).await, Ok(true), "kept");
    assert_eq!(mesh.lease_owner(stream, 0).await, Ok(Some("a".to_owned())));
    assert_eq!(mesh.release(stream, 0, "b").await, Ok(false));
    assert_eq!(mesh.release(stream, 0, "a").await, Ok(true));
    assert_eq!(
        mesh.lease(stream, 0, "b", Duration::from_millis(150)).await,
        Ok(true)
    );
    assert_eq!(mesh.lease(stream, 0, "a", long).await, Ok(false));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(mesh.lease_owner(stream, 0).await, Ok(None), "ran out");
    assert_eq!(mesh.lease(stream, 0, "a", long).await, Ok(true));
    assert_eq!(mesh.lease_owner(stream, 1).await, Ok(Some("b".to_owned())));
}

/// A settle of owned entries settles only those still pending with its consumer: an entry
/// another consumer claimed is left to it, emits and all, in the same atomic step.
pub async fn settles_of_owned_entries_leave_claimed_ones_alone(mesh: &dyn Mesh, stream: &str) {
    let out = format!("{stream}:out");
    let dead = dead_letter_stream(stream);
    mesh.create_group(stream, G, StartAt::Beginning)
        .await
        .expect("group");
    for n in 0..3 {
        mesh.publish(stream, &signal(n)).await.expect("publish");
    }
    let got = mesh.read(stream, G, "a", 10, NO_WAIT).await.expect("read");
    assert_eq!(got.len(), 3);
    // `b` claims the oldest, as it would after `a` held it past the claim time.
    let claimed = mesh
        .claim_idle(stream, G, "b", Duration::ZERO, 1)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|d| d.id).collect::<Vec<_>>(),
        [got[0].id]
    );
    let settlements: Vec<Settlement> = got
        .iter()
        .enumerate()
        .map(|(n, d)| Settlement {
            id: d.id,
            emits: vec![
                (out.clone(), signal(100 + n as u64)),
                (dead.clone(), signal(200 + n as u64)),
            ],
        })
        .collect();
    let settled = mesh
        .settle_batch_owned(stream, G, "a", &settlements)
        .await
        .expect("settle");
    assert_eq!(emitted_counts(&settled), [None, Some(2), Some(2)]);
    // Only the owned entries' emits were written, and only they left the pending list.
    assert_eq!(mesh.len(&out).await.expect("len"), 2);
    assert_eq!(mesh.len(&dead).await.expect("len"), 2);
    let info = mesh.group_info(stream, G).await.expect("info");
    assert_eq!(info.pending, 1);
    let left = mesh
        .pending_among(stream, G, &[got[0].id])
        .await
        .expect("pending");
    assert_eq!(left, [got[0].id]);
    // The claimed entry is its new owner's to settle; settled, nobody settles it again.
    let again = mesh
        .settle_batch_owned(stream, G, "b", &settlements[..1])
        .await
        .expect("settle");
    assert_eq!(emitted_counts(&again), [Some(2)]);
    let late = mesh
        .settle_batch_owned(stream, G, "a", &settlements)
        .await
        .expect("settle");
    assert!(late.iter().all(Option::is_none), "{late:?}");
    assert_eq!(mesh.len(&out).await.expect("len"), 3);
    assert_eq!(mesh.group_info(stream, G).await.expect("info").pending, 0);
    assert_eq!(
        mesh.settle_batch_owned(stream, G, "a", &[])
            .await
            .expect("nothing"),
        Vec::<Option<Vec<EntryId>>>::new()
    );
}

/// How many emits an owned settle made per entry (`None`: left alone).
fn emitted_counts(settled: &[Option<Vec<EntryId>>]) -> Vec<Option<usize>> {
    settled.iter().map(|s| s.as_ref().map(Vec::len)).collect()
}

/// A settle under a partition's lease writes only while its owner holds the lease: made by
/// anyone else, or after the lease ran out, it writes nothing and fails as fenced.
pub async fn settles_under_a_lease_are_fenced(mesh: &dyn Mesh, stream: &str) {
    use crate::partition::partition_stream;
    let long = Duration::from_secs(30);
    let part = partition_stream(stream, 1, 2);
    let dead = dead_letter_stream(&part);
    mesh.create_group(&part, G, StartAt::Beginning)
        .await
        .expect("group");
    for n in 0..4 {
        mesh.publish(&part, &signal(n)).await.expect("publish");
    }
    let got = mesh.read(&part, G, "c", 10, NO_WAIT).await.expect("read");
    assert_eq!(got.len(), 4);
    let settling = |at: usize, emits: Vec<(String, Signal)>| Settlement {
        id: got[at].id,
        emits,
    };
    let fenced = async |owner: &str, what: &str| {
        let attempt = mesh
            .settle_batch_leased(
                &part,
                G,
                owner,
                &[settling(1, vec![(part.clone(), signal(9))])],
            )
            .await;
        let Err(MeshError::Fenced(why)) = attempt else {
            panic!("{what}: {attempt:?}");
        };
        why
    };

    assert_eq!(mesh.lease(stream, 1, "a", long).await, Ok(true));
    let ids = mesh
        .settle_batch_leased(
            &part,
            G,
            "a",
            &[
                settling(
                    0,
                    vec![(part.clone(), signal(100)), (dead.clone(), signal(101))],
                ),
                settling(2, Vec::new()),
            ],
        )
        .await
        .expect("settled by the lease's owner");
    assert_eq!(ids.iter().map(Vec::len).collect::<Vec<_>>(), [2, 0]);
    assert_eq!(mesh.group_info(&part, G).await.expect("info").pending, 2);
    assert_eq!(mesh.len(&part).await.expect("len"), 5);
    assert_eq!(mesh.len(&dead).await.expect("len"), 1);

    let why = fenced("b", "settled by another than the lease's owner").await;
    assert!(why.contains("`a` holds it"), "{why}");
    assert_eq!(mesh.release(stream, 1, "a").await, Ok(true));
    assert!(
        fenced("a", "settled with no lease")
            .await
            .contains("nobody holds it")
    );
    assert_eq!(
        mesh.lease(stream, 1, "b", Duration::from_millis(150)).await,
        Ok(true)
    );
    assert!(
        fenced("a", "settled under a lease gone to another")
            .await
            .contains("`b` holds it")
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        fenced("b", "settled after the lease ran out")
            .await
            .contains("nobody holds it")
    );
    // Nothing of the fenced settles was written.
    assert_eq!(mesh.group_info(&part, G).await.expect("info").pending, 2);
    assert_eq!(mesh.len(&part).await.expect("len"), 5);

    // Only a partition has a lease.
    assert!(matches!(
        mesh.settle_batch_leased(stream, G, "a", &[settling(1, Vec::new())])
            .await,
        Err(MeshError::Partitions(_))
    ));
    assert_eq!(mesh.lease(stream, 1, "a", long).await, Ok(true));
    let ids = mesh
        .settle_batch_leased(
            &part,
            G,
            "a",
            &[
                settling(1, Vec::new()),
                settling(3, vec![(part.clone(), signal(102))]),
            ],
        )
        .await
        .expect("settled by the lease's new owner");
    assert_eq!(ids.iter().map(Vec::len).collect::<Vec<_>>(), [0, 1]);
    let info = mesh.group_info(&part, G).await.expect("info");
    assert_eq!((info.pending, mesh.len(&part).await.expect("len")), (0, 6));
}

/// Members are live while their heartbeats last, listed by name; leaving takes one out.
pub async fn members_heartbeat_and_expire(mesh: &dyn Mesh, stream: &str) {
    let long = Duration::from_secs(30);
    let short = Duration::from_millis(150);
    assert_eq!(
        mesh.heartbeat(stream, "b", short).await,
        Ok(vec!["b".to_owned()])
    );
    assert_eq!(
        mesh.heartbeat(stream, "a", long).await,
        Ok(vec!["a".to_owned(), "b".to_owned()])
    );
    assert_eq!(
        mesh.heartbeat(stream, "c", long).await,
        Ok(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
    );
    mesh.leave(stream, "c").await.expect("leave");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        mesh.heartbeat(stream, "a", long).await,
        Ok(vec!["a".to_owned()]),
        "b ran out"
    );
}

/// Generates one `#[tokio::test]` per behaviour case. `$make` is an async expression that
/// yields a value implementing [`Mesh`]; `$prefix` makes stream names unique per run.
#[macro_export]
macro_rules! mesh_behaviour_suite {
    ($make:expr, $prefix:expr) => {
        $crate::mesh_behaviour_suite!(@cases $make, $prefix;
            delivers_in_order_once, pending_until_acked, settled_is_delivered_and_acknowledged, groups_share_and_consumers_split,
            group_start_positions, missing_group_is_an_error, own_pending_is_redelivered,
            idle_entries_are_claimed, settle_emits_and_acks, settle_batch_emits_and_acks_all, dead_letters_are_kept,
            trimming_keeps_unacknowledged, retention_and_deletion, blocked_read_wakes_on_publish, tail_follows_the_stream,
            encodings_round_trip, marks_deposit_and_sense, marks_refuse_bad_operations,
            marks_evaporate, marks_sense_prefix, kv_set_get_delete, pending_is_taken_over_from_any_consumer, partition_counts_are_recorded_once,
            signals_land_in_their_partition, leases_are_exclusive_and_expire,
            settles_under_a_lease_are_fenced, settles_of_owned_entries_leave_claimed_ones_alone,
            members_heartbeat_and_expire);
    };
    (@cases $make:expr, $prefix:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let mesh = $make.await;
                let stream = format!("{}:{}", $prefix, stringify!($case));
                $crate::testkit::$case(&mesh, &stream).await;
            }
        )*
    };
}
