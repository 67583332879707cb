//! What the registry reports: unit status, refused files, what a change did.

use std::path::PathBuf;

use crate::LoadError;

/// A unit file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileFailure {
    /// The file.
    pub file: PathBuf,
    /// Why.
    pub error: String,
}

/// What one file change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A unit was loaded for the first time.
    Loaded {
        /// Its name.
        name: String,
    },
    /// A unit's new generation replaced the old one.
    Swapped {
        /// Its name.
        name: String,
        /// The new generation number.
        generation: u64,
    },
    /// The file's bytes are those already serving.
    Unchanged,
    /// The file is gone; the unit unloads when its running calls finish.
    Removed {
        /// Its name.
        name: String,
    },
}

/// The result of loading several files.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// What changed.
    pub changes: Vec<(PathBuf, Change)>,
    /// Files refused, with why.
    pub failures: Vec<(PathBuf, LoadError)>,
}
