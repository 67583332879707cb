//! WriteBehind in front of a store that can be switched off, held up, or made to refuse records:
//! nothing is lost and nothing waits. (The same against a real PostgreSQL that is stopped and
//! restarted is `tests/system/memory_outage.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use swarm_memory::testkit::record;
use swarm_memory::{
    Compaction, InProcMemory, Memory, MemoryError, Retention, SearchHit, SearchQuery, UnitStats,
    WriteBehind, WriteBehindConfig,
};
use swarm_schemas::{ExecutionId, ExecutionRecord, Signal, SignalId};
use tokio::sync::Semaphore;

/// An in-process store that fails while `down`, waits for a permit while `gated`, and refuses
/// records of the unit `refused`; it notes the units of the batches embedded ahead, and counts
/// the calls to `record` that have begun.
struct Store {
    inner: InProcMemory,
    down: AtomicBool,
    gate: Semaphore,
    gated: AtomicBool,
    ahead: parking_lot::Mutex<Vec<String>>,
    recording: AtomicUsize,
}

impl Store {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: InProcMemory::new(),
            down: AtomicBool::new(false),
            gate: Semaphore::new(0),
            gated: AtomicBool::new(false),
            ahead: parking_lot::Mutex::new(Vec::new()),
            recording: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Memory for Store {
    async fn record(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        self.recording.fetch_add(1, Ordering::SeqCst);
        if self.gated.load(Ordering::SeqCst) {
            self.gate.acquire().await.expect("gate").forget();
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(MemoryError::Unavailable("switched off".into()));
        }
        if records.iter().any(|r| r.unit == "refused") {
            return Err(MemoryError::Rejected("a refused unit".into()));
        }
        self.inner.record(records).await
    }
    async fn embed_ahead(&self, records: &[ExecutionRecord]) -> Result<(), MemoryError> {
        let mut units: Vec<String> = records.iter().map(|r| r.unit.clone()).collect();
        units.dedup();
        self.ahead.lock().extend(units);
        Ok(())
    }
    async fn execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, MemoryError> {
        self.inner.execution(id).await
    }
    async fn executions_of(&self, signal: SignalId) -> Result<Vec<ExecutionRecord>, MemoryError> {
        self.inner.executions_of(signal).await
    }
    async fn recent(&self, limit: usize) -> Result<Vec<ExecutionRecord>, MemoryError> {
        self.inner.recent(limit).await
    }
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, MemoryError> {
        self.inner.search(query).await
    }
    async fn unit_stats(&self) -> Result<Vec<UnitStats>, MemoryError> {
        self.inner.unit_stats().await
    }
    async fn count(&self) -> Result<u64, MemoryError> {
        self.inner.count().await
    }
    async fn compact(&self, retention: &Retention) -> Result<Compaction, MemoryError> {
        self.inner.compact(retention).await
    }
}

fn batch(n: usize, unit: &str) -> Vec<ExecutionRecord> {
    (0..n)
        .map(|i| {
            record(
                &Signal::new("k", serde_json::json!({ "i": i })),
                unit,
                true,
                0,
            )
        })
        .collect()
}

fn config(dir: &tempfile::TempDir) -> WriteBehindConfig {
    WriteBehindConfig {
        retry_every: Duration::from_millis(50),
        ..WriteBehindConfig::new(dir.path())
    }
}

/// A writer in front of a store that holds every call until its gate opens.
fn held(config: WriteBehindConfig) -> (Arc<Store>, WriteBehind) {
    let store = Store::new();
    store.gated.store(true, Ordering::SeqCst);
    let writer = WriteBehind::start(store.clone(), config).expect("start");
    (store, writer)
}

#[tokio::test]
async fn records_reach_the_store_in_batches() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::new();
    let writer = WriteBehind::start(store.clone(), config(&dir)).expect("start");
    for _ in 0..10 {
        writer.record(&batch(100, "u")).await.expect("record");
    }
    let status = writer.flush().await;
    assert_eq!((status.written, status.spooled, status.lost), (1000, 0, 0));
    assert_eq!(store.inner.len(), 1000);
    assert!(status.store_healthy);
}

