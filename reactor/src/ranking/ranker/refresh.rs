//! The refresh from memory: a due context's evidence becomes the weighed nearest past
//! executions of the same kind plus this process's outcomes that memory does not have yet.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use swarm_memory::{Fusion, Memory, MemoryError, SearchQuery, Shape};

use super::Ranker;
use super::context::Context;
use super::versions::VersionStanding;
use crate::ranking::{Evidence, Weighed, weigh};

/// What a refresh did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Contexts refreshed from memory.
    pub contexts: usize,
    /// Contexts still due (the refresh stopped at its limit or at an error).
    pub pending: usize,
}

impl Ranker {
    /// Contexts due for a refresh at `now`.
    fn due(&self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, Arc<Context>)> {
        let every = self.config.refresh_every;
        let mut due: Vec<(DateTime<Utc>, Arc<Context>)> = self
            .contexts
            .iter()
            .filter_map(|entry| {
                let state = entry.value().lock();
                let since = state.refreshed.unwrap_or(DateTime::<Utc>::MIN_UTC);
                let is_due = state.refreshed.is_none()
                    || (state.dirty && now >= crate::ranking::breaker::after(since, every));
                is_due.then(|| (since, Arc::clone(entry.value())))
            })
            .collect();
        due.sort_by_key(|(since, _)| *since);
        due
    }

    /// The past executions that speak for `units` on signals of `shape`, weighed: for each
    /// unit, its nearest executions on signals of the same kind (at most `per_shape` from one
    /// shape), started before `until` if given. Closeness is relative to the nearest of all of
    /// them, so a unit known only from less similar signals weighs less. With no units, the
    /// nearest executions of any unit.
    pub async fn neighbours(
        &self,
        memory: &dyn Memory,
        shape: &Shape,
        units: &[Arc<str>],
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Weighed>, MemoryError> {
        // Closeness is the vectors' alone: a neighbour's weight is its cosine similarity.
        let query = SearchQuery::shape(shape.clone())
            .fusion(Fusion::Vector)
            .kind(shape.kind.clone())
            .k(self.config.neighbours)
            .per_shape(self.config.per_shape)
            .between(None, until);
        let mut hits = Vec::new();
        if units.is_empty() {
            hits = memory.search(&query).await?;
        } else {
            for unit in units {
                hits.extend(memory.search(&query.clone().unit(unit.as_ref())).await?);
            }
        }
        Ok(weigh(
            &self.config.weighing,
            hits.into_iter()
                .map(|h| (f64::from(h.similarity), h.record)),
            now,
        ))
    }

    /// Refreshes up to `limit` due contexts from memory, least recently refreshed first: their
    /// evidence becomes the weighed nearest executions of the same kind plus this process's
    /// outcomes that memory does not have yet.
    pub async fn refresh(
        &self,
        memory: &dyn Memory,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Refreshed, MemoryError> {
        let due = self.due(now);
        let total = due.len();
        let mut done = 0;
        for (_, context) in due.into_iter().take(limit) {
            let units = competing(&context);
            let weighed = match self
                .neighbours(memory, &context.shape, &units, None, now)
                .await
            {
                Ok(weighed) => weighed,
                Err(error) => {
                    tracing::debug!(done, total, %error, "ranker refresh stopped");
                    return Err(error);
                }
            };
            if self.config.per_version {
                self.learn_versions(&weighed);
            }
            self.rebuild(&context, &weighed, now);
            done += 1;
        }
        Ok(Refreshed {
            contexts: done,
            pending: total - done,
        })
    }

    /// Memory may know a unit's versions before this process ran it (another process, an
    /// earlier run): learns them in the order they ran.
    fn learn_versions(&self, weighed: &[Weighed]) {
        let mut by_start: Vec<&Weighed> = weighed.iter().collect();
        by_start.sort_by_key(|n| n.record.started_at);
        for n in by_start {
            let unit: Arc<str> = Arc::from(n.record.unit.as_str());
            let version = &n.record.unit_version;
            if self.standing(&unit, version, n.record.started_at) == VersionStanding::New {
                self.new_version(&unit, version);
            }
        }
    }

    /// A context's evidence becomes the `weighed` executions that count, what was carried over
    /// a detected change, and this process's outcomes that memory does not have yet.
    fn rebuild(&self, context: &Context, weighed: &[Weighed], now: DateTime<Utc>) {
        let mut state = context.lock();
        let mut evidence: HashMap<Arc<str>, Evidence> = HashMap::new();
        let mut seen = HashSet::with_capacity(weighed.len());
        for n in weighed {
            seen.insert(n.record.id);
            if state.cutoff.is_some_and(|cut| n.record.started_at < cut) || !self.counts(&n.record)
            {
                continue;
            }
            let unit: Arc<str> = Arc::from(n.record.unit.as_str());
            evidence.entry(unit).or_default().add(n.reward, n.weight);
        }
        let w = &self.config.weighing;
        if let Some(cut) = state.cutoff {
            for (unit, e) in &state.carried {
                evidence
                    .entry(Arc::clone(unit))
                    .or_default()
                    .merge(e.scaled(w.recency(cut, now)));
            }
        }
        for o in state.local.iter().filter(|o| !seen.contains(&o.id)) {
            evidence
                .entry(Arc::clone(&o.unit))
                .or_default()
                .add(o.reward, w.recency(o.at, now));
        }
        // What memory has no longer needs keeping here.
        state.local.retain(|o| !seen.contains(&o.id));
        state.evidence = evidence;
        state.at = Some(now);
        state.refreshed = Some(now);
        state.dirty = false;
        state.invalidate();
        drop(state);
        context.moved();
    }
}

/// The units a context has evidence of or was last ranked among.
fn competing(context: &Context) -> Vec<Arc<str>> {
    let state = context.lock();
    let mut units: Vec<Arc<str>> = state.evidence.keys().cloned().collect();
    for unit in state.cached.iter().flat_map(|c| &c.units) {
        if !units.contains(unit) {
            units.push(Arc::clone(unit));
        }
    }
    units
}
