//! The unit side of the ABI: the generic `extern "C"` entry points behind [`export_unit!`], and
//! the calls the [`Harness`](crate::Harness) makes through a vtable exactly as the host does.
//!
//! Every entry point runs its body inside `catch_unwind` and turns a panic into
//! `STATUS_PANIC` with the panic's message and location; such panics are not printed.
//!
//! [`export_unit!`]: crate::export_unit

#![allow(unsafe_code)]

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, Ordering};

use swarm_abi::{
    ABI_VERSION, Buf, EVENT_DISABLE, EVENT_ENABLE, EVENT_LOAD, EVENT_UNLOAD, EVENT_UPGRADE, Event,
    HOST_VTABLE_SIZE, HostOp, HostVTable, STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, STATUS_PANIC,
    Status, UnitVTable, VTABLE_SIZE, VTableHeader,
};
use swarm_schemas::{Signal, UnitReply};

use crate::Unit;

/// The vtable for unit type `T`; the export macro puts it in a `static`.
pub const fn vtable<T: Unit>() -> UnitVTable {
    UnitVTable {
        header: VTableHeader {
            abi_version: ABI_VERSION,
            vtable_size: VTABLE_SIZE,
        },
        manifest: manifest::<T>,
        create: create::<T>,
        handle: handle::<T>,
        destroy: destroy::<T>,
        free_buf,
        lifecycle: Some(lifecycle::<T>),
        snapshot: Some(snapshot::<T>),
        restore: Some(restore::<T>),
        bind_host: Some(bind_host),
    }
}

/// The host's table of capabilities, once the host has bound it. One per loaded copy of this
/// library: each load of a unit gets its own copy, and with it its own statics.
static HOST: AtomicPtr<HostVTable> = AtomicPtr::new(std::ptr::null_mut());

unsafe extern "C" fn bind_host(host: *const HostVTable) {
    if host.is_null() {
        return;
    }
    // SAFETY: the host passes a table that starts with a header and stays valid until it
    // closes this library.
    let header = unsafe { (*host).header };
    // A table of another ABI, or one without the entries this SDK calls, is not used.
    if header.abi_version == ABI_VERSION && header.vtable_size >= HOST_VTABLE_SIZE {
        HOST.store(host.cast_mut(), Ordering::Release);
    }
}

