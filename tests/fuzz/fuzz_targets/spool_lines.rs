//! A spool segment's bytes, as replay reads them after a crash: every line is a record or is
//! counted as unreadable, and none stops the replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (records, unreadable, counted) =
        swarm_memory::fuzzing::spool_segment(data).expect("reading bytes in memory cannot fail");
    assert_eq!(
        records.len() as u64 + unreadable,
        counted,
        "every line is a record or counted as unreadable, as the spool counts them"
    );
});
