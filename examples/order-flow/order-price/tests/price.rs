//! order-price through the SDK harness.

use serde_json::{Value, json};
use swarm_sdk::{Harness, HarnessError};

#[test]
fn totals_come_from_the_price_list_and_unknown_items_fail() {
    let unit = Harness::<order_price::OrderPrice>::new(Value::Null).expect("loads");
    let out = unit
        .send(
            "order.validated",
            json!({"id": 1, "items": [{"sku": "tea", "qty": 2}]}),
        )
        .expect("prices");
    assert_eq!(out[0].payload["total_cents"], 900);
    let err = unit
        .send(
            "order.validated",
            json!({"id": 1, "items": [{"sku": "gold", "qty": 1}]}),
        )
        .expect_err("must fail");
    assert_eq!(err, HarnessError::Error("no price for `gold`".into()));
    let custom =
        Harness::<order_price::OrderPrice>::new(json!({"prices": {"gold": 7}})).expect("loads");
    let out = custom
        .send(
            "order.validated",
            json!({"id": 1, "items": [{"sku": "gold", "qty": 3}]}),
        )
        .expect("prices");
    assert_eq!(out[0].payload["total_cents"], 21);
}
