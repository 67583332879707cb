//! Ranking benchmark on a seeded synthetic workload where the best unit is known.
//!
//! 20 clusters of signals (four kinds, five topics each), four competing units with a known
//! success probability and latency per cluster, dispatched first-success; the signals'
//! shapes are embedded by the real MiniLM model into a real in-process memory, and each new
//! shape is placed among the ranker's as the reactor places it, so that it borrows from similar
//! shapes. Two workloads: each cluster's signals share one shape (they differ in ids and amounts,
//! which shapes mask), and each cluster has three phrasings (60 shapes; with all-MiniLM-L6-v2 the
//! nearest other phrasing is of the same topic for about four in five of them).
//! Halfway through, one of three changes (`BENCH_CHANGES`, all by default):
//!
//! - `swap`: in every cluster, silently, the best unit and the worst swap their success
//!   probabilities;
//! - `redeploy`: a bad deploy: unit 0, the best unit of five clusters, is replaced by a version
//!   that succeeds one time in ten everywhere; the ranker is told of the new version as the
//!   reactor tells it when it swaps a unit in, and its executions carry it. In those five clusters unit 1 is a clear second best
//!   (0.65–0.72 against 0.3–0.55 for the others), so recovering means finding it;
//! - `degrade`: the same failure with no new version (say, a dependency of unit 0 broke): only
//!   the outcomes tell.
//!
//! Printed:
//!
//! - top-1 accuracy: how often the unit fired first is the cluster's best (highest expected
//!   reward = p × latency factor), from signal 2,000 to the change, and after recovery;
//! - cumulative regret of the first choice (best expected reward minus the chosen one's), for
//!   the ranker and for random, round-robin and a context-free ε-greedy per kind (ε = 0.1,
//!   recency-weighted means) run on the same signals;
//! - recovery: signals after the change until the top-1 accuracy over the last 100 signals is
//!   back to 90% of what it was over the 1,000 signals before the change; and per cluster, its
//!   own signals until its last 10 are back to 90% of its rate before the change, and until the
//!   ranker first detected a change while handling one of them;
//! - the same recovery for two oracles that the ranker cannot be: Thompson sampling per cluster
//!   (told each signal's true cluster) that is also told the moment of the change and forgets,
//!   then, everything or only the units that changed. They show what the workload itself
//!   demands: every cluster sees one signal in 20, and a cluster must try its units again to
//!   find its new best, so no learner that keeps evidence per cluster recovers much faster;
//! - the discounted oracle: Thompson sampling per cluster, told each signal's cluster but not the
//!   change, discounting what it knew of a cluster by 0.98 at each of its signals; its regret,
//!   recovery and top-1 over the first 500 signals beside the ranker's and Vowpal Wabbit's;
//!   and the same oracle greedy (units in the order of their posterior means; it explores
//!   only through first-success's fallbacks): its top-1 over the first 500 signals, what a
//!   learner told the topic reaches there;
//! - the changes the ranker detected, and the changes of a unit itself it inferred from them,
//!   before the change (false alarms) and in all;
//! - Vowpal Wabbit on the same signals as a peer (`ops/vw_peer.py`: `--cb_explore_adf --squarecb
//!   -q sa` on the words of each signal's shape text, learning from the unit it tries first):
//!   its regret, top-1 before the change and recovery;
//! - the ranking cost per signal on the hot path (`Ranker::rank`, each signal ranked after the
//!   outcome of the one before was observed), p50/p99, and `observe`.
//!
//! Goals: top-1 ≥ 90% after 2k signals; regret ≤ 25% of ε-greedy's; recovery ≤ 300 signals
//! (redeploy, degrade); ranking ≤ 20 µs p99. With three phrasings, printed as met or missed:
//! regret ≤ Vowpal Wabbit's and ≤ 1.2× the discounted oracle's; top-1 ≥ 0.75 over the first 500
//! signals and ≥ 0.93 before the change; swap recovery ≤ 600.
//!
//! Run with: ops/fetch-model && ops/reference-venv && cargo bench -p swarm-tests --bench ranking
//! Knobs: BENCH_SIGNALS (default 10000), BENCH_SEEDS (default "1,2,3"), BENCH_VARIANTS
//! (phrasings per cluster, default "1,3"), BENCH_CHANGES (default "swap,redeploy,degrade"),
//! BENCH_RANKER (ranker settings to try instead of the defaults, such as
//! `exploration=0.05,max_evidence=20`, or `unit_change_contexts=0` to keep every detected
//! change to its context).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution};
use serde_json::json;
use swarm_memory::{InProcMemory, Memory};
use swarm_reactor::ranking::{Ranker, RankerConfig};
use swarm_schemas::{DispatchPolicy, ExecutionRecord, Signal};

const UNITS: usize = 4;
const PRE_WARM: usize = 2_000;
const WINDOW: usize = 100;
/// The first signals, over which how fast learning starts is measured.
const EARLY: usize = 500;

