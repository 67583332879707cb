//! The mesh as a graph: units and signal kinds, with edges from each kind to the units that
//! take it and from each unit to the kinds it emits, each with its rate, failures and pending
//! signals over the last minute. Static edges come from the units' manifests; rates from what
//! the live hub saw.
//!
//! This file counts what the hub sees, per second over the window ([`Traffic`]); `graph.rs`
//! joins the counts with the units' manifests into the [`Topology`].

mod graph;

pub use graph::{Edge, KindNode, Relation, Topology, UnitNode};

use std::collections::HashMap;
use std::sync::Arc;

use swarm_schemas::{DEAD_LETTER_KIND, ExecutionRecord, Signal};
use uuid::Uuid;

/// Seconds the rates are measured over.
pub const WINDOW_SECONDS: u64 = 60;
/// Signal kinds tracked at most (kinds come from outside; the rest are counted as `other`).
const MAX_KINDS: usize = 1_000;
/// Recent executions remembered to attribute emitted signals to their unit.
const RECENT_EXECUTIONS: usize = 65_536;

/// Counts per second over the last [`WINDOW_SECONDS`].
#[derive(Debug, Clone)]
struct Rate {
    seconds: [i64; WINDOW_SECONDS as usize],
    counts: [u64; WINDOW_SECONDS as usize],
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            seconds: [i64::MIN; WINDOW_SECONDS as usize],
            counts: [0; WINDOW_SECONDS as usize],
        }
    }
}

impl Rate {
    fn add(&mut self, now: i64, n: u64) {
        let slot = now.rem_euclid(WINDOW_SECONDS as i64) as usize;
        if self.seconds[slot] != now {
            self.seconds[slot] = now;
            self.counts[slot] = 0;
        }
        self.counts[slot] += n;
    }

    /// Events in the window that ends at `now`.
    fn sum(&self, now: i64) -> u64 {
        self.seconds
            .iter()
            .zip(&self.counts)
            .filter(|(s, _)| **s <= now && **s > now - WINDOW_SECONDS as i64)
            .map(|(_, c)| c)
            .sum()
    }
}

#[derive(Debug, Default)]
struct Handled {
    executions: Rate,
    failures: Rate,
}

