//! The core loop with real unit libraries: the example swarm's units, built as cdylibs, loaded
//! by the reactor, coordinate only through the signals they emit; and a stop that comes while
//! a read is answering runs what the read took.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use swarm_memory::Memory;
use swarm_mesh::prelude::*;
use swarm_mesh::{
    Delivery, Entry, EntryId, GroupInfo, InProcMesh, Kv, Marks, Mesh, MeshError, Settlement,
    StartAt,
};
use swarm_reactor::{Change, Reactor};
use swarm_schemas::{Outcome, Signal};
use swarm_tests::{TestSwarm, deploy_order_flow, wait_for, wait_for_async};

const SETTLE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_unit_emits_reaches_the_next_with_lineage() {
    let swarm = TestSwarm::new();
    deploy_order_flow(swarm.units.path());
    let (reactor, report) = swarm.start().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let names: Vec<String> = reactor
        .registry()
        .status()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(
        names,
        [
            "fulfil-express",
            "fulfil-standard",
            "order-price",
            "order-validate"
        ]
    );

    let order = Signal::new(
        "order.placed",
        json!({"id": 1, "items": [{"sku": "tea", "qty": 2}]}),
    );
    swarm.publish(&order).await;
    assert!(swarm.settled(SETTLE).await, "the swarm settles");
    reactor.stop().await;

    let signals = swarm.signals(&swarm.config.stream).await;
    let kinds: Vec<&str> = signals.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "order.placed",
            "order.validated",
            "order.priced",
            "order.fulfilled"
        ]
    );
    let records = swarm.memory.all();
    assert_eq!(
        records.len(),
        3,
        "validate, price, and the one fulfilment unit ranked first (both take a small order): {records:#?}"
    );
    assert!(records.iter().all(|r| r.outcome == Outcome::Success));
    let shipped = records
        .iter()
        .find(|r| r.unit.starts_with("fulfil-"))
        .expect("a fulfilment");
    assert_eq!(shipped.policy, "first_success");
    assert!(shipped.propensity > 0.0 && shipped.propensity <= 1.0);

    // Each emitted signal names the execution that emitted it and keeps the trace.
    for signal in &signals[1..] {
        let parent = signal
            .parent_execution
            .expect("emitted signals have a parent execution");
        let execution = records
            .iter()
            .find(|r| r.id == parent)
            .expect("the parent execution is recorded");
        assert!(execution.emitted.contains(&signal.id));
        assert_eq!(signal.trace_id, order.trace_id);
        assert_eq!(signal.correlation_id, order.correlation_id);
    }
    let priced = &signals[2];
    assert_eq!(priced.payload["total_cents"], 900);
    let carrier = signals[3].payload["carrier"].as_str();
    assert_eq!(
        carrier,
        Some(&shipped.unit["fulfil-".len()..]),
        "{signals:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_cycle_and_a_missing_dependency_are_refused_by_name() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-cycle-a", "cycle-a.so");
    swarm.deploy("fixture-cycle-b", "cycle-b.so");
    swarm.deploy("fixture-needs-ghost", "needs-ghost.so");
    swarm.deploy("fixture-counter-v1", "counter.so");
    // order-price depends on order-validate, which is not deployed.
    swarm.deploy("order-price", "order-price.so");
    let (reactor, report) = swarm.start().await;
    let errors: Vec<String> = report.failures.iter().map(|(_, e)| e.to_string()).collect();
    assert!(
        errors.contains(&"dependency cycle: cycle-a -> cycle-b -> cycle-a".to_owned()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"dependency cycle: cycle-b -> cycle-a -> cycle-b".to_owned()),
        "{errors:?}"
    );
    assert!(
        errors
            .contains(&"unit `needs-ghost` depends on `ghost` (*), which is not loaded".to_owned()),
        "{errors:?}"
    );
    assert!(
        errors.contains(
            &"unit `order-price` depends on `order-validate` (^1), which is not loaded".to_owned()
        ),
        "{errors:?}"
    );
    let loaded: Vec<String> = reactor
        .registry()
        .status()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(loaded, ["counter"]);

    // When the missing dependency arrives, the unit waiting for it loads too.
    swarm.deploy("order-validate", "order-validate.so");
    let registry = reactor.registry();
    let arrived = wait_for(Duration::from_secs(5), || {
        registry.unit("order-price").map(|_| ())
    })
    .await;
    assert!(
        arrived.is_some(),
        "order-price loads once order-validate is there: {:?}",
        registry.failures()
    );

    // Once the dependency arrives, the dependent loads after it.
    let mut both = TestSwarm::new();
    both.config.watch = false;
    deploy_order_flow(both.units.path());
    let (other, report) = both.start().await;
    let order: Vec<&str> = report
        .changes
        .iter()
        .filter_map(|(_, c)| match c {
            Change::Loaded { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let position = |name| order.iter().position(|n| *n == name).expect("loaded");
    assert!(
        position("order-validate") < position("order-price"),
        "{order:?}"
    );
    reactor.stop().await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_unit_takes_no_signals_until_enabled_and_a_removed_one_unloads() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, _) = swarm.start().await;
    let registry = reactor.registry();
    let stream = &swarm.config.stream;

    registry.set_enabled("counter", false).expect("known unit");
    assert_eq!(
        registry.status()[0].state,
        swarm_reactor::UnitState::Disabled
    );
    let ignored = Signal::new("tick", json!({}));
    swarm.mesh.publish(stream, &ignored).await.expect("publish");
    assert!(swarm.settled(SETTLE).await);
    assert!(swarm.memory.is_empty(), "a disabled unit runs nothing");

    registry.set_enabled("counter", true).expect("known unit");
    let handled = Signal::new("tick", json!({}));
    swarm.mesh.publish(stream, &handled).await.expect("publish");
    assert!(swarm.settled(SETTLE).await);
    let records = swarm.memory.all();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].signal.id, handled.id);
    assert!(registry.set_enabled("nobody", true).is_err());

    std::fs::remove_file(swarm.units.path().join("counter.so")).expect("remove");
    let gone = wait_for(Duration::from_secs(5), || {
        registry.unit("counter").is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the unit unloads when its file is removed");
    assert!(registry.status().is_empty());
    reactor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_order_express_refuses_falls_back_to_standard() {
    let swarm = TestSwarm::new();
    deploy_order_flow(swarm.units.path());
    let (reactor, _) = swarm.start().await;
    let orders: Vec<Signal> = (0..8)
        .map(|id| {
            Signal::new(
                "order.placed",
                json!({"id": id, "items": [{"sku": "piano", "qty": 1}]}),
            )
        })
        .collect();
    for order in &orders {
        swarm.publish(order).await;
        assert!(swarm.settled(SETTLE).await, "the swarm settles");
    }
    reactor.stop().await;
    let fulfilled: Vec<Signal> = swarm
        .signals(&swarm.config.stream)
        .await
        .into_iter()
        .filter(|s| s.kind == "order.fulfilled")
        .collect();
    assert_eq!(fulfilled.len(), orders.len(), "every order shipped once");
    assert!(
        fulfilled.iter().all(|s| s.payload["carrier"] == "standard"),
        "{fulfilled:#?}"
    );
    let records = swarm.memory.all();
    let express: Vec<_> = records
        .iter()
        .filter(|r| r.unit == "fulfil-express")
        .collect();
    assert!(
        express.iter().all(|r| !r.outcome.is_success()),
        "express refuses every one"
    );
    assert!(
        express.len() < orders.len(),
        "and is tried first less often as the ranker learns: {}",
        express.len()
    );
    let dead = swarm
        .signals(&swarm_mesh::dead_letter_stream(&swarm.config.stream))
        .await;
    assert!(dead.is_empty(), "{dead:#?}");
}

/// A mesh whose reads answer `delay` after they took their entries, as a read over a network
/// does: the entries are in the group's pending list before the reader has them.
struct SlowAnswers {
    inner: Arc<InProcMesh>,
    delay: Duration,
}

impl Stores for SlowAnswers {
    fn marks(&self, half_life: Duration) -> Arc<dyn Marks> {
        self.inner.marks(half_life)
    }
    fn kv(&self) -> Arc<dyn Kv> {
        self.inner.kv()
    }
    fn unit_controls(&self) -> Arc<dyn swarm_mesh::UnitControls> {
        self.inner.unit_controls()
    }
}

#[async_trait]
impl Publish for SlowAnswers {
    async fn publish(&self, stream: &str, signal: &Signal) -> Result<EntryId, MeshError> {
        self.inner.publish(stream, signal).await
    }
}

#[async_trait]
impl Groups for SlowAnswers {
    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartAt,
    ) -> Result<(), MeshError> {
        self.inner.create_group(stream, group, start).await
    }
    async fn trim_acknowledged(&self, stream: &str) -> Result<u64, MeshError> {
        self.inner.trim_acknowledged(stream).await
    }
    async fn trim_retained(
        &self,
        stream: &str,
        max_len: Option<u64>,
        before: Option<EntryId>,
    ) -> Result<u64, MeshError> {
        self.inner.trim_retained(stream, max_len, before).await
    }
    async fn delete(&self, stream: &str, ids: &[EntryId]) -> Result<u64, MeshError> {
        self.inner.delete(stream, ids).await
    }
}

#[async_trait]
impl Consume for SlowAnswers {
    async fn read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, MeshError> {
        let taken = self
            .inner
            .read(stream, group, consumer, count, block)
            .await?;
        if !taken.is_empty() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(taken)
    }
    async fn read_own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        self.inner
            .read_own_pending(stream, group, consumer, after, count)
            .await
    }
    async fn claim_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        self.inner
            .claim_pending(stream, group, consumer, after, count)
            .await
    }
    async fn pending_among(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, MeshError> {
        self.inner.pending_among(stream, group, ids).await
    }
    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> Result<u64, MeshError> {
        self.inner.ack(stream, group, ids).await
    }
    async fn settle_batch(
        &self,
        stream: &str,
        group: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError> {
        self.inner.settle_batch(stream, group, settlements).await
    }
    async fn settle_batch_leased(
        &self,
        stream: &str,
        group: &str,
        owner: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Vec<EntryId>>, MeshError> {
        self.inner
            .settle_batch_leased(stream, group, owner, settlements)
            .await
    }
    async fn settle_batch_owned(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        settlements: &[Settlement],
    ) -> Result<Vec<Option<Vec<EntryId>>>, MeshError> {
        self.inner
            .settle_batch_owned(stream, group, consumer, settlements)
            .await
    }
    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, MeshError> {
        self.inner
            .claim_idle(stream, group, consumer, min_idle, count)
            .await
    }
    async fn keep_alive(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>, MeshError> {
        self.inner.keep_alive(stream, group, consumer, ids).await
    }
}

#[async_trait]
impl swarm_mesh::Partitions for SlowAnswers {
    async fn partitions(&self, stream: &str, wanted: Option<u32>) -> Result<u32, MeshError> {
        self.inner.partitions(stream, wanted).await
    }
    async fn heartbeat(
        &self,
        stream: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, MeshError> {
        self.inner.heartbeat(stream, member, ttl).await
    }
    async fn leave(&self, stream: &str, member: &str) -> Result<(), MeshError> {
        self.inner.leave(stream, member).await
    }
    async fn lease(
        &self,
        stream: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, MeshError> {
        self.inner.lease(stream, partition, owner, ttl).await
    }
    async fn release(&self, stream: &str, partition: u32, owner: &str) -> Result<bool, MeshError> {
        self.inner.release(stream, partition, owner).await
    }
    async fn lease_owner(&self, stream: &str, partition: u32) -> Result<Option<String>, MeshError> {
        self.inner.lease_owner(stream, partition).await
    }
}

#[async_trait]
impl Observe for SlowAnswers {
    async fn group_info(&self, stream: &str, group: &str) -> Result<GroupInfo, MeshError> {
        self.inner.group_info(stream, group).await
    }
    async fn range(
        &self,
        stream: &str,
        after: Option<EntryId>,
        count: usize,
    ) -> Result<Vec<Entry>, MeshError> {
        self.inner.range(stream, after, count).await
    }
    async fn settled(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> Result<Vec<bool>, MeshError> {
        self.inner.settled(stream, group, ids).await
    }
    async fn len(&self, stream: &str) -> Result<u64, MeshError> {
        self.inner.len(stream).await
    }
    async fn last_id(&self, stream: &str) -> Result<EntryId, MeshError> {
        self.inner.last_id(stream).await
    }
    async fn tail(
        &self,
        stream: &str,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, MeshError> {
        self.inner.tail(stream, after, count, block).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_read_runs_what_the_read_took() {
    // Told to stop while a read's answer is on its way, the reactor waits for the answer and
    // runs what it brought: dropped, those entries would stay pending until the next start.
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-noop", "noop.so");
    // The ten are in the stream before the reactor starts, so its first read takes them all at
    // once (the group starts at the beginning). Published while a read waits, the first would
    // wake it alone and the rest go to a later read.
    for _ in 0..10 {
        swarm.publish(&Signal::new("bench.noop", json!({}))).await;
    }
    let mesh = Arc::new(SlowAnswers {
        inner: Arc::clone(&swarm.mesh),
        delay: Duration::from_millis(300),
    });
    let (reactor, report) = Reactor::start(
        swarm.config.clone(),
        mesh as Arc<dyn Mesh>,
        Arc::clone(&swarm.memory) as _,
    )
    .await
    .expect("reactor starts");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // The read has taken them (they are pending) and answers 300 ms later.
    let (stream, group) = (&swarm.config.stream, &swarm.config.group);
    let taken = wait_for_async(SETTLE, async || {
        let info = swarm.mesh.group_info(stream, group).await.ok()?;
        (info.pending == 10).then_some(())
    })
    .await;
    assert!(taken.is_some(), "the read took the ten signals");
    reactor.stop().await;
    let info = swarm
        .mesh
        .group_info(stream, group)
        .await
        .expect("group info");
    assert_eq!(info.pending, 0, "nothing the read took is left pending");
    assert_eq!(
        swarm.memory.count().await.expect("count"),
        10,
        "every signal ran"
    );
}