/// (kind, three phrasings) per cluster.
const CLUSTERS: [(&str, [&str; 3]); 20] = [
    (
        "support.ticket",
        [
            "cannot log in to my account",
            "password reset link does not work",
            "locked out after too many login attempts",
        ],
    ),
    (
        "support.ticket",
        [
            "charged twice for the same order",
            "my refund has not arrived",
            "the invoice amount is wrong",
        ],
    ),
    (
        "support.ticket",
        [
            "parcel has not arrived yet",
            "package delivered to the wrong address",
            "tracking shows no movement for days",
        ],
    ),
    (
        "support.ticket",
        [
            "the blender stopped working after a week",
            "screen was cracked on arrival",
            "device will not turn on",
        ],
    ),
    (
        "support.ticket",
        [
            "please delete all my personal data",
            "unsubscribe me from marketing emails",
            "how do I close my account",
        ],
    ),
    (
        "sensor.alert",
        [
            "temperature too high in the server room",
            "overheating detected on rack four",
            "cooling failure, the room is hot",
        ],
    ),
    (
        "sensor.alert",
        [
            "humidity above threshold in the warehouse",
            "moisture detected near the loading dock",
            "damp conditions in storage",
        ],
    ),
    (
        "sensor.alert",
        [
            "power outage on the third floor",
            "backup battery running low",
            "voltage drop detected on the main line",
        ],
    ),
    (
        "sensor.alert",
        [
            "door left open at the back entrance",
            "motion detected after hours",
            "window sensor triggered at night",
        ],
    ),
    (
        "sensor.alert",
        [
            "network switch unreachable",
            "packet loss on the uplink",
            "wifi access point offline",
        ],
    ),
    (
        "order.placed",
        [
            "fresh vegetables and fruit",
            "milk, eggs and bread",
            "organic bananas and apples",
        ],
    ),
    (
        "order.placed",
        [
            "laptop with lots of memory",
            "wireless noise cancelling headphones",
            "ultra high definition television",
        ],
    ),
    (
        "order.placed",
        [
            "a novel by a french author",
            "children's picture book",
            "history of the roman empire",
        ],
    ),
    (
        "order.placed",
        [
            "oak dining table",
            "three seat sofa",
            "office chair with lumbar support",
        ],
    ),
    (
        "order.placed",
        [
            "winter jacket size large",
            "running shoes for trail",
            "cotton t-shirts, pack of three",
        ],
    ),
    (
        "payment.failed",
        [
            "card declined by the issuing bank",
            "insufficient funds on the card",
            "card refused at checkout",
        ],
    ),
    (
        "payment.failed",
        [
            "the card has expired",
            "expiry date is in the past",
            "the card is no longer valid",
        ],
    ),
    (
        "payment.failed",
        [
            "suspected fraud, transaction blocked",
            "unusual activity flagged by the bank",
            "payment blocked by the risk check",
        ],
    ),
    (
        "payment.failed",
        [
            "customer failed the secure authentication challenge",
            "authentication timed out",
            "the one time passcode was wrong",
        ],
    ),
    (
        "payment.failed",
        [
            "payment gateway timed out",
            "provider returned an internal error",
            "connection to the payment processor lost",
        ],
    ),
];

/// What each unit does on each cluster.
#[derive(Clone)]
struct World {
    /// p[cluster][unit]
    p: Vec<[f64; UNITS]>,
    /// latency in µs [cluster][unit]
    latency: Vec<[u64; UNITS]>,
}

impl World {
    fn new(rng: &mut SmallRng, ranker: &RankerConfig, change: Change) -> Self {
        let mut p = Vec::new();
        let mut latency = Vec::new();
        for c in 0..CLUSTERS.len() {
            let best = c % UNITS;
            // Where unit 0 will fail, the unit that takes over is clearly the next best, so
            // that recovering means finding it rather than a coin flip between near equals.
            let runner_up = (change != Change::Swap && best == 0).then_some(1);
            let mut row = [0.0; UNITS];
            let mut lat = [0u64; UNITS];
            for u in 0..UNITS {
                row[u] = if u == best {
                    rng.random_range(0.85..0.95)
                } else if runner_up == Some(u) {
                    rng.random_range(0.65..0.72)
                } else if runner_up.is_some() {
                    rng.random_range(0.3..0.55)
                } else {
                    rng.random_range(0.3..0.7)
                };
                lat[u] = rng.random_range(5_000..150_000);
            }
            p.push(row);
            latency.push(lat);
        }
        let world = Self { p, latency };
        // The best unit is the one with the highest expected reward, latency included.
        for c in 0..CLUSTERS.len() {
            assert_eq!(
                world.best(c, ranker),
                c % UNITS,
                "the generated best unit is the best"
            );
        }
        world
    }

    fn expected(&self, c: usize, u: usize, config: &RankerConfig) -> f64 {
        self.p[c][u] * config.weighing.reward(true, self.latency[c][u])
    }

    /// Runs unit `u` on a signal of cluster `c`: whether it succeeded, and its reward.
    fn attempt(
        &self,
        c: usize,
        u: usize,
        config: &RankerConfig,
        rng: &mut SmallRng,
    ) -> (bool, f64) {
        let success = rng.random::<f64>() < self.p[c][u];
        (success, config.weighing.reward(success, self.latency[c][u]))
    }

