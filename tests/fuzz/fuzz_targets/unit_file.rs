//! The checks of a unit file's bytes before anything opens them: an ELF shared object for
//! this host, with every loadable segment inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_reactor::fuzzing;

fuzz_target!(|data: &[u8]| {
    if fuzzing::unit_file(data).is_ok() {
        assert!(data.starts_with(b"\x7fELF"), "only an ELF file passes");
    }
});
