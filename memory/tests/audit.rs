//! The audit log, in process and in PostgreSQL: the same behaviour, and in PostgreSQL no
//! statement can change or remove an entry.

use std::sync::Arc;
use std::time::Duration;

use swarm_memory::{AuditLog, AuditQuery, AuditTrail, InProcAudit, PgMemory, PgMemoryConfig};
use swarm_schemas::{AuditAction, AuditEntry};

fn entry(process: &str, action: AuditAction, unit: Option<&str>) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: chrono::Utc::now(),
        process: process.to_owned(),
        actor: "ops".to_owned(),
        client: Some("127.0.0.1:5000".to_owned()),
        action,
        unit: unit.map(str::to_owned),
        outcome: "ok".to_owned(),
        detail: format!("{} {unit:?}", action.as_str()),
    }
}

fn query(limit: usize) -> AuditQuery {
    AuditQuery {
        limit,
        ..AuditQuery::default()
    }
}

/// What every implementation must do.
async fn behaves(log: Arc<dyn AuditLog>) {
    log.append(&[
        entry("a", AuditAction::Load, Some("echo")),
        entry("a", AuditAction::Disable, Some("echo")),
    ])
    .await
    .expect("append");
    log.append(&[entry("b", AuditAction::Http, None)])
        .await
        .expect("append");
    let all = log.read(&query(100)).await.expect("read");
    let actions: Vec<AuditAction> = all.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [AuditAction::Http, AuditAction::Disable, AuditAction::Load],
        "newest first, in the order appended"
    );
    assert!(all[0].seq > all[1].seq && all[1].seq > all[2].seq);
    assert_eq!(all[2].client.as_deref(), Some("127.0.0.1:5000"));
    assert_eq!(all[0].process, "b");

    let echo = log
        .read(&AuditQuery {
            unit: Some("echo".to_owned()),
            ..query(100)
        })
        .await
        .expect("read");
    assert_eq!(echo.len(), 2);
    let disables = log
        .read(&AuditQuery {
            action: Some(AuditAction::Disable),
            ..query(100)
        })
        .await
        .expect("read");
    assert_eq!(disables.len(), 1);
    let page = log
        .read(&AuditQuery {
            before: Some(all[0].seq),
            ..query(1)
        })
        .await
        .expect("read");
    assert_eq!(page, all[1..2]);

    // The trail records without waiting and its writer appends in order.
    let trail = AuditTrail::spawn(Arc::clone(&log), "c");
    for n in 0..50 {
        trail.reactor(
            AuditAction::Swap,
            Some("echo"),
            "ok",
            format!("version {n}"),
        );
    }
    let mut swaps = Vec::new();
    for _ in 0..200 {
        swaps = log
            .read(&AuditQuery {
                action: Some(AuditAction::Swap),
                ..query(100)
            })
            .await
            .expect("read");
        if swaps.len() == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(swaps.len(), 50);
    assert_eq!(swaps[0].detail, "version 49");
    assert_eq!(swaps[49].detail, "version 0");
    assert_eq!(swaps[0].actor, "reactor");
}

#[tokio::test]
async fn in_process() {
    behaves(Arc::new(InProcAudit::new())).await;
}

#[tokio::test]
async fn in_postgres_and_append_only() {
    let url = swarm_memory::testkit::fresh_database(&swarm_memory::testkit::database_url()).await;
    let memory = PgMemory::connect_without_embedder(&url, PgMemoryConfig::default())
        .await
        .expect("connect to the test database");
    let pool = memory.pool().clone();
    behaves(Arc::new(memory)).await;
    for statement in [
        "UPDATE audit SET outcome = 'forged'",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ] {
        let error = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err("the audit trail cannot be changed");
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 53);
}