    fn best(&self, c: usize, config: &RankerConfig) -> usize {
        (0..UNITS)
            .max_by(|a, b| {
                self.expected(c, *a, config)
                    .total_cmp(&self.expected(c, *b, config))
            })
            .unwrap_or(0)
    }

    /// The change. Returns the units that changed, per cluster.
    fn change(&mut self, change: Change, config: &RankerConfig) -> Vec<Vec<usize>> {
        match change {
            Change::Swap => self.swap(config),
            Change::Redeploy | Change::Degrade => {
                // Unit 0, the best of a quarter of the clusters, now succeeds one time in ten
                // everywhere; the runner-up becomes the best of those clusters.
                for row in &mut self.p {
                    row[0] = 0.1;
                }
                vec![vec![0]; CLUSTERS.len()]
            }
        }
    }

    /// In every cluster the best and the worst unit swap success probabilities.
    fn swap(&mut self, config: &RankerConfig) -> Vec<Vec<usize>> {
        let mut changed = Vec::with_capacity(CLUSTERS.len());
        for c in 0..CLUSTERS.len() {
            let best = self.best(c, config);
            let worst = (0..UNITS)
                .min_by(|a, b| {
                    self.expected(c, *a, config)
                        .total_cmp(&self.expected(c, *b, config))
                })
                .unwrap_or(0);
            self.p[c].swap(best, worst);
            changed.push(vec![best, worst]);
        }
        changed
    }
}

/// What happens halfway through the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// In every cluster, the best and the worst unit swap success probabilities, silently.
    Swap,
    /// A bad deploy: unit 0, the best unit of a quarter of the clusters, is swapped for a new
    /// version that succeeds one time in ten everywhere; executions carry the new version.
    Redeploy,
    /// The same failure without a new version (a dependency of unit 0 broke): the ranker can
    /// only detect it from outcomes.
    Degrade,
}

impl Change {
    fn parse(name: &str) -> Self {
        match name {
            "swap" => Self::Swap,
            "redeploy" => Self::Redeploy,
            "degrade" => Self::Degrade,
            other => panic!("BENCH_CHANGES: unknown change {other} (swap, redeploy, degrade)"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Swap => "best and worst unit of every cluster swap",
            Self::Redeploy => {
                "unit 0 (best in 5 clusters) redeployed as a version that fails 9 in 10"
            }
            Self::Degrade => "unit 0 (best in 5 clusters) starts failing 9 in 10, same version",
        }
    }
}

fn unit_name(u: usize) -> Arc<str> {
    Arc::from(format!("unit-{u}").as_str())
}

fn record(
    signal: &Signal,
    unit: usize,
    version: &semver::Version,
    success: bool,
    latency: u64,
    at: DateTime<Utc>,
    propensity: f64,
) -> ExecutionRecord {
    let mut record = swarm_memory::testkit::record(signal, &format!("unit-{unit}"), success, 0);
    record.unit_version = version.clone();
    record.started_at = at;
    record.latency_us = latency;
    record.policy = "first_success".into();
    record.propensity = propensity;
    record
}

/// A context-free ε-greedy learner per kind, with recency-weighted means.
struct EpsilonGreedy {
    means: std::collections::HashMap<&'static str, [f64; UNITS]>,
    epsilon: f64,
    step: f64,
}

impl EpsilonGreedy {
    fn choose(&mut self, kind: &'static str, rng: &mut SmallRng) -> usize {
        let means = self.means.entry(kind).or_insert([0.5; UNITS]);
        if rng.random::<f64>() < self.epsilon {
            rng.random_range(0..UNITS)
        } else {
            (0..UNITS)
                .max_by(|a, b| means[*a].total_cmp(&means[*b]))
                .unwrap_or(0)
        }
    }
    fn learn(&mut self, kind: &'static str, unit: usize, reward: f64) {
        let means = self.means.entry(kind).or_insert([0.5; UNITS]);
        means[unit] += self.step * (reward - means[unit]);
    }
}

/// A reference the ranker cannot be: Beta–Thompson sampling per cluster, told each signal's
/// true cluster (no similarity search) and the moment of the change. At the change it forgets
/// either everything it knew (`Forget::All`) or only what it knew about the units that
/// changed (`Forget::Changed`). Same prior, evidence cap and first-success fallback as the
/// ranker; its recovery shows how many signals the workload itself demands.
struct Oracle {
    /// (reward-weighted successes, failures) per cluster and unit.
    evidence: Vec<[(f64, f64); UNITS]>,
    forget: Forget,
    /// Orders units by their posterior means (ties at random) instead of sampling them.
    greedy: bool,
    cap: f64,
    hits: Vec<bool>,
    regret: f64,
}

#[derive(Clone, Copy)]
enum Forget {
    All,
    Changed,
    /// Not told the change: every signal of a cluster discounts what it knew of the cluster by
    /// this factor first (the reference learner, 0.98).
    Discounted(f64),
}

impl Oracle {
    fn new(forget: Forget, config: &RankerConfig) -> Self {
        Self {
            evidence: vec![[(0.0, 0.0); UNITS]; CLUSTERS.len()],
            forget,
            greedy: false,
            cap: config.max_evidence,
            hits: Vec::new(),
            regret: 0.0,
        }
    }

