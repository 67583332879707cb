//! The graph of units and kinds, built from the units' manifests and the traffic counts.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use swarm_schemas::{KindPattern, UnitState, UnitStatus};
use utoipa::ToSchema;

use super::{Traffic, WINDOW_SECONDS, now_seconds};

/// Which way an edge goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// A kind's signals go to a unit.
    Takes,
    /// A unit emits signals of a kind.
    Emits,
}

/// A unit in the graph.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnitNode {
    /// Node id: `unit:NAME`.
    pub id: String,
    /// The unit's name.
    pub name: String,
    /// Version serving.
    pub version: String,
    /// Generation serving.
    pub generation: u64,
    /// Whether it takes signals.
    pub state: UnitState,
    /// Executions in the window.
    pub executions: u64,
    /// Failed executions in the window.
    pub failures: u64,
}

/// A signal kind (or, for a subscription no seen kind matches yet, a pattern) in the graph.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KindNode {
    /// Node id: `kind:KIND`.
    pub id: String,
    /// The kind, or the pattern.
    pub kind: String,
    /// Whether this is a pattern (`order.*`) rather than a kind.
    pub pattern: bool,
    /// Signals of this kind on the mesh in the window.
    pub signals: u64,
    /// Signals per second over the window.
    pub rate: f64,
    /// Signals of this kind read by this reactor and not yet settled.
    pub pending: u64,
    /// Dead letters of signals of this kind in the window.
    pub dead_letters: u64,
}

/// An edge of the graph.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Edge {
    /// Node id it starts at.
    pub source: String,
    /// Node id it ends at.
    pub target: String,
    /// A kind taken by a unit, or a kind emitted by a unit.
    pub relation: Relation,
    /// Signals along it in the window (executions for `takes`, emitted signals for `emits`).
    pub count: u64,
    /// Per second over the window.
    pub rate: f64,
    /// Failed executions in the window (`takes` only).
    pub failures: u64,
    /// Signals of the kind read and not yet settled (`takes` only).
    pub pending: u64,
}

/// The mesh as a graph.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Topology {
    /// Seconds the counts and rates cover.
    pub window_seconds: u64,
    /// Entries of the stream delivered to the reactor group and not yet acknowledged.
    pub pending: Option<u64>,
    /// Entries of the stream not yet delivered to the reactor group.
    pub lag: Option<u64>,
    /// Units.
    pub units: Vec<UnitNode>,
    /// Signal kinds.
    pub kinds: Vec<KindNode>,
    /// Edges.
    pub edges: Vec<Edge>,
}

fn is_concrete(pattern: &KindPattern) -> bool {
    !pattern.as_str().contains(['*', '>'])
}

fn kind_id(kind: &str) -> String {
    format!("kind:{kind}")
}

fn unit_id(unit: &str) -> String {
    format!("unit:{unit}")
}

fn per_second(count: u64) -> f64 {
    count as f64 / WINDOW_SECONDS as f64
}

impl Traffic {
    /// The graph of `units` with what was seen, and `in_flight` signals per kind.
    pub(crate) fn topology(
        &mut self,
        units: &[UnitStatus],
        in_flight: &BTreeMap<String, u64>,
    ) -> Topology {
        let now = now_seconds();
        self.prune(now);
        let kinds = self.concrete_kinds(units, in_flight);
        // Patterns that match no concrete kind yet are nodes of their own.
        let mut patterns: BTreeSet<String> = BTreeSet::new();
        let mut edges = Vec::new();
        let mut unit_nodes = Vec::new();
        for unit in units {
            let (executions, failures) =
                self.takes(unit, &kinds, in_flight, now, &mut patterns, &mut edges);
            self.emits(unit, now, &mut patterns, &mut edges);
            unit_nodes.push(UnitNode {
                id: unit_id(&unit.name),
                name: unit.name.clone(),
                version: unit.version.clone(),
                generation: unit.generation,
                state: unit.state,
                executions,
                failures,
            });
        }
        // Edges of one unit to one kind through several patterns are one edge.
        edges.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
        edges.dedup_by(|a, b| a.source == b.source && a.target == b.target);
        let concrete = kinds.iter().map(|k| (k, false));
        let only_patterns = patterns
            .iter()
            .filter(|p| !kinds.contains(*p))
            .map(|p| (p, true));
        let kind_nodes = concrete
            .chain(only_patterns)
            .map(|(kind, pattern)| self.kind_node(kind, pattern, in_flight, now))
            .collect();
        Topology {
            window_seconds: WINDOW_SECONDS,
            pending: None,
            lag: None,
            units: unit_nodes,
            kinds: kind_nodes,
            edges,
        }
    }

