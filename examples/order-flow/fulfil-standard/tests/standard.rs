//! fulfil-standard through the SDK harness.

use serde_json::{Value, json};
use swarm_sdk::Harness;

#[test]
fn anything_ships_and_large_orders_take_longer() {
    let unit = Harness::<fulfil_standard::FulfilStandard>::new(Value::Null).expect("loads");
    let small = unit
        .send("order.priced", json!({"id": 1, "total_cents": 900}))
        .expect("ships");
    let large = unit
        .send("order.priced", json!({"id": 2, "total_cents": 250_000}))
        .expect("ships");
    assert_eq!(
        (
            small[0].payload["days"].as_u64(),
            large[0].payload["days"].as_u64()
        ),
        (Some(3), Some(7))
    );
}
