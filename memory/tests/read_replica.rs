//! A memory with a read replica: searches read from the replica (its own statistics count
//! them, the primary's do not), records go to the primary. Runs `ops/start-postgres-replica`
//! (a streaming standby of the server `ops/start-postgres` runs).

use std::time::{Duration, Instant};

use swarm_memory::testkit::{
    corpus, database_url, embedder, fresh_database, record, replica_url, same_database,
};
use swarm_memory::{Memory, PgMemory, PgMemoryConfig, SearchQuery};
use swarm_schemas::Signal;

async fn open(primary: &str, replica: &str) -> PgMemory {
    PgMemory::connect(primary, embedder(), PgMemoryConfig::default())
        .await
        .expect("memory opens")
        .with_read_replica(replica)
        .await
        .expect("the replica opens")
}

/// Scans of the `shapes` and `executions` tables a server has counted.
async fn scans(pool: &sqlx::PgPool) -> i64 {
    let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await;
    sqlx::query_scalar(
        "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)::bigint
         FROM pg_stat_user_tables WHERE relname IN ('shapes', 'executions')",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_user_tables")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_read_from_the_replica_and_records_go_to_the_primary() {
    let primary_url = fresh_database(&database_url()).await;
    let replica_url = same_database(&replica_url(), &primary_url);
    let writer = PgMemory::connect(&primary_url, embedder(), PgMemoryConfig::default())
        .await
        .expect("memory opens");
    let records: Vec<_> = corpus()
        .into_iter()
        .map(|(kind, payload)| record(&Signal::new(kind, payload), "u", true, 5))
        .collect();
    writer.record(&records).await.expect("record");
    // The standby replays the database and the rows within moments.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(pool) = sqlx::PgPool::connect(&replica_url).await {
            let n: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM executions")
                .fetch_one(&pool)
                .await;
            pool.close().await;
            if n.is_ok_and(|n| n == records.len() as i64) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the records never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A backend reports its statistics when it exits (an idle one, only after seconds): every
    // connection that scanned the tables so far is closed before the counts are taken.
    writer.close().await;
    drop(writer);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let primary = sqlx::PgPool::connect(&primary_url).await.expect("primary");
    let read = sqlx::PgPool::connect(&replica_url).await.expect("replica");
    let (on_primary, on_replica) = (scans(&primary).await, scans(&read).await);

    let memory = open(&primary_url, &replica_url).await;
    for _ in 0..5 {
        let hits = memory
            .search(&SearchQuery::text("payment declined").k(3))
            .await
            .expect("search");
        assert_eq!(hits[0].record.signal.kind, "payment.failed");
    }
    memory.close().await;
    drop(memory);
    let deadline = Instant::now() + Duration::from_secs(15);
    while scans(&read).await <= on_replica {
        assert!(
            Instant::now() < deadline,
            "the replica counted no scan of the searches"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        scans(&primary).await,
        on_primary,
        "the searches read from the primary"
    );

    // Writes still go to the primary.
    let memory = open(&primary_url, &replica_url).await;
    let more = record(
        &Signal::new(
            "email.bounced",
            serde_json::json!({"reason": "no such user"}),
        ),
        "u",
        true,
        1,
    );
    memory
        .record(std::slice::from_ref(&more))
        .await
        .expect("record");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM executions WHERE id = $1")
        .bind(more.id)
        .fetch_one(&primary)
        .await
        .expect("count");
    assert_eq!(stored, 1);
}
