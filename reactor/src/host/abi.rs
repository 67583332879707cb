//! The host's side of the capability table: the `extern "C"` functions a unit calls, and the
//! table handed to a library. Nothing unwinds out of them.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use swarm_abi::{
    ABI_VERSION, Buf, HOST_VTABLE_SIZE, HostOp, HostVTable, STATUS_ERROR, Status, VTableHeader,
};

use super::HostCall;

/// What serves a library's capability calls, and the table that points at it; boxed so the
/// pointer stays put. It must outlive the library it is bound to.
pub(crate) struct HostTable {
    // Never read: `table.ctx` points into it, and it must live (and not move) as long as the
    // table.
    _host: Box<Box<dyn HostCall>>,
    table: Box<HostVTable>,
}

// SAFETY: the table holds only a pointer to the boxed host (itself `Send + Sync`) and
// function pointers.
unsafe impl Send for HostTable {}
// SAFETY: as above; the host's functions take the context by shared pointer.
unsafe impl Sync for HostTable {}

impl HostTable {
    pub(crate) fn new(host: Box<dyn HostCall>) -> Self {
        let host = Box::new(host);
        let ctx: *const Box<dyn HostCall> = &*host;
        let table = Box::new(HostVTable {
            header: VTableHeader {
                abi_version: ABI_VERSION,
                vtable_size: HOST_VTABLE_SIZE,
            },
            ctx: ctx.cast(),
            call: host_call,
            free_buf: host_free,
        });
        Self { _host: host, table }
    }

    /// The table to hand to the unit's `bind_host`.
    pub(crate) fn table(&self) -> *const HostVTable {
        &*self.table
    }
}

unsafe extern "C" fn host_call(
    ctx: *const c_void,
    op: HostOp,
    request: *const u8,
    request_len: usize,
    out: *mut Buf,
) -> Status {
    let (status, bytes) = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the boxed host of the table the unit was given, alive while its
        // library is loaded.
        let host = unsafe { &*ctx.cast::<Box<dyn HostCall>>() };
        let request = if request.is_null() || request_len == 0 {
            &[][..]
        } else {
            // SAFETY: the unit passes a buffer valid for `request_len` bytes for the call.
            unsafe { std::slice::from_raw_parts(request, request_len) }
        };
        host.call(op, request)
    }))
    .unwrap_or_else(|_| (STATUS_ERROR, b"the host failed to run the call".to_vec()));
    if !out.is_null() {
        // SAFETY: the unit passes a valid out-parameter.
        unsafe { out.write(Buf::from_vec(bytes)) };
    }
    status
}

unsafe extern "C" fn host_free(buf: Buf) {
    if !buf.ptr.is_null() {
        // SAFETY: every non-null buffer handed out came from `into_buf` in this host.
        drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
    }
}
