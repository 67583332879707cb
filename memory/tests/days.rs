//! The executions table is partitioned by day: a day's first execution makes its partition,
//! compaction by age drops the days wholly past the cutoff (their rows counted as forgotten)
//! and deletes only within the day the cutoff falls in; recording one execution twice still
//! keeps one row. On the server `ops/start-postgres` runs.

use std::time::Duration;

use serde_json::json;
use swarm_memory::testkit::{database_url, fresh_database, record};
use swarm_memory::{Memory, PgMemory, PgMemoryConfig, Retention, StepDone};
use swarm_schemas::Signal;

const DAY: i64 = 86_400;

/// The day partitions of `executions`, by name, sorted.
async fn day_partitions(url: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'executions'::regclass AND c.relname <> 'executions_default'",
    )
    .fetch_all(&pool)
    .await
    .expect("partitions");
    names.sort();
    names
}

async fn rows(url: &str, table: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_get_partitions_and_old_days_are_dropped_whole() {
    let url = fresh_database(&database_url()).await;
    let memory = PgMemory::connect_without_embedder(&url, PgMemoryConfig::default())
        .await
        .expect("the tests need PostgreSQL: ops/start-postgres");
    // Ten executions a day for five days, the newest now.
    let signal = Signal::new("order.placed", json!({"id": 1}));
    let mut records = Vec::new();
    for day in 0..5 {
        for i in 0..10 {
            records.push(record(&signal, "unit", true, day * DAY + i * 60));
        }
    }
    memory.record(&records).await.expect("record");
    memory.record(&records[..3]).await.expect("record again");
    let days = day_partitions(&url).await;
    assert!(
        (5..=6).contains(&days.len()),
        "a partition a day (six when the hour of the run spreads the days over six): {days:?}"
    );
    assert_eq!(
        rows(&url, "executions").await,
        50,
        "recorded twice, kept once"
    );
    assert_eq!(rows(&url, "executions_default").await, 0);

    // Keep two and a half days: the days wholly older are dropped, the rest deleted by row.
    let kept_age = Duration::from_secs(u64::try_from(5 * DAY / 2).unwrap_or(0));
    let mut steps = Vec::new();
    let done = memory
        .compact_reporting(
            &Retention {
                max_age: Some(kept_age),
                max_rows: None,
            },
            |step| steps.push(step.clone()),
        )
        .await
        .expect("compact");
    // Each day dropped is told as it goes, then the delete within the cutoff's day, then the
    // shapes; the running total ends at what was removed.
    let dropped: Vec<u64> = steps
        .iter()
        .filter_map(|s| match s.done {
            StepDone::DroppedDay { executions, .. } => Some(executions),
            _ => None,
        })
        .collect();
    assert!(!dropped.is_empty(), "{steps:?}");
    assert!(matches!(
        steps[dropped.len()].done,
        StepDone::DeletedOlder { .. }
    ));
    assert!(matches!(
        steps.last().map(|s| s.done),
        Some(StepDone::DeletedShapes { .. })
    ));
    assert!(
        steps
            .windows(2)
            .all(|w| w[0].removed.executions <= w[1].removed.executions)
    );
    assert_eq!(steps.last().map(|s| s.removed), Some(done));
    let left = rows(&url, "executions").await;
    assert_eq!(left, 30, "the three newest days stay");
    assert_eq!(done.executions, 20, "what was forgotten is counted");
    let after = day_partitions(&url).await;
    assert!(
        after.len() < days.len() && after.len() >= 3,
        "the days past the cutoff are dropped as tables: {days:?} → {after:?}"
    );
    // A day recorded again after its partition was dropped gets one again.
    memory
        .record(&[record(&signal, "unit", true, 4 * DAY)])
        .await
        .expect("record an old day again");
    assert_eq!(rows(&url, "executions").await, 31);
}