/// What the live hub has seen, per kind and per edge.
#[derive(Default)]
pub(crate) struct Traffic {
    signals: HashMap<String, Rate>,
    dead_letters: HashMap<String, Rate>,
    /// Per kind, per unit: looked up without building a key, once per execution.
    handled: HashMap<String, HashMap<String, Handled>>,
    emitted: HashMap<(String, String), Rate>,
    /// Unit of each recent execution, to attribute the signals it emitted.
    recent: Option<quick_cache::unsync::Cache<Uuid, Arc<str>>>,
    /// Kinds (and seconds) of signals whose emitting execution has not been seen yet: the
    /// mesh and the executions are watched by separate tasks, so either may come first.
    unattributed: Option<quick_cache::unsync::Cache<Uuid, Vec<(String, i64)>>>,
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Traffic {
    fn kind_key(&self, kind: &str) -> String {
        if self.signals.contains_key(kind) || self.signals.len() < MAX_KINDS {
            kind.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// A signal appeared on the mesh (`dead`: on its dead letters).
    pub(crate) fn signal(&mut self, signal: &Signal, dead: bool) {
        let now = now_seconds();
        if dead {
            let original = signal.payload["original"]["kind"]
                .as_str()
                .unwrap_or(DEAD_LETTER_KIND);
            let key = self.kind_key(original);
            self.dead_letters.entry(key).or_default().add(now, 1);
            return;
        }
        let key = self.kind_key(&signal.kind);
        self.signals.entry(key.clone()).or_default().add(now, 1);
        if let Some(parent) = signal.parent_execution {
            let unit = self.recent.as_mut().and_then(|r| r.get(&parent).cloned());
            match unit {
                Some(unit) => self.emitted(&unit, key, now),
                None => {
                    let waiting = self
                        .unattributed
                        .get_or_insert_with(|| quick_cache::unsync::Cache::new(RECENT_EXECUTIONS));
                    match waiting.get_mut(&parent) {
                        Some(mut kinds) => kinds.push((key, now)),
                        None => waiting.insert(parent, vec![(key, now)]),
                    }
                }
            }
        }
    }

    fn emitted(&mut self, unit: &str, kind: String, second: i64) {
        self.emitted
            .entry((unit.to_owned(), kind))
            .or_default()
            .add(second, 1);
    }

    /// A unit handled a signal.
    pub(crate) fn execution(&mut self, record: &ExecutionRecord) {
        let now = now_seconds();
        let failed = !record.outcome.is_success();
        let count = |edge: &mut Handled| {
            edge.executions.add(now, 1);
            if failed {
                edge.failures.add(now, 1);
            }
        };
        // The edge is nearly always known: found by reference, no key is built.
        let kind = &record.signal.kind;
        match self
            .handled
            .get_mut(kind.as_str())
            .and_then(|by_unit| by_unit.get_mut(&record.unit))
        {
            Some(edge) => count(edge),
            None => {
                let key = self.kind_key(kind);
                let by_unit = self.handled.entry(key).or_default();
                count(by_unit.entry(record.unit.clone()).or_default());
            }
        }
        // Only an execution that emitted has signals to attribute to it.
        if !record.emitted.is_empty() {
            self.recent
                .get_or_insert_with(|| quick_cache::unsync::Cache::new(RECENT_EXECUTIONS))
                .insert(record.id, Arc::from(record.unit.as_str()));
        }
        let waiting = self
            .unattributed
            .as_mut()
            .and_then(|w| w.remove(&record.id));
        for (kind, second) in waiting.map(|(_, kinds)| kinds).unwrap_or_default() {
            self.emitted(&record.unit, kind, second);
        }
    }

    /// Forgets counters with nothing in the window.
    fn prune(&mut self, now: i64) {
        self.signals.retain(|_, r| r.sum(now) > 0);
        self.dead_letters.retain(|_, r| r.sum(now) > 0);
        self.handled.retain(|_, by_unit| {
            by_unit.retain(|_, h| h.executions.sum(now) > 0);
            !by_unit.is_empty()
        });
        self.emitted.retain(|_, r| r.sum(now) > 0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use swarm_schemas::{KindPattern, UnitState, UnitStatus};

    use super::*;
    use serde_json::json;
    use swarm_schemas::{DispatchPolicy, Outcome};

    fn unit(name: &str, subscribes: &[&str], emits: &[&str]) -> UnitStatus {
        let patterns = |p: &[&str]| {
            p.iter()
                .map(|p| KindPattern::parse(p).expect("pattern"))
                .collect()
        };
        UnitStatus {
            name: name.into(),
            version: "1.0.0".into(),
            generation: 1,
            state: UnitState::Ready,
            subscribes: patterns(subscribes),
            emits: patterns(emits),
            dispatch: DispatchPolicy::FanOut,
            file: format!("{name}.so"),
            last_error: None,
            timeouts: 0,
            stuck_calls: 0,
            isolated: false,
        }
    }

    fn record(signal: &Signal, unit: &str, ok: bool) -> ExecutionRecord {
        ExecutionRecord {
            id: Uuid::now_v7(),
            signal: signal.clone(),
            unit: unit.into(),
            unit_version: semver::Version::new(1, 0, 0),
            generation: 1,
            attempt: 0,
            outcome: if ok {
                Outcome::Success
            } else {
                Outcome::Failure {
                    kind: swarm_schemas::FailureKind::Error,
                    error: "no".into(),
                }
            },
            started_at: chrono::Utc::now(),
            latency_us: 10,
            emitted: Vec::new(),
            policy: "fan_out".into(),
            propensity: 1.0,
            host_calls: Vec::new(),
        }
    }

    #[test]
    fn edges_carry_what_was_seen() {
        let units = [
            unit(
                "validate",
                &["order.placed"],
                &["order.valid", "order.invalid"],
            ),
            unit("audit", &["order.*"], &[]),
            unit("ship", &["order.valid"], &["shipment.>"]),
        ];
        let mut traffic = Traffic::default();
        let placed = Signal::new("order.placed", json!({}));
        traffic.signal(&placed, false);
        let mut run = record(&placed, "validate", true);
        let valid = placed.child(run.id, swarm_schemas::Emit::new("order.valid", json!({})));
        run.emitted.push(valid.id);
        traffic.execution(&run);
        traffic.execution(&record(&placed, "audit", false));
        // Only the execution that emitted is remembered to attribute signals to.
        assert_eq!(traffic.recent.as_ref().map(|r| r.len()), Some(1));
        traffic.signal(&valid, false);
        // An emitted signal seen before the execution that emitted it is attributed too.
        let mut late = record(&placed, "validate", true);
        let early = placed.child(late.id, swarm_schemas::Emit::new("order.valid", json!({})));
        late.emitted.push(early.id);
        traffic.signal(&early, false);
        traffic.execution(&late);
        let topology = traffic.topology(&units, &BTreeMap::from([("order.placed".into(), 2)]));

        let edge = |s: &str, t: &str| {
            topology
                .edges
                .iter()
                .find(|e| e.source == s && e.target == t)
                .unwrap_or_else(|| panic!("no edge {s} -> {t}: {:?}", topology.edges))
        };
        let takes = edge("kind:order.placed", "unit:validate");
        assert_eq!((takes.count, takes.failures, takes.pending), (2, 0, 2));
        let audit = edge("kind:order.placed", "unit:audit");
        assert_eq!((audit.count, audit.failures), (1, 1));
        // order.* matches every concrete order kind known, including emitted ones.
        edge("kind:order.valid", "unit:audit");
        edge("kind:order.invalid", "unit:audit");
        assert_eq!(edge("unit:validate", "kind:order.valid").count, 2);
        assert_eq!(edge("unit:validate", "kind:order.invalid").count, 0);
        // A wildcard emit pattern nothing matched yet stays a pattern node.
        edge("unit:ship", "kind:shipment.>");
        let pattern = topology
            .kinds
            .iter()
            .find(|k| k.kind == "shipment.>")
            .expect("pattern node");
        assert!(pattern.pattern);
        let placed_node = topology
            .kinds
            .iter()
            .find(|k| k.kind == "order.placed")
            .expect("kind node");
        assert_eq!((placed_node.signals, placed_node.pending), (1, 2));
        let audit_node = topology
            .units
            .iter()
            .find(|u| u.name == "audit")
            .expect("unit");
        assert_eq!((audit_node.executions, audit_node.failures), (1, 1));
    }

    #[test]
    fn rates_forget_what_left_the_window() {
        let mut rate = Rate::default();
        rate.add(1_000, 3);
        rate.add(1_030, 2);
        assert_eq!(rate.sum(1_030), 5);
        assert_eq!(rate.sum(1_059), 5);
        assert_eq!(rate.sum(1_060), 2);
        rate.add(1_060, 1); // reuses the slot of second 1_000
        assert_eq!(rate.sum(1_060), 3);
        assert_eq!(rate.sum(1_200), 0);
    }
}
