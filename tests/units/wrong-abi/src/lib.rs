//! Test fixture: exports the entry symbol, but with a vtable header claiming ABI version 999.
//! The host must refuse it before reading anything past the header.

#![allow(unsafe_code)]

use swarm_abi::VTableHeader;

static HEADER: VTableHeader = VTableHeader {
    abi_version: 999,
    vtable_size: 8,
};

/// The entry symbol, returning a header from the future.
#[unsafe(no_mangle)]
pub extern "C" fn swarm_unit_entry_v1() -> *const VTableHeader {
    &HEADER
}
