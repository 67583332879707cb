//! Ships priced orders by standard post: slower, takes anything.

use serde_json::{Value, json};
use swarm_sdk::{DispatchPolicy, Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct FulfilStandard;

impl Unit for FulfilStandard {
    fn manifest() -> Manifest {
        Manifest::new("fulfil-standard", env!("CARGO_PKG_VERSION"))
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
        let days = if signal.payload["total_cents"].as_u64().unwrap_or(0) > 100_000 {
            7
        } else {
            3
        };
        Ok(vec![Emit::new(
            "order.fulfilled",
            json!({ "id": signal.payload["id"], "carrier": "standard", "days": days }),
        )])
    }
}

export_unit!(FulfilStandard);
