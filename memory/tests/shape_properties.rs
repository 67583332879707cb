//! Properties of shape extraction over generated payloads: it never fails, stays within its
//! bounds, is the same for payloads that differ only in their numbers, and is the
//! same for id-like strings whatever the id; and fingerprints, equal only for equal shapes and
//! unmoved by numbers and ids.

use proptest::prelude::*;
use serde_json::{Map, Value};
use swarm_memory::{MAX_SHAPE_CHARS, Shape};
use swarm_schemas::Signal;

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,80}".prop_map(Value::String),
    ];
    leaf.prop_recursive(10, 200, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// JSON from a few keys and strings (ids, words, a word in another case), so that different
/// payloads often have equal shapes or equal fingerprints.
fn few() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..3).prop_map(Value::from),
        prop::sample::select(vec![
            "card refused",
            "Card refused",
            " card refused",
            "ord-1",
            "ord-22",
            "x"
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[ab]", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn fingerprint(kind: &str, payload: Value) -> u128 {
    Shape::fingerprint(&Signal::new(kind, payload))
}

/// The same value with every number replaced by another.
fn renumbered(value: &Value, seed: i64) -> Value {
    match value {
        Value::Number(_) => Value::from(seed.wrapping_mul(31).wrapping_add(7)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| renumbered(v, seed + 1)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), renumbered(v, seed + 2)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn shape(kind: &str, payload: Value) -> Shape {
    Shape::of(&Signal::new(kind, payload))
}

proptest! {
    #[test]
    fn any_payload_has_a_bounded_shape(payload in json(), kind in "[a-z]{1,12}(\\.[a-z]{1,12}){0,3}") {
        let got = shape(&kind, payload.clone());
        prop_assert!(got.text.len() <= MAX_SHAPE_CHARS.max(kind.len()), "{} chars", got.text.len());
        prop_assert!(got.text.starts_with(&kind.replace('.', " ")));
        prop_assert_eq!(got.kind, kind.clone());
        // The same signal content, another signal: the same shape.
        prop_assert_eq!(shape(&kind, payload).id, got.id);
    }

    #[test]
    fn numbers_do_not_change_a_shape(payload in json(), seed in any::<i64>()) {
        prop_assert_eq!(
            shape("k", payload.clone()).text,
            shape("k", renumbered(&payload, seed)).text
        );
    }

    #[test]
    fn ids_are_masked_whatever_their_value(a in "[a-z]{2,6}-[0-9]{1,9}", b in "[a-z]{2,6}-[0-9]{1,9}") {
        let with = |id: &str| shape("order.placed", serde_json::json!({ "order": id, "note": "gift wrap" }));
        prop_assert_eq!(with(&a).id, with(&b).id);
        prop_assert!(with(&a).text.contains("note: gift wrap"));
    }

    #[test]
    fn equal_fingerprints_have_equal_shapes(a in few(), b in few(), kind in "[ab]\\.[ab]") {
        if fingerprint(&kind, a.clone()) == fingerprint(&kind, b.clone()) {
            prop_assert_eq!(shape(&kind, a.clone()), shape(&kind, b));
        }
        prop_assert_ne!(fingerprint("a.a", a.clone()), fingerprint("a.b", a));
    }

    #[test]
    fn numbers_and_ids_do_not_change_a_fingerprint(payload in json(), seed in any::<i64>(), a in "[a-z]{2,6}-[0-9]{1,9}", b in "[a-z]{2,6}-[0-9]{1,9}") {
        prop_assert_eq!(fingerprint("k", payload.clone()), fingerprint("k", renumbered(&payload, seed)));
        let with = |id: &str| fingerprint("order.placed", serde_json::json!({ "order": id, "note": "gift wrap" }));
        prop_assert_eq!(with(&a), with(&b));
    }
}

/// The implication above is only worth something if equal fingerprints are common among the
/// generated payloads, and shapes that are equal while fingerprints differ (case, spaces) too.
#[test]
fn the_few_payloads_collide_often() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let payloads: Vec<Value> = (0..400)
        .map(|_| few().new_tree(&mut runner).map(|t| t.current()))
        .collect::<Result<_, _>>()
        .expect("generate");
    let seen: Vec<(u128, Shape)> = payloads
        .iter()
        .map(|p| (fingerprint("k", p.clone()), shape("k", p.clone())))
        .collect();
    let (mut same_fingerprint, mut same_shape_only, mut different) = (0, 0, 0);
    for (i, (fa, sa)) in seen.iter().enumerate() {
        for (j, (fb, sb)) in seen.iter().enumerate().skip(i + 1) {
            if fa == fb {
                assert_eq!(sa, sb, "{} {}", payloads[i], payloads[j]);
                same_fingerprint += 1;
            } else if sa == sb {
                same_shape_only += 1;
            } else {
                different += 1;
            }
        }
    }
    assert!(
        same_fingerprint > 100,
        "{same_fingerprint} pairs with equal fingerprints"
    );
    assert!(
        same_shape_only > 10,
        "{same_shape_only} pairs of one shape, other fingerprints"
    );
    assert!(different > 1_000, "{different}");
}
