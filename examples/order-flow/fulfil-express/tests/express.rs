//! fulfil-express through the SDK harness.

use serde_json::{Value, json};
use swarm_sdk::{Harness, HarnessError};

#[test]
fn small_orders_ship_and_large_ones_are_refused() {
    let unit = Harness::<fulfil_express::FulfilExpress>::new(Value::Null).expect("loads");
    let out = unit
        .send("order.priced", json!({"id": 1, "total_cents": 900}))
        .expect("ships");
    assert_eq!(out[0].payload["carrier"], "express");
    let err = unit
        .send("order.priced", json!({"id": 2, "total_cents": 250_000}))
        .expect_err("must fail");
    assert!(matches!(err, HarnessError::Error(m) if m.contains("refuses")));
}
