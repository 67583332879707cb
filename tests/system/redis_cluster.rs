//! `ops/start-redis-cluster` makes a real Redis Cluster on loopback: six nodes, three masters
//! each with a replica, every slot served, the append-only file on; run again, it leaves the
//! cluster as it is.

fn start() -> String {
    swarm_tests::partitioned::start_cluster(None)
}

async fn query<T: redis::FromRedisValue>(node: &str, cmd: &mut redis::Cmd) -> T {
    let client = redis::Client::open(format!("redis://{node}/")).expect("a node URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("node {node}: {e}"));
    cmd.query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("node {node}: {e}"))
}

/// The `field:value` lines of `CLUSTER INFO`.
async fn info(node: &str, field: &str) -> String {
    let text: String = query(node, redis::cmd("CLUSTER").arg("INFO")).await;
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{field}:"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no {field} in {text}"))
}

#[tokio::test]
async fn the_project_cluster_has_three_masters_with_replicas_and_aof() {
    let url = start();
    let nodes: Vec<String> = url
        .strip_prefix("redis+cluster://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not a cluster URL: {url}"))
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(nodes.len(), 6, "{url}");
    let mut masters = 0;
    for node in &nodes {
        assert_eq!(info(node, "cluster_state").await, "ok", "{node}");
        assert_eq!(info(node, "cluster_slots_assigned").await, "16384");
        assert_eq!(info(node, "cluster_known_nodes").await, "6");
        assert_eq!(info(node, "cluster_size").await, "3");
        let aof: Vec<String> = query(node, redis::cmd("CONFIG").arg("GET").arg("appendonly")).await;
        assert_eq!(aof, ["appendonly", "yes"], "{node}");
        let role: Vec<redis::Value> = query(node, &mut redis::cmd("ROLE")).await;
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            masters += 1;
        }
    }
    assert_eq!(masters, 3);
    let ids: String = query(&nodes[0], redis::cmd("CLUSTER").arg("NODES")).await;
    assert_eq!(
        start(),
        url,
        "run again, the script prints the same cluster"
    );
    let again: String = query(&nodes[0], redis::cmd("CLUSTER").arg("NODES")).await;
    let id_set = |text: &str| {
        let mut ids: Vec<String> = text
            .lines()
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        id_set(&ids),
        id_set(&again),
        "the same nodes, not a new cluster"
    );
}
