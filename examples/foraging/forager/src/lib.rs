//! The forager: when food is found at a site, it deposits on that site's mark (`site.<name>`)
//! in proportion to the amount found, and says so. It knows nothing of who reads the marks.

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit, log, marks};

/// The mark of a site: `site.<name>`, for a name of lowercase letters, digits and dashes.
pub fn trail_key(site: &str) -> Result<String, UnitError> {
    let ok = !site.is_empty()
        && site.len() <= 64
        && site
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(format!("site.{site}"))
    } else {
        Err(UnitError::new(format!(
            "site `{site}` is not a name of lowercase letters, digits and dashes"
        )))
    }
}

/// How much food was found: a positive, finite amount (default 1).
pub fn amount(payload: &Value) -> Result<f64, UnitError> {
    match payload.get("amount") {
        None => Ok(1.0),
        Some(v) => v
            .as_f64()
            .filter(|a| a.is_finite() && *a > 0.0)
            .ok_or_else(|| UnitError::new(format!("amount must be a positive number, not {v}"))),
    }
}

/// The forager.
pub struct Forager;

impl Unit for Forager {
    fn manifest() -> Manifest {
        Manifest::new("forager", env!("CARGO_PKG_VERSION"))
            .subscribes(["food.found"])
            .emits(["trail.laid"])
            .uses_marks()
    }

    fn new(_config: &Value) -> Result<Self, UnitError> {
        Ok(Forager)
    }

    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        let site = signal.payload["site"]
            .as_str()
            .ok_or_else(|| UnitError::new("food.found needs a `site`"))?;
        let key = trail_key(site)?;
        let strength = marks::deposit(&key, amount(&signal.payload)?)?;
        log::event(log::Level::Info, "trail laid", [("site", json!(site))]);
        Ok(vec![Emit::new(
            "trail.laid",
            json!({"site": site, "strength": strength}),
        )])
    }
}

export_unit!(Forager);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_and_amounts_are_checked() {
        assert_eq!(trail_key("north-2").ok().as_deref(), Some("site.north-2"));
        assert!(trail_key("North").is_err());
        assert!(trail_key("").is_err());
        assert_eq!(amount(&json!({})).ok(), Some(1.0));
        assert_eq!(amount(&json!({"amount": 2.5})).ok(), Some(2.5));
        assert!(amount(&json!({"amount": -1})).is_err());
        assert!(amount(&json!({"amount": "lots"})).is_err());
    }

    #[test]
    fn food_lays_a_trail_that_evaporates() {
        let unit = swarm_sdk::Harness::<Forager>::new(Value::Null).expect("loads");
        unit.set_half_life(std::time::Duration::from_secs(60));
        let out = unit
            .send("food.found", json!({"site": "north", "amount": 3}))
            .expect("lays");
        assert_eq!(out[0].payload, json!({"site": "north", "strength": 3.0}));
        unit.send("food.found", json!({"site": "north"}))
            .expect("lays");
        assert_eq!(unit.mark("site.north"), 4.0);
        unit.advance(std::time::Duration::from_secs(120));
        assert_eq!(unit.mark("site.north"), 1.0, "two half-lives later");
        assert!(unit.send("food.found", json!({"site": "North"})).is_err());
    }
}
