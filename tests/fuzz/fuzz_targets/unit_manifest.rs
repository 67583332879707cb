//! The manifest a unit library's `manifest()` writes, as the loader decodes and validates it,
//! and, when it declares a config schema, that schema compiled and a configuration checked
//! against it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_reactor::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = fuzzing::manifest(data) else {
        return;
    };
    // A manifest that passed encodes, and reads back as a manifest that passes.
    let again = serde_json::to_vec(&manifest).expect("a manifest encodes");
    let read_back = fuzzing::manifest(&again).expect("a valid manifest, encoded, reads back");
    assert_eq!(
        (
            &read_back.name,
            &read_back.version,
            &read_back.subscribes,
            &read_back.emits
        ),
        (
            &manifest.name,
            &manifest.version,
            &manifest.subscribes,
            &manifest.emits
        )
    );
    // Its schema compiles or is refused; either way a configuration gets an answer.
    let _ = fuzzing::unit_config(&manifest, None);
    let _ = fuzzing::unit_config(&manifest, Some(&serde_json::json!({"n": 1})));
});