thread_local! {
    /// A host that takes precedence on this thread: the harness's, while it calls its unit.
    static LOCAL_HOST: Cell<*const HostVTable> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with `host` as this thread's host (the harness: many harnesses in one test binary
/// share the library's statics, so each binds its host only around its own calls).
pub(crate) fn with_local_host<R>(host: &HostVTable, f: impl FnOnce() -> R) -> R {
    let previous = LOCAL_HOST.with(|h| h.replace(host));
    let result = f();
    LOCAL_HOST.with(|h| h.set(previous));
    result
}

/// The table of a harness's host.
pub(crate) fn harness_table(host: &crate::harness_host::HarnessHost) -> HostVTable {
    let ctx: *const crate::harness_host::HarnessHost = host;
    HostVTable {
        header: VTableHeader {
            abi_version: ABI_VERSION,
            vtable_size: HOST_VTABLE_SIZE,
        },
        ctx: ctx.cast(),
        call: harness_call,
        free_buf,
    }
}

unsafe extern "C" fn harness_call(
    ctx: *const c_void,
    op: HostOp,
    request: *const u8,
    request_len: usize,
    out: *mut Buf,
) -> Status {
    // SAFETY: `ctx` is the harness's boxed host, alive while the harness is; the request is
    // valid for `request_len` bytes; `out` is a valid out-parameter.
    unsafe {
        let host = &*ctx.cast::<crate::harness_host::HarnessHost>();
        let request = borrowed(request, request_len);
        let (status, bytes) = catch_unwind(AssertUnwindSafe(|| host.call(op, request)))
            .unwrap_or_else(|_| (STATUS_ERROR, b"the harness's host panicked".to_vec()));
        out.write(Buf::from_vec(bytes));
        status
    }
}

/// Why a host call did not answer.
pub(crate) enum HostFailure {
    /// No host has bound this library (the unit runs in a test harness or elsewhere).
    Unbound,
    /// The host answered with this status and error text.
    Status(Status, String),
}

/// Calls the host's capability `op` with `request`; the reply bytes on `STATUS_OK`.
pub(crate) fn host_call(op: HostOp, request: &[u8]) -> Result<Vec<u8>, HostFailure> {
    let local = LOCAL_HOST.with(Cell::get);
    let host = if local.is_null() {
        HOST.load(Ordering::Acquire).cast_const()
    } else {
        local
    };
    if host.is_null() {
        return Err(HostFailure::Unbound);
    }
    // SAFETY: `bind_host` stored a table the host keeps valid while this library is loaded, or
    // a harness set one it keeps alive for the call.
    let host = unsafe { &*host };
    let mut out = Buf::EMPTY;
    // SAFETY: the request and out-parameter are valid for the call; the host never unwinds.
    let status = unsafe { (host.call)(host.ctx, op, request.as_ptr(), request.len(), &mut out) };
    let bytes = if out.ptr.is_null() || out.len == 0 {
        Vec::new()
    } else {
        // SAFETY: the host wrote `len` initialised bytes at `ptr`.
        unsafe { borrowed(out.ptr, out.len) }.to_vec()
    };
    // SAFETY: the buffer came from the host and goes back exactly once.
    unsafe { (host.free_buf)(out) };
    if status == STATUS_OK {
        Ok(bytes)
    } else {
        Err(HostFailure::Status(
            status,
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

thread_local! {
    /// Set while this thread runs unit code inside [`guarded`].
    static IN_UNIT_CALL: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic inside a unit call happened.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic inside a unit call is not printed to stderr (the host records it as a failure, with
/// its message and location); any other panic goes to the hook that was there before. The hook
/// belongs to this library's copy of std, so it changes nothing for the host or other units.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_UNIT_CALL.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                PANIC_LOCATION.with(|p| *p.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `body`, writes its bytes to `out`, and returns its status; a panic becomes
/// `STATUS_PANIC` with its message and location. Nothing unwinds past this function.
///
/// # Safety
/// `out` must be valid for writes.
unsafe fn guarded(out: *mut Buf, body: impl FnOnce() -> (Status, Vec<u8>)) -> Status {
    install_panic_hook();
    IN_UNIT_CALL.with(|c| c.set(true));
    let result = catch_unwind(AssertUnwindSafe(body));
    IN_UNIT_CALL.with(|c| c.set(false));
    let (status, bytes) = match result {
        Ok(result) => result,
        Err(payload) => {
            let mut message = panic_message(payload.as_ref());
            if let Some(location) = PANIC_LOCATION.with(|p| p.borrow_mut().take()) {
                message.push_str(&format!(" (at {location})"));
            }
            (STATUS_PANIC, message.into_bytes())
        }
    };
    // SAFETY: the caller promises `out` is valid for writes.
    unsafe { out.write(Buf::from_vec(bytes)) };
    status
}

/// # Safety
/// `ptr` must be valid for `len` bytes (or `len` must be 0).
unsafe fn borrowed<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || ptr.is_null() {
        &[]
    } else {
        // SAFETY: the caller promises `ptr` is valid for `len` bytes.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

unsafe extern "C" fn manifest<T: Unit>(out: *mut Buf) -> Status {
    // SAFETY: the host passes a valid out-parameter.
    unsafe {
        guarded(out, || match serde_json::to_vec(&T::manifest().to_json()) {
            Ok(bytes) => (STATUS_OK, bytes),
            Err(e) => (STATUS_ERROR, e.to_string().into_bytes()),
        })
    }
}

unsafe extern "C" fn create<T: Unit>(
    config: *const u8,
    config_len: usize,
    instance: *mut *mut c_void,
    out: *mut Buf,
) -> Status {
    // SAFETY: the host passes a config buffer of `config_len` bytes and valid out-parameters.
    unsafe {
        let config = borrowed(config, config_len);
        guarded(out, || {
            let config: serde_json::Value = if config.is_empty() {
                serde_json::Value::Null
            } else {
                match serde_json::from_slice(config) {
                    Ok(value) => value,
                    Err(e) => {
                        return (
                            STATUS_BAD_INPUT,
                            format!("config is not JSON: {e}").into_bytes(),
                        );
                    }
                }
            };
            match T::new(&config) {
                Ok(unit) => {
                    instance.write(Box::into_raw(Box::new(unit)).cast());
                    (STATUS_OK, Vec::new())
                }
                Err(e) => (STATUS_ERROR, e.message().as_bytes().to_vec()),
            }
        })
    }
}

unsafe extern "C" fn handle<T: Unit>(
    instance: *const c_void,
    signal: *const u8,
    signal_len: usize,
    out: *mut Buf,
) -> Status {
    // SAFETY: `instance` came from `create::<T>` and is alive; the signal buffer is valid.
    unsafe {
        let unit = &*instance.cast::<T>();
        let signal = borrowed(signal, signal_len);
        guarded(out, || {
            let signal: Signal = match serde_json::from_slice(signal) {
                Ok(signal) => signal,
                Err(e) => {
                    return (
                        STATUS_BAD_INPUT,
                        format!("signal is not valid: {e}").into_bytes(),
                    );
                }
            };
            match unit.handle(&signal) {
                Ok(emits) => match serde_json::to_vec(&UnitReply { emits }) {
                    Ok(bytes) => (STATUS_OK, bytes),
                    Err(e) => (
                        STATUS_ERROR,
                        format!("reply does not serialise: {e}").into_bytes(),
                    ),
                },
                Err(e) => (STATUS_ERROR, e.message().as_bytes().to_vec()),
            }
        })
    }
}

fn unit_result(result: Result<(), crate::UnitError>) -> (Status, Vec<u8>) {
    match result {
        Ok(()) => (STATUS_OK, Vec::new()),
        Err(e) => (STATUS_ERROR, e.message().as_bytes().to_vec()),
    }
}

unsafe extern "C" fn lifecycle<T: Unit>(
    instance: *const c_void,
    event: Event,
    arg: *const u8,
    arg_len: usize,
    out: *mut Buf,
) -> Status {
    // SAFETY: `instance` came from `create::<T>` and is alive; the argument buffer is valid.
    unsafe {
        let unit = &*instance.cast::<T>();
        let arg = borrowed(arg, arg_len);
        guarded(out, || match event {
            EVENT_LOAD => unit_result(unit.on_load()),
            EVENT_UPGRADE => {
                let from = std::str::from_utf8(arg)
                    .map_err(|e| e.to_string())
                    .and_then(|text| crate::Version::parse(text).map_err(|e| e.to_string()));
                match from {
                    Ok(from) => unit_result(unit.on_upgrade(&from)),
                    Err(e) => (
                        STATUS_BAD_INPUT,
                        format!("the old version is not semver: {e}").into_bytes(),
                    ),
                }
            }
            EVENT_ENABLE => unit_result(unit.on_enable()),
            EVENT_DISABLE => unit_result(unit.on_disable()),
            EVENT_UNLOAD => unit_result(unit.on_unload()),
            // An event of a later ABI: nothing to do.
            _ => (STATUS_OK, Vec::new()),
        })
    }
}

unsafe extern "C" fn snapshot<T: Unit>(instance: *const c_void, out: *mut Buf) -> Status {
    // SAFETY: `instance` came from `create::<T>` and is alive; `out` is valid for writes.
    unsafe {
        let unit = &*instance.cast::<T>();
        guarded(out, || match unit.snapshot() {
            Ok(state) => (STATUS_OK, state),
            Err(e) => (STATUS_ERROR, e.message().as_bytes().to_vec()),
        })
    }
}

unsafe extern "C" fn restore<T: Unit>(
    instance: *mut c_void,
    state: *const u8,
    state_len: usize,
    out: *mut Buf,
) -> Status {
    // SAFETY: `instance` came from `create::<T>` and nothing else uses it during the call (the
    // host restores before sharing it); the state buffer is valid for `state_len` bytes.
    unsafe {
        let unit = &mut *instance.cast::<T>();
        let state = borrowed(state, state_len);
        guarded(out, || unit_result(unit.restore(state)))
    }
}

unsafe extern "C" fn destroy<T: Unit>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panicking Drop must not unwind into the host; its message has nowhere to go.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` came from `Box::into_raw` in `create::<T>` and is destroyed once.
        drop(unsafe { Box::from_raw(instance.cast::<T>()) });
    }));
}

unsafe extern "C" fn free_buf(buf: Buf) {
    if !buf.ptr.is_null() {
        // SAFETY: every non-null `Buf` was made by `into_buf` from a `Vec<u8>` in this library.
        drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
    }
}

/// What a call through a vtable returned: its status and the bytes of its output buffer.
pub(crate) struct CallResult {
    pub status: Status,
    pub bytes: Vec<u8>,
}

/// Copies the bytes out of a unit buffer and hands the buffer back to the unit.
fn take(vtable: &UnitVTable, buf: Buf) -> Vec<u8> {
    // SAFETY: `buf` was written by this vtable's unit; it is valid for `len` bytes.
    let bytes = unsafe { borrowed(buf.ptr, buf.len) }.to_vec();
    // SAFETY: the buffer came from this unit and is freed exactly once.
    unsafe { (vtable.free_buf)(buf) };
    bytes
}

/// Makes a call that writes into one out-buffer, and collects its status and bytes (the
/// buffer goes back to the unit).
fn with_out(vtable: &UnitVTable, call: impl FnOnce(&mut Buf) -> Status) -> CallResult {
    let mut out = Buf::EMPTY;
    let status = call(&mut out);
    CallResult {
        status,
        bytes: take(vtable, out),
    }
}

pub(crate) fn call_manifest(vtable: &UnitVTable) -> CallResult {
    // SAFETY: `out` is a valid out-parameter.
    with_out(vtable, |out| unsafe { (vtable.manifest)(out) })
}

pub(crate) fn call_create(vtable: &UnitVTable, config: &[u8]) -> Result<*mut c_void, CallResult> {
    let mut out = Buf::EMPTY;
    let mut instance = std::ptr::null_mut();
    // SAFETY: the config buffer and out-parameters are valid for the call.
    let status = unsafe { (vtable.create)(config.as_ptr(), config.len(), &mut instance, &mut out) };
    let bytes = take(vtable, out);
    if status == STATUS_OK && !instance.is_null() {
        Ok(instance)
    } else {
        Err(CallResult {
            status: if status == STATUS_OK {
                STATUS_ERROR
            } else {
                status
            },
            bytes,
        })
    }
}

pub(crate) fn call_handle(vtable: &UnitVTable, instance: *mut c_void, signal: &[u8]) -> CallResult {
    // SAFETY: `instance` is alive (the harness owns it) and the buffers are valid for the call.
    with_out(vtable, |out| unsafe {
        (vtable.handle)(instance, signal.as_ptr(), signal.len(), out)
    })
}

pub(crate) fn call_destroy(vtable: &UnitVTable, instance: *mut c_void) {
    // SAFETY: `instance` came from this vtable's `create` and is destroyed once.
    unsafe { (vtable.destroy)(instance) };
}

pub(crate) fn call_lifecycle(
    vtable: &UnitVTable,
    instance: *mut c_void,
    event: Event,
    arg: &[u8],
) -> CallResult {
    with_out(vtable, |out| match vtable.lifecycle {
        // SAFETY: `instance` is alive (the harness owns it) and the buffers are valid.
        Some(lifecycle) => unsafe { lifecycle(instance, event, arg.as_ptr(), arg.len(), out) },
        None => STATUS_OK,
    })
}

pub(crate) fn call_snapshot(vtable: &UnitVTable, instance: *mut c_void) -> CallResult {
    with_out(vtable, |out| match vtable.snapshot {
        // SAFETY: `instance` is alive and no other call runs on it.
        Some(snapshot) => unsafe { snapshot(instance, out) },
        None => STATUS_OK,
    })
}

pub(crate) fn call_restore(vtable: &UnitVTable, instance: *mut c_void, state: &[u8]) -> CallResult {
    with_out(vtable, |out| match vtable.restore {
        // SAFETY: `instance` is alive and not yet shared; the state buffer is valid.
        Some(restore) => unsafe { restore(instance, state.as_ptr(), state.len(), out) },
        None => STATUS_OK,
    })
}
