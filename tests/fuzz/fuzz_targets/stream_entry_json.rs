//! A stream entry's `s` field (the signal as JSON), as a consumer's read decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_fuzz::entry_fields as entry;
use swarm_mesh::fuzzing::{self, FIELDS};

fuzz_target!(|data: &[u8]| {
    let (body, json) = fuzzing::entry(&entry(FIELDS.0, data));
    match body {
        Ok(signal) => {
            // What a unit is handed as the signal's JSON is exactly what was read.
            assert_eq!(json.as_deref(), Some(data));
            // A signal that decoded encodes again, and that decodes to the same signal's
            // identity (what the reactor emits and settles with).
            let again = serde_json::to_vec(&signal).expect("a decoded signal encodes");
            let (body, _) = fuzzing::entry(&entry(FIELDS.0, &again));
            let decoded = body.expect("a decoded signal, encoded again, decodes");
            assert_eq!((decoded.id, &decoded.kind), (signal.id, &signal.kind));
        }
        Err(undecodable) => {
            // Nothing is lost: the dead letter keeps the bytes as read.
            assert_eq!(undecodable.raw, String::from_utf8_lossy(data));
            assert!(json.is_none());
        }
    }
});
