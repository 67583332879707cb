//! The ranker with a real in-process memory and the real embedding model: evidence reaches
//! signals of a shape never seen before through similar shapes, and `explain` recomputes a
//! choice from memory.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use swarm_memory::testkit::{embedder, record};
use swarm_memory::{InProcMemory, Memory};
use swarm_reactor::ranking::{Ranker, RankerConfig};
use swarm_schemas::{DispatchPolicy, ExecutionRecord, Signal};

fn task(text: &str) -> Signal {
    Signal::new("support.ticket", json!({ "text": text, "ticket": "T-1" }))
}

/// `refunds` fails every refund ticket and handles deliveries; `couriers` the other way round.
async fn memory_of_two_families() -> InProcMemory {
    let memory = InProcMemory::new().with_embedder(embedder());
    let refunds = [
        "I want my money back for the broken kettle",
        "please refund my order",
        "refund the double charge on my card",
    ];
    let deliveries = [
        "my parcel has not arrived",
        "the courier lost my package",
        "delivery is three days late",
    ];
    let mut records = Vec::new();
    for round in 0..6 {
        for text in refunds {
            let mut r = record(&task(text), "couriers", false, 600 - round * 10);
            r.latency_us = 20_000;
            records.push(r);
            records.push(record(&task(text), "refunds", true, 600 - round * 10));
        }
        for text in deliveries {
            records.push(record(&task(text), "couriers", true, 600 - round * 10));
            records.push(record(&task(text), "refunds", false, 600 - round * 10));
        }
    }
    memory.record(&records).await.expect("record");
    memory
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_signals_rank_a_shape_never_seen_before() {
    let memory = memory_of_two_families().await;
    let ranker = Ranker::new(RankerConfig {
        exploration: 0.0,
        ..RankerConfig::default()
    });
    let units: Vec<Arc<str>> = vec![Arc::from("couriers"), Arc::from("refunds")];
    let now = Utc::now();
    for (text, best) in [
        ("can I get a refund for the damaged toaster", "refunds"),
        ("the package delivery never came", "couriers"),
    ] {
        let signal = task(text);
        // First sight of this shape: no evidence yet, then a refresh from memory.
        ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, now);
        let done = ranker.refresh(&memory, now, 16).await.expect("refresh");
        assert!(done.contexts >= 1);
        let mut first = 0;
        for _ in 0..100 {
            let order = ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, now);
            if order.ranked[0].unit.as_ref() == best {
                first += 1;
                assert!(order.ranked[0].propensity > 0.5, "{order:?}");
            }
        }
        assert!(first >= 90, "{best} first for `{text}` in {first} of 100");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_recomputes_a_choice_from_memory() {
    let memory = memory_of_two_families().await;
    let signal = task("refund my order please, the kettle broke");
    let mut chosen = record(&signal, "refunds", true, 0);
    chosen.policy = "first_success".into();
    chosen.propensity = 0.93;
    let mut earlier = record(&signal, "couriers", false, 1);
    earlier.started_at = chosen.started_at - Duration::milliseconds(5);
    memory
        .record(&[earlier, chosen.clone()])
        .await
        .expect("record");
    let ranker = Ranker::new(RankerConfig::default());
    let why = ranker
        .explain(&memory, chosen.id)
        .await
        .expect("explain")
        .expect("found");
    assert_eq!(why.execution, chosen);
    assert_eq!(why.siblings.len(), 2, "both executions of the signal");
    let units: Vec<&str> = why.standings.iter().map(|s| s.unit.as_str()).collect();
    assert_eq!(
        units,
        ["refunds", "couriers"],
        "refunds stood first: {:?}",
        why.standings
    );
    assert!(why.standings[0].p_first > 0.8, "{:?}", why.standings);
    assert!(!why.neighbours.is_empty());
    assert!(
        why.neighbours
            .iter()
            .all(|n| n.started_at < chosen.started_at),
        "only what came before"
    );
    assert!(
        why.neighbours
            .windows(2)
            .all(|w| w[0].similarity >= w[1].similarity)
    );
    assert!(
        ranker
            .explain(&memory, uuid::Uuid::now_v7())
            .await
            .expect("explain")
            .is_none()
    );
}

#[test]
fn a_unit_that_starts_failing_is_detected_and_ranked_down() {
    let ranker = Ranker::new(RankerConfig {
        exploration: 0.0,
        ..RankerConfig::default()
    });
    let units: Vec<Arc<str>> = vec![Arc::from("steady"), Arc::from("fading")];
    let signal = task("my parcel has not arrived");
    let outcome = |unit: &str, success: bool| {
        let mut r = record(&signal, unit, success, 0);
        r.policy = "first_success".into();
        ranker.observe(&r);
    };
    // `fading` never fails at first; `steady` succeeds two times in three.
    for n in 0..60 {
        outcome("fading", true);
        outcome("steady", n % 3 != 0);
    }
    assert!(
        firsts(&ranker, &signal, &units, "fading") >= 180,
        "fading first while it never fails"
    );
    assert_eq!(
        ranker.changes(),
        0,
        "no change while outcomes match the evidence"
    );
    // Then it fails every time: a few failures are a change, not noise.
    for _ in 0..4 {
        outcome("fading", false);
    }
    assert_eq!(ranker.changes(), 1);
    for n in 0..12 {
        outcome("fading", false);
        outcome("steady", n % 3 != 0);
    }
    assert!(
        firsts(&ranker, &signal, &units, "steady") >= 180,
        "steady first after the change"
    );
}

/// How many of 200 rankings put `unit` first.
fn firsts(ranker: &Ranker, signal: &Signal, units: &[Arc<str>], unit: &str) -> usize {
    let now = Utc::now();
    (0..200)
        .filter(|_| {
            ranker
                .rank(signal, units, DispatchPolicy::FirstSuccess, now)
                .ranked[0]
                .unit
                .as_ref()
                == unit
        })
        .count()
}

/// An execution of `unit` at `version`, chosen first-success among competitors, started `at`.
fn outcome(
    signal: &Signal,
    unit: &str,
    version: &str,
    success: bool,
    at: DateTime<Utc>,
) -> ExecutionRecord {
    let mut r = record(signal, unit, success, 0);
    r.policy = "first_success".into();
    r.unit_version = version.parse().expect("version");
    r.started_at = at;
    r
}

/// `steady` and `deployed`, with versions in their executions.
fn competing() -> Vec<Arc<str>> {
    vec![Arc::from("steady"), Arc::from("deployed")]
}

/// Version 1 of `deployed` succeeding 40 times, about ten minutes ago; `steady` 2 in 3.
fn version_one_history(signal: &Signal) -> Vec<ExecutionRecord> {
    let mut records = Vec::new();
    for n in 0..40 {
        let mut r = record(signal, "deployed", true, 600 - n);
        r.unit_version = "1.0.0".parse().expect("version");
        records.push(r);
        records.push(record(signal, "steady", n % 3 != 0, 600 - n));
    }
    records
}

#[test]
fn a_new_version_is_judged_on_its_own_outcomes_in_every_context() {
    // Version 1 of `deployed` never fails on two families; `steady` succeeds 2 in 3. Then
    // version 2 fails twice, on the first family only.
    let signals = [
        task("my parcel has not arrived"),
        task("please refund my order"),
    ];
    let units = competing();
    let now = Utc::now();
    let (before, after) = (now - Duration::minutes(10), now - Duration::minutes(5));
    let rankers = [true, false].map(|per_version| {
        let ranker = Ranker::new(RankerConfig {
            exploration: 0.0,
            per_version,
            ..RankerConfig::default()
        });
        let outcome = |signal: &Signal, unit: &str, version: &str, success: bool, at| {
            ranker.observe(&outcome(signal, unit, version, success, at));
        };
        for n in 0..60 {
            for signal in &signals {
                outcome(signal, "deployed", "1.0.0", true, before);
                outcome(signal, "steady", "1.0.0", n % 3 != 0, before);
            }
        }
        outcome(&signals[0], "deployed", "2.0.0", false, after);
        outcome(&signals[0], "deployed", "2.0.0", false, after);
        // A late outcome of version 1 (started before version 2 was seen).
        outcome(&signals[1], "deployed", "1.0.0", true, before);
        ranker
    });
    let [per_version, blind] = &rankers;
    // The second family has not seen version 2, and no longer leans on version 1's record:
    // only version 2's two failures (through the unit's prior) speak for it.
    for signal in &signals {
        let steady = firsts(per_version, signal, &units, "steady");
        assert!(steady >= 150, "steady leads: {steady} of 200");
    }
    assert_eq!(per_version.changes(), 0, "no change had to be detected");
    // Blind to versions, the second family still trusts version 1's 60 successes.
    let steady = firsts(blind, &signals[1], &units, "steady");
    assert!(
        steady <= 20,
        "without versions, deployed leads: steady {steady} of 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_counts_only_executions_of_the_current_version() {
    let memory = InProcMemory::new().with_embedder(embedder());
    let ranker = Ranker::new(RankerConfig {
        exploration: 0.0,
        ..RankerConfig::default()
    });
    let units = competing();
    let signal = task("my parcel has not arrived");
    memory
        .record(&version_one_history(&signal))
        .await
        .expect("record");
    let now = Utc::now();
    ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, now);
    ranker.refresh(&memory, now, 10).await.expect("refresh");
    assert!(
        firsts(&ranker, &signal, &units, "deployed") >= 180,
        "version 1's record counts while it is current"
    );
    // Version 2 runs once and fails: the refresh no longer counts version 1's record.
    let failed = outcome(
        &signal,
        "deployed",
        "2.0.0",
        false,
        now - Duration::seconds(1),
    );
    ranker.observe(&failed);
    memory.record(&[failed]).await.expect("record");
    let later = now + Duration::seconds(10);
    let refreshed = ranker.refresh(&memory, later, 10).await.expect("refresh");
    assert_eq!(refreshed.contexts, 1);
    let deployed = firsts(&ranker, &signal, &units, "deployed");
    assert!(
        deployed < 100,
        "version 2 is judged on its one failure, not on version 1's 40 successes: first {deployed} of 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_learns_versions_from_memory() {
    // Another process ran version 1 of `deployed` (always succeeding), then version 2 (always
    // failing): a ranker that has run nothing yet counts only version 2.
    let memory = InProcMemory::new().with_embedder(embedder());
    let signal = task("my parcel has not arrived");
    let mut records = version_one_history(&signal);
    for n in 0..3 {
        let mut r = record(&signal, "deployed", false, 100 - n);
        r.unit_version = "2.0.0".parse().expect("version");
        records.push(r);
    }
    memory.record(&records).await.expect("record");
    let units = competing();
    let now = Utc::now();
    for per_version in [true, false] {
        let ranker = Ranker::new(RankerConfig {
            exploration: 0.0,
            per_version,
            ..RankerConfig::default()
        });
        ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, now);
        ranker.refresh(&memory, now, 10).await.expect("refresh");
        let steady = firsts(&ranker, &signal, &units, "steady");
        if per_version {
            assert!(
                steady >= 150,
                "version 2's failures decide: steady first {steady} of 200"
            );
        } else {
            assert!(
                steady <= 50,
                "blind to versions, 40 successes outweigh 3 failures: steady first {steady} of 200"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_version_is_judged_from_its_load_and_its_breaker_starts_closed() {
    use swarm_reactor::ranking::BreakerState;
    let memory = InProcMemory::new().with_embedder(embedder());
    let signal = task("my parcel has not arrived");
    memory
        .record(&version_one_history(&signal))
        .await
        .expect("record");
    let units = competing();
    let now = Utc::now();
    let ranker = Ranker::new(RankerConfig {
        exploration: 0.0,
        ..RankerConfig::default()
    });
    // The reactor loads version 1 at start: its record in memory counts.
    ranker.unit_loaded("deployed", &"1.0.0".parse().expect("version"), now);
    ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, now);
    ranker.refresh(&memory, now, 10).await.expect("refresh");
    assert!(firsts(&ranker, &signal, &units, "deployed") >= 180);
    // Version 1 then fails on every call until its breaker opens.
    let failures = ranker.config().breaker.failures;
    for n in 0..failures {
        let at = now + Duration::milliseconds(i64::from(n));
        ranker.observe(&outcome(&signal, "deployed", "1.0.0", false, at));
    }
    assert_eq!(ranker.breaker_state("deployed"), BreakerState::Open);
    let order = ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, now);
    assert_eq!(order.skipped.len(), 1, "{order:?}");

    // Version 2 is swapped in: before any of its outcomes, its breaker is closed, and neither
    // version 1's successes (in memory) nor its failures (observed) speak for it.
    let swap = now + Duration::seconds(1);
    ranker.unit_loaded("deployed", &"2.0.0".parse().expect("version"), swap);
    assert_eq!(ranker.breaker_state("deployed"), BreakerState::Closed);
    let order = ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, swap);
    assert!(order.skipped.is_empty(), "{order:?}");
    assert_eq!(order.ranked.len(), 2);
    let later = swap + Duration::seconds(10);
    ranker.refresh(&memory, later, 10).await.expect("refresh");
    // Version 2 is known only by an even prior now, against steady's record: a coin flip,
    // where version 1's 40 successes had it first nearly always.
    let deployed = firsts(&ranker, &signal, &units, "deployed");
    assert!(
        (40..=140).contains(&deployed),
        "version 2 is judged from its prior alone: deployed first {deployed} of 200"
    );
    // A late failure of a version 1 call (started before the swap) does not move the breaker.
    for _ in 0..failures {
        ranker.observe(&outcome(&signal, "deployed", "1.0.0", false, now));
    }
    assert_eq!(ranker.breaker_state("deployed"), BreakerState::Closed);
    // Loading the same version again (a new configuration) keeps what was learnt of it.
    for n in 0..40 {
        let at = swap + Duration::milliseconds(n);
        ranker.observe(&outcome(&signal, "deployed", "2.0.0", true, at));
    }
    assert!(firsts(&ranker, &signal, &units, "deployed") >= 180);
    ranker.unit_loaded("deployed", &"2.0.0".parse().expect("version"), later);
    assert!(
        firsts(&ranker, &signal, &units, "deployed") >= 180,
        "the same version keeps its record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_changes_in_two_contexts_is_judged_afresh_in_all() {
    // `fading` never failed on three families, `steady` succeeds 2 in 3; then `fading` breaks
    // and fails on the first two families until the detector sees it in each. The third family
    // has seen none of it.
    let families = [
        task("my parcel has not arrived"),
        task("please refund my order"),
        task("the blender stopped working"),
    ];
    let units: Vec<Arc<str>> = vec![Arc::from("steady"), Arc::from("fading")];
    let now = Utc::now();
    let (before, after) = (now - Duration::minutes(10), now - Duration::minutes(1));
    for unit_change_contexts in [2, 0] {
        let ranker = Ranker::new(RankerConfig {
            exploration: 0.0,
            unit_change_contexts,
            // This test is of the inference from detected changes alone.
            unit_pooled_threshold: 0.0,
            ..RankerConfig::default()
        });
        let memory = InProcMemory::new().with_embedder(embedder());
        let mut history = Vec::new();
        for n in 0..60 {
            for family in &families {
                history.push(outcome(family, "fading", "1.0.0", true, before));
                history.push(outcome(family, "steady", "1.0.0", n % 3 != 0, before));
            }
        }
        history.iter().for_each(|r| ranker.observe(r));
        let third = &families[2];
        for (i, family) in families[..2].iter().enumerate() {
            for _ in 0..6 {
                let failed = outcome(family, "fading", "1.0.0", false, after);
                ranker.observe(&failed);
                history.push(failed);
            }
            assert_eq!(ranker.changes(), i as u64 + 1, "one change per family");
            if i == 0 {
                let fading = firsts(&ranker, third, &units, "fading");
                assert!(
                    fading >= 190,
                    "a change in one context stays there: fading first {fading} of 200"
                );
            }
        }
        // What memory holds is what a refresh (this process's or a new one's) counts from.
        memory.record(&history).await.expect("record");
        ranker.refresh(&memory, now, 10).await.expect("refresh");
        let steady = firsts(&ranker, third, &units, "steady");
        if unit_change_contexts == 2 {
            // fading's record from before it broke no longer counts anywhere: it is judged on
            // its prior, made of the failures since, against steady's ~0.66.
            assert!(
                steady >= 150,
                "fading is judged afresh on the third family: steady first {steady} of 200"
            );
        } else {
            assert!(
                steady <= 10,
                "without the inference the third family still trusts fading: steady first {steady} of 200"
            );
        }
    }
}

#[test]
fn a_unit_that_falls_a_little_in_many_contexts_is_judged_afresh_in_all() {
    // `fading` succeeds 4 times in 5 on seven families, `steady` 2 in 3. Then `fading` breaks:
    // it fails once on each of six families and once more on two, never often enough in one
    // family for that family's detector. The seventh family sees none of it.
    let families: Vec<Signal> = [
        "my parcel has not arrived",
        "please refund my order",
        "the blender stopped working",
        "I was charged twice",
        "change my delivery address",
        "my discount code is rejected",
        "cancel my subscription",
    ]
    .into_iter()
    .map(task)
    .collect();
    let units: Vec<Arc<str>> = vec![Arc::from("steady"), Arc::from("fading")];
    let now = Utc::now();
    let (before, after) = (now - Duration::minutes(10), now - Duration::minutes(1));
    for pooled in [true, false] {
        let ranker = Ranker::new(RankerConfig {
            exploration: 0.0,
            unit_pooled_threshold: if pooled { 8.0 } else { 0.0 },
            ..RankerConfig::default()
        });
        // Each family's failures at its own turns, as independent failures fall.
        for n in 0..50 {
            for (i, family) in families.iter().enumerate() {
                let fine = (n + i) % 5 != 0;
                ranker.observe(&outcome(family, "fading", "1.0.0", fine, before));
                ranker.observe(&outcome(family, "steady", "1.0.0", n % 3 != 0, before));
            }
        }
        assert_eq!(
            (ranker.changes(), ranker.unit_changes()),
            (0, 0),
            "350 outcomes of each unit as predicted are no change"
        );
        let seventh = &families[6];
        assert!(firsts(&ranker, seventh, &units, "fading") >= 190);
        let falls = families[..6].iter().chain(&families[..2]);
        for family in falls {
            ranker.observe(&outcome(family, "fading", "1.0.0", false, after));
        }
        assert_eq!(
            ranker.changes(),
            0,
            "no family saw enough to tell on its own"
        );
        let steady = firsts(&ranker, seventh, &units, "steady");
        if pooled {
            assert_eq!(ranker.unit_changes(), 1, "the pooled detector saw the fall");
            // fading is judged on its prior against steady's ~0.66 on the seventh family.
            assert!(
                steady >= 140,
                "fading is judged afresh on the seventh family: steady first {steady} of 200"
            );
        } else {
            assert_eq!(ranker.unit_changes(), 0);
            assert!(
                steady <= 10,
                "without the pooled detector the seventh family still trusts fading: steady first {steady} of 200"
            );
        }
    }
}

/// A ranker that has seen `good` succeed 7 times in 10 on `signal` and `fair` 5 in 10: little
/// evidence, a clear gap.
fn good_and_fair(signal: &Signal, config: RankerConfig) -> Ranker {
    let ranker = Ranker::new(config);
    for n in 0..10 {
        ranker.observe(&outcome(signal, "good", "1.0.0", n < 7, Utc::now()));
        ranker.observe(&outcome(signal, "fair", "1.0.0", n < 5, Utc::now()));
    }
    ranker
}

#[test]
fn a_shape_evicted_from_the_ranker_comes_back_as_a_context_of_its_own() {
    let ranker = Ranker::new(RankerConfig {
        exploration: 0.0,
        max_contexts: 20,
        ..RankerConfig::default()
    });
    let units: Vec<Arc<str>> = vec![Arc::from("fair"), Arc::from("good")];
    let first = task("my parcel has not arrived");
    let at = Utc::now() - Duration::minutes(10);
    ranker.rank(&first, &units, DispatchPolicy::FirstSuccess, at);
    assert_eq!(ranker.contexts(), 1);
    // Twenty other shapes ranked since: at the twentieth the ranker is full and drops its least
    // recently used tenth, the first among them, leaving room for one.
    for n in 0..20 {
        let other = task(&format!("question number {n} about something else"));
        ranker.rank(
            &other,
            &units,
            DispatchPolicy::FirstSuccess,
            at + Duration::seconds(n + 1),
        );
        assert!(ranker.contexts() <= 20, "{} contexts", ranker.contexts());
    }
    assert!(ranker.contexts() < 20, "{} contexts", ranker.contexts());
    // Its signals find a context again, one that is among the ranker's (its fingerprint does
    // not lead to the dropped one), and learn there.
    let before = ranker.contexts();
    ranker.rank(&first, &units, DispatchPolicy::FirstSuccess, Utc::now());
    assert_eq!(ranker.contexts(), before + 1);
    for n in 0..10 {
        ranker.observe(&outcome(&first, "good", "1.0.0", n < 8, Utc::now()));
        ranker.observe(&outcome(&first, "fair", "1.0.0", n < 2, Utc::now()));
    }
    assert!(firsts(&ranker, &first, &units, "good") >= 190);
}

#[test]
fn a_concentrated_posterior_settles_sooner_and_its_propensities_say_so() {
    // `good` succeeded 7 times in 10, `fair` 5 in 10: little evidence, a clear gap.
    let signal = task("my parcel has not arrived");
    let units: Vec<Arc<str>> = vec![Arc::from("fair"), Arc::from("good")];
    let [plain, concentrated] = [1.0, 4.0].map(|concentration| {
        let ranker = good_and_fair(
            &signal,
            RankerConfig {
                exploration: 0.0,
                first_success_concentration: concentration,
                ..RankerConfig::default()
            },
        );
        let good = firsts(&ranker, &signal, &units, "good");
        // The propensity logged when good is put first.
        let propensity = (0..50)
            .map(|_| ranker.rank(&signal, &units, DispatchPolicy::FirstSuccess, Utc::now()))
            .find(|order| order.ranked[0].unit.as_ref() == "good")
            .map(|order| order.ranked[0].propensity);
        (good, propensity)
    });
    // Plain Thompson sampling still puts fair first about one time in seven.
    assert!(
        (140..=185).contains(&plain.0),
        "plain: good first {} of 200",
        plain.0
    );
    assert!(
        concentrated.0 >= 190,
        "concentrated: good first {} of 200",
        concentrated.0
    );
    // The logged propensity of putting good first follows the policy actually used.
    let (Some(p), Some(c)) = (plain.1, concentrated.1) else {
        panic!("good was never first in 50 rankings: {plain:?} {concentrated:?}");
    };
    assert!(p < 0.93 && c > 0.95, "propensities {p:.3} and {c:.3}");
}

#[test]
fn first_success_orders_by_the_means_and_top_k_samples() {
    // `good` succeeded 7 times in 10, `fair` 5 in 10: little evidence, a clear gap.
    let signal = task("my parcel has not arrived");
    let units: Vec<Arc<str>> = vec![Arc::from("fair"), Arc::from("good")];
    let first = |ranker: &Ranker, policy: DispatchPolicy| {
        let orders: Vec<_> = (0..2000)
            .map(|_| ranker.rank(&signal, &units, policy, Utc::now()))
            .collect();
        let good = orders
            .iter()
            .filter(|o| o.ranked[0].unit.as_ref() == "good")
            .count();
        let least = orders
            .iter()
            .flat_map(|o| o.ranked.iter().map(|c| c.propensity))
            .fold(f64::INFINITY, f64::min);
        let good_first = orders
            .iter()
            .find(|o| o.ranked[0].unit.as_ref() == "good")
            .map(|o| o.ranked[0].propensity);
        (good, least, good_first)
    };

    // Without exploration: first-success puts the better mean first every time, and says so;
    // top-1 still samples, and puts fair first now and then.
    let ranker = good_and_fair(
        &signal,
        RankerConfig {
            exploration: 0.0,
            ..RankerConfig::default()
        },
    );
    let (good, _, p) = first(&ranker, DispatchPolicy::FirstSuccess);
    assert_eq!(good, 2000, "first-success: good first {good} of 2000");
    assert!(
        p.is_some_and(|p| p > 0.999),
        "first-success propensity {p:?}"
    );
    let (good, _, p) = first(&ranker, DispatchPolicy::TopK { k: 1 });
    assert!(
        (1700..2000).contains(&good),
        "top-1: good first {good} of 2000"
    );
    assert!(p.is_some_and(|p| p < 0.99), "top-1 propensity {p:?}");

    // With the default exploration, first-success still tries fair first sometimes, and no
    // logged propensity falls below the random order's share (off-policy evaluation can weigh
    // every order).
    let ranker = good_and_fair(&signal, RankerConfig::default());
    let (good, least, _) = first(&ranker, DispatchPolicy::FirstSuccess);
    let floor = RankerConfig::default().exploration / 2.0;
    assert!(
        (1900..2000).contains(&good),
        "first-success with exploration: good first {good} of 2000"
    );
    assert!(least >= floor, "least propensity {least} below {floor}");
}

/// No exploration, and no circuit breaker (a unit that always fails stays ranked, not skipped).
fn quiet_breakers() -> RankerConfig {
    let mut config = RankerConfig {
        exploration: 0.0,
        ..RankerConfig::default()
    };
    config.breaker.failures = 0;
    config
}

/// A ranker that has seen `refunds` handle three phrasings of refund requests (and `couriers`
/// fail them) and the other way round for three of late deliveries, each phrasing placed by its
/// vector from `memory`, with `per_phrasing` outcomes of each unit on each. Over the kind, the
/// two units did alike.
async fn taught(memory: &InProcMemory, config: RankerConfig, per_phrasing: usize) -> Ranker {
    let ranker = Ranker::new(config);
    let now = Utc::now();
    let families = [
        (
            [
                "please refund my order",
                "refund the double charge on my card",
                "I want my money back for the broken kettle",
            ],
            "refunds",
        ),
        (
            [
                "my parcel has not arrived",
                "the courier lost my package",
                "delivery is three days late",
            ],
            "couriers",
        ),
    ];
    for (texts, handler) in families {
        for text in texts {
            let signal = task(text);
            let new = ranker.unplaced([&signal], now);
            ranker.place(memory, &new).await.expect("place");
            for _ in 0..per_phrasing {
                for unit in ["couriers", "refunds"] {
                    let mut r = record(&signal, unit, unit == handler, 0);
                    r.policy = "first_success".into();
                    ranker.observe(&r);
                }
            }
        }
    }
    ranker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shape_borrows_from_its_nearest_placed_shapes_on_its_first_signal() {
    let memory = InProcMemory::new().with_embedder(embedder());
    let units: Vec<Arc<str>> = vec![Arc::from("couriers"), Arc::from("refunds")];
    let config = quiet_breakers();
    let ranker = taught(&memory, config.clone(), 10).await;
    let fresh = task("can I get a refund for the damaged toaster");
    let now = Utc::now();
    assert_eq!(
        ranker
            .place(&memory, &ranker.unplaced([&fresh], now))
            .await
            .expect("place"),
        1
    );
    assert!(ranker.unplaced([&fresh], now).is_empty());
    assert_eq!(
        ranker
            .place(&memory, &ranker.unplaced([&fresh], now))
            .await
            .expect("place"),
        0,
        "a shape is placed once"
    );
    let order = ranker.rank(&fresh, &units, DispatchPolicy::FirstSuccess, now);
    assert!(order.skipped.is_empty());
    assert_eq!(order.ranked[0].unit.as_ref(), "refunds", "{order:?}");
    assert!(order.ranked[0].propensity > 0.9, "{order:?}");
    assert!(firsts(&ranker, &fresh, &units, "refunds") >= 190);

    // With sharing off the same first signal has only the units' rates over the kind.
    let alone = taught(
        &memory,
        RankerConfig {
            share_neighbours: 0,
            ..config
        },
        10,
    )
    .await;
    assert_eq!(
        alone
            .place(&memory, &alone.unplaced([&fresh], now))
            .await
            .expect("place"),
        0
    );
    let order = alone.rank(&fresh, &units, DispatchPolicy::FirstSuccess, now);
    assert_eq!(order.ranked.len(), 2, "{order:?}");
    assert!(order.ranked[0].propensity < 0.9, "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shape_whose_own_outcomes_disagree_with_its_neighbours_follows_its_own() {
    let memory = InProcMemory::new().with_embedder(embedder());
    let units: Vec<Arc<str>> = vec![Arc::from("couriers"), Arc::from("refunds")];
    let ranker = taught(&memory, quiet_breakers(), 30).await;
    // A refund-like shape where it is the other way round.
    let odd = task("refund owed to me for the returned kettle");
    let now = Utc::now();
    ranker
        .place(&memory, &ranker.unplaced([&odd], now))
        .await
        .expect("place");
    assert!(
        firsts(&ranker, &odd, &units, "refunds") >= 150,
        "before any outcome of its own it follows its neighbours"
    );
    for _ in 0..6 {
        for (unit, success) in [("refunds", false), ("couriers", true)] {
            let mut r = record(&odd, unit, success, 0);
            r.policy = "first_success".into();
            ranker.observe(&r);
        }
    }
    assert!(
        firsts(&ranker, &odd, &units, "couriers") >= 190,
        "its own outcomes decide once they clearly disagree with its neighbours'"
    );
}
