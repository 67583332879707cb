//! The harness drives units through the real ABI entry points: success, error, panic,
//! undeclared emits, bad manifests and constructor failures all come back as the host sees them.

use serde_json::{Value, json};
use swarm_sdk::{Emit, Harness, HarnessError, Manifest, Signal, Unit, UnitError};

struct Doubler;

impl Unit for Doubler {
    fn manifest() -> Manifest {
        Manifest::new("doubler", "1.0.0")
            .subscribes(["number.*"])
            .emits(["number.doubled"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Doubler)
    }
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        match signal.payload["n"].as_i64() {
            Some(13) => panic!("unlucky number"),
            Some(99) => Ok(vec![Emit::new("number.tripled", json!({}))]),
            Some(n) => Ok(vec![Emit::new("number.doubled", json!({ "n": n * 2 }))]),
            None => Err(UnitError::new("payload has no integer `n`")),
        }
    }
}

#[test]
fn a_unit_handles_signals_through_the_abi() {
    let unit = Harness::<Doubler>::new(Value::Null).expect("loads");
    assert_eq!(unit.manifest().name, "doubler");
    let emits = unit
        .send("number.given", json!({"n": 21}))
        .expect("handles");
    assert_eq!(emits, vec![Emit::new("number.doubled", json!({"n": 42}))]);
}

#[test]
fn errors_panics_and_undeclared_emits_are_failures_not_crashes() {
    let unit = Harness::<Doubler>::new(Value::Null).expect("loads");
    assert_eq!(
        unit.send("number.given", json!({})),
        Err(HarnessError::Error("payload has no integer `n`".into()))
    );
    let panic = unit
        .send("number.given", json!({"n": 13}))
        .expect_err("panics");
    let HarnessError::Panic(message) = panic else {
        panic!("a panic: {panic}")
    };
    assert!(
        message.starts_with("unlucky number (at units/sdk/tests/harness.rs:"),
        "{message}"
    );
    let err = unit
        .send("number.given", json!({"n": 99}))
        .expect_err("must fail");
    assert!(
        matches!(&err, HarnessError::BadOutput(m) if m.contains("number.tripled")),
        "{err}"
    );
    // The instance still works after a panic.
    assert!(unit.send("number.given", json!({"n": 1})).is_ok());
}

struct Configured {
    factor: i64,
}

impl Unit for Configured {
    fn manifest() -> Manifest {
        Manifest::new("configured", "0.1.0").subscribes(["x"])
    }
    fn new(config: &Value) -> Result<Self, UnitError> {
        match config["factor"].as_i64() {
            Some(0) => panic!("factor 0 is a constructor panic"),
            Some(factor) => Ok(Self { factor }),
            None => Err(UnitError::new("config needs an integer `factor`")),
        }
    }
    fn handle(&self, _: &Signal) -> Result<Vec<Emit>, UnitError> {
        Err(UnitError::new(format!("factor {}", self.factor)))
    }
}

#[test]
fn constructor_errors_and_panics_are_reported() {
    assert_eq!(
        Harness::<Configured>::new(json!({})).err(),
        Some(HarnessError::Error(
            "config needs an integer `factor`".into()
        ))
    );
    let panic = Harness::<Configured>::new(json!({"factor": 0})).err();
    assert!(
        matches!(&panic, Some(HarnessError::Panic(m)) if m.starts_with("factor 0 is a constructor panic (at ")),
        "{panic:?}"
    );
    let unit = Harness::<Configured>::new(json!({"factor": 3})).expect("loads");
    assert_eq!(
        unit.send("x", json!({})),
        Err(HarnessError::Error("factor 3".into()))
    );
}

struct BadName;

impl Unit for BadName {
    fn manifest() -> Manifest {
        Manifest::new("Bad Name", "1.0.0").subscribes(["x"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(BadName)
    }
    fn handle(&self, _: &Signal) -> Result<Vec<Emit>, UnitError> {
        Ok(vec![])
    }
}

#[test]
fn a_bad_manifest_is_refused_before_the_unit_is_created() {
    let err = Harness::<BadName>::new(Value::Null).expect_err("refused");
    assert!(
        matches!(&err, HarnessError::BadManifest(m) if m.contains("Bad Name")),
        "{err}"
    );
}
