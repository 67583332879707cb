//! The audit trail in PostgreSQL: the `audit` table (migration `0004_audit.sql`), whose triggers
//! refuse every UPDATE, DELETE and TRUNCATE; shared by every reactor on one database.

use async_trait::async_trait;
use swarm_schemas::{AuditAction, AuditEntry};

use crate::{AuditLog, AuditQuery, MAX_AUDIT_READ, MemoryError};

#[async_trait]
impl AuditLog for crate::PgMemory {
    async fn append(&self, entries: &[AuditEntry]) -> Result<(), MemoryError> {
        if entries.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&AuditEntry) -> String| entries.iter().map(f).collect::<Vec<_>>();
        let at: Vec<chrono::DateTime<chrono::Utc>> = entries.iter().map(|e| e.at).collect();
        let client: Vec<Option<String>> = entries.iter().map(|e| e.client.clone()).collect();
        let unit: Vec<Option<String>> = entries.iter().map(|e| e.unit.clone()).collect();
        // One statement: the entries keep their order in `seq`.
        sqlx::query(
            "INSERT INTO audit (at, process, actor, client, action, unit, outcome, detail)
             SELECT at, process, actor, client, action, unit, outcome, detail
             FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                                  $5::text[], $6::text[], $7::text[], $8::text[])
             WITH ORDINALITY AS t(at, process, actor, client, action, unit, outcome, detail, n)
             ORDER BY n",
        )
        .bind(at)
        .bind(column(|e| e.process.clone()))
        .bind(column(|e| e.actor.clone()))
        .bind(client)
        .bind(column(|e| e.action.as_str().to_owned()))
        .bind(unit)
        .bind(column(|e| e.outcome.clone()))
        .bind(column(|e| e.detail.clone()))
        .execute(self.pool())
        .await
        .map_err(|e| MemoryError::Unavailable(e.to_string()))?;
        Ok(())
    }

    async fn read(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, MemoryError> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, at, process, actor, client, action, unit, outcome, detail FROM audit
             WHERE ($1::bigint IS NULL OR seq < $1)
               AND ($2::text IS NULL OR unit = $2)
               AND ($3::text IS NULL OR action = $3)
             ORDER BY seq DESC LIMIT $4",
        )
        .bind(query.before)
        .bind(query.unit.as_deref())
        .bind(query.action.map(AuditAction::as_str))
        .bind(i64::try_from(query.limit.min(MAX_AUDIT_READ)).unwrap_or(0))
        .fetch_all(self.pool())
        .await
        .map_err(|e| MemoryError::Unavailable(e.to_string()))?;
        rows.into_iter().map(AuditRow::entry).collect()
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    at: chrono::DateTime<chrono::Utc>,
    process: String,
    actor: String,
    client: Option<String>,
    action: String,
    unit: Option<String>,
    outcome: String,
    detail: String,
}

impl AuditRow {
    fn entry(self) -> Result<AuditEntry, MemoryError> {
        let action = self
            .action
            .parse()
            .map_err(|e: String| MemoryError::Corrupt(format!("audit entry {}: {e}", self.seq)))?;
        Ok(AuditEntry {
            seq: self.seq,
            at: self.at,
            process: self.process,
            actor: self.actor,
            client: self.client,
            action,
            unit: self.unit,
            outcome: self.outcome,
            detail: self.detail,
        })
    }
}
