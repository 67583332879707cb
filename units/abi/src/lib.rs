//! The C ABI between the swarm host and a unit library.
//!
//! This crate is only types and constants: no code runs here, and it depends on nothing. Both
//! sides link it — the unit through `swarm-sdk`, the host through its loader — and the host
//! never links the SDK.
//!
//! A unit library exports one symbol, [`ENTRY_SYMBOL`] (its name carries the ABI major), of type
//! [`EntryFn`]. It returns a pointer to a static [`UnitVTable`] whose first two fields,
//! [`VTableHeader`], never change between ABI versions: the host reads them, checks
//! `abi_version == ABI_VERSION` and `vtable_size >= size_of::<UnitVTable>()`, and only then reads
//! the rest. New entry points are appended; `vtable_size` tells the host which ones exist.
//! The five entry points of ABI 1.0 are required ([`VTABLE_SIZE_1_0`] is the smallest table a
//! host accepts); those appended since are `Option`s, and the host treats an entry beyond the
//! unit's `vtable_size`, or a `None`, as absent.
//!
//! Data crosses as JSON in byte buffers. Input buffers belong to the host and are only borrowed
//! for the call. Output buffers ([`Buf`]) are allocated by the unit and every one of them is
//! handed back to the unit's `free_buf`: the two sides may use different allocators.
//!
//! Every entry point catches panics and reports them as [`STATUS_PANIC`]; a panic must never
//! unwind across `extern "C"` (since Rust 1.81 that aborts the process).

#![no_std]

extern crate alloc;

use core::ffi::c_void;

/// The ABI version this crate describes. A host refuses a vtable with another version.
pub const ABI_VERSION: u32 = 1;

/// Name of the entry symbol, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"swarm_unit_entry_v1\0";

/// Name of the entry symbol without the NUL, for messages.
pub const ENTRY_SYMBOL_NAME: &str = "swarm_unit_entry_v1";

/// Status returned by every entry point.
pub type Status = u32;
/// The call succeeded; the output buffer holds the JSON result.
pub const STATUS_OK: Status = 0;
/// The unit returned an error; the output buffer holds its UTF-8 text.
pub const STATUS_ERROR: Status = 1;
/// The unit panicked; the output buffer holds the panic message.
pub const STATUS_PANIC: Status = 2;
/// The host passed something the unit could not decode; the buffer says what.
pub const STATUS_BAD_INPUT: Status = 3;
/// Host calls only: the unit was not granted the capability; the buffer says which and why.
pub const STATUS_DENIED: Status = 4;

/// A byte buffer allocated by the unit. Empty buffers have a null `ptr`.
#[repr(C)]
#[derive(Debug)]
pub struct Buf {
    /// Start of the bytes, or null.
    pub ptr: *mut u8,
    /// Number of initialised bytes.
    pub len: usize,
    /// Allocation size, for the unit's `free_buf`.
    pub cap: usize,
}

impl Buf {
    /// An empty buffer, for the host to pass as an out-parameter.
    pub const EMPTY: Buf = Buf {
        ptr: core::ptr::null_mut(),
        len: 0,
        cap: 0,
    };

    /// Hands `bytes` over as a buffer without copying. The allocation is not freed here: the
    /// side that made it frees it when the buffer comes back (`Vec::from_raw_parts` with
    /// `ptr`, `len` and `cap`).
    pub fn from_vec(bytes: alloc::vec::Vec<u8>) -> Buf {
        let mut bytes = core::mem::ManuallyDrop::new(bytes);
        Buf {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }
}

/// The part of the vtable that is the same in every ABI version.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VTableHeader {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<UnitVTable>()` as the unit was built; lets later versions append entries.
    pub vtable_size: u32,
}

/// Writes the unit's manifest (JSON `UnitManifest`) into `out`.
pub type ManifestFn = unsafe extern "C" fn(out: *mut Buf) -> Status;

