//! Checks a placed order: it needs an id and at least one item with a positive quantity.

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct OrderValidate;

impl Unit for OrderValidate {
    fn manifest() -> Manifest {
        Manifest::new("order-validate", env!("CARGO_PKG_VERSION"))
            .subscribes(["order.placed"])
            .emits(["order.validated", "order.rejected"])
    }

    fn new(_config: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }

    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        let order = &signal.payload;
        let items = order["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let problem = if order["id"].is_null() {
            Some("order has no id")
        } else if items.is_empty() {
            Some("order has no items")
        } else if items.iter().any(|i| i["qty"].as_u64().unwrap_or(0) == 0) {
            Some("every item needs a positive integer qty")
        } else {
            None
        };
        Ok(vec![match problem {
            Some(reason) => Emit::new(
                "order.rejected",
                json!({ "id": order["id"], "reason": reason }),
            ),
            None => Emit::new("order.validated", order.clone()),
        }])
    }
}

export_unit!(OrderValidate);
