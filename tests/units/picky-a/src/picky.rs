// Shared by the `picky-a` and `picky-b` fixtures: a unit competing for `task` signals
// (first-success by its manifest) that fails on the payloads its config names.
//
// Config: {"fail_topic": "refund"} fails tasks whose `topic` is that; {"fail_flag": "broken"}
// fails tasks whose payload has that key set to true; {"fail_odd": true} fails tasks whose `n`
// is odd; {"fail_words": ["refund", ...]} fails tasks whose `text` has one of those words. On
// success it emits `task.done` with its name.

use serde_json::{Value, json};
use swarm_sdk::{DispatchPolicy, Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Picky {
    config: Value,
}

impl Unit for Picky {
    fn manifest() -> Manifest {
        Manifest::new(NAME, env!("CARGO_PKG_VERSION"))
            .subscribes(["task"])
            .emits(["task.done"])
            .dispatch(DispatchPolicy::FirstSuccess)
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "fail_topic": {"type": "string"},
                    "fail_flag": {"type": "string"},
                    "fail_odd": {"type": "boolean"},
                    "fail_words": {"type": "array", "items": {"type": "string"}}
                },
                "additionalProperties": false
            }))
    }
    fn new(config: &Value) -> Result<Self, UnitError> {
        Ok(Self {
            config: config.clone(),
        })
    }
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        let p = &signal.payload;
        if let Some(topic) = self.config["fail_topic"].as_str() {
            if p["topic"] == json!(topic) {
                return Err(UnitError::new(format!("{NAME} cannot do {topic}")));
            }
        }
        if let Some(flag) = self.config["fail_flag"].as_str() {
            if p[flag] == json!(true) {
                return Err(UnitError::new(format!("{NAME} is {flag}")));
            }
        }
        if self.config["fail_odd"] == json!(true) && p["n"].as_u64().is_some_and(|n| n % 2 == 1) {
            return Err(UnitError::new(format!("{NAME} fails odd tasks")));
        }
        if let (Some(words), Some(text)) = (self.config["fail_words"].as_array(), p["text"].as_str()) {
            let text = text.to_lowercase();
            let hit = words
                .iter()
                .filter_map(Value::as_str)
                .find(|w| text.split(|c: char| !c.is_alphanumeric()).any(|t| t == *w));
            if let Some(word) = hit {
                return Err(UnitError::new(format!("{NAME} cannot do `{word}`")));
            }
        }
        Ok(vec![Emit::new("task.done", json!({ "by": NAME, "n": p["n"] }))])
    }
}

export_unit!(Picky);
