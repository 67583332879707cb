//! The stores in this process: behind the in-process mesh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use swarm_schemas::{Mark, MarkOp, MarksPrefixReply, MarksReply};

use super::{EVAPORATED, Kv, Marks, StoreError, check_key, check_ops, evaporated, ms, value_text};

/// A clock in milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> f64 + Send + Sync>;

fn system_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The field's contents: each mark's value at its last deposit, and when that was.
#[derive(Default)]
pub(crate) struct Field {
    half_life_ms: Option<f64>,
    marks: HashMap<String, (f64, f64)>,
}

/// The field of marks of an in-process mesh.
pub struct InProcMarks {
    field: Arc<Mutex<Field>>,
    half_life: Duration,
    clock: Clock,
}

impl InProcMarks {
    pub(crate) fn new(field: Arc<Mutex<Field>>, half_life: Duration) -> Self {
        Self {
            field,
            half_life,
            clock: Arc::new(system_clock),
        }
    }

    /// A field of its own, read on `clock` (for tests of evaporation that must not sleep).
    pub fn with_clock(half_life: Duration, clock: Clock) -> Self {
        Self {
            field: Arc::default(),
            half_life,
            clock,
        }
    }

    /// Locks the field, checking its half-life (the first user sets it).
    fn field(&self) -> Result<(MutexGuard<'_, Field>, f64), StoreError> {
        let configured_ms = ms(self.half_life);
        if configured_ms <= 0.0 {
            return Err(StoreError::Invalid("the half-life must be positive".into()));
        }
        let mut field = self.field.lock();
        match field.half_life_ms {
            None => field.half_life_ms = Some(configured_ms),
            Some(stored_ms) if stored_ms != configured_ms => {
                return Err(StoreError::HalfLife {
                    stored_ms,
                    configured_ms,
                });
            }
            Some(_) => {}
        }
        Ok((field, configured_ms))
    }
}

#[async_trait]
impl Marks for InProcMarks {
    async fn apply(&self, ops: &[MarkOp]) -> Result<MarksReply, StoreError> {
        check_ops(ops)?;
        let (mut field, half_life_ms) = self.field()?;
        let now = (self.clock)();
        let mut values = Vec::with_capacity(ops.len());
        for op in ops {
            let (key, amount) = match op {
                MarkOp::Deposit { key, amount } => (key, Some(*amount)),
                MarkOp::Sense { key } => (key, None),
            };
            let current = field
                .marks
                .get(key)
                .map_or(0.0, |&(v, t)| evaporated(v, now - t, half_life_ms));
            match amount {
                Some(amount) => {
                    let value = current + amount;
                    field.marks.insert(key.clone(), (value, now));
                    values.push(value);
                }
                None => values.push(current),
            }
        }
        Ok(MarksReply { values, at_ms: now })
    }

    async fn sense_prefix(&self, prefix: &str) -> Result<MarksPrefixReply, StoreError> {
        let (mut field, half_life_ms) = self.field()?;
        let now = (self.clock)();
        let mut marks = Vec::new();
        field.marks.retain(|key, &mut (v, t)| {
            if !key.starts_with(prefix) {
                return true;
            }
            let value = evaporated(v, now - t, half_life_ms);
            if value.abs() < EVAPORATED {
                return false;
            }
            marks.push(Mark {
                key: key.clone(),
                value,
            });
            true
        });
        swarm_schemas::sort_strongest_first(&mut marks);
        Ok(MarksPrefixReply { marks, at_ms: now })
    }

    fn half_life(&self) -> Duration {
        self.half_life
    }
}

/// A value (JSON text) and when it expires, by (namespace, key).
type Entries = HashMap<(String, String), (String, Option<Instant>)>;

/// The unit controls of an in-process mesh.
#[derive(Clone, Default)]
pub struct InProcUnitControls {
    controls: Arc<Mutex<std::collections::BTreeMap<String, swarm_schemas::UnitControl>>>,
}

#[async_trait]
impl super::UnitControls for InProcUnitControls {
    async fn all(
        &self,
    ) -> Result<std::collections::BTreeMap<String, swarm_schemas::UnitControl>, StoreError> {
        Ok(self.controls.lock().clone())
    }

    async fn set(
        &self,
        unit: &str,
        control: &swarm_schemas::UnitControl,
    ) -> Result<(), StoreError> {
        self.controls
            .lock()
            .insert(unit.to_owned(), control.clone());
        Ok(())
    }
}

/// The key-value store of an in-process mesh.
#[derive(Clone, Default)]
pub struct InProcKv {
    entries: Arc<Mutex<Entries>>,
}

