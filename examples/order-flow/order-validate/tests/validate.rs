//! order-validate through the SDK harness.

use serde_json::{Value, json};
use swarm_sdk::Harness;

#[test]
fn valid_orders_pass_and_bad_ones_are_rejected_with_a_reason() {
    let unit = Harness::<order_validate::OrderValidate>::new(Value::Null).expect("loads");
    let ok = unit
        .send(
            "order.placed",
            json!({"id": 1, "items": [{"sku": "tea", "qty": 2}]}),
        )
        .expect("handles");
    assert_eq!(ok[0].kind, "order.validated");
    let bad = unit
        .send("order.placed", json!({"id": 2, "items": []}))
        .expect("handles");
    assert_eq!(bad[0].kind, "order.rejected");
    assert_eq!(bad[0].payload["reason"], "order has no items");
}
