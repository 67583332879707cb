//! Opening unit libraries and calling into them: the only `unsafe` code on the host side.
//!
//! A unit file is read once; its bytes are checked (ELF magic), hashed, and written to a fresh
//! private path, which is what gets `dlopen`ed. The dynamic loader caches libraries by path and
//! inode, so reopening the original path after a replacement could hand back the old code; a
//! private copy per load never can. The entry symbol's vtable header is checked before anything
//! else is read, and the manifest before any other call.
//!
//! A [`Loaded`] library owns one unit instance. Dropping it destroys the instance, closes the
//! library and removes the private copy. Correctness never depends on `dlclose` actually
//! unmapping anything (thread-local destructors pin a library on Linux).

#![allow(unsafe_code)]

mod checks;
mod file;
mod loaded;

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW, Symbol};
use swarm_abi::{
    ABI_VERSION, Buf, ENTRY_SYMBOL, ENTRY_SYMBOL_NAME, EntryFn, STATUS_OK, STATUS_PANIC, Status,
    UnitVTable, VTABLE_SIZE, VTABLE_SIZE_1_0, VTableHeader,
};
use swarm_schemas::UnitManifest;

use file::private_copy;
pub(crate) use file::{UnitFile, read};
#[cfg(feature = "fuzzing")]
pub(crate) use {
    checks::{config as check_config, manifest as read_manifest},
    file::check as check_file,
};

use crate::LoadError;
use crate::host::{HostCall, HostTable};
use crate::isolate::{Worker, WorkerSpec, wire};

/// Where a unit's code runs.
enum Code {
    /// In this process.
    Native {
        // Dropped after the instance (see `Loaded`'s drop) and before the copy is removed.
        #[allow(dead_code)]
        library: Library,
        // The capability table the library was given: dropped after the library is closed.
        host: Option<HostTable>,
        vtable: UnitVTable,
    },
    /// In a worker process of its own ([`crate::isolate`]).
    Worker(Worker),
}

/// A unit library opened and checked, with its manifest read, but no instance yet.
pub(crate) struct Opened {
    code: Code,
    private_copy: PathBuf,
    /// Whether the private copy is this load's own, removed when it is dropped.
    owns_copy: bool,
    /// The manifest, checked.
    pub manifest: UnitManifest,
    /// SHA-256 digest of the file's bytes (what a trust file lists).
    pub hash: [u8; 32],
    /// The file it came from.
    pub source: PathBuf,
}

/// A unit library with a live instance, ready to be called from any thread.
pub(crate) struct Loaded {
    opened: Opened,
    instance: *mut c_void,
    /// Whether `on_load` succeeded: only then is `on_unload` sent before destroying it.
    hooked: bool,
}

/// A lifecycle call the unit refused: what it said, and whether it panicked.
pub(crate) struct Refusal {
    pub what: &'static str,
    pub message: String,
}

impl Refusal {
    fn of(result: CallResult) -> Self {
        Self {
            what: match result.status {
                STATUS_PANIC => "panicked",
                crate::isolate::STATUS_CRASHED => "crashed",
                _ => "failed",
            },
            message: String::from_utf8_lossy(&result.bytes).into_owned(),
        }
    }
}

// SAFETY: the SDK requires `Unit: Send + Sync`; the instance pointer is only used through the
// vtable, which the unit allows from any thread, and destroyed once in `Drop`.
unsafe impl Send for Loaded {}
// SAFETY: as above; `handle` takes the instance by shared pointer.
unsafe impl Sync for Loaded {}

/// What a call into a unit returned: its status and the bytes it wrote.
pub(crate) struct CallResult {
    pub status: Status,
    pub bytes: Vec<u8>,
}

/// Copies the unit into `private_dir`, opens the copy, checks the ABI and reads the manifest.
pub(crate) fn open(file: UnitFile, private_dir: &Path) -> Result<Opened, LoadError> {
    let private_copy = private_copy(&file, private_dir)?;
    let result = open_copy(file.source(), &private_copy, file.hash);
    if result.is_err() {
        let _ = std::fs::remove_file(&private_copy);
    }
    result
}

/// Opens the library at `path` itself, in this process: what an isolated unit's worker does
/// with the reactor's private copy (which stays the reactor's to remove).
pub(crate) fn open_in_place(path: &Path) -> Result<Opened, LoadError> {
    let mut opened = open_copy(path, path, [0; 32])?;
    opened.owns_copy = false;
    Ok(opened)
}

