//! A stream entry's `m` field (the signal in MessagePack), as a consumer's read decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_fuzz::entry_fields as entry;
use swarm_mesh::fuzzing::{self, FIELDS};
use swarm_schemas::Encoding;

fuzz_target!(|data: &[u8]| {
    let (body, json) = fuzzing::entry(&entry(FIELDS.1, data));
    assert!(json.is_none(), "a MessagePack entry has no JSON as read");
    match body {
        Ok(signal) => {
            assert_eq!(signal.encoding, Encoding::MessagePack);
            // Encoded as the mesh publishes it and read back: the same signal, exactly
            // (MessagePack keeps every number's bits).
            let again = rmp_serde::to_vec_named(&signal).expect("a decoded signal encodes");
            let (body, _) = fuzzing::entry(&entry(FIELDS.1, &again));
            assert_eq!(
                body.expect("a decoded signal, encoded again, decodes"),
                signal
            );
        }
        Err(undecodable) => {
            assert_eq!(undecodable.raw, String::from_utf8_lossy(data));
        }
    }
});