/// Creates an instance from a JSON config (`config`, `config_len` bytes; `null` is valid JSON).
/// On success writes the instance pointer to `instance`; on failure writes the error to `out`.
pub type CreateFn = unsafe extern "C" fn(
    config: *const u8,
    config_len: usize,
    instance: *mut *mut c_void,
    out: *mut Buf,
) -> Status;

/// Handles one signal (JSON `Signal`). On success writes a JSON `UnitReply` to `out`; on any
/// other status writes the error text. May be called from several threads at once.
pub type HandleFn = unsafe extern "C" fn(
    instance: *const c_void,
    signal: *const u8,
    signal_len: usize,
    out: *mut Buf,
) -> Status;

/// Destroys an instance made by `create`. Called once, after the last `handle` has returned.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// Frees a buffer the unit wrote into an out-parameter.
pub type FreeBufFn = unsafe extern "C" fn(buf: Buf);

/// A lifecycle event the host tells an instance about (see [`LifecycleFn`]).
pub type Event = u32;
/// The instance was made and is about to serve: after `create` (and `restore`), before the
/// first signal. Sent to every new instance, on a first load and on every swap.
pub const EVENT_LOAD: Event = 1;
/// The instance is about to replace an older version of the unit; the argument is the old
/// version's semver text. Sent after [`EVENT_LOAD`] (and after `restore`), before it serves.
pub const EVENT_UPGRADE: Event = 2;
/// The unit was enabled: it takes signals again.
pub const EVENT_ENABLE: Event = 3;
/// The unit was disabled: it gets no more signals until enabled.
pub const EVENT_DISABLE: Event = 4;
/// The instance will be destroyed: its last call has returned. Sent only to instances whose
/// [`EVENT_LOAD`] succeeded. Its status is only logged.
pub const EVENT_UNLOAD: Event = 5;

/// Tells the instance about a lifecycle event, with an argument (UTF-8; empty for most events).
/// `STATUS_OK` accepts it; any other status, with the error text in `out`, refuses it: a
/// refused load or upgrade leaves the old version serving, a refused enable leaves the unit
/// disabled. A unit returns `STATUS_OK` for events it does not know.
pub type LifecycleFn = unsafe extern "C" fn(
    instance: *const c_void,
    event: Event,
    arg: *const u8,
    arg_len: usize,
    out: *mut Buf,
) -> Status;

/// Writes the instance's state to `out`, to be handed to the next version's `restore` across a
/// swap. The host calls it only for units whose manifest says `carries_state`, after the last
/// call on this instance has returned and before the next version takes any signal.
pub type SnapshotFn = unsafe extern "C" fn(instance: *const c_void, out: *mut Buf) -> Status;

/// Gives a new instance the state the previous version's `snapshot` wrote. Called once, after
/// `create` and before any other call; the instance is not shared yet, hence `*mut`. A status
/// other than `STATUS_OK` refuses the swap (the old version keeps serving).
pub type RestoreFn = unsafe extern "C" fn(
    instance: *mut c_void,
    state: *const u8,
    state_len: usize,
    out: *mut Buf,
) -> Status;

/// The table of entry points a unit exports.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UnitVTable {
    /// Version and size; read first.
    pub header: VTableHeader,
    /// See [`ManifestFn`].
    pub manifest: ManifestFn,
    /// See [`CreateFn`].
    pub create: CreateFn,
    /// See [`HandleFn`].
    pub handle: HandleFn,
    /// See [`DestroyFn`].
    pub destroy: DestroyFn,
    /// See [`FreeBufFn`].
    pub free_buf: FreeBufFn,
    // Appended in ABI 1.1: optional.
    /// See [`LifecycleFn`].
    pub lifecycle: Option<LifecycleFn>,
    /// See [`SnapshotFn`].
    pub snapshot: Option<SnapshotFn>,
    /// See [`RestoreFn`].
    pub restore: Option<RestoreFn>,
    // Appended in ABI 1.2: optional.
    /// See [`BindHostFn`].
    pub bind_host: Option<BindHostFn>,
}

