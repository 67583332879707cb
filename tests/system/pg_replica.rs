//! `ops/start-postgres-replica` makes a streaming hot standby of the project's PostgreSQL: what
//! is written on the primary shows on the replica within moments, the replica refuses writes,
//! and run again, the script leaves it as it is.

use std::time::{Duration, Instant};

use swarm_memory::testkit::{database_url, fresh_database, replica_url, same_database};

#[tokio::test]
async fn the_replica_streams_the_primary_and_refuses_writes() {
    let replica = replica_url();
    assert_eq!(replica_url(), replica, "run again, the same replica");
    // A database made on the primary now, with a row: the replica has both moments later.
    let primary_db = fresh_database(&database_url()).await;
    let primary = sqlx::PgPool::connect(&primary_db)
        .await
        .expect("the primary");
    sqlx::query("CREATE TABLE t (n int)")
        .execute(&primary)
        .await
        .expect("create");
    sqlx::query("INSERT INTO t VALUES (42)")
        .execute(&primary)
        .await
        .expect("insert");
    let streaming: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            .fetch_one(&primary)
            .await
            .expect("pg_stat_replication");
    assert!(streaming >= 1, "the primary streams to no replica");

    let replica_db = same_database(&replica, &primary_db);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pool = loop {
        if let Ok(pool) = sqlx::PgPool::connect(&replica_db).await {
            let n: Result<i32, _> = sqlx::query_scalar("SELECT n FROM t").fetch_one(&pool).await;
            if n.is_ok_and(|n| n == 42) {
                break pool;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the row never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&pool)
        .await
        .expect("pg_is_in_recovery");
    assert!(standby);
    let refused = sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&pool)
        .await
        .expect_err("a standby refuses writes");
    let code = refused
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("25006"), "{refused}");
}
