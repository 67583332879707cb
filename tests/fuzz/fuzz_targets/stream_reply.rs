//! Whole Redis replies (RESP bytes) to the mesh's reads: `XREADGROUP` as a consumer decodes
//! it, `XRANGE` as the observer does. Any reply is an error or entries, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_mesh::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = fuzzing::parse_redis_value(data) else {
        return;
    };
    for entries in [fuzzing::read_reply(&value), fuzzing::range_reply(&value)]
        .into_iter()
        .flatten()
    {
        for (_id, body) in entries {
            if let Err(undecodable) = body {
                assert!(
                    !undecodable.error.is_empty(),
                    "an undecodable entry says why"
                );
            }
        }
    }
});