    /// The discounted oracle, but greedy: each signal's units in the order of their posterior
    /// means. What a learner told the topic can reach when it explores only through the
    /// fallbacks of first-success.
    fn greedy(config: &RankerConfig) -> Self {
        Self {
            greedy: true,
            ..Self::new(Forget::Discounted(0.98), config)
        }
    }

    fn change(&mut self, changed: &[Vec<usize>]) {
        for (c, units) in changed.iter().enumerate() {
            match self.forget {
                Forget::All => self.evidence[c] = [(0.0, 0.0); UNITS],
                Forget::Changed => units.iter().for_each(|&u| self.evidence[c][u] = (0.0, 0.0)),
                Forget::Discounted(_) => {}
            }
        }
    }

    /// Handles one signal of cluster `c` (first-success down a Thompson-sampled order).
    fn handle(
        &mut self,
        c: usize,
        world: &World,
        config: &RankerConfig,
        rng: &mut SmallRng,
    ) -> usize {
        if let Forget::Discounted(factor) = self.forget {
            for (w, l) in &mut self.evidence[c] {
                *w *= factor;
                *l *= factor;
            }
        }
        let mut order: Vec<(usize, f64)> = (0..UNITS)
            .map(|u| {
                let (w, l) = self.evidence[c][u];
                let (a, b) = (1.0 + w, 1.0 + l);
                let score = if self.greedy {
                    // The mean, with a draw below any gap between two means to break ties.
                    a / (a + b) + 1e-9 * rng.random::<f64>()
                } else {
                    Beta::new(a, b).map_or(a / (a + b), |d| d.sample(rng))
                };
                (u, score)
            })
            .collect();
        order.sort_by(|x, y| y.1.total_cmp(&x.1));
        self.hits.push(order[0].0 == world.best(c, config));
        self.regret += world.expected(c, world.best(c, config), config)
            - world.expected(c, order[0].0, config);
        for &(u, _) in &order {
            let (success, reward) = world.attempt(c, u, config, rng);
            let (w, l) = &mut self.evidence[c][u];
            *w += reward;
            *l += 1.0 - reward;
            let weight = *w + *l;
            if weight > self.cap {
                *w *= self.cap / weight;
                *l *= self.cap / weight;
            }
            if success {
                break;
            }
        }
        order[0].0
    }
}

/// Vowpal Wabbit (`--cb_explore_adf --squarecb -q sa`, on the words of each signal's shape
/// text) run on the same signals by `ops/vw_peer.py` in the reference venv, one request a line.
/// It learns from the unit it tried first, as a contextual bandit does.
struct VwPeer {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
    hits: Vec<bool>,
}

impl VwPeer {
    fn start(seed: u64) -> Self {
        use std::process::{Command, Stdio};
        let python = std::env::var_os("SWARM_REFERENCE_PYTHON").map_or_else(
            || swarm_tests::workspace_root().join(".swarm/venv/bin/python"),
            std::path::PathBuf::from,
        );
        let mut child = Command::new(&python)
            .arg(swarm_tests::workspace_root().join("ops/vw_peer.py"))
            .arg(seed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "Vowpal Wabbit's peer needs {} (ops/reference-venv): {e}",
                    python.display()
                )
            });
        let input = child.stdin.take().expect("the peer's stdin");
        let output = std::io::BufReader::new(child.stdout.take().expect("the peer's stdout"));
        Self {
            child,
            input,
            output,
            hits: Vec::new(),
        }
    }

    fn ask(&mut self, request: &serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead as _, Write as _};
        writeln!(self.input, "{request}").expect("the peer takes a request");
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .expect("the peer answers (is vowpalwabbit installed? ops/reference-venv)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("the peer's answer {line:?}: {e}"))
    }

    /// Chooses a unit for a signal of cluster `c` and learns how it did; returns the unit.
    fn handle(
        &mut self,
        c: usize,
        text: &str,
        world: &World,
        config: &RankerConfig,
        rng: &mut SmallRng,
    ) -> usize {
        let answer = self.ask(&json!({"choose": text, "units": UNITS}));
        let unit = answer["unit"]
            .as_u64()
            .map_or(0, |u| u as usize)
            .min(UNITS - 1);
        let probability = answer["probability"].as_f64().unwrap_or(1.0);
        self.hits.push(unit == world.best(c, config));
        let (_, reward) = world.attempt(c, unit, config, rng);
        self.ask(&json!({"learn": text, "units": UNITS, "unit": unit, "reward": reward, "probability": probability}));
        unit
    }
}

