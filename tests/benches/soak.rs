//! The soak: `swarm up` with the six example units (order flow and foraging), the Redis mesh,
//! memory in PostgreSQL with the embedding model, and the inspector, driven for MINUTES
//! (default 10) at `SOAK_RATE` signals/s (default 5,000) published to Redis, plus `SOAK_POSTS`
//! (default 20) HTTP posts a second (every tenth waits for its reply) and a live websocket
//! watcher. Every 10 s it samples the reactor's resident memory, open file descriptors and
//! threads, Redis's memory, the PostgreSQL connections, the spool and the backlog. An observer
//! group counts every signal that goes through the mesh, by kind. When the load stops and the
//! swarm has caught up, it counts what memory holds: every signal of a kind some unit takes
//! must have been handled (an execution recorded) or dead-lettered, or it counts as lost; an
//! execution recorded twice for the same signal, unit and attempt counts as a duplicate. Prints
//! the samples and the growth. Asserts nothing.
//!
//! Run with: ops/soak [MINUTES] (a release build), or ops/start-redis && ops/start-postgres &&
//!   ops/fetch-model && cargo bench -p swarm-tests --bench soak -- MINUTES

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use swarm_memory::testkit::{database_url, fresh_database};
use swarm_mesh::prelude::*;
use swarm_mesh::{RedisMesh, StartAt, dead_letter_stream};
use swarm_schemas::{DeadLetter, Signal, UnitStatus};
use swarm_tests::{ReactorSpec, example_reactor_args, free_port, proc_status, redis_url};

/// The stream the reactor reads.
const STREAM: &str = "swarm:signals";
/// The soak's own group: sees every signal on the stream.
const OBSERVER: &str = "soak-observer";
/// What the example's price list has a price for: every order that is not empty goes through
/// validation, pricing and fulfilment.
const SKUS: [&str; 3] = ["tea", "cake", "piano"];
const SITES: [&str; 4] = ["north", "south", "east", "west"];
/// How often the soak samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

struct Settings {
    minutes: f64,
    rate: u64,
    posts_per_second: u64,
}

impl Settings {
    fn read() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let minutes = std::env::args()
            .skip(1)
            .find_map(|a| a.parse::<f64>().ok())
            .filter(|m| *m > 0.0)
            .unwrap_or(10.0);
        Self {
            minutes,
            rate: number("SOAK_RATE", 5_000),
            posts_per_second: number("SOAK_POSTS", 20),
        }
    }
}

