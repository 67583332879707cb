//! Properties of shape extraction over generated payloads: it never fails, stays within its
//! bounds, is the same for payloads that differ only in their numbers, and is the
//! same for id-like strings whatever the id.

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
}