impl Drop for VwPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signals after the change until the top-1 accuracy over the last [`WINDOW`] is back to 90% of
/// what it was over the 1,000 signals before the change.
fn recovery(hits: &[bool], change_at: usize) -> Option<usize> {
    let before = rate(hits, change_at.saturating_sub(1_000), change_at);
    (change_at + WINDOW..=hits.len())
        .find(|&t| rate(hits, t - WINDOW, t) >= 0.9 * before)
        .map(|t| t - change_at)
}

fn rate(hits: &[bool], from: usize, to: usize) -> f64 {
    let slice = &hits[from.min(to)..to];
    slice.iter().filter(|h| **h).count() as f64 / slice.len().max(1) as f64
}

/// A cluster's first choices from signal 2,000 to the change.
struct Weak {
    cluster: usize,
    /// How often the best unit was first.
    top1: f64,
    /// Expected reward of each unit.
    expected: [f64; UNITS],
    /// How often each unit was first.
    firsts: [usize; UNITS],
}

struct Summary {
    top1_before: f64,
    top1_after: f64,
    regret: [f64; 5],
    recovery: Option<usize>,
    /// Vowpal Wabbit's top-1 before the change and its recovery.
    vw_top1_before: f64,
    vw_recovery: Option<usize>,
    /// Recovery of the oracles that forget everything / only the changed units at the change,
    /// and of the discounted one not told the change.
    oracle_recovery: [Option<usize>; 3],
    /// Regret of the discounted oracle.
    discounted_regret: f64,
    /// Top-1 over the first [`EARLY`] signals: the ranker, Vowpal Wabbit, the discounted oracle,
    /// the greedy one.
    early: [f64; 4],
    /// Signals of one cluster until that cluster recovered: median and worst over clusters.
    per_cluster_median: usize,
    per_cluster_max: usize,
    /// Per cluster, its own signals after the change until the ranker first detected a change
    /// while handling one of them: median and worst over the clusters where it did, and how
    /// many clusters it never did in.
    detection: Option<(usize, usize)>,
    undetected: usize,
    executions: usize,
    /// Signals for which some unit's circuit breaker was open.
    skipped: usize,
    /// Changes the ranker detected before the change (false alarms), in contexts and of units.
    false_alarms: u64,
    false_unit_alarms: u64,
    /// The clusters with the lowest top-1 accuracy from signal 2,000 to the change.
    weakest: Vec<Weak>,
    /// The time of the last signal.
    ended: DateTime<Utc>,
}

