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
        .read_own_pending(stream, G, "me", 10)
        .await
        .expect("pending");
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].deliveries), (mine[1].id, 2));
    assert_eq!(n_of(&again[0].body), 1);
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
    mesh.keep_alive(stream, G, "dead", &[got[2].id])
        .await
        .expect("keep alive");
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

/// Generates one `#[tokio::test]` per behaviour case. `$make` is an async expression that
/// yields a value implementing [`Mesh`]; `$prefix` makes stream names unique per run.
#[macro_export]
macro_rules! mesh_behaviour_suite {
    ($make:expr, $prefix:expr) => {
        $crate::mesh_behaviour_suite!(@cases $make, $prefix;
            delivers_in_order_once, pending_until_acked, groups_share_and_consumers_split,
            group_start_positions, missing_group_is_an_error, own_pending_is_redelivered,
            idle_entries_are_claimed, settle_emits_and_acks, settle_batch_emits_and_acks_all, dead_letters_are_kept,
            trimming_keeps_unacknowledged, blocked_read_wakes_on_publish, tail_follows_the_stream,
            encodings_round_trip);
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
