//! The unit configuration file (`--unit-config`), as the reactor parses it, each section then
//! checked as the loader checks it against the config schema of a unit of that name: the
//! example units' schemas, and no schema at all.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use swarm_reactor::fuzzing;
use swarm_schemas::UnitManifest;

/// Manifests with the example units' config schemas (scout's, order-price's), and one without.
static MANIFESTS: LazyLock<Vec<UnitManifest>> = LazyLock::new(|| {
    [
        serde_json::json!({
            "name": "scout", "version": "0.1.0", "subscribes": ["scout.tick"],
            "config_schema": {
                "type": "object",
                "properties": {"reinforce": {"type": "number", "minimum": 0}},
                "additionalProperties": false
            }
        }),
        serde_json::json!({
            "name": "order-price", "version": "0.1.0", "subscribes": ["order.validated"],
            "config_schema": {"type": "object", "properties": {"prices": {"type": "object"}}}
        }),
        serde_json::json!({"name": "plain", "version": "0.1.0", "subscribes": ["a.b"]}),
    ]
    .into_iter()
    .map(|m| serde_json::from_value(m).expect("a manifest"))
    .collect()
});

fuzz_target!(|data: &[u8]| {
    // The file is read as text: bytes that are not UTF-8 are refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = swarm_reactor::parse_unit_config(text) else {
        return;
    };
    for manifest in MANIFESTS.iter() {
        let section = config.get(&manifest.name);
        match fuzzing::unit_config(manifest, section) {
            Ok(given) => {
                if manifest.config_schema.is_none() {
                    assert_eq!(Some(&given), section.or(Some(&serde_json::Value::Null)));
                }
            }
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
});