async fn run(
    seed: u64,
    signals: usize,
    variants: usize,
    change: Change,
    memory_embedder: Arc<dyn swarm_memory::Embedder>,
) -> (Summary, Ranker, Vec<Signal>) {
    let config = ranker_config(seed);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut world = World::new(&mut rng, &config, change);
    let initial = world.clone();
    let ranker = Ranker::new(config.clone());
    let memory = InProcMemory::new().with_embedder(memory_embedder);
    let units: Vec<Arc<str>> = (0..UNITS).map(unit_name).collect();
    let mut versions = vec![semver::Version::new(1, 0, 0); UNITS];
    let start = Utc::now();
    let tick = chrono::Duration::milliseconds(20);
    let change_at = signals / 2;

    let mut hits = Vec::with_capacity(signals);
    // Per cluster: whether each of its signals had the best unit first, and where the change was.
    let mut by_cluster: Vec<Vec<bool>> = vec![Vec::new(); CLUSTERS.len()];
    // Per cluster: how often each unit was first, from signal 2,000 to the change.
    let mut settled: Vec<[usize; UNITS]> = vec![[0; UNITS]; CLUSTERS.len()];
    let mut change_index = vec![0usize; CLUSTERS.len()];
    let mut regret = [0.0f64; 5]; // ranker, random, round robin, ε-greedy, Vowpal Wabbit
    let mut vw = VwPeer::start(seed);
    let mut vw_rng = SmallRng::seed_from_u64(seed ^ 0x7ab1);
    let mut round_robin = std::collections::HashMap::<&str, usize>::new();
    let mut greedy = EpsilonGreedy {
        means: Default::default(),
        epsilon: 0.1,
        step: 0.05,
    };
    let mut pending: Vec<ExecutionRecord> = Vec::new();
    let mut oracles = [
        Oracle::new(Forget::All, &config),
        Oracle::new(Forget::Changed, &config),
        Oracle::new(Forget::Discounted(0.98), &config),
    ];
    let mut oracle_rng = SmallRng::seed_from_u64(seed ^ 0x0ac1e);
    // Its own random stream, so that the other oracles' figures do not move with it.
    let mut greedy_oracle = Oracle::greedy(&config);
    let mut greedy_rng = SmallRng::seed_from_u64(seed ^ 0x96eed);
    let mut executions = 0;
    let mut skipped = 0;
    let mut false_alarms = 0;
    let mut false_unit_alarms = 0;
    let mut detected_after: Vec<Option<usize>> = vec![None; CLUSTERS.len()];
    let mut samples = Vec::new();
    for i in 0..signals {
        let now = start + tick * i32::try_from(i).unwrap_or(i32::MAX);
        if i == change_at {
            false_alarms = ranker.changes();
            false_unit_alarms = ranker.unit_changes();
            let changed = world.change(change, &config);
            if change == Change::Redeploy {
                // As the reactor does when it swaps a unit in.
                versions[0] = semver::Version::new(2, 0, 0);
                ranker.unit_loaded(&units[0], &versions[0], now);
            }
            oracles.iter_mut().for_each(|o| o.change(&changed));
            for (c, seen) in by_cluster.iter().enumerate() {
                change_index[c] = seen.len();
            }
        }
        let c = rng.random_range(0..CLUSTERS.len());
        let (kind, phrasings) = CLUSTERS[c];
        let phrase = phrasings[rng.random_range(0..phrasings.len().min(variants))];
        let signal = Signal::new(
            kind,
            json!({ "text": phrase, "ref": format!("r-{i}"), "amount": rng.random_range(1..500) }),
        );
        if samples.len() < 200 {
            samples.push(signal.clone());
        }
        let best = world.best(c, &config);
        let best_reward = world.expected(c, best, &config);

        let changes_before = ranker.changes();
        // As the reactor does before ranking a batch: a shape new to the ranker is placed
        // among the ones it knows (its vector from memory's embedder).
        let new = ranker.unplaced([&signal], now);
        ranker.place(&memory, &new).await.expect("place");
        let order = ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, now);
        let first = order
            .ranked
            .first()
            .and_then(|ch| units.iter().position(|u| *u == ch.unit));
        hits.push(first == Some(best));
        by_cluster[c].push(first == Some(best));
        if let Some(u) = first.filter(|_| (PRE_WARM..change_at).contains(&i)) {
            settled[c][u] += 1;
        }
        regret[0] += best_reward - first.map_or(0.0, |u| world.expected(c, u, &config));
        if !order.skipped.is_empty() {
            skipped += 1;
        }
        // First-success: down the order until one succeeds.
        for choice in &order.ranked {
            let u = units.iter().position(|x| *x == choice.unit).unwrap_or(0);
            let (success, _) = world.attempt(c, u, &config, &mut rng);
            let r = record(
                &signal,
                u,
                &versions[u],
                success,
                world.latency[c][u],
                now,
                choice.propensity,
            );
            ranker.observe(&r);
            pending.push(r);
            executions += 1;
            if success {
                break;
            }
        }
        if i >= change_at && detected_after[c].is_none() && ranker.changes() > changes_before {
            detected_after[c] = Some(by_cluster[c].len() - change_index[c]);
        }
        // Memory is written behind, in batches, as `swarm up` does.
        if pending.len() >= 64 {
            memory.record(&pending).await.expect("record");
            pending.clear();
        }
        if i % 10 == 0 {
            ranker.refresh(&memory, now, 64).await.expect("refresh");
        }

        // Baselines on the same signal.
        let random = rng.random_range(0..UNITS);
        regret[1] += best_reward - world.expected(c, random, &config);
        let rr = round_robin.entry(kind).or_default();
        regret[2] += best_reward - world.expected(c, *rr % UNITS, &config);
        *rr += 1;
        for oracle in &mut oracles {
            oracle.handle(c, &world, &config, &mut oracle_rng);
        }
        greedy_oracle.handle(c, &world, &config, &mut greedy_rng);
        let text = swarm_memory::Shape::of(&signal).text;
        let v = vw.handle(c, &text, &world, &config, &mut vw_rng);
        regret[4] += best_reward - world.expected(c, v, &config);
        let g = greedy.choose(kind, &mut rng);
        regret[3] += best_reward - world.expected(c, g, &config);
        let (_, reward) = world.attempt(c, g, &config, &mut rng);
        greedy.learn(kind, g, reward);
    }

    let recovered = recovery(&hits, change_at);
    let after_from = change_at + recovered.unwrap_or(signals - change_at);
    // Per cluster: its own signals after the change until the top-1 rate of its last 10 is back
    // to 90% of its rate over its 50 signals before the change.
    let mut per_cluster: Vec<usize> = by_cluster
        .iter()
        .zip(&change_index)
        .map(|(seen, &at)| {
            let before = &seen[at.saturating_sub(50)..at];
            let level = before.iter().filter(|h| **h).count() as f64 / before.len().max(1) as f64;
            let after = &seen[at..];
            (10..=after.len())
                .find(|&j| {
                    after[j - 10..j].iter().filter(|h| **h).count() as f64 / 10.0 >= 0.9 * level
                })
                .unwrap_or(after.len())
        })
        .collect();
    per_cluster.sort_unstable();
    let mut weakest: Vec<Weak> = settled
        .iter()
        .enumerate()
        .map(|(c, firsts)| Weak {
            cluster: c,
            top1: firsts[initial.best(c, &config)] as f64
                / firsts.iter().sum::<usize>().max(1) as f64,
            expected: std::array::from_fn(|u| initial.expected(c, u, &config)),
            firsts: *firsts,
        })
        .collect();
    weakest.sort_by(|a, b| a.top1.total_cmp(&b.top1));
    weakest.truncate(3);
    (
        Summary {
            top1_before: rate(&hits, PRE_WARM, change_at),
            top1_after: rate(&hits, after_from, signals),
            regret,
            recovery: recovered,
            discounted_regret: oracles[2].regret,
            early: [
                rate(&hits, 0, EARLY),
                rate(&vw.hits, 0, EARLY),
                rate(&oracles[2].hits, 0, EARLY),
                rate(&greedy_oracle.hits, 0, EARLY),
            ],
            oracle_recovery: oracles.map(|o| recovery(&o.hits, change_at)),
            vw_top1_before: rate(&vw.hits, PRE_WARM, change_at),
            vw_recovery: recovery(&vw.hits, change_at),
            per_cluster_median: per_cluster[per_cluster.len() / 2],
            per_cluster_max: per_cluster.last().copied().unwrap_or(0),
            detection: {
                let mut found: Vec<usize> = detected_after.iter().flatten().copied().collect();
                found.sort_unstable();
                found.last().map(|&worst| (found[found.len() / 2], worst))
            },
            undetected: detected_after.iter().filter(|d| d.is_none()).count(),
            executions,
            skipped,
            false_alarms,
            false_unit_alarms,
            weakest,
            ended: start + tick * i32::try_from(signals).unwrap_or(i32::MAX),
        },
        ranker,
        samples,
    )
}

