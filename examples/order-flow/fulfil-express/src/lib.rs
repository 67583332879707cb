//! Ships priced orders by express courier; the courier refuses orders over 500.00.

use serde_json::{Value, json};
use swarm_sdk::{DispatchPolicy, Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct FulfilExpress;

impl Unit for FulfilExpress {
    fn manifest() -> Manifest {
        Manifest::new("fulfil-express", env!("CARGO_PKG_VERSION"))
            .subscribes(["order.priced"])
            .emits(["order.fulfilled"])
            // Competes with the other fulfilment unit: one of them ships each order, the one
            // ranked first, and the other only if it fails.
            .dispatch(DispatchPolicy::FirstSuccess)
    }

    fn new(_config: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }

    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        let total = signal.payload["total_cents"]
            .as_u64()
            .ok_or_else(|| UnitError::new("no total_cents"))?;
        if total > 50_000 {
            return Err(UnitError::new(format!(
                "express courier refuses orders over 500.00 (this one is {total} cents)"
            )));
        }
        Ok(vec![Emit::new(
            "order.fulfilled",
            json!({ "id": signal.payload["id"], "carrier": "express", "days": 1 }),
        )])
    }
}

export_unit!(FulfilExpress);
