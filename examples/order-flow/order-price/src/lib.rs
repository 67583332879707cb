//! Prices a validated order from a price list (configurable; a default list otherwise).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit, with its price list in cents.
pub struct OrderPrice {
    prices: BTreeMap<String, u64>,
}

impl Unit for OrderPrice {
    fn manifest() -> Manifest {
        Manifest::new("order-price", env!("CARGO_PKG_VERSION"))
            .subscribes(["order.validated"])
            .emits(["order.priced"])
            .depends_on("order-validate", "^1")
            .config_schema(json!({"type": "object", "properties": {"prices": {"type": "object"}}}))
    }

    fn new(config: &Value) -> Result<Self, UnitError> {
        let prices = match config.get("prices") {
            Some(prices) => serde_json::from_value(prices.clone())?,
            None => [("tea", 450), ("cake", 320), ("piano", 250_000)]
                .map(|(k, v)| (k.to_owned(), v))
                .into(),
        };
        Ok(Self { prices })
    }

    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        let mut total = 0u64;
        for item in signal.payload["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let sku = item["sku"].as_str().unwrap_or_default();
            let price = self
                .prices
                .get(sku)
                .ok_or_else(|| UnitError::new(format!("no price for `{sku}`")))?;
            total += price * item["qty"].as_u64().unwrap_or(0);
        }
        Ok(vec![Emit::new(
            "order.priced",
            json!({ "id": signal.payload["id"], "total_cents": total }),
        )])
    }
}

export_unit!(OrderPrice);
