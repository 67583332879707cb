//! What confines a worker process: resource limits and a seccomp filter. Applied by the worker
//! to itself, before it opens the unit's library, so the library's initialisers are confined
//! too.

use super::WorkerLimits;

/// Sets the process's resource limits (soft and hard alike, so the unit cannot raise them).
/// The CPU limit's hard bound is a little above the soft one: the soft one sends `SIGXCPU`,
/// which ends the worker; the hard one kills it if that signal is caught.
pub(crate) fn limit(limits: &WorkerLimits) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let set = |resource: Resource, name: &str, soft: Option<u64>, hard: Option<u64>| {
        let Some(soft) = soft else {
            return Ok(());
        };
        setrlimit(
            resource,
            Rlimit {
                current: Some(soft),
                maximum: hard.or(Some(soft)),
            },
        )
        .map_err(|e| format!("cannot limit {name} to {soft}: {e}"))
    };
    set(
        Resource::As,
        "the address space",
        limits.address_space,
        None,
    )?;
    set(
        Resource::Cpu,
        "CPU seconds",
        limits.cpu_seconds,
        limits.cpu_seconds.map(|s| s.saturating_add(5)),
    )?;
    set(Resource::Nofile, "open files", limits.open_files, None)?;
    // A crashing unit leaves no core file behind.
    set(Resource::Core, "core files", Some(0), None)?;
    Ok(())
}

/// Installs, on every thread of the process, a seccomp filter that refuses (with `EPERM`)
/// opening new sockets and executing programs. Everything else is allowed: the filter keeps a
/// unit off the network and from starting programs, not from its own work.
pub(crate) fn confine() -> Result<(), String> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    let denied: [(i64, &str); 3] = [
        (libc::SYS_socket, "socket"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
    ];
    let rules = denied.iter().map(|(call, _)| (*call, Vec::new())).collect();
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp does not know this architecture: {e:?}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("cannot build the seccomp filter: {e}"))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e| format!("cannot compile the seccomp filter: {e:?}"))?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| format!("cannot install the seccomp filter: {e}"))
}
