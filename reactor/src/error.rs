//! Why a unit library could not be loaded, swapped or resolved.

use std::path::PathBuf;

/// Why a unit was refused. Every variant names the file or the units involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read or copied.
    #[error("{path}: {message}")]
    Io {
        /// The unit file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The file does not start with the ELF magic bytes.
    #[error("{path}: not a shared library (no ELF header)")]
    NotALibrary {
        /// The unit file.
        path: PathBuf,
    },
    /// The file is an ELF file, but not one this host can load safely (truncated, another
    /// architecture, not a shared object).
    #[error("{path}: not a loadable shared library: {message}")]
    BadElf {
        /// The unit file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The trust policy refused the file before it was opened: it is not on the trust file,
    /// or someone other than this user could have written it.
    #[error("{path}: refused: {message}")]
    Untrusted {
        /// The unit file.
        path: PathBuf,
        /// Why, with the library's digest or the command that fixes its permissions.
        message: String,
    },
    /// The dynamic loader refused the file.
    #[error("{path}: the dynamic loader refused it: {message}")]
    Open {
        /// The unit file.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The library does not export the entry symbol of this ABI.
    #[error("{path}: no `{symbol}` symbol: not a swarm unit, or built for another ABI major")]
    MissingEntry {
        /// The unit file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
    },
    /// The vtable's ABI version is not the host's.
    #[error("{path}: unit ABI version {found}, this reactor speaks version {expected}")]
    WrongAbi {
        /// The unit file.
        path: PathBuf,
        /// What the unit declared.
        found: u32,
        /// What the host speaks.
        expected: u32,
    },
    /// The vtable is smaller than this ABI version's.
    #[error("{path}: unit vtable is {found} bytes, ABI version 1 needs at least {expected}")]
    VTableTooSmall {
        /// The unit file.
        path: PathBuf,
        /// Declared size.
        found: u32,
        /// Needed size.
        expected: u32,
    },
    /// The manifest could not be read or is invalid.
    #[error("{path}: bad manifest: {message}")]
    BadManifest {
        /// The unit file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Two files declare the same unit name.
    #[error("duplicate unit name `{name}`: declared by {first} and {second}")]
    DuplicateName {
        /// The name.
        name: String,
        /// The file that has it.
        first: PathBuf,
        /// The file refused.
        second: PathBuf,
    },
    /// A dependency is not loaded (or failed to load).
    #[error("unit `{unit}` depends on `{dependency}` ({requirement}), which is not loaded")]
    MissingDependency {
        /// The unit refused.
        unit: String,
        /// The dependency it lacks.
        dependency: String,
        /// The version requirement.
        requirement: String,
    },
    /// A dependency is loaded in a version that does not satisfy the requirement.
    #[error("unit `{unit}` needs `{dependency}` {requirement}, but version {found} is loaded")]
    DependencyVersion {
        /// The unit refused.
        unit: String,
        /// The dependency.
        dependency: String,
        /// The requirement.
        requirement: String,
        /// The loaded version.
        found: String,
    },
    /// Units depend on each other in a cycle.
    #[error("dependency cycle: {}", cycle.join(" -> "))]
    DependencyCycle {
        /// The units in the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// The unit's configuration breaks the JSON Schema its manifest declares.
    #[error("unit `{unit}`: its configuration breaks its config schema: {}", problems.join("; "))]
    Config {
        /// The unit.
        unit: String,
        /// Each problem, with the JSON pointer of the offending field.
        problems: Vec<String>,
    },
    /// The config schema the manifest declares is not a valid JSON Schema.
    #[error("unit `{unit}`: its config schema is not a valid JSON Schema: {message}")]
    ConfigSchema {
        /// The unit.
        unit: String,
        /// Why.
        message: String,
    },
    /// The unit's constructor returned an error or panicked.
    #[error("unit `{unit}`: constructor {what}: {message}")]
    Create {
        /// The unit.
        unit: String,
        /// "failed" or "panicked".
        what: &'static str,
        /// The error or panic text.
        message: String,
    },
    /// A lifecycle hook of the new instance (`on_load`, `on_upgrade`), or the state hand-over
    /// of a swap (`snapshot` on the old instance, `restore` on the new one), returned an error
    /// or panicked. Any older version keeps serving.
    #[error("unit `{unit}`: {hook} {what}: {message}")]
    Hook {
        /// The unit.
        unit: String,
        /// "on_load", "on_upgrade", "snapshot" or "restore".
        hook: &'static str,
        /// "failed" or "panicked".
        what: &'static str,
        /// The error or panic text.
        message: String,
    },
}

impl LoadError {
    /// The unit the refusal is about, when it got as far as reading the manifest's name and
    /// the refusal is about that unit's own configuration, constructor or hooks.
    pub fn unit(&self) -> Option<&str> {
        match self {
            Self::Config { unit, .. }
            | Self::ConfigSchema { unit, .. }
            | Self::Create { unit, .. }
            | Self::Hook { unit, .. } => Some(unit),
            _ => None,
        }
    }

    /// Whether the refusal is about other units (a dependency, a cycle, a name taken) rather
    /// than the file itself, so that it may load once the other units change.
    pub fn depends_on_other_units(&self) -> bool {
        matches!(
            self,
            Self::DuplicateName { .. }
                | Self::MissingDependency { .. }
                | Self::DependencyVersion { .. }
                | Self::DependencyCycle { .. }
        )
    }
}
