//! Compaction: forgetting the executions beyond a retention (whole days of them where it can,
//! see `days.rs`), then the shapes nothing uses.

use super::{PgMemory, unavailable};
use crate::query::ago;
use crate::{Compaction, MemoryError, Retention};

impl PgMemory {
    /// Forgets the executions `retention` does not keep, then the shapes no execution uses that
    /// have not been used for `shape_grace`.
    pub(super) async fn forget_beyond(
        &self,
        retention: &Retention,
    ) -> Result<Compaction, MemoryError> {
        let mut removed = Compaction::default();
        if let Some(age) = retention.max_age {
            let cutoff = ago(age);
            // Whole days first, then what is left of the day the cutoff falls in (and of the
            // default partition).
            removed.executions += self.drop_days_before(cutoff).await?;
            let done = sqlx::query("DELETE FROM executions WHERE started_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            removed.executions += done.rows_affected();
        }
        if let Some(max) = retention.max_rows {
            let done = sqlx::query(
                "DELETE FROM executions WHERE (started_at, id) <= (
                     SELECT started_at, id FROM executions ORDER BY started_at DESC, id DESC OFFSET $1 LIMIT 1)",
            )
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
            removed.executions += done.rows_affected();
        }
        let done = sqlx::query(
            "DELETE FROM shapes s WHERE s.last_seen < $1
               AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.shape_id = s.id)",
        )
        .bind(ago(self.config.shape_grace))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        removed.shapes = done.rows_affected();
        Ok(removed)
    }
}
