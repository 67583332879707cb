//! Runs of ticks over a partitioned stream, checked through the mesh: each partition has a
//! group of the test's own (so nothing is trimmed before the test reads it); the counter
//! fixture answers each tick with a tock settled atomically with the tick's acknowledgement
//! into the tick's partition, so the tocks of one key, in their partition's order, are the
//! order that key's ticks were handled in.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use swarm_mesh::partition::{partition_of, partition_stream};
use swarm_mesh::prelude::*;
use swarm_mesh::{RedisMesh, RedisMeshConfig, StartAt, WaitForReplicas};
use swarm_schemas::Signal;
use uuid::Uuid;

use crate::{ReactorSpec, deploy, workspace_root};

/// The reactors' stream.
pub const STREAM: &str = "swarm:signals";
/// The reactors' group.
pub const GROUP: &str = "reactor";
const OBSERVER: &str = "observer";

/// A mesh under a key prefix of its own whose stream has `partitions`, each with the test's
/// group.
pub async fn observed_mesh(url: &str, prefix: &str, partitions: u32) -> Arc<RedisMesh> {
    observed_mesh_waiting(url, prefix, partitions, None).await
}

/// [`observed_mesh`], waiting for replicas of each publish as `wait` says.
async fn observed_mesh_waiting(
    url: &str,
    prefix: &str,
    partitions: u32,
    wait: Option<WaitForReplicas>,
) -> Arc<RedisMesh> {
    let mut config = RedisMeshConfig::new(url);
    config.key_prefix = prefix.to_owned();
    config.wait_for_replicas = wait;
    let mesh = RedisMesh::connect(config)
        .await
        .unwrap_or_else(|e| panic!("the tests need Redis at {url}: {e}"));
    assert_eq!(
        mesh.partitions(STREAM, Some(partitions)).await,
        Ok(partitions)
    );
    for k in 0..partitions {
        mesh.create_group(
            &partition_stream(STREAM, k, partitions),
            OBSERVER,
            StartAt::Beginning,
        )
        .await
        .expect("observer group");
    }
    Arc::new(mesh)
}

/// What an ordering test of several `swarm up` processes starts from: the counter unit
/// deployed, an [`observed_mesh`] of a prefix of its own, and the spec of `swarm up` on it
/// with the stream's partitions and 2-second leases. The directories last as long as it.
pub struct Partitioned {
    /// The mesh, observed.
    pub mesh: Arc<RedisMesh>,
    /// `swarm up` on it.
    pub spec: ReactorSpec,
    _units: tempfile::TempDir,
    _work: tempfile::TempDir,
}

impl Partitioned {
    /// Set up on the Redis at `url`; a claimed entry waits `claim_idle` seconds.
    pub async fn new(url: &str, partitions: u32, claim_idle: f64) -> Self {
        Self::waiting(url, partitions, claim_idle, None).await
    }

    /// [`Partitioned::new`], where the test's publishes and the reactors' settles wait for
    /// replicas as `wait` says (`--redis-wait-replicas`, `--redis-wait-timeout`).
    pub async fn waiting(
        url: &str,
        partitions: u32,
        claim_idle: f64,
        wait: Option<WaitForReplicas>,
    ) -> Self {
        let units = tempfile::tempdir().expect("units dir");
        let work = tempfile::tempdir().expect("work dir");
        deploy(units.path(), "fixture-counter-v1", "counter.so");
        let prefix = format!("test-{}", Uuid::now_v7());
        let mesh = observed_mesh_waiting(url, &prefix, partitions, wait).await;
        let mut extra_args = vec![
            "--partitions".into(),
            partitions.to_string(),
            "--lease-ttl".into(),
            "2".into(),
        ];
        if let Some(wait) = wait {
            extra_args.extend([
                "--redis-wait-replicas".into(),
                wait.replicas.to_string(),
                "--redis-wait-timeout".into(),
                wait.timeout.as_secs_f64().to_string(),
            ]);
        }
        let spec = ReactorSpec {
            redis: url.to_owned(),
            prefix,
            units: units.path().to_owned(),
            work: work.path().to_owned(),
            claim_idle,
            extra_args,
        };
        Self {
            mesh,
            spec,
            _units: units,
            _work: work,
        }
    }
}

/// Tick `seq` of key `key`, keyed `customer-<key>`.
pub fn tick(key: usize, seq: usize) -> Signal {
    let mut signal = Signal::new("tick", json!({ "key": key, "seq": seq }));
    signal.partition_key = Some(format!("customer-{key}"));
    signal
}

/// Pending plus undelivered in the reactors' group over every partition; `None` while some
/// partition has no group yet or the mesh cannot answer.
pub async fn backlog(mesh: &RedisMesh, partitions: u32) -> Option<u64> {
    let mut total = 0;
    for k in 0..partitions {
        let info = mesh
            .group_info(&partition_stream(STREAM, k, partitions), GROUP)
            .await
            .ok()?;
        total += info.pending + info.lag;
    }
    Some(total)
}

/// Each partition's group state and lease holder, and the end of each process's log: what a
/// test that timed out prints.
pub async fn diagnose(
    mesh: &RedisMesh,
    partitions: u32,
    processes: &[&crate::ReactorProcess],
) -> String {
    let mut state = String::new();
    for k in 0..partitions {
        let part = partition_stream(STREAM, k, partitions);
        let info = mesh.group_info(&part, GROUP).await;
        let owner = mesh.lease_owner(STREAM, k).await;
        state.push_str(&format!("\n{part}: {info:?}, lease {owner:?}"));
    }
    for p in processes {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        state.push_str(&format!("\n--- {} ---\n{}", p.consumer, tail.join("\n")));
    }
    state
}