/// Copies the unit into `private_dir` and has a worker process started by `spec` open the
/// copy ([`crate::isolate`]); reads and checks the manifest it gives.
pub(crate) fn open_isolated(
    file: UnitFile,
    private_dir: &Path,
    mut spec: WorkerSpec,
) -> Result<Opened, LoadError> {
    let private_copy = private_copy(&file, private_dir)?;
    spec.library.clone_from(&private_copy);
    let source = file.source().to_owned();
    let opened = (|| {
        let worker = Worker::start(spec).map_err(|message| LoadError::Open {
            path: source.clone(),
            message: format!("isolated: {message}"),
        })?;
        let result = worker.request(wire::MANIFEST, 0, &[]);
        let manifest = if result.status == STATUS_OK {
            checks::manifest(&result.bytes).map_err(|message| LoadError::BadManifest {
                path: source.clone(),
                message,
            })
        } else {
            // The worker could not open the library: its reason, as the loader words it.
            Err(LoadError::Open {
                path: source.clone(),
                message: format!("isolated: {}", String::from_utf8_lossy(&result.bytes)),
            })
        }?;
        Ok(Opened {
            code: Code::Worker(worker),
            private_copy: private_copy.clone(),
            owns_copy: true,
            manifest,
            hash: file.hash,
            source: source.clone(),
        })
    })();
    if opened.is_err() {
        let _ = std::fs::remove_file(&private_copy);
    }
    opened
}

fn open_copy(source: &Path, private_copy: &Path, hash: [u8; 32]) -> Result<Opened, LoadError> {
    let path = || source.to_owned();
    // SAFETY: opening a library runs its initialisers. Unit libraries are trusted native code
    // by design (see ARCHITECTURE.md); RTLD_LOCAL keeps its symbols out of the global scope.
    let library =
        unsafe { Library::open(Some(private_copy), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
            LoadError::Open {
                path: path(),
                message: e.to_string(),
            }
        })?;
    // SAFETY: the symbol's type is fixed by the ABI for this symbol name.
    let entry: Symbol<EntryFn> =
        unsafe { library.get(ENTRY_SYMBOL) }.map_err(|_| LoadError::MissingEntry {
            path: path(),
            symbol: ENTRY_SYMBOL_NAME,
        })?;
    // SAFETY: the entry function takes nothing and returns a pointer to a static vtable.
    let header_ptr: *const VTableHeader = unsafe { entry() };
    if header_ptr.is_null() {
        return Err(LoadError::BadManifest {
            path: path(),
            message: "entry symbol returned null".into(),
        });
    }
    // SAFETY: every ABI version starts its vtable with this header.
    let header = unsafe { *header_ptr };
    if header.abi_version != ABI_VERSION {
        return Err(LoadError::WrongAbi {
            path: path(),
            found: header.abi_version,
            expected: ABI_VERSION,
        });
    }
    if header.vtable_size < VTABLE_SIZE_1_0 {
        return Err(LoadError::VTableTooSmall {
            path: path(),
            found: header.vtable_size,
            expected: VTABLE_SIZE_1_0,
        });
    }
    let vtable = read_vtable(header_ptr, header.vtable_size);

    let result = call_manifest(&vtable);
    let manifest = if result.status == STATUS_OK {
        checks::manifest(&result.bytes)
    } else {
        Err(format!(
            "manifest() failed: {}",
            String::from_utf8_lossy(&result.bytes)
        ))
    }
    .map_err(|message| LoadError::BadManifest {
        path: path(),
        message,
    })?;

    Ok(Opened {
        code: Code::Native {
            library,
            host: None,
            vtable,
        },
        private_copy: private_copy.to_owned(),
        owns_copy: true,
        manifest,
        hash,
        source: source.to_owned(),
    })
}

/// Reads the unit's table: as much of it as the unit has (`size`, at least the 1.0 part) and
/// this host knows; entries the unit's table ends before stay `None`.
fn read_vtable(header_ptr: *const VTableHeader, size: u32) -> UnitVTable {
    let mut vtable = std::mem::MaybeUninit::<UnitVTable>::zeroed();
    let len = (size.min(VTABLE_SIZE)) as usize;
    // SAFETY: the unit's table is at least `size` bytes (its header says so) and `len` is no
    // more than that or than `UnitVTable`. The 1.0 entries (non-null function pointers) are
    // inside the copied bytes, because `size >= VTABLE_SIZE_1_0`; every later entry is an
    // `Option` of a function pointer, for which all-zero bytes are `None`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            header_ptr.cast::<u8>(),
            vtable.as_mut_ptr().cast::<u8>(),
            len,
        );
        vtable.assume_init()
    }
}

