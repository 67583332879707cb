//! Learning from this process's own outcomes, at once: the breaker, the unit's global rate, the
//! context's evidence, and change detection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use swarm_schemas::{DispatchPolicy, ExecutionRecord};

use super::context::{Context, Observed};
use super::versions::VersionStanding;
use super::{Ranker, breaker_moved};
use crate::ranking::Evidence;
use crate::ranking::change::Shift;

impl Ranker {
    /// Learns from one execution this process ran: the unit's breaker and, when the unit was
    /// chosen among competitors, its global rate and the evidence of the signal's context (with
    /// change detection).
    pub fn observe(&self, record: &ExecutionRecord) {
        let unit: Arc<str> = Arc::from(record.unit.as_str());
        let now = record.started_at;
        let success = record.outcome.is_success();
        if let Some(state) = self.breaker(&unit).record(success, now) {
            breaker_moved(&unit, state);
        }
        if record.policy == DispatchPolicy::FanOut.name() {
            // Nothing competed: only the breaker needs to know.
            return;
        }
        if self.config.per_version {
            match self.standing(&unit, &record.unit_version, now) {
                VersionStanding::Current => {}
                VersionStanding::New => self.new_version(&unit, &record.unit_version),
                VersionStanding::Replaced => return,
            }
        }
        if self.changed_before(&unit, now) {
            // Started before the unit itself changed: it speaks of what the unit was.
            return;
        }
        let w = &self.config.weighing;
        let reward = w.reward(success, record.latency_us);
        {
            let mut global = self
                .global
                .entry((record.signal.kind.clone(), Arc::clone(&unit)))
                .or_insert((now, Evidence::default()));
            let (at, e) = *global;
            let mut e = e.scaled(w.recency(at, now));
            e.add(reward, 1.0);
            *global = (now.max(at), e);
        }
        let context = self.context(&record.signal, now);
        let (shift, fell) = self.learn(&context, &unit, record, reward, now);
        if fell {
            self.unit_changed(&unit, Shift::Down, now);
        }
        if let Some(shift) = shift {
            self.spread_change(&context, &unit);
            let c = &self.config;
            let of_unit = self.alarms.raise(
                &unit,
                context.shape.id,
                shift,
                now,
                c.unit_change_contexts,
                c.unit_change_window,
            );
            if of_unit {
                self.unit_changed(&unit, shift, now);
            }
        }
    }

    /// Adds one outcome of `unit` to a context's evidence, watching for a change there; the
    /// shift when one was detected (the context's older evidence is then dropped), and whether
    /// the unit's pooled detector saw it fall across contexts.
    fn learn(
        &self,
        context: &Context,
        unit: &Arc<str>,
        record: &ExecutionRecord,
        reward: f64,
        now: DateTime<Utc>,
    ) -> (Option<Shift>, bool) {
        let w = &self.config.weighing;
        let mut state = context.lock();
        let decay = state.decay(w, now);
        let known = state.evidence.get(unit).map_or(0.0, Evidence::weight) * decay;
        let expected = {
            let (a, b) =
                self.posteriors(&record.signal.kind, &state, std::slice::from_ref(unit), now)[0];
            a / (a + b)
        };
        // Bring the sums to now, then add.
        if decay != 1.0 {
            for e in state.evidence.values_mut() {
                *e = e.scaled(decay);
            }
        }
        state.at = Some(state.at.map_or(now, |at| at.max(now)));
        // Only a unit whose odds here are known can surprise: one still being learned is not
        // changing, it is being found out.
        let mut shift = None;
        if self.config.change_threshold > 0.0 && known >= self.config.change_evidence {
            shift = state
                .detectors
                .entry(Arc::clone(unit))
                .or_default()
                .observe(
                    reward,
                    expected,
                    self.config.change_delta,
                    self.config.change_threshold,
                );
            if shift.is_some() {
                tracing::debug!(unit = %unit, kind = %record.signal.kind, expected, "change detected: older evidence dropped");
                self.changes.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("swarm_ranker_changes_total").increment(1);
                self.drop_older(&mut state, unit, now);
            }
        }
        let mut fell = false;
        let pooled = self.config.unit_pooled_threshold;
        if shift.is_none() && pooled > 0.0 && known >= self.config.change_evidence {
            // Against what the context's own outcomes say: its prior and what it borrows would
            // bias every context's residuals alike, and the pooled sum would drift with them.
            let own = state.evidence.get(unit).map_or(expected, Evidence::mean);
            fell = self.pooled.entry(Arc::clone(unit)).or_default().observe(
                reward,
                own,
                self.config.unit_pooled_delta,
                pooled,
            ) == Some(Shift::Down);
        }
        // Kept at most `max_evidence`: each new outcome of the unit here discounts the older ones
        // (by max / (max + 1) once it is reached), so that they always move it.
        let e = state.evidence.entry(Arc::clone(unit)).or_default();
        e.add(reward, 1.0);
        *e = e.capped(self.config.max_evidence);
        state.local.push_back(Observed {
            id: record.id,
            unit: Arc::clone(unit),
            reward,
            at: now,
        });
        while state.local.len() > self.config.local_window {
            state.local.pop_front();
        }
        state.dirty = true;
        state.invalidate();
        drop(state);
        context.moved();
        (shift, fell)
    }
}
