//! The Redis Streams mesh passes the behaviour suite on a real Redis Cluster (three masters,
//! three replicas), started by the project's `ops/start-redis-cluster`; the partitions of one
//! stream land on more than one master. A cluster that cannot be started or reached fails
//! these tests; they never skip.

use std::sync::OnceLock;

use swarm_mesh::{RedisMesh, RedisMeshConfig};

/// The cluster's URL, from `ops/start-redis-cluster` (run once per test binary).
fn url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/start-redis-cluster");
        let output = std::process::Command::new(script)
            .output()
            .unwrap_or_else(|e| panic!("{script} runs: {e}"));
        assert!(
            output.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    })
    .clone()
}

/// A mesh on the cluster with a key prefix of its own.
async fn mesh() -> RedisMesh {
    let mut config = RedisMeshConfig::new(url());
    config.key_prefix = format!("test-{}", uuid::Uuid::now_v7());
    let mesh = RedisMesh::connect(config).await.unwrap_or_else(|e| {
        panic!("the tests need the Redis Cluster (ops/start-redis-cluster): {e}")
    });
    assert!(mesh.is_cluster());
    mesh
}

swarm_mesh::mesh_behaviour_suite!(mesh(), "cluster");

#[tokio::test]
async fn the_server_version_is_the_lowest_of_the_nodes() {
    let version = mesh().await.server_version().await.expect("INFO server");
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("a version: {version}"));
    assert!(major >= 7, "{version}");
}

#[tokio::test]
async fn partitions_spread_over_the_masters() {
    use swarm_mesh::partition::partition_stream;
    let mesh = mesh().await;
    let nodes: Vec<String> = url()
        .trim_start_matches("redis+cluster://")
        .trim_end_matches('/')
        .split(',')
        .map(str::to_owned)
        .collect();
    let client = redis::Client::open(format!("redis://{}/", nodes[0])).expect("node url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("a node answers");
    // The master serving each partition's slot, from the node's own slot table.
    let mut owners = std::collections::BTreeSet::new();
    for k in 0..16 {
        let key = mesh.key(&partition_stream("s", k, 16));
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER KEYSLOT");
        owners.insert(shard_of(&mut conn, slot).await);
    }
    assert!(
        owners.len() >= 2,
        "16 partitions on one master only: {owners:?}"
    );
}

/// The id of the master whose slot ranges hold `slot` (CLUSTER SLOTS: [start, end, [ip, port, id], …]).
async fn shard_of(conn: &mut redis::aio::MultiplexedConnection, slot: i64) -> String {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .expect("CLUSTER SLOTS");
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end)), Some(master)) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        if (*start..=*end).contains(&slot) {
            return format!("{master:?}");
        }
    }
    panic!("slot {slot} is served by no master")
}

/// A mesh on the cluster that waits for one replica of each write, up to `timeout`.
async fn waiting_mesh(timeout: std::time::Duration) -> RedisMesh {
    let mut config = RedisMeshConfig::new(url());
    config.key_prefix = format!("test-{}", uuid::Uuid::now_v7());
    config.wait_for_replicas = Some(swarm_mesh::WaitForReplicas {
        replicas: 1,
        timeout,
    });
    RedisMesh::connect(config).await.unwrap_or_else(|e| {
        panic!("the tests need the Redis Cluster (ops/start-redis-cluster): {e}")
    })
}

/// The whole suite again, with every publish and settle waiting for a replica.
mod waiting_for_replicas {
    swarm_mesh::mesh_behaviour_suite!(
        super::waiting_mesh(std::time::Duration::from_secs(10)),
        "cluster-waiting"
    );
}

/// Each master of the project's cluster has a replica, which confirms writes at once: a
/// publish and a settle that wait for one answer long before their 10 s timeout.
#[tokio::test]
async fn replicas_confirm_publishes_and_settles() {
    use std::time::{Duration, Instant};
    use swarm_mesh::prelude::*;
    use swarm_mesh::{Settlement, StartAt};
    use swarm_schemas::Signal;
    let mesh = waiting_mesh(Duration::from_secs(10)).await;
    let (stream, group) = ("replicated", "g");
    mesh.create_group(stream, group, StartAt::Beginning)
        .await
        .expect("group");
    let started = Instant::now();
    let signal = Signal::new("tick", serde_json::json!({}));
    mesh.publish(stream, &signal).await.expect("publish");
    let read = mesh
        .read(stream, group, "c", 10, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
    let emitted = mesh
        .settle_batch(
            stream,
            group,
            &[Settlement {
                id: read[0].id,
                emits: vec![(
                    stream.to_owned(),
                    Signal::new("tock", serde_json::json!({})),
                )],
            }],
        )
        .await
        .expect("settle");
    assert_eq!(emitted.iter().map(Vec::len).collect::<Vec<_>>(), vec![1]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the replicas confirmed at once: {:?}",
        started.elapsed()
    );
    assert_eq!(
        mesh.group_info(stream, group).await.expect("info").pending,
        0
    );
}
