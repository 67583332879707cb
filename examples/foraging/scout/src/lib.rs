//! The scout: on each `scout.tick` it senses the trails (`site.*` marks) and goes where the
//! strongest leads, or idles when every trail has evaporated. It knows nothing of who laid
//! them. With `reinforce` configured it adds to the trail it follows, as recruited ants do.

use serde_json::{Value, json};
use swarm_sdk::marks::Mark;
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit, marks};

/// Marks weaker than this count as no trail.
pub const FAINT: f64 = 1e-3;

/// Where the strongest trail leads: the site, its strength and its share of all trails.
pub fn choose(trails: &[Mark]) -> Option<(String, f64, f64)> {
    let total: f64 = trails.iter().map(|m| m.value.max(0.0)).sum();
    let best = trails
        .iter()
        .filter(|m| m.value >= FAINT)
        .max_by(|a, b| a.value.total_cmp(&b.value).then_with(|| b.key.cmp(&a.key)))?;
    let site = best.key.strip_prefix("site.")?.to_owned();
    Some((site, best.value, best.value / total))
}

/// The scout.
pub struct Scout {
    reinforce: f64,
}

impl Unit for Scout {
    fn manifest() -> Manifest {
        Manifest::new("scout", env!("CARGO_PKG_VERSION"))
            .subscribes(["scout.tick"])
            .emits(["scout.sent", "scout.idle"])
            .uses_marks()
            .config_schema(json!({
                "type": "object",
                "properties": {"reinforce": {"type": "number", "minimum": 0}},
                "additionalProperties": false
            }))
    }

    fn new(config: &Value) -> Result<Self, UnitError> {
        Ok(Scout {
            reinforce: config["reinforce"].as_f64().unwrap_or(0.0),
        })
    }

    fn handle(&self, _signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        let (trails, _) = marks::sense_prefix("site.")?;
        let Some((site, strength, share)) = choose(&trails) else {
            return Ok(vec![Emit::new(
                "scout.idle",
                json!({"trails": trails.len()}),
            )]);
        };
        if self.reinforce > 0.0 {
            marks::deposit(&format!("site.{site}"), self.reinforce)?;
        }
        Ok(vec![Emit::new(
            "scout.sent",
            json!({"site": site, "strength": strength, "share": share}),
        )])
    }
}

export_unit!(Scout);

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(key: &str, value: f64) -> Mark {
        Mark {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn the_strongest_trail_wins_and_faint_ones_are_none() {
        let trails = [mark("site.north", 1.0), mark("site.south", 3.0)];
        assert_eq!(choose(&trails), Some(("south".into(), 3.0, 0.75)));
        assert_eq!(choose(&[mark("site.gone", 1e-6)]), None);
        assert_eq!(choose(&[]), None);
    }
}