/// The ranker's defaults, with `BENCH_RANKER` overrides (`name=value,...`).
fn ranker_config(seed: u64) -> RankerConfig {
    let mut config = RankerConfig {
        seed,
        ..RankerConfig::default()
    };
    for pair in std::env::var("BENCH_RANKER")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair
            .split_once('=')
            .expect("BENCH_RANKER takes name=value pairs");
        let value: f64 = value.parse().expect("a number");
        match name {
            "exploration" => config.exploration = value,
            "concentration" => config.concentration = value,
            "first_success_concentration" => config.first_success_concentration = value,
            "max_evidence" => config.max_evidence = value,
            "prior_strength" => config.prior_strength = value,
            "change_threshold" => config.change_threshold = value,
            "change_delta" => config.change_delta = value,
            "change_evidence" => config.change_evidence = value,
            "change_keep" => config.change_keep = value,
            "unit_change_contexts" => config.unit_change_contexts = value as usize,
            "unit_pooled_threshold" => config.unit_pooled_threshold = value,
            "unit_pooled_delta" => config.unit_pooled_delta = value,
            "unit_change_window_s" => config.unit_change_window = Duration::from_secs_f64(value),
            "per_version" => config.per_version = value != 0.0,
            "temperature" => config.weighing.temperature = value,
            "neighbours" => config.neighbours = value as usize,
            "per_shape" => config.per_shape = value as usize,
            "refresh_ms" => config.refresh_every = Duration::from_millis(value as u64),
            "share_neighbours" => config.share_neighbours = value as usize,
            "share_min_similarity" => config.share_min_similarity = value,
            "share_weight" => config.share_weight = value,
            "share_cap" => config.share_cap = value,
            "share_disagreement" => config.share_disagreement = value,
            "share_evidence" => config.share_evidence = value,
            "share_change_weight" => config.share_change_weight = value,
            other => panic!("BENCH_RANKER: unknown setting {other}"),
        }
    }
    config
}