/// Hands the unit library the host's table of capabilities ([`HostVTable`]). Called once per
/// opened library, after the manifest is read and before `create`; the table stays valid until
/// the library is closed. Each load of a unit opens its own copy of the library, so the table
/// belongs to that load (that unit, that version) alone.
pub type BindHostFn = unsafe extern "C" fn(host: *const HostVTable);

/// A capability operation a unit asks of the host (see [`HostCallFn`]).
pub type HostOp = u32;
/// Structured logging into the host's log. Request: JSON `LogRecord`; reply: empty.
pub const HOST_LOG: HostOp = 1;
/// Deposit on and sense marks of the shared field. Request: JSON `MarksRequest`; reply: JSON
/// `MarksReply`.
pub const HOST_MARKS: HostOp = 2;
/// Sense every mark whose key starts with a prefix. Request: JSON `MarksPrefixRequest`; reply:
/// JSON `MarksPrefixReply`.
pub const HOST_MARKS_PREFIX: HostOp = 3;
/// The unit's key-value store. Request: JSON `KvRequest`; reply: JSON `KvReply`.
pub const HOST_KV: HostOp = 4;
/// An HTTP request. Request: a JSON `HttpRequest`, a newline, then the body's raw bytes;
/// reply: a JSON `HttpResponse`, a newline, then the body's raw bytes.
pub const HOST_HTTP: HostOp = 5;

/// The name of the capability an operation belongs to (`log`, `marks`, `kv`, `http`), the name
/// manifests declare and configurations grant; `None` for an operation this ABI does not know.
pub const fn capability_of(op: HostOp) -> Option<&'static str> {
    match op {
        HOST_LOG => Some("log"),
        HOST_MARKS | HOST_MARKS_PREFIX => Some("marks"),
        HOST_KV => Some("kv"),
        HOST_HTTP => Some("http"),
        _ => None,
    }
}

/// Makes one capability call: `op`, with the request bytes. `STATUS_OK` writes the reply to
/// `out`; `STATUS_DENIED`, `STATUS_ERROR` or `STATUS_BAD_INPUT` write the error text. The
/// buffer goes back to the host's `free_buf`. Blocking; callable from any thread, also during
/// lifecycle hooks. Never unwinds.
pub type HostCallFn = unsafe extern "C" fn(
    ctx: *const c_void,
    op: HostOp,
    request: *const u8,
    request_len: usize,
    out: *mut Buf,
) -> Status;

/// Frees a buffer the host wrote into an out-parameter of [`HostCallFn`].
pub type HostFreeFn = unsafe extern "C" fn(buf: Buf);

/// The host's table of capabilities, handed to a unit library by [`BindHostFn`]. Its header
/// works like the unit's: `vtable_size` tells the unit which entries exist, and entries are
/// only ever appended.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostVTable {
    /// The host's ABI version and the size of this table.
    pub header: VTableHeader,
    /// The host's context for this load; passed back on every call.
    pub ctx: *const c_void,
    /// See [`HostCallFn`].
    pub call: HostCallFn,
    /// See [`HostFreeFn`].
    pub free_buf: HostFreeFn,
}

/// `size_of::<HostVTable>()` as a `u32`, for its header.
pub const HOST_VTABLE_SIZE: u32 = core::mem::size_of::<HostVTable>() as u32;

/// Type of the entry symbol: returns the unit's static vtable.
pub type EntryFn = unsafe extern "C" fn() -> *const VTableHeader;

/// `size_of::<UnitVTable>()` as a `u32`, for the header.
pub const VTABLE_SIZE: u32 = core::mem::size_of::<UnitVTable>() as u32;

/// Size of the ABI 1.0 table (the required entry points): the smallest `vtable_size` a host
/// accepts.
pub const VTABLE_SIZE_1_0: u32 = core::mem::offset_of!(UnitVTable, lifecycle) as u32;
