//! PostgreSQL stopped for 30 s while 10,000 signals flow through a `swarm up` process: the mesh
//! keeps processing (executions are spooled to disk), and once PostgreSQL is back every
//! execution is in memory, each once. The PostgreSQL server is the test's own, started by the
//! project's `ops/start-postgres`; the mesh is the project's Redis.
//!
//! With a spool capped at a few MB, the reactor holds its records once the spool is full, reads
//! no more (the signals wait in Redis), says so in its health, and loses nothing either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use swarm_mesh::RedisMesh;
use swarm_mesh::prelude::*;
use swarm_schemas::Signal;
use swarm_tests::{OwnPostgres, ReactorSpec, deploy};
use uuid::Uuid;

const STREAM: &str = "swarm:signals";
const GROUP: &str = "reactor";
const SIGNALS: usize = 10_000;
const OUTAGE: Duration = Duration::from_secs(30);

/// Lines in the counter's execution log: executions that ran, whatever memory did.
fn executions_ran(spec: &ReactorSpec) -> usize {
    std::fs::read_to_string(spec.counter_log()).map_or(0, |t| t.lines().count())
}

async fn stored(pool: &sqlx::PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT count(*) FROM executions")
        .fetch_one(pool)
        .await
        .ok()
}

/// A test's own PostgreSQL, a mesh of its own prefix on the project's Redis, and the spec of a
/// reactor running the counter unit that records into that PostgreSQL through `spool`.
struct Outage {
    postgres: OwnPostgres,
    mesh: Arc<RedisMesh>,
    spec: ReactorSpec,
    spool: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Outage {
    async fn new(extra_args: &[&str]) -> Self {
        let postgres = OwnPostgres::start();
        let units = tempfile::tempdir().expect("units dir");
        let work = tempfile::tempdir().expect("work dir");
        deploy(units.path(), "fixture-counter-v1", "counter.so");
        let (prefix, mesh) = swarm_tests::fresh_mesh().await;
        let spool = work.path().join("spool");
        let mut args = vec![
            "--postgres".into(),
            postgres.url(),
            "--spool".into(),
            spool.display().to_string(),
            "--models".into(),
            swarm_memory::testkit::models_dir().display().to_string(),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let spec = ReactorSpec::new(prefix, units.path(), work.path(), args);
        Self {
            postgres,
            mesh,
            spec,
            spool,
            _dirs: (units, work),
        }
    }
}

/// How many of the signals `ids` have no execution stored.
async fn missing(pool: &sqlx::PgPool, ids: &[Uuid]) -> usize {
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT signal_id FROM executions")
        .fetch_all(pool)
        .await
        .expect("ids");
    let stored: std::collections::HashSet<Uuid> = stored.into_iter().collect();
    ids.iter().filter(|id| !stored.contains(id)).count()
}

/// Once PostgreSQL is back: waits (up to `within`) for the group to settle every entry, then
/// (up to a minute) for `expected` executions to be stored; the pool and the count stored.
async fn outage_settled(
    mesh: &RedisMesh,
    postgres: &OwnPostgres,
    expected: usize,
    within: Duration,
) -> (sqlx::PgPool, i64) {
    let deadline = Instant::now() + within;
    while !mesh
        .group_info(STREAM, GROUP)
        .await
        .is_ok_and(|i| i.pending == 0 && i.lag == 0)
    {
        assert!(Instant::now() < deadline, "the mesh settles");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = sqlx::PgPool::connect(&postgres.url())
        .await
        .expect("reconnect");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut count = 0;
    while Instant::now() < deadline {
        count = stored(&pool).await.unwrap_or(0);
        if count as usize >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (pool, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_30_s_loses_no_execution() {
    let Outage {
        postgres,
        mesh,
        spec,
        spool,
        _dirs,
    } = Outage::new(&[]).await;
    let reactor = spec.start("r1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while mesh.group_info(STREAM, GROUP).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the reactor started (see {})",
            reactor.log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pool = sqlx::PgPool::connect(&postgres.url())
        .await
        .expect("connect");

    // About 250 signals a second for 40 s; PostgreSQL is down from 4 s to 34 s.
    let publisher = {
        let mesh = Arc::clone(&mesh);
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(SIGNALS);
            let mut tick = tokio::time::interval(Duration::from_millis(4));
            while ids.len() < SIGNALS {
                tick.tick().await;
                let signal = Signal::new("tick", json!({}));
                mesh.publish(STREAM, &signal).await.expect("publish");
                ids.push(signal.id);
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before_outage = stored(&pool).await.expect("count");
    assert!(
        before_outage > 0,
        "executions reach PostgreSQL while it is up"
    );
    pool.close().await;
    postgres.stop();
    let ran_at_stop = executions_ran(&spec);

    // While PostgreSQL is down the mesh keeps up: sample how far behind the group falls.
    let outage_end = Instant::now() + OUTAGE;
    let mut worst_backlog = 0;
    while Instant::now() < outage_end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let info = mesh.group_info(STREAM, GROUP).await.expect("group info");
        worst_backlog = worst_backlog.max(info.pending + info.lag);
    }
    let ran_in_outage = executions_ran(&spec) - ran_at_stop;
    let spooled_files = std::fs::read_dir(&spool).map_or(0, |d| d.count());
    postgres.restart();

    let ids = publisher.await.expect("publisher");
    let (pool, count) = outage_settled(&mesh, &postgres, SIGNALS, Duration::from_secs(60)).await;
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT signal_id) FROM executions")
        .fetch_one(&pool)
        .await
        .expect("count");
    let missing = missing(&pool, &ids).await;
    let ran = executions_ran(&spec);
    assert!(reactor.stop(), "the reactor exits cleanly");

    println!(
        "memory outage: {SIGNALS} signals, PostgreSQL down {OUTAGE:?}; {ran_in_outage} executions ran during the outage \
         (worst mesh backlog {worst_backlog}, {spooled_files} spool segments); {before_outage} stored before; \
         after restart {count} stored, {distinct} distinct signals, {missing} missing; {ran} executions ran in all"
    );
    // ~250/s for 30 s: the mesh kept processing while PostgreSQL was down.
    assert!(
        ran_in_outage > 6_000,
        "only {ran_in_outage} executions ran while PostgreSQL was down"
    );
    assert!(
        worst_backlog < 1_000,
        "the mesh fell {worst_backlog} signals behind while PostgreSQL was down"
    );
    assert!(
        spooled_files > 0,
        "executions were spooled while PostgreSQL was down"
    );
    assert_eq!(missing, 0, "every signal's execution is in memory");
    assert_eq!(ran, SIGNALS, "each signal ran once");
    assert_eq!(count as usize, SIGNALS, "each execution is stored once");
    assert_eq!(distinct as usize, SIGNALS);
}

/// The inspector's health, parsed.
async fn health(client: &reqwest::Client, http: &str) -> Option<swarm_inspector::Health> {
    client
        .get(format!("http://{http}/v1/health"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_slows_the_reads_and_loses_nothing() {
    const CAP: u64 = 4 << 20;
    // More signals than the spool and the reactor's signals in flight hold together.
    const FLOOD: usize = 20_000;
    let Outage {
        postgres,
        mesh,
        spec,
        _dirs,
        ..
    } = Outage::new(&["--spool-max-bytes", &CAP.to_string()]).await;
    let http = format!("127.0.0.1:{}", swarm_tests::free_port());
    let reactor = spec.start_serving("r1", &http);
    let client = reqwest::Client::new();
    let up = swarm_tests::wait_for_async(Duration::from_secs(60), async || {
        mesh.group_info(STREAM, GROUP).await.ok()?;
        health(&client, &http).await
    })
    .await;
    assert!(
        up.is_some(),
        "the reactor started (see {})",
        reactor.log.display()
    );

    // PostgreSQL stops; then 10,000 signals arrive at once.
    postgres.stop();
    let mut ids = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let signal = Signal::new("tick", json!({ "note": "a payload of a few words" }));
        mesh.publish(STREAM, &signal).await.expect("publish");
        ids.push(signal.id);
    }

    // The spool fills; the reactor holds its records and says why.
    let full = swarm_tests::wait_for_async(Duration::from_secs(120), async || {
        let health = health(&client, &http).await?;
        health
            .recording
            .as_ref()
            .is_some_and(|r| r.held > 0)
            .then_some(health)
    })
    .await
    .expect("the spool fills and records are held");
    let recording = full.recording.clone().expect("recording health");
    assert_eq!(full.status, "degraded");
    assert!(!recording.store_healthy);
    let backlog = full
        .mesh
        .as_ref()
        .expect("health reports the stream's backlog");
    assert!(
        backlog.length >= backlog.lag + backlog.pending && backlog.length > 0,
        "{backlog:?}"
    );
    let reason = recording.reason.clone().unwrap_or_default();
    assert!(reason.contains("the spool is full"), "{reason}");

    // It reads no more: what ran stays put, the rest waits in Redis.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ran_then = executions_ran(&spec);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ran_later = executions_ran(&spec);
    let info = mesh.group_info(STREAM, GROUP).await.expect("group info");
    let waiting = info.lag + info.pending;
    let spool_bytes = health(&client, &http)
        .await
        .and_then(|h| h.recording)
        .map_or(0, |r| r.spool_bytes);
    assert_eq!(
        ran_later, ran_then,
        "no signal runs while the spool is full"
    );
    // The cap may be passed by the batch that started below it, not more.
    assert!(
        spool_bytes < CAP + (2 << 20),
        "the spool holds {spool_bytes} bytes against a cap of {CAP}"
    );
    assert!(
        info.lag > 0 && info.lag as usize + ran_later >= FLOOD,
        "the signals not run wait in Redis, unread (lag {}, ran {ran_later})",
        info.lag
    );

    // PostgreSQL returns: the spool drains, the reactor reads again, nothing is lost.
    postgres.restart();
    let (pool, count) = outage_settled(&mesh, &postgres, FLOOD, Duration::from_secs(180)).await;
    let missing = missing(&pool, &ids).await;
    let after = health(&client, &http).await.expect("health");
    let ran = executions_ran(&spec);
    assert!(reactor.stop(), "the reactor exits cleanly");
    println!(
        "full spool: cap {CAP} bytes; at the hold {ran_then} of {FLOOD} signals had run, {waiting} waited in Redis, \
         spool {spool_bytes} bytes, reason: {reason}; after PostgreSQL returned {count} executions stored, {missing} missing, health {}",
        after.status
    );
    assert_eq!(missing, 0, "every signal's execution is in memory");
    assert_eq!(count as usize, FLOOD, "each execution is stored once");
    assert_eq!(ran, FLOOD, "each signal ran once");
    assert_eq!(after.status, "ok", "{after:?}");
}