/// The `n`th published signal: six in ten orders (of none to three items; an empty one is
/// rejected), two food finds, two scout ticks.
fn signal(n: u64) -> Signal {
    let pick = |list: &[&'static str], k: u64| list[(k % list.len() as u64) as usize];
    match n % 10 {
        6 | 7 => Signal::new(
            "food.found",
            json!({"site": pick(&SITES, n / 10), "amount": 1 + n % 5}),
        ),
        8 | 9 => Signal::new("scout.tick", json!({})),
        _ => Signal::new("order.placed", order(n)),
    }
}

fn order(n: u64) -> Value {
    let items: Vec<Value> = (0..n % 4)
        .map(|i| json!({"sku": SKUS[((n + i) % 3) as usize], "qty": 1 + (n + i) % 3}))
        .collect();
    json!({"id": n, "items": items})
}

/// Counters the load's tasks keep.
#[derive(Default)]
struct Load {
    published: AtomicU64,
    publish_retries: AtomicU64,
    posts_ok: AtomicU64,
    posts_replied: AtomicU64,
    posts_unreplied: AtomicU64,
    posts_failed: AtomicU64,
    live_events: AtomicU64,
    live_reconnects: AtomicU64,
    observed_undecodable: AtomicU64,
}

/// Publishes `rate` signals a second until `stop`, in batches every 20 ms; a publish that fails
/// is retried, so that every signal counted was published.
async fn publish(mesh: Arc<RedisMesh>, rate: u64, load: Arc<Load>, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut next = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        futures_util::stream::iter(next..due)
            .for_each_concurrent(64, |n| {
                let (mesh, load) = (Arc::clone(&mesh), Arc::clone(&load));
                async move {
                    let signal = signal(n);
                    while mesh.publish(STREAM, &signal).await.is_err() {
                        load.publish_retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
            .await;
        load.published.fetch_add(due - next, Ordering::Relaxed);
        next = due;
    }
}

/// Posts `per_second` orders over HTTP until `stop`; every tenth waits for its reply.
async fn post(base: String, per_second: u64, load: Arc<Load>, stop: Arc<AtomicBool>) {
    if per_second == 0 {
        return;
    }
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second as f64));
    let mut n = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let wait = n % 10 == 0;
        let url = if wait {
            format!("{base}/v1/signals?wait=5")
        } else {
            format!("{base}/v1/signals")
        };
        let request = client
            .post(url)
            .json(&json!({"kind": "order.placed", "payload": order(1_000_000_000 + n)}));
        let load = Arc::clone(&load);
        tasks.spawn(async move {
            let counter = match request.send().await.map(|a| a.status()) {
                // Posted; one that waited got its reply.
                Ok(reqwest::StatusCode::OK) if wait => &load.posts_replied,
                Ok(status) if status.is_success() => &load.posts_ok,
                // Posted, but no reply came within the wait (the signal is on the mesh).
                Ok(reqwest::StatusCode::GATEWAY_TIMEOUT) if wait => &load.posts_unreplied,
                _ => &load.posts_failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.join_all().await;
}

/// Watches `/v1/live` until `stop`, counting its events; reconnects if it is closed.
async fn watch(port: u16, load: Arc<Load>, stop: Arc<AtomicBool>) {
    let url = format!("ws://127.0.0.1:{port}/v1/live");
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if !first {
            load.live_reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        first = false;
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
                Ok(Some(Ok(_))) => {
                    load.live_events.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
    }
}

/// Reads the observer group on `stream` until `stop` and the stream has nothing more for it,
/// counting the signals by what `kind` says of each and acknowledging them (so the stream can
/// be trimmed).
async fn observe(
    mesh: Arc<RedisMesh>,
    stream: String,
    kind: fn(Signal) -> String,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
) -> BTreeMap<String, u64> {
    let mut by_kind = BTreeMap::new();
    loop {
        let entries = match mesh
            .read(&stream, OBSERVER, "soak", 5_000, Duration::from_millis(500))
            .await
        {
            Ok(entries) => entries,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if entries.is_empty() && stop.load(Ordering::Relaxed) {
            return by_kind;
        }
        let ids: Vec<_> = entries.iter().map(|e| e.id).collect();
        for entry in entries {
            match entry.body {
                Ok(signal) => *by_kind.entry(kind(signal)).or_insert(0) += 1,
                Err(_) => {
                    load.observed_undecodable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        while mesh.ack(&stream, OBSERVER, &ids).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The kind of the signal a dead letter holds.
fn dead_letter_kind(letter: Signal) -> String {
    serde_json::from_value::<DeadLetter>(letter.payload)
        .ok()
        .and_then(|d| {
            d.original
                .get("kind")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(unreadable)".to_owned())
}

/// One sample of the reactor and the services around it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    rss_mb: f64,
    fds: u64,
    threads: f64,
    redis_mb: f64,
    pg_connections: i64,
    spool_mb: f64,
    backlog: f64,
    published: u64,
    recorded: i64,
}

struct Probe {
    pid: u32,
    base: String,
    client: reqwest::Client,
    redis: redis::aio::MultiplexedConnection,
    pool: sqlx::PgPool,
}

impl Probe {
    async fn health(&self) -> Value {
        let answer = self
            .client
            .get(format!("{}/v1/health", self.base))
            .send()
            .await;
        match answer {
            Ok(answer) => answer.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    async fn recorded(&self) -> i64 {
        // Rows inserted into the executions table's partitions: cheap, unlike count(*).
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables \
             WHERE relname LIKE 'executions%'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap_or(-1)
    }

    async fn sample(&mut self, started: Instant, load: &Load) -> Sample {
        let (at, published) = (
            started.elapsed().as_secs_f64(),
            load.published.load(Ordering::Relaxed),
        );
        let status = proc_status(self.pid);
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.redis)
            .await
            .unwrap_or_default();
        let redis_bytes = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        let pg_connections = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap_or(-1);
        let health = self.health().await;
        // NaN when health did not answer (under load it can take longer than the client waits).
        let number = |path: &str| {
            health
                .pointer(path)
                .and_then(Value::as_u64)
                .map_or(f64::NAN, |n| n as f64)
        };
        Sample {
            at,
            rss_mb: status.rss_mb,
            fds,
            threads: status.threads,
            redis_mb: redis_bytes / 1e6,
            pg_connections,
            spool_mb: number("/recording/spool_bytes") / 1e6,
            backlog: number("/mesh/pending") + number("/mesh/lag"),
            published,
            recorded: self.recorded().await,
        }
    }
}

/// Drops the soak's database and removes its keys from Redis: a long soak leaves gigabytes.
async fn clean_up(db: &str, prefix: &str, probe: Probe) {
    let Probe {
        pool, mut redis, ..
    } = probe;
    pool.close().await;
    if let Some((_, name)) = db.rsplit_once('/') {
        if let Ok(admin) = sqlx::PgPool::connect(&database_url()).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await;
        }
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}*"))
        .query_async(&mut redis)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<u64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await;
    }
}

fn print_sample(s: &Sample) {
    println!(
        "{:>6.0} s  RSS {:>7.1} MB  fds {:>4}  threads {:>3.0}  Redis {:>7.1} MB  PG conns {:>2}  spool {:>6.1} MB  backlog {:>8.0}  published {:>9}  recorded {:>10}",
        s.at,
        s.rss_mb,
        s.fds,
        s.threads,
        s.redis_mb,
        s.pg_connections,
        s.spool_mb,
        s.backlog,
        s.published,
        s.recorded
    );
}

fn start_reactor(work: &Path, db: &str, prefix: &str, port: u16) -> swarm_tests::ReactorProcess {
    let units = work.join("units");
    let spec = ReactorSpec {
        redis: redis_url(),
        prefix: prefix.to_owned(),
        extra_args: example_reactor_args(&units, work, Some(db)),
        units,
        work: work.to_owned(),
        claim_idle: 30.0,
    };
    spec.start_serving("soak", &format!("127.0.0.1:{port}"))
}

#[tokio::main]
async fn main() {
    let settings = Settings::read();
    let load_for = Duration::from_secs_f64(settings.minutes * 60.0);
    println!(
        "soak: {} min at {} signals/s to Redis, {} HTTP posts/s, one live watcher",
        settings.minutes, settings.rate, settings.posts_per_second
    );

    let db = fresh_database(&database_url()).await;
    let work = tempfile::tempdir().expect("work dir");
    let (prefix, mesh) = swarm_tests::fresh_mesh().await;
    let dead_letters = dead_letter_stream(STREAM);
    for stream in [STREAM, dead_letters.as_str()] {
        mesh.create_group(stream, OBSERVER, StartAt::Beginning)
            .await
            .expect("the observer groups");
    }
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let reactor = start_reactor(work.path(), &db, &prefix, port);
    let client = reqwest::Client::new();
    swarm_tests::wait_serving(&client, &base).await;
    let units: Vec<UnitStatus> = client
        .get(format!("{base}/v1/units"))
        .send()
        .await
        .expect("units")
        .json()
        .await
        .expect("units as JSON");

    let mut probe = Probe {
        pid: reactor.pid(),
        base: base.clone(),
        client: client.clone(),
        redis: redis::Client::open(redis_url())
            .expect("Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis"),
        pool: sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&db)
            .await
            .expect("PostgreSQL"),
    };

    let load = Arc::new(Load::default());
    let stop_load = Arc::new(AtomicBool::new(false));
    let stop_observer = Arc::new(AtomicBool::new(false));
    let observer = tokio::spawn(observe(
        Arc::clone(&mesh),
        STREAM.to_owned(),
        |signal| signal.kind,
        Arc::clone(&load),
        Arc::clone(&stop_observer),
    ));
    let dead_observer = tokio::spawn(observe(
        Arc::clone(&mesh),
        dead_letters.clone(),
        dead_letter_kind,
        Arc::clone(&load),
        Arc::clone(&stop_observer),
    ));
    let started = Instant::now();
    let mut loaders = tokio::task::JoinSet::new();
    loaders.spawn(publish(
        Arc::clone(&mesh),
        settings.rate,
        Arc::clone(&load),
        Arc::clone(&stop_load),
    ));
    loaders.spawn(post(
        base.clone(),
        settings.posts_per_second,
        Arc::clone(&load),
        Arc::clone(&stop_load),
    ));
    loaders.spawn(watch(port, Arc::clone(&load), Arc::clone(&stop_load)));

    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.tick().await;
    while started.elapsed() < load_for {
        tick.tick().await;
        let sample = probe.sample(started, &load).await;
        print_sample(&sample);
        samples.push(sample);
    }
    stop_load.store(true, Ordering::Relaxed);
    let loaded_for = started.elapsed().as_secs_f64();
    loaders.join_all().await;

    // Catching up: until nothing waits in the group or the spool and memory stops growing.
    let drain_start = Instant::now();
    let mut last = (i64::MIN, Instant::now());
    let drained = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let health = probe.health().await;
        let waiting = ["/mesh/pending", "/mesh/lag", "/recording/spooled"]
            .iter()
            .map(|p| {
                health
                    .pointer(p)
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX)
            })
            .fold(0u64, u64::saturating_add);
        let recorded = probe.recorded().await;
        if recorded != last.0 {
            last = (recorded, Instant::now());
        }
        if waiting == 0 && last.1.elapsed() > Duration::from_secs(5) {
            break true;
        }
        if drain_start.elapsed() > Duration::from_secs(900) {
            break false;
        }
    };
    let drain_seconds = drain_start.elapsed().as_secs_f64();
    let after = probe.sample(started, &load).await;
    print_sample(&after);
    stop_observer.store(true, Ordering::Relaxed);
    let observed = observer.await.expect("the observer");
    let dead = dead_observer.await.expect("the dead letters' observer");
    let final_health = probe.health().await;

    // What memory holds, by kind, against what went through the mesh.
    let handled: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT kind, count(DISTINCT signal_id) FROM executions GROUP BY kind",
    )
    .fetch_all(&probe.pool)
    .await
    .expect("handled signals by kind")
    .into_iter()
    .collect();
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM executions \
         GROUP BY signal_id, unit, attempt HAVING count(*) > 1) d",
    )
    .fetch_one(&probe.pool)
    .await
    .expect("duplicates");
    let executions: i64 = sqlx::query_scalar("SELECT count(*) FROM executions")
        .fetch_one(&probe.pool)
        .await
        .expect("executions");
    reactor.stop();
    clean_up(&db, &prefix, probe).await;

    println!();
    println!("kind                 on the mesh    handled   dead-lettered   lost");
    let mut lost_total = 0i64;
    for (kind, &seen) in &observed {
        let taken = units
            .iter()
            .any(|u| u.subscribes.iter().any(|p| p.matches(kind)));
        let handled = handled.get(kind).copied().unwrap_or(0);
        let dead = dead.get(kind).copied().unwrap_or(0);
        let lost = if taken {
            seen as i64 - handled - dead as i64
        } else {
            0
        };
        lost_total += lost.max(0);
        println!(
            "{kind:<20} {seen:>11} {:>10} {dead:>15} {:>6}",
            if taken {
                handled.to_string()
            } else {
                "(no unit)".to_owned()
            },
            lost
        );
    }

    let published = load.published.load(Ordering::Relaxed);
    let through_mesh: u64 = observed.values().sum();
    let minute = samples.iter().find(|s| s.at >= 60.0).copied();
    let under_load: Vec<&Sample> = samples.iter().filter(|s| s.at >= 60.0).collect();
    let range = |f: &dyn Fn(&Sample) -> f64| {
        under_load
            .iter()
            .map(|s| f(s))
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (_, rss_max) = range(&|s| s.rss_mb);
    let (fds_lo, fds_hi) = range(&|s| s.fds as f64);
    let (threads_lo, threads_hi) = range(&|s| s.threads);
    let (conns_lo, conns_hi) = range(&|s| s.pg_connections as f64);
    let (_, spool_max) = range(&|s| s.spool_mb);
    let (_, backlog_max) = range(&|s| s.backlog);
    let last_loaded = samples.last().copied();
    println!();
    println!(
        "load: {loaded_for:.0} s; {published} signals published to Redis ({:.0}/s), {} posted over HTTP ({} waited and got their reply within 5 s, {} waited longer and were told so, {} refused or failed), {} publish retries",
        published as f64 / loaded_for,
        load.posts_ok.load(Ordering::Relaxed)
            + load.posts_replied.load(Ordering::Relaxed)
            + load.posts_unreplied.load(Ordering::Relaxed)
            + load.posts_failed.load(Ordering::Relaxed),
        load.posts_replied.load(Ordering::Relaxed),
        load.posts_unreplied.load(Ordering::Relaxed),
        load.posts_failed.load(Ordering::Relaxed),
        load.publish_retries.load(Ordering::Relaxed),
    );
    println!(
        "through the mesh: {through_mesh} signals ({:.0}/s over the load), {} undecodable; {executions} executions recorded; caught up {drain_seconds:.0} s after the load{}",
        through_mesh as f64 / loaded_for,
        load.observed_undecodable.load(Ordering::Relaxed),
        if drained {
            ""
        } else {
            " (NOT caught up after 15 min)"
        },
    );
    println!(
        "live watcher: {} events, {} reconnects",
        load.live_events.load(Ordering::Relaxed),
        load.live_reconnects.load(Ordering::Relaxed)
    );
    println!(
        "memory's writer: lost {}, spool peak {spool_max:.1} MB; backlog peak {backlog_max:.0} signals",
        final_health
            .pointer("/recording/lost")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    );
    if let (Some(minute), Some(last)) = (minute, last_loaded) {
        println!(
            "after the first minute: RSS {:.1} MB -> {:.1} MB at the end of the load, peak {rss_max:.1} MB ({:+.1}% at the peak); fds {fds_lo:.0}..{fds_hi:.0}; threads {threads_lo:.0}..{threads_hi:.0}; PostgreSQL connections {conns_lo:.0}..{conns_hi:.0}; Redis {:.1} MB -> {:.1} MB",
            minute.rss_mb,
            last.rss_mb,
            (rss_max - minute.rss_mb) / minute.rss_mb * 100.0,
            minute.redis_mb,
            last.redis_mb,
        );
        println!(
            "goals: RSS growth ≤ 10% after the first minute ({}), fds and threads flat ({}), 0 signals lost ({lost_total} lost, {duplicates} duplicated)",
            if rss_max <= minute.rss_mb * 1.1 {
                "met"
            } else {
                "not met"
            },
            if fds_hi - fds_lo <= 8.0 && threads_hi - threads_lo <= 4.0 {
                "met"
            } else {
                "not met"
            },
        );
    } else {
        println!(
            "the load ran less than a minute: no growth figures ({lost_total} lost, {duplicates} duplicated)"
        );
    }
}