/// Copies the bytes out of a unit's buffer and hands the buffer back to the unit to free.
fn take(vtable: &UnitVTable, buf: Buf) -> Vec<u8> {
    let bytes = if buf.ptr.is_null() || buf.len == 0 {
        Vec::new()
    } else {
        // SAFETY: the unit wrote `len` initialised bytes at `ptr`.
        unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec()
    };
    // SAFETY: the buffer came from this unit and goes back exactly once.
    unsafe { (vtable.free_buf)(buf) };
    bytes
}

/// What a call that answers with a status and a buffer said: the bytes on `STATUS_OK`, else
/// the refusal. The buffer goes back to the unit either way.
/// What a worker answered to a request that answers with a status and bytes.
fn refusal(result: CallResult) -> Result<Vec<u8>, Refusal> {
    if result.status == STATUS_OK {
        Ok(result.bytes)
    } else {
        Err(Refusal::of(result))
    }
}

fn answer(vtable: &UnitVTable, status: Status, out: Buf) -> Result<Vec<u8>, Refusal> {
    let result = CallResult {
        status,
        bytes: take(vtable, out),
    };
    if result.status == STATUS_OK {
        Ok(result.bytes)
    } else {
        Err(Refusal::of(result))
    }
}

fn call_manifest(vtable: &UnitVTable) -> CallResult {
    let mut out = Buf::EMPTY;
    // SAFETY: `out` is a valid out-parameter; the unit catches its own panics.
    let status = unsafe { (vtable.manifest)(&mut out) };
    CallResult {
        status,
        bytes: take(vtable, out),
    }
}

impl Opened {
    /// Hands the library its capability table. A library built before host capabilities has
    /// no `bind_host` and gets nothing; its instance is then simply never able to call. An
    /// isolated unit's worker forwards its calls to `host`.
    pub(crate) fn bind_host(&mut self, host: Box<dyn HostCall>) {
        let (vtable, slot) = match &mut self.code {
            Code::Native { vtable, host, .. } => (vtable, host),
            Code::Worker(worker) => {
                worker.bind_host(host);
                return;
            }
        };
        let Some(bind) = vtable.bind_host else {
            return;
        };
        let table = HostTable::new(host);
        // SAFETY: the table stays valid until the library is closed: `host` keeps it and
        // drops after `library` (field order). The unit catches its own panics.
        unsafe { bind(table.table()) };
        *slot = Some(table);
    }

    /// The same library opened in this process instead of its worker (which is shut down):
    /// for a unit a worker was asked to name, and that is not isolated.
    pub(crate) fn into_native(mut self) -> Result<Opened, LoadError> {
        if matches!(self.code, Code::Native { .. }) {
            return Ok(self);
        }
        self.owns_copy = false;
        let (source, copy, hash) = (self.source.clone(), self.private_copy.clone(), self.hash);
        drop(self);
        let result = open_copy(&source, &copy, hash);
        if result.is_err() {
            let _ = std::fs::remove_file(&copy);
        }
        result
    }

    /// Creates the unit's instance with its configuration.
    pub(crate) fn instantiate(
        self,
        config: Option<&serde_json::Value>,
    ) -> Result<Loaded, LoadError> {
        let config = checks::config(&self.manifest, config)?;
        let config = serde_json::to_vec(&config).unwrap_or_else(|_| b"null".to_vec());
        let (status, bytes, instance) = match &self.code {
            Code::Native { vtable, .. } => {
                let mut out = Buf::EMPTY;
                let mut instance: *mut c_void = std::ptr::null_mut();
                // SAFETY: the config buffer and out-parameters are valid for the call.
                let status = unsafe {
                    (vtable.create)(config.as_ptr(), config.len(), &mut instance, &mut out)
                };
                (status, take(vtable, out), instance)
            }
            Code::Worker(worker) => {
                let result = worker.request(wire::CREATE, 0, &config);
                // The instance lives in the worker; this side holds no pointer to it.
                let instance = std::ptr::NonNull::<c_void>::dangling().as_ptr();
                (result.status, result.bytes, instance)
            }
        };
        if status == STATUS_OK && !instance.is_null() {
            return Ok(Loaded {
                opened: self,
                instance,
                hooked: false,
            });
        }
        Err(LoadError::Create {
            unit: self.manifest.name.clone(),
            what: if status == STATUS_PANIC {
                "panicked"
            } else {
                "failed"
            },
            message: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if self.owns_copy {
            let _ = std::fs::remove_file(&self.private_copy);
        }
    }
}
