//! What the registry reports: unit status, refused files, what a change did.

use std::path::PathBuf;

use swarm_schemas::KindPattern;

use crate::LoadError;

/// What a unit looks like from outside, for `swarm units` and the API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UnitStatus {
    /// Manifest name.
    pub name: String,
    /// Version serving.
    pub version: String,
    /// Generation serving.
    pub generation: u64,
    /// `ready` or `disabled`.
    pub state: &'static str,
    /// Subscription patterns.
    pub subscribes: Vec<KindPattern>,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// The last load of a new version that failed, if the last attempt failed.
    pub last_error: Option<String>,
}

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