#[async_trait]
impl Kv for InProcKv {
    async fn get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        check_key(key)?;
        let mut entries = self.entries.lock();
        let slot = (namespace.to_owned(), key.to_owned());
        let Some((text, expires)) = entries.get(&slot) else {
            return Ok(None);
        };
        if expires.is_some_and(|at| at <= Instant::now()) {
            entries.remove(&slot);
            return Ok(None);
        }
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("the value at `{key}` is not JSON: {e}")))
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &serde_json::Value,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        check_key(key)?;
        let text = value_text(value)?;
        let expires = ttl.map(|ttl| Instant::now() + ttl.max(Duration::from_millis(1)));
        self.entries
            .lock()
            .insert((namespace.to_owned(), key.to_owned()), (text, expires));
        Ok(())
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let removed = self
            .entries
            .lock()
            .remove(&(namespace.to_owned(), key.to_owned()));
        Ok(removed.is_some_and(|(_, expires)| expires.is_none_or(|at| at > Instant::now())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn manual_clock() -> (Clock, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let read = Arc::clone(&now);
        (Arc::new(move || read.load(Ordering::SeqCst) as f64), now)
    }

    proptest::proptest! {
        /// Whatever the deposits and the time between them, a mark reads as the sum of each
        /// deposit halved once per half-life since it was made; a prefix read drops it only
        /// once that sum is below `EVAPORATED`.
        #[test]
        fn a_mark_is_the_sum_of_its_evaporated_deposits(
            half_life_ms in 1u64..20_000,
            steps in proptest::collection::vec((-5.0f64..5.0, 0u64..30_000), 1..12),
            read_after in 0u64..200_000,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let (clock, now) = manual_clock();
            let marks = InProcMarks::with_clock(Duration::from_millis(half_life_ms), clock);
            let mut made = Vec::new();
            for (amount, wait) in &steps {
                now.fetch_add(*wait, Ordering::SeqCst);
                let op = [MarkOp::Deposit { key: "site.a".into(), amount: *amount }];
                runtime.block_on(marks.apply(&op)).expect("deposit");
                made.push((*amount, now.load(Ordering::SeqCst)));
            }
            now.fetch_add(read_after, Ordering::SeqCst);
            let at = now.load(Ordering::SeqCst);
            let model: f64 = made
                .iter()
                .map(|(amount, t)| amount * 0.5f64.powf((at - t) as f64 / half_life_ms as f64))
                .sum();
            let sense = [MarkOp::Sense { key: "site.a".into() }];
            let read = runtime.block_on(marks.apply(&sense)).expect("sense").values[0];
            proptest::prop_assert!(
                (read - model).abs() <= 1e-9 * (1.0 + model.abs()),
                "read {read}, model {model}"
            );
            let listed = runtime.block_on(marks.sense_prefix("site.")).expect("prefix").marks;
            proptest::prop_assert_eq!(listed.is_empty(), read.abs() < EVAPORATED);
        }
    }

    #[tokio::test]
    async fn a_deposit_halves_every_half_life() {
        let (clock, now) = manual_clock();
        let marks = InProcMarks::with_clock(Duration::from_secs(10), clock);
        let deposit = [MarkOp::Deposit {
            key: "site.a".into(),
            amount: 8.0,
        }];
        let sense = [MarkOp::Sense {
            key: "site.a".into(),
        }];
        assert_eq!(marks.apply(&deposit).await.map(|r| r.values), Ok(vec![8.0]));
        for expected in [4.0, 2.0, 1.0] {
            now.fetch_add(10_000, Ordering::SeqCst);
            assert_eq!(
                marks.apply(&sense).await.map(|r| r.values),
                Ok(vec![expected])
            );
        }
        // A deposit adds to what is left, and restarts the clock of the mark.
        assert_eq!(marks.apply(&deposit).await.map(|r| r.values), Ok(vec![9.0]));
        now.fetch_add(5_000, Ordering::SeqCst);
        let left = marks.apply(&sense).await.map(|r| r.values[0]);
        assert!(
            left.as_ref()
                .is_ok_and(|v| (v - 9.0 / 2f64.sqrt()).abs() < 1e-12),
            "{left:?}"
        );
    }

    #[tokio::test]
    async fn evaporated_marks_are_dropped_from_prefix_reads() {
        let (clock, now) = manual_clock();
        let marks = InProcMarks::with_clock(Duration::from_millis(1), clock);
        let deposit = |key: &str| MarkOp::Deposit {
            key: key.into(),
            amount: 1.0,
        };
        assert!(marks.apply(&[deposit("site.a")]).await.is_ok());
        now.fetch_add(100, Ordering::SeqCst);
        assert!(marks.apply(&[deposit("site.b")]).await.is_ok());
        let read = marks.sense_prefix("site.").await.map(|r| r.marks);
        assert_eq!(
            read,
            Ok(vec![Mark {
                key: "site.b".into(),
                value: 1.0
            }])
        );
        assert_eq!(marks.field.lock().marks.len(), 1);
    }
}