fn show(recovery: Option<usize>) -> String {
    recovery.map_or("never".to_owned(), |r| r.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let signals: usize = std::env::var("BENCH_SIGNALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seeds: Vec<u64> = std::env::var("BENCH_SEEDS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let changes: Vec<Change> = std::env::var("BENCH_CHANGES")
        .unwrap_or_else(|_| "swap,redeploy,degrade".into())
        .split(',')
        .map(|s| Change::parse(s.trim()))
        .collect();
    let embedder = swarm_memory::testkit::embedder();
    println!(
        "ranking: {} clusters x {UNITS} units, {signals} signals, first-success, a change at signal {}",
        CLUSTERS.len(),
        signals / 2
    );
    let mut last = None;
    let variants: Vec<usize> = std::env::var("BENCH_VARIANTS")
        .unwrap_or_else(|_| "1,3".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: Vec<(Change, usize, u64)> = changes
        .iter()
        .flat_map(|c| variants.iter().map(move |v| (*c, *v)))
        .flat_map(|(c, v)| seeds.iter().map(move |s| (c, v, *s)))
        .collect();
    for (change, variants, seed) in runs {
        let started = Instant::now();
        let (o, ranker, samples) =
            run(seed, signals, variants, change, Arc::clone(&embedder)).await;
        let [ours, random, rr, greedy, vw] = o.regret;
        println!(
            "{}; {variants} phrasing(s) per cluster, seed {seed}: top-1 {:.3} (signals {PRE_WARM}..change), {:.3} (after recovery); recovery {} signals \
             (per cluster: median {}, worst {} of its own signals; first change detected after {} of them, in {} clusters never; oracle told the change, forgetting all {}, forgetting the changed units {}); \
             regret: ranker {ours:.1}, random {random:.1}, round-robin {rr:.1}, e-greedy per kind {greedy:.1} \
             (ranker/e-greedy {:.2}), Vowpal Wabbit {vw:.1} (ranker/VW {:.2}; VW top-1 {:.3} before the change, recovery {} signals); {} executions; {} signals with a unit skipped by its breaker; {} changes detected ({} before the change), {} of a unit itself ({} before the change); {:.1?}",
            change.describe(),
            o.top1_before,
            o.top1_after,
            show(o.recovery),
            o.per_cluster_median,
            o.per_cluster_max,
            o.detection
                .map_or("none".to_owned(), |(median, worst)| format!(
                    "median {median}, worst {worst}"
                )),
            o.undetected,
            show(o.oracle_recovery[0]),
            show(o.oracle_recovery[1]),
            ours / greedy,
            ours / vw,
            o.vw_top1_before,
            show(o.vw_recovery),
            o.executions,
            o.skipped,
            ranker.changes(),
            o.false_alarms,
            ranker.unit_changes(),
            o.false_unit_alarms,
            started.elapsed()
        );
        let [early, vw_early, oracle_early, greedy_early] = o.early;
        println!(
            "  top-1 over the first {EARLY} signals: ranker {early:.3}, Vowpal Wabbit {vw_early:.3}, discounted oracle {oracle_early:.3}, greedy oracle {greedy_early:.3}; \
             discounted oracle (told each signal's topic, not the change; discount 0.98): regret {:.1} (ranker/oracle {:.2}), recovery {}",
            o.discounted_regret,
            ours / o.discounted_regret,
            show(o.oracle_recovery[2]),
        );
        if variants == 3 {
            // The goals of the three-phrasings workload.
            let mut goals = vec![
                ("regret <= Vowpal Wabbit's", ours <= vw),
                (
                    "regret <= 1.2x the discounted oracle's",
                    ours <= 1.2 * o.discounted_regret,
                ),
                ("top-1 over the first 500 >= 0.75", early >= 0.75),
                ("top-1 before the change >= 0.93", o.top1_before >= 0.93),
            ];
            match change {
                Change::Swap => {
                    goals.push(("recovery <= 600", o.recovery.is_some_and(|r| r <= 600)))
                }
                Change::Redeploy | Change::Degrade => {
                    goals.push(("top-1 before the change >= 0.90", o.top1_before >= 0.90));
                    goals.push(("regret <= 0.25x e-greedy's", ours <= 0.25 * greedy));
                    goals.push(("recovery <= 300", o.recovery.is_some_and(|r| r <= 300)));
                }
            }
            let missed: Vec<&str> = goals
                .iter()
                .filter(|(_, met)| !met)
                .map(|(g, _)| *g)
                .collect();
            println!(
                "  goals: {} of {} met{}",
                goals.len() - missed.len(),
                goals.len(),
                if missed.is_empty() {
                    String::new()
                } else {
                    format!("; missed: {}", missed.join(", "))
                }
            );
        }
        for w in &o.weakest {
            let units: Vec<String> = (0..UNITS)
                .map(|u| format!("{u}: {:.3} first {}", w.expected[u], w.firsts[u]))
                .collect();
            println!(
                "  weak cluster {} before the change: top-1 {:.2}; expected reward and first choices of units {}",
                w.cluster,
                w.top1,
                units.join(", ")
            );
        }
        // Every unit still runs version 1.0.0 after a swap or a degrade.
        if change != Change::Redeploy {
            last = Some((ranker, samples, o.ended));
        }
    }

    // Hot path, as in the reactor: each signal is ranked after the outcome of the one before
    // was observed, so that a context whose own evidence or whose neighbours' moved gathers
    // what it borrows again before it samples.
    let Some((ranker, samples, ended)) = last else {
        println!("hot path: not measured (it runs on the ranker of a swap or degrade run)");
        return;
    };
    let units: Vec<Arc<str>> = (0..UNITS).map(unit_name).collect();
    let mut rank_times = Vec::with_capacity(100_000);
    let mut observe_times = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let now = ended + chrono::Duration::milliseconds(i64::try_from(i).unwrap_or(0));
        let signal = &samples[i % samples.len()];
        let started = Instant::now();
        let order = ranker.rank(signal, &units, DispatchPolicy::FirstSuccess, now);
        rank_times.push(started.elapsed());
        let r = record(
            signal,
            units
                .iter()
                .position(|u| *u == order.ranked[0].unit)
                .unwrap_or(0),
            &semver::Version::new(1, 0, 0),
            i % 3 != 0,
            10_000,
            now,
            order.ranked[0].propensity,
        );
        let started = Instant::now();
        ranker.observe(&r);
        observe_times.push(started.elapsed());
    }
    rank_times.sort();
    observe_times.sort();
    println!(
        "hot path: rank p50 {:.1?}, p99 {:.1?} ({} units, {} contexts); observe p50 {:.1?}, p99 {:.1?}",
        percentile(&rank_times, 0.5),
        percentile(&rank_times, 0.99),
        UNITS,
        ranker.contexts(),
        percentile(&observe_times, 0.5),
        percentile(&observe_times, 0.99),
    );
}