/// What the tocks say.
#[derive(Debug, Default)]
pub struct Tocks {
    /// Per key, the seqs of its ticks in the order they were handled.
    pub by_key: BTreeMap<usize, Vec<usize>>,
    /// Tocks per process id.
    pub by_pid: BTreeMap<u64, usize>,
}

/// Reads every partition through the test's group. `ticks` maps each published tick to its
/// (key, seq). Checks that each tick is in its key's partition.
pub async fn tocks(
    mesh: &RedisMesh,
    partitions: u32,
    ticks: &HashMap<Uuid, (usize, usize)>,
) -> Tocks {
    let mut out = Tocks::default();
    for k in 0..partitions {
        let part = partition_stream(STREAM, k, partitions);
        loop {
            let entries = mesh
                .read(&part, OBSERVER, "test", 10_000, Duration::ZERO)
                .await
                .expect("read");
            if entries.is_empty() {
                break;
            }
            for signal in entries.into_iter().filter_map(|e| e.body.ok()) {
                if signal.kind == "tick" {
                    assert_eq!(
                        partition_of(&signal, partitions),
                        k,
                        "a tick in its partition"
                    );
                    continue;
                }
                assert_eq!(signal.kind, "tock");
                let of: Uuid = signal.payload["of"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("tock names its tick");
                let Some(&(key, seq)) = ticks.get(&of) else {
                    panic!("a tock for a tick never published: {of}");
                };
                out.by_key.entry(key).or_default().push(seq);
                *out.by_pid
                    .entry(signal.payload["pid"].as_u64().unwrap_or(0))
                    .or_default() += 1;
            }
        }
    }
    out
}

/// Runs `ops/start-redis-cluster` (on its default ports, or from `base`) and returns the URL
/// it prints.
pub fn start_cluster(base: Option<u16>) -> String {
    let mut command = Command::new(workspace_root().join("ops/start-redis-cluster"));
    if let Some(base) = base {
        command.args(["--base-port", &base.to_string()]);
    }
    let output = command.output().expect("ops/start-redis-cluster runs");
    assert!(
        output.status.success(),
        "ops/start-redis-cluster: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What `redis-cli -p PORT ARGS...` prints (empty when the node does not answer).
fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A Redis Cluster of a test's own (three masters, three replicas, AOF on), started by
/// `ops/start-redis-cluster` on ports `base..base+5`; shut down when dropped.
pub struct OwnCluster {
    /// Its first port.
    pub base: u16,
    /// Its URL (`redis+cluster://…/`).
    pub url: String,
}

impl OwnCluster {
    /// Starts it, or brings back whichever of its nodes are down.
    pub fn start(base: u16) -> Self {
        Self {
            base,
            url: start_cluster(Some(base)),
        }
    }

    /// The ports of its nodes.
    pub fn ports(&self) -> Vec<u16> {
        (0..6).map(|i| self.base + i).collect()
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        self.serving(key)
            .unwrap_or_else(|| panic!("no master serves the slot of {key}"))
    }

    /// The port of the master serving `key`'s slot, if one does (none while a failover runs).
    pub fn serving(&self, key: &str) -> Option<u16> {
        // Asked of any node that answers: the one on the first port may be the one killed.
        let slot: u16 = self
            .ports()
            .into_iter()
            .find_map(|port| cli(port, &["cluster", "keyslot", key]).trim().parse().ok())
            .expect("a node answers with the key's slot");
        for port in self.ports() {
            let role = cli(port, &["role"]);
            if !role.starts_with("master") {
                continue;
            }
            // `CLUSTER NODES`: the line of `myself` ends with the slot ranges it serves.
            let nodes = cli(port, &["cluster", "nodes"]);
            let serves = nodes
                .lines()
                .find(|l| l.contains("myself"))
                .into_iter()
                .flat_map(|l| l.split_whitespace().skip(8))
                .any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    match (from.parse::<u16>(), to.parse::<u16>()) {
                        (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                        _ => false,
                    }
                });
            if serves {
                return Some(port);
            }
        }
        None
    }

    /// Has every replica take over from its master (`CLUSTER FAILOVER`, the coordinated kind:
    /// nothing is lost, and each old master becomes its successor's replica); returns once
    /// each has and the cluster is `ok`.
    pub fn fail_over_every_master(&self) {
        let role = |port: u16| cli(port, &["role"]);
        let replicas: Vec<u16> = self
            .ports()
            .into_iter()
            .filter(|&port| role(port).starts_with("slave"))
            .collect();
        assert_eq!(replicas.len(), 3, "three replicas to take over");
        for &port in &replicas {
            assert_eq!(
                cli(port, &["cluster", "failover"]).trim(),
                "OK",
                "CLUSTER FAILOVER on {port}"
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !(replicas
            .iter()
            .all(|&port| role(port).starts_with("master"))
            && self.ok())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the replicas on {replicas:?} took over within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs the node on `port` (its pid from its pid file).
    pub fn kill(&self, port: u16) {
        let pidfile = workspace_root().join(format!(".swarm/redis-cluster/{port}/redis.pid"));
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -KILL {}", pid.trim());
    }

    /// Whether every node answers and says the cluster is `ok`.
    pub fn ok(&self) -> bool {
        self.ports()
            .into_iter()
            .all(|port| cli(port, &["cluster", "info"]).contains("cluster_state:ok"))
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for port in self.ports() {
            let _ = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "shutdown", "nosave"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