    /// Concrete kinds: seen on the mesh, handled, emitted, dead-lettered, in flight, or named
    /// exactly by a manifest.
    fn concrete_kinds(
        &self,
        units: &[UnitStatus],
        in_flight: &BTreeMap<String, u64>,
    ) -> BTreeSet<String> {
        let mut kinds: BTreeSet<String> = self.signals.keys().cloned().collect();
        kinds.extend(self.handled.keys().cloned());
        kinds.extend(self.emitted.keys().map(|(_, k)| k.clone()));
        kinds.extend(self.dead_letters.keys().cloned());
        kinds.extend(in_flight.keys().cloned());
        for unit in units {
            for pattern in unit.subscribes.iter().chain(&unit.emits) {
                if is_concrete(pattern) {
                    kinds.insert(pattern.as_str().to_owned());
                }
            }
        }
        kinds
    }

    /// The edges from the kinds `unit` takes to it; returns its executions and failures in
    /// the window.
    fn takes(
        &self,
        unit: &UnitStatus,
        kinds: &BTreeSet<String>,
        in_flight: &BTreeMap<String, u64>,
        now: i64,
        patterns: &mut BTreeSet<String>,
        edges: &mut Vec<Edge>,
    ) -> (u64, u64) {
        let (mut executions, mut failures) = (0, 0);
        for pattern in &unit.subscribes {
            let matched: Vec<&String> = kinds.iter().filter(|k| pattern.matches(k)).collect();
            if matched.is_empty() {
                patterns.insert(pattern.as_str().to_owned());
                edges.push(Edge::quiet(
                    kind_id(pattern.as_str()),
                    unit_id(&unit.name),
                    Relation::Takes,
                ));
            }
            for kind in matched {
                let handled = self
                    .handled
                    .get(kind)
                    .and_then(|by_unit| by_unit.get(&unit.name));
                let count = handled.map_or(0, |h| h.executions.sum(now));
                let failed = handled.map_or(0, |h| h.failures.sum(now));
                executions += count;
                failures += failed;
                edges.push(Edge {
                    failures: failed,
                    pending: in_flight.get(kind).copied().unwrap_or(0),
                    ..Edge::counted(kind_id(kind), unit_id(&unit.name), Relation::Takes, count)
                });
            }
        }
        (executions, failures)
    }

    /// The edges from `unit` to the kinds it emits (or may emit).
    fn emits(
        &self,
        unit: &UnitStatus,
        now: i64,
        patterns: &mut BTreeSet<String>,
        edges: &mut Vec<Edge>,
    ) {
        for pattern in &unit.emits {
            let mut targets: BTreeMap<String, u64> = self
                .emitted
                .iter()
                .filter(|((u, k), _)| *u == unit.name && pattern.matches(k))
                .map(|((_, k), r)| (k.clone(), r.sum(now)))
                .collect();
            if is_concrete(pattern) {
                targets.entry(pattern.as_str().to_owned()).or_insert(0);
            }
            if targets.is_empty() {
                patterns.insert(pattern.as_str().to_owned());
                targets.insert(pattern.as_str().to_owned(), 0);
            }
            for (kind, count) in targets {
                edges.push(Edge::counted(
                    unit_id(&unit.name),
                    kind_id(&kind),
                    Relation::Emits,
                    count,
                ));
            }
        }
    }

    fn kind_node(
        &self,
        kind: &str,
        pattern: bool,
        in_flight: &BTreeMap<String, u64>,
        now: i64,
    ) -> KindNode {
        let signals = self.signals.get(kind).map_or(0, |r| r.sum(now));
        KindNode {
            id: kind_id(kind),
            kind: kind.to_owned(),
            pattern,
            signals,
            rate: per_second(signals),
            pending: in_flight.get(kind).copied().unwrap_or(0),
            dead_letters: self.dead_letters.get(kind).map_or(0, |r| r.sum(now)),
        }
    }
}

impl Edge {
    /// An edge `count` times crossed in the window, none failed or pending.
    fn counted(source: String, target: String, relation: Relation, count: u64) -> Self {
        Self {
            source,
            target,
            relation,
            count,
            rate: per_second(count),
            failures: 0,
            pending: 0,
        }
    }

    /// An edge of the graph's shape that nothing crossed in the window.
    fn quiet(source: String, target: String, relation: Relation) -> Self {
        Self::counted(source, target, relation, 0)
    }
}
