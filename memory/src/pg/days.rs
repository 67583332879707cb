//! The executions table is partitioned by the day an execution started (UTC): a writer makes a
//! day's partition before it records the day's first execution, and compaction by age drops
//! the days wholly past the cutoff instead of deleting their rows (migration 0008).

use std::collections::HashSet;

use chrono::{DateTime, Days, NaiveDate, Utc};
use parking_lot::Mutex;

use super::{PgMemory, unavailable};
use crate::MemoryError;

/// Days whose partition this process knows exists (or could not make, and stopped trying).
#[derive(Default)]
pub(super) struct KnownDays(Mutex<HashSet<NaiveDate>>);

/// The partition of `day`.
fn table(day: NaiveDate) -> String {
    format!("executions_{}", day.format("%Y%m%d"))
}

/// The day a partition holds, from its name.
fn day_of(table: &str) -> Option<NaiveDate> {
    let digits = table.strip_prefix("executions_")?;
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

impl PgMemory {
    /// Makes the partitions of the days `started` fall on that this process has not seen yet.
    /// A day that cannot get one (its rows are in the default partition already) keeps
    /// recording there.
    pub(super) async fn ensure_days(
        &self,
        started: impl Iterator<Item = DateTime<Utc>>,
    ) -> Result<(), MemoryError> {
        let wanted: Vec<NaiveDate> = {
            let known = self.days.0.lock();
            let mut days: Vec<NaiveDate> = started
                .map(|at| at.date_naive())
                .filter(|day| !known.contains(day))
                .collect();
            days.sort_unstable();
            days.dedup();
            days
        };
        for day in wanted {
            self.make_day(day).await?;
            self.days.0.lock().insert(day);
        }
        Ok(())
    }

    async fn make_day(&self, day: NaiveDate) -> Result<(), MemoryError> {
        let next = day
            .checked_add_days(Days::new(1))
            .ok_or_else(|| MemoryError::Unavailable(format!("no day after {day}")))?;
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // One writer at a time makes partitions: IF NOT EXISTS alone is not safe from a race.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('swarm: executions partitions'))")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let made = sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF executions
               FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
            table(day)
        ))
        .execute(&mut *tx)
        .await;
        match made {
            Ok(_) => tx.commit().await.map_err(unavailable),
            // Rows of that day are in the default partition already: they stay there, and so
            // do the day's next ones.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => {
                tracing::info!(%day, "the day's executions stay in the default partition");
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Drops the day partitions wholly before `cutoff`, telling `dropped` of each (its day and
    /// the executions it held); returns how many executions they held.
    pub(super) async fn drop_days_before(
        &self,
        cutoff: DateTime<Utc>,
        dropped: &mut (dyn FnMut(NaiveDate, u64) + Send),
    ) -> Result<u64, MemoryError> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'executions'::regclass",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut removed = 0u64;
        for name in tables {
            let Some(day) = day_of(&name) else { continue };
            let Some(end) = day.checked_add_days(Days::new(1)) else {
                continue;
            };
            if end.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) > Some(cutoff) {
                continue;
            }
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {name}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            sqlx::query(&format!("DROP TABLE {name}"))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            self.days.0.lock().remove(&day);
            let rows = u64::try_from(rows).unwrap_or(0);
            dropped(day, rows);
            removed += rows;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 6).expect("a day");
        assert_eq!(table(day), "executions_20261206");
        assert_eq!(day_of("executions_20261206"), Some(day));
        assert_eq!(day_of("executions_default"), None);
        assert_eq!(day_of("shapes"), None);
    }
}
