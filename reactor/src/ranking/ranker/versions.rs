//! Which executions of a unit count: those of the version the ranker judges, started after
//! any change of the unit itself. A new version, or a unit seen to change, starts afresh.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use swarm_schemas::ExecutionRecord;

use super::Ranker;
use crate::ranking::change::Shift;

/// Where an execution's unit version stands against the version the ranker judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VersionStanding {
    /// The version whose outcomes count (or the first one seen).
    Current,
    /// Another version, started after the current one was first seen: it replaces it.
    New,
    /// Another version, started before: an execution of a replaced version that finished late.
    Replaced,
}

impl Ranker {
    /// Whether an execution of `unit` started at `started` ran before the unit itself changed.
    pub(super) fn changed_before(&self, unit: &str, started: DateTime<Utc>) -> bool {
        self.changed_at.get(unit).is_some_and(|at| started < *at)
    }

    /// Where `version` of `unit`, in an execution started at `started`, stands; a new version
    /// becomes the current one.
    pub(super) fn standing(
        &self,
        unit: &Arc<str>,
        version: &semver::Version,
        started: DateTime<Utc>,
    ) -> VersionStanding {
        let mut entry = self
            .versions
            .entry(Arc::clone(unit))
            .or_insert_with(|| (version.clone(), started));
        let (current, since) = entry.value_mut();
        if current == version {
            *since = (*since).min(started);
            VersionStanding::Current
        } else if started >= *since {
            *current = version.clone();
            *since = started;
            VersionStanding::New
        } else {
            VersionStanding::Replaced
        }
    }

    /// Whether a past execution counts: it is of the version the ranker judges (or the ranker
    /// has not seen the unit yet), and it started after any change of the unit itself.
    pub(super) fn counts(&self, record: &ExecutionRecord) -> bool {
        let version_counts = !self.config.per_version
            || self
                .versions
                .get(record.unit.as_str())
                .is_none_or(|v| v.value().0 == record.unit_version);
        version_counts && !self.changed_before(&record.unit, record.started_at)
    }

    /// `unit` runs a new `version`: it starts from its prior.
    pub(super) fn new_version(&self, unit: &Arc<str>, version: &semver::Version) {
        tracing::info!(unit = %unit, %version, "new unit version: what was known of the unit is dropped");
        metrics::counter!("swarm_ranker_new_versions_total").increment(1);
        self.forget_unit(unit);
    }

    /// `unit` itself changed at `now` (seen in several contexts, or by its pooled detector): it
    /// starts from its prior, and its executions started before no longer count.
    pub(super) fn unit_changed(&self, unit: &Arc<str>, shift: Shift, now: DateTime<Utc>) {
        tracing::info!(unit = %unit, ?shift, "the unit changed across contexts: what was known of it is dropped");
        metrics::counter!("swarm_ranker_unit_changes_total").increment(1);
        self.unit_changes.fetch_add(1, Ordering::Relaxed);
        self.changed_at.insert(Arc::clone(unit), now);
        self.forget_unit(unit);
    }

    /// Drops what is known of `unit` everywhere: its global rate, its pooled detector, its
    /// evidence and change detectors in every context.
    pub(super) fn forget_unit(&self, unit: &Arc<str>) {
        self.global.retain(|(_, u), _| u != unit);
        self.pooled.remove(unit);
        for entry in &self.contexts {
            let context = entry.value();
            let mut state = context.lock();
            state.forget(unit);
            state.carried.remove(unit);
            state.borrowed.remove(unit);
            drop(state);
            context.moved();
        }
    }
}
