//! Reading a unit file: its bytes read once, checked (an ELF shared object for this host, every
//! loadable segment inside the file) and hashed, then written to a private path of their own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest as _;

use crate::LoadError;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

static NEXT_COPY: AtomicU64 = AtomicU64::new(0);

/// The bytes of a unit file, read once, checked for the ELF magic and hashed.
pub(crate) struct UnitFile {
    source: PathBuf,
    pub(super) bytes: Vec<u8>,
    /// SHA-256 digest of the bytes.
    pub hash: [u8; 32],
}

impl UnitFile {
    /// The file it was read from.
    pub(crate) fn source(&self) -> &Path {
        &self.source
    }
}

/// Reads the unit file at `source` and checks that it is an ELF file.
pub(crate) fn read(source: &Path) -> Result<UnitFile, LoadError> {
    let bytes = std::fs::read(source).map_err(|e| LoadError::Io {
        path: source.to_owned(),
        message: e.to_string(),
    })?;
    check(source, &bytes)?;
    let hash: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    Ok(UnitFile {
        source: source.to_owned(),
        bytes,
        hash,
    })
}

/// Checks the bytes of the unit file at `source` before anything opens them: an ELF shared
/// object for this host, whole.
pub(crate) fn check(source: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if !bytes.starts_with(ELF_MAGIC) {
        return Err(LoadError::NotALibrary {
            path: source.to_owned(),
        });
    }
    check_elf(bytes).map_err(|message| LoadError::BadElf {
        path: source.to_owned(),
        message,
    })
}

/// Checks what the dynamic loader does not: glibc maps a loadable segment that runs past the
/// end of a truncated file, and the first touch of the missing pages kills the process with
/// SIGBUS. So every loadable segment must lie inside the file, and the file must be a shared
/// object for this architecture.
fn check_elf(bytes: &[u8]) -> Result<(), String> {
    use object::{Object, ObjectKind, ObjectSegment};
    let file = object::File::parse(bytes).map_err(|e| e.to_string())?;
    let host = if cfg!(target_arch = "x86_64") {
        object::Architecture::X86_64
    } else if cfg!(target_arch = "aarch64") {
        object::Architecture::Aarch64
    } else {
        file.architecture()
    };
    if file.architecture() != host {
        return Err(format!(
            "built for {:?}, this host is {host:?}",
            file.architecture()
        ));
    }
    if file.kind() != ObjectKind::Dynamic {
        return Err(format!("a {:?} object, not a shared library", file.kind()));
    }
    let len = bytes.len() as u64;
    for segment in file.segments() {
        let (offset, size) = segment.file_range();
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(format!(
                "truncated: a loadable segment needs bytes {offset}..{} but the file has {len}",
                offset.saturating_add(size)
            ));
        }
    }
    Ok(())
}

/// Writes the unit's bytes to a fresh path in `private_dir`; returns the path.
pub(super) fn private_copy(file: &UnitFile, private_dir: &Path) -> Result<PathBuf, LoadError> {
    let stem = file
        .source
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("unit");
    let private_copy = private_dir.join(format!(
        "{stem}.{}.{}{}",
        &hex::encode(file.hash)[..12],
        NEXT_COPY.fetch_add(1, Ordering::Relaxed),
        std::env::consts::DLL_SUFFIX
    ));
    std::fs::write(&private_copy, &file.bytes).map_err(|e| LoadError::Io {
        path: file.source.clone(),
        message: e.to_string(),
    })?;
    Ok(private_copy)
}
