//! Compaction: forgetting the executions beyond a retention (whole days of them where it can,
//! see `days.rs`), then the shapes nothing uses.

use chrono::NaiveDate;

use super::{PgMemory, unavailable};
use crate::query::ago;
use crate::{Compaction, MemoryError, Retention};

/// One step of a compaction done, and what it has removed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactStep {
    /// What the step did.
    pub done: StepDone,
    /// Removed so far, this step included.
    pub removed: Compaction,
}

/// What one step of a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDone {
    /// A day's partition, wholly past the age kept, dropped with its executions.
    DroppedDay {
        /// The day.
        day: NaiveDate,
        /// Its executions.
        executions: u64,
    },
    /// Executions older than the age kept deleted from the day the cutoff falls in.
    DeletedOlder {
        /// How many.
        executions: u64,
    },
    /// The oldest executions beyond the rows kept deleted.
    DeletedBeyondRows {
        /// How many.
        executions: u64,
    },
    /// The shapes no execution uses any more deleted.
    DeletedShapes {
        /// How many.
        shapes: u64,
    },
}

impl PgMemory {
    /// Forgets the executions `retention` does not keep, then the shapes no execution uses that
    /// have not been used for `shape_grace`.
    pub(super) async fn forget_beyond(
        &self,
        retention: &Retention,
    ) -> Result<Compaction, MemoryError> {
        self.compact_reporting(retention, |_| {}).await
    }

    /// [`Memory::compact`](crate::Memory::compact), telling `report` of each step as it is
    /// done (each day dropped, each delete), for a caller that shows how it goes.
    pub async fn compact_reporting(
        &self,
        retention: &Retention,
        mut report: impl FnMut(&CompactStep) + Send,
    ) -> Result<Compaction, MemoryError> {
        let mut removed = Compaction::default();
        let mut step = |removed: &mut Compaction, done: StepDone| {
            match done {
                StepDone::DroppedDay { executions, .. }
                | StepDone::DeletedOlder { executions }
                | StepDone::DeletedBeyondRows { executions } => removed.executions += executions,
                StepDone::DeletedShapes { shapes } => removed.shapes += shapes,
            }
            report(&CompactStep {
                done,
                removed: *removed,
            });
        };
        if let Some(age) = retention.max_age {
            let cutoff = ago(age);
            // Whole days first, then what is left of the day the cutoff falls in (and of the
            // default partition).
            self.drop_days_before(cutoff, &mut |day, executions| {
                step(&mut removed, StepDone::DroppedDay { day, executions });
            })
            .await?;
            let done = sqlx::query("DELETE FROM executions WHERE started_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            step(
                &mut removed,
                StepDone::DeletedOlder {
                    executions: done.rows_affected(),
                },
            );
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
            step(
                &mut removed,
                StepDone::DeletedBeyondRows {
                    executions: done.rows_affected(),
                },
            );
        }
        let done = sqlx::query(
            "DELETE FROM shapes s WHERE s.last_seen < $1
               AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.shape_id = s.id)",
        )
        .bind(ago(self.config.shape_grace))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        step(
            &mut removed,
            StepDone::DeletedShapes {
                shapes: done.rows_affected(),
            },
        );
        Ok(removed)
    }
}
