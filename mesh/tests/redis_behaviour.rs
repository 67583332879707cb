//! The Redis Streams mesh passes the behaviour suite, against the real Redis started by
//! `ops/start-redis` (`SWARM_TEST_REDIS_URL`, default database 15 of the project's Redis on port 6390). A Redis that
//! cannot be reached fails these tests; they never skip.

use swarm_mesh::prelude::*;
use swarm_mesh::{RedisMesh, RedisMeshConfig};

fn url() -> String {
    std::env::var("SWARM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390/15".to_owned())
}

/// A mesh with a key prefix of its own, so test runs and cases never share keys.
async fn mesh() -> RedisMesh {
    let mut config = RedisMeshConfig::new(url());
    config.key_prefix = format!("test-{}", uuid::Uuid::now_v7());
    RedisMesh::connect(config)
        .await
        .unwrap_or_else(|e| panic!("the tests need Redis (start it with ops/start-redis): {e}"))
}

swarm_mesh::mesh_behaviour_suite!(mesh(), "redis");

#[tokio::test]
async fn entries_written_by_other_tools_are_delivered_as_undecodable_data() {
    use std::time::Duration;
    use swarm_mesh::StartAt;
    let mesh = mesh().await;
    mesh.create_group("s", "g", StartAt::Beginning)
        .await
        .expect("group");
    let client = redis::Client::open(url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: String = redis::cmd("XADD")
        .arg(mesh.key("s"))
        .arg("*")
        .arg("s")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let _: String = redis::cmd("XADD")
        .arg(mesh.key("s"))
        .arg("*")
        .arg("other")
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let _: String = redis::cmd("XADD")
        .arg(mesh.key("s"))
        .arg("*")
        .arg("m")
        .arg(&b"\xc1not msgpack"[..])
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let got = mesh
        .read("s", "g", "c", 10, Duration::from_millis(1))
        .await
        .expect("read");
    assert_eq!(got.len(), 3);
    let first = got[0].body.clone().expect_err("undecodable");
    assert_eq!(first.raw, "{not json");
    let second = got[1].body.clone().expect_err("undecodable");
    assert_eq!(
        second.error,
        "entry has no `s` (JSON) or `m` (MessagePack) field"
    );
    let third = got[2].body.clone().expect_err("undecodable");
    assert!(
        third.error.starts_with("not a signal: MessagePack"),
        "{}",
        third.error
    );
}

#[tokio::test]
async fn a_value_written_by_another_tool_reads_as_corrupt_and_stays() {
    use swarm_mesh::StoreError;
    let mesh = mesh().await;
    let kv = mesh.kv();
    let client = redis::Client::open(url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // The key the kv store keeps `k` of namespace `unit-a` under.
    let _: () = redis::cmd("SET")
        .arg(mesh.key("kv:unit-a:k"))
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("set");
    for _ in 0..2 {
        match kv.get("unit-a", "k").await {
            Err(StoreError::Corrupt(message)) => {
                assert!(message.contains("`k` is not JSON"), "{message}");
            }
            other => panic!("expected a corrupt value, got {other:?}"),
        }
    }
    let raw: String = redis::cmd("GET")
        .arg(mesh.key("kv:unit-a:k"))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(raw, "{not json", "the value is left as it was");
    assert_eq!(kv.delete("unit-a", "k").await, Ok(true));
    assert_eq!(kv.get("unit-a", "k").await, Ok(None));
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let err = RedisMesh::connect(RedisMeshConfig::new("redis://127.0.0.1:1/"))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("cannot connect to Redis at redis://127.0.0.1:1/"),
        "{err}"
    );
    let err = RedisMesh::connect(RedisMeshConfig::new("http://nope"))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("bad Redis URL"), "{err}");
}

/// The project's Redis has no replica: a mesh that waits for one answers each publish and
/// settle once the wait has run out. The publish fails as not replicated, and what both wrote
/// stands.
#[tokio::test]
async fn writes_stand_when_no_replica_confirms_them_in_time() {
    use std::time::{Duration, Instant};
    use swarm_mesh::{Settlement, StartAt};
    use swarm_schemas::Signal;
    let wait = Duration::from_millis(200);
    let mut config = RedisMeshConfig::new(url());
    config.key_prefix = format!("test-{}", uuid::Uuid::now_v7());
    config.wait_for_replicas = Some(swarm_mesh::WaitForReplicas {
        replicas: 1,
        timeout: wait,
    });
    let mesh = RedisMesh::connect(config).await.expect("Redis");
    let (stream, group) = ("unreplicated", "g");
    mesh.create_group(stream, group, StartAt::Beginning)
        .await
        .expect("group");
    let started = Instant::now();
    let signal = Signal::new("tick", serde_json::json!({}));
    let published = mesh.publish(stream, &signal).await;
    assert!(
        started.elapsed() >= wait,
        "the publish waited for a replica"
    );
    let Err(swarm_mesh::MeshError::NotReplicated(why)) = published else {
        panic!("not replicated: {published:?}");
    };
    assert!(
        why.contains("0 of the 1 replicas asked for confirmed it"),
        "{why}"
    );
    let read = mesh
        .read(stream, group, "c", 10, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].body.as_ref().map(|s| s.id), Ok(signal.id));
    let started = Instant::now();
    let tock = Signal::new("tock", serde_json::json!({}));
    let emitted = mesh
        .settle_batch(
            stream,
            group,
            &[Settlement {
                id: read[0].id,
                emits: vec![(stream.to_owned(), tock.clone())],
            }],
        )
        .await
        .expect("settle");
    assert!(started.elapsed() >= wait, "the settle waited for a replica");
    assert_eq!(emitted.iter().map(Vec::len).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        mesh.group_info(stream, group).await.expect("info").pending,
        0
    );
    let tail = mesh
        .read(stream, group, "c", 10, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(tail.iter().map(|d| d.id).collect::<Vec<_>>(), emitted[0]);
}