/// Polls `done` every 10 ms for up to 10 s.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test]
async fn the_next_batch_is_embedded_while_one_is_written() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, writer) = held(config(&dir));
    writer.record(&batch(10, "first")).await.expect("record");
    eventually("the first batch is being written", || {
        store.recording.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        *store.ahead.lock(),
        ["first"],
        "embedded before it was written"
    );
    writer.record(&batch(20, "second")).await.expect("record");
    eventually("the second batch is embedded ahead", || {
        store.ahead.lock().len() == 2
    })
    .await;
    assert_eq!(*store.ahead.lock(), ["first", "second"]);
    // The first batch's write is still held: the second was embedded alongside it.
    assert_eq!(store.recording.load(Ordering::SeqCst), 1);
    assert_eq!(store.inner.len(), 0);
    store.gate.add_permits(1_000);
    let status = writer.flush().await;
    assert_eq!((status.written, status.spooled, status.lost), (30, 0, 0));
    assert_eq!(store.inner.len(), 30);
}

#[tokio::test]
async fn a_store_that_is_down_is_caught_up_from_the_spool() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::new();
    let writer = WriteBehind::start(store.clone(), config(&dir)).expect("start");
    store.down.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for _ in 0..5 {
        let records = batch(300, "u");
        writer
            .record(&records)
            .await
            .expect("recording never fails while the store is down");
        sent.extend(records);
    }
    let status = writer.flush().await;
    assert_eq!((status.written, status.spooled, status.lost), (0, 1500, 0));
    assert!(!status.store_healthy);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("switched off")),
        "{status:?}"
    );
    assert!(store.inner.is_empty());

    store.down.store(false, Ordering::SeqCst);
    // Records sent after the store is back queue behind the spool and arrive too.
    let later = batch(10, "u");
    writer.record(&later).await.expect("record");
    let status = writer.flush().await;
    assert_eq!(
        (status.written, status.spooled, status.lost),
        (1510, 0, 0),
        "{status:?}"
    );
    sent.extend(later);
    let mut stored: Vec<_> = store.inner.all().into_iter().map(|r| r.id).collect();
    let mut expected: Vec<_> = sent.iter().map(|r| r.id).collect();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn a_full_spool_holds_records_back_until_the_store_returns() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::new();
    let cap = 64 * 1024;
    let writer = Arc::new(
        WriteBehind::start(
            store.clone(),
            WriteBehindConfig {
                spool_max_bytes: cap,
                max_queued: 100,
                max_wait: Duration::from_millis(200),
                ..config(&dir)
            },
        )
        .expect("start"),
    );
    store.down.store(true, Ordering::SeqCst);
    // The first batch meets the store down; the next ones fill the spool to its cap.
    let mut sent = Vec::new();
    let mut status = writer.status();
    while status.spool_bytes < cap {
        let records = batch(50, "u");
        writer.record(&records).await.expect("record");
        sent.extend(records);
        status = writer.status();
    }
    // Once what was queued is spooled (or kept by the writer), the spool is where it stays.
    let status = writer.flush().await;
    assert!(!status.store_healthy);
    let (held_before, spooled_at_cap) = (status.held, status.spool_bytes);

    // Now recording waits: the records are held, the spool grows no more.
    let waiting = {
        let writer = Arc::clone(&writer);
        let records = batch(50, "u");
        sent.extend(records.clone());
        tokio::spawn(async move { writer.record(&records).await })
    };
    eventually("the records are held", || {
        writer.status().held == held_before + 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "recording waits while the spool is full"
    );
    let status = writer.status();
    assert_eq!(
        status.spool_bytes, spooled_at_cap,
        "the spool stays at its cap"
    );
    assert_eq!(status.spool_max_bytes, cap);

    // The store returns: the replay makes room, the held records go on, and all arrive.
    store.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("recording resumes once there is room")
        .expect("task")
        .expect("record");
    let status = writer.flush().await;
    assert_eq!(status.held, 0);
    assert_eq!(
        (status.written, status.spooled, status.lost),
        (sent.len() as u64, 0, 0),
        "{status:?}"
    );
    let mut stored: Vec<_> = store.inner.all().into_iter().map(|r| r.id).collect();
    let mut expected: Vec<_> = sent.iter().map(|r| r.id).collect();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn the_spool_outlives_the_writer() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::new();
    store.down.store(true, Ordering::SeqCst);
    let writer = WriteBehind::start(store.clone(), config(&dir)).expect("start");
    writer.record(&batch(250, "u")).await.expect("record");
    let closed = writer.close().await;
    assert_eq!(closed.spooled, 250);
    // After close, records still land in the spool rather than nowhere.
    writer
        .record(&batch(5, "u"))
        .await
        .expect("record after close");
    assert_eq!(writer.status().spooled, 255);
    drop(writer);

    store.down.store(false, Ordering::SeqCst);
    let writer = WriteBehind::start(store.clone(), config(&dir)).expect("restart");
    assert_eq!(
        writer.status().spooled,
        255,
        "the new writer finds the old spool"
    );
    let status = writer.flush().await;
    assert_eq!((status.written, status.spooled), (255, 0));
    assert_eq!(store.inner.len(), 255);
}

