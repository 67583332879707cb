//! The harness's host: a unit's capability calls work in its own tests, in memory, on a clock
//! the test moves; what the manifest does not declare is denied.

use std::time::Duration;

use serde_json::{Value, json};
use swarm_sdk::{
    Emit, Harness, HostErrorKind, Manifest, Signal, Unit, UnitError, http, kv, log, marks,
};

struct Trail;

impl Unit for Trail {
    fn manifest() -> Manifest {
        Manifest::new("trail", "1.0.0")
            .subscribes(["food.found", "look", "fetch"])
            .emits(["seen"])
            .uses_marks()
            .uses_kv()
    }

    fn new(_config: &Value) -> Result<Self, UnitError> {
        Ok(Trail)
    }

    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        match signal.kind.as_str() {
            "food.found" => {
                let site = signal.payload["site"].as_str().unwrap_or("x");
                let value = marks::deposit(&format!("site.{site}"), 2.0)?;
                let count: u64 = kv::get("count")?.unwrap_or(0);
                kv::set("count", &(count + 1), Some(Duration::from_secs(15)))?;
                log::info(format!("laid {site}"));
                Ok(vec![Emit::new("seen", json!({"value": value}))])
            }
            "look" => {
                let best = marks::strongest("site.")?;
                Ok(vec![Emit::new(
                    "seen",
                    json!({"best": best.map(|m| m.key)}),
                )])
            }
            _ => {
                let error = http::get("http://127.0.0.1:9/").expect_err("not declared");
                Ok(vec![Emit::new(
                    "seen",
                    json!({"kind": format!("{:?}", error.kind()), "error": error.message()}),
                )])
            }
        }
    }
}

#[test]
fn marks_kv_and_log_work_in_the_harness() {
    let unit = Harness::<Trail>::new(Value::Null).expect("loads");
    unit.set_half_life(Duration::from_secs(10));
    let out = unit
        .send("food.found", json!({"site": "north"}))
        .expect("runs");
    assert_eq!(out[0].payload["value"], 2.0);
    unit.send("food.found", json!({"site": "south"}))
        .expect("runs");
    unit.send("food.found", json!({"site": "south"}))
        .expect("runs");
    assert_eq!(unit.mark("site.south"), 4.0);
    let look = unit.send("look", json!({})).expect("runs");
    assert_eq!(look[0].payload["best"], "site.south");
    assert_eq!(unit.kv("count"), Some(json!(3)));
    let logs: Vec<String> = unit.logs().into_iter().map(|r| r.message).collect();
    assert_eq!(logs, ["laid north", "laid south", "laid south"]);

    // One half-life later the marks read half; the kv entry outlives it, then expires.
    unit.advance(Duration::from_secs(10));
    assert_eq!(unit.mark("site.south"), 2.0);
    assert_eq!(unit.mark("site.north"), 1.0);
    assert_eq!(unit.kv("count"), Some(json!(3)));
    unit.advance(Duration::from_secs(5));
    assert_eq!(unit.kv("count"), None);
}

#[test]
fn undeclared_capabilities_are_denied_in_the_harness_too() {
    let unit = Harness::<Trail>::new(Value::Null).expect("loads");
    let out = unit.send("fetch", json!({})).expect("runs");
    assert_eq!(
        out[0].payload["kind"],
        format!("{:?}", HostErrorKind::Denied)
    );
    assert!(
        out[0].payload["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not declare the `http` capability")),
        "{}",
        out[0].payload
    );
}

#[test]
fn the_field_passes_to_the_next_version() {
    let unit = Harness::<Trail>::new(Value::Null).expect("loads");
    unit.send("food.found", json!({"site": "east"}))
        .expect("runs");
    let next = unit.upgrade::<Trail>(Value::Null).expect("upgrades");
    assert_eq!(next.mark("site.east"), 2.0);
    assert_eq!(next.kv("count"), Some(json!(1)));
}
