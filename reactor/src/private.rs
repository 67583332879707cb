//! Where private copies of unit libraries live.
//!
//! Every load writes the unit's bytes to a fresh file and opens that (see the loader). On a
//! disk-backed directory that write can stall for as long as the kernel takes to flush other
//! dirty pages (a build running on the same machine is enough to make one swap take a second),
//! so copies go to a memory-backed filesystem that allows execution when the host has one.

use std::path::Path;

/// Memory-backed, world-writable directory found on Linux hosts.
const SHARED_MEMORY: &str = "/dev/shm";

/// A fresh private directory for unit copies, removed when dropped.
///
/// It is made under `/dev/shm` when that is a tmpfs mounted without `noexec`, otherwise under
/// the system's temporary directory.
pub fn private_dir() -> std::io::Result<tempfile::TempDir> {
    let builder = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("swarm-units-");
        builder
    };
    let shm = Path::new(SHARED_MEMORY);
    if allows_execution(shm) {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return Ok(dir);
        }
    }
    builder.tempdir()
}

/// Whether `dir` is a directory on a filesystem that lets mapped files execute.
fn allows_execution(dir: &Path) -> bool {
    dir.is_dir()
        && rustix::fs::statvfs(dir)
            .is_ok_and(|stat| !stat.f_flag.contains(rustix::fs::StatVfsMountFlags::NOEXEC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_directory_exists_and_is_removed_on_drop() {
        let dir = private_dir().expect("a private directory");
        let path = dir.path().to_owned();
        assert!(path.is_dir());
        if allows_execution(Path::new(SHARED_MEMORY)) {
            assert!(
                path.starts_with(SHARED_MEMORY),
                "{} is not in shared memory",
                path.display()
            );
        }
        drop(dir);
        assert!(!path.exists());
    }
}