#[tokio::test]
async fn a_full_queue_spills_to_the_spool_once_max_wait_has_passed() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, writer) = held(WriteBehindConfig {
        queue: 2,
        batch: 10,
        max_wait: Duration::from_millis(20),
        ..config(&dir)
    });
    let started = std::time::Instant::now();
    for _ in 0..50 {
        writer.record(&batch(10, "u")).await.expect("record");
    }
    let took = started.elapsed();
    assert!(
        writer.status().spooled > 0,
        "with the store held up and a queue of 2, batches spill"
    );
    assert!(
        took < Duration::from_secs(5),
        "recording waited for the stuck store at most max_wait each time: {took:?}"
    );
    store.gated.store(false, Ordering::SeqCst);
    store.gate.add_permits(1_000);
    let status = writer.flush().await;
    assert_eq!(
        (status.written, status.spooled, status.lost),
        (500, 0, 0),
        "{status:?}"
    );
    assert_eq!(store.inner.len(), 500);
}

#[tokio::test]
async fn a_slow_store_slows_recording_instead_of_spooling() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, writer) = held(WriteBehindConfig {
        batch: 10,
        max_queued: 20,
        max_wait: Duration::from_secs(30),
        ..config(&dir)
    });
    let writer = Arc::new(writer);
    let recording = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            for _ in 0..10 {
                writer.record(&batch(10, "u")).await.expect("record");
            }
        })
    };
    // The store takes one batch and holds it; the queue fills to 20 records; then recording
    // waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !recording.is_finished(),
        "recording waits for room in the queue"
    );
    assert_eq!(
        writer.status().spooled,
        0,
        "nothing spooled while the store is healthy"
    );
    // The store lets batches through one at a time: recording goes on as room frees.
    store.gated.store(false, Ordering::SeqCst);
    store.gate.add_permits(1);
    recording.await.expect("recording finishes");
    let status = writer.flush().await;
    assert_eq!(
        (status.written, status.spooled, status.lost),
        (100, 0, 0),
        "{status:?}"
    );
    assert_eq!(store.inner.len(), 100);
}

#[tokio::test]
async fn recording_waits_for_a_stuck_store_at_most_max_wait() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, writer) = held(WriteBehindConfig {
        batch: 10,
        max_queued: 20,
        max_wait: Duration::from_millis(100),
        ..config(&dir)
    });
    let started = std::time::Instant::now();
    for _ in 0..6 {
        writer.record(&batch(10, "u")).await.expect("record");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(5),
        "recording waits for room, but at most max_wait each time: {took:?}"
    );
    store.gated.store(false, Ordering::SeqCst);
    store.gate.add_permits(1_000);
    let status = writer.flush().await;
    assert_eq!(
        (status.written + status.spooled, status.lost),
        (60, 0),
        "{status:?}"
    );
}

#[tokio::test]
async fn records_the_store_refuses_are_counted_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::new();
    let writer = WriteBehind::start(store.clone(), config(&dir)).expect("start");
    let mut records = batch(20, "u");
    records.extend(batch(2, "refused"));
    writer.record(&records).await.expect("record");
    let status = writer.flush().await;
    assert_eq!(
        (status.written, status.lost, status.spooled),
        (20, 2, 0),
        "{status:?}"
    );
    assert_eq!(store.inner.len(), 20);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused"))
    );
}
