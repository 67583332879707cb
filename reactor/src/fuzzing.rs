//! The checks of what a unit library brings, public for the fuzz targets (`tests/fuzz`): the
//! same functions the loader calls, on any bytes.

use std::path::Path;

use swarm_schemas::UnitManifest;

use crate::LoadError;

/// Checks a unit file's bytes as the loader does before it writes and opens them.
pub fn unit_file(bytes: &[u8]) -> Result<(), LoadError> {
    crate::loader::check_file(Path::new("units/fuzzed.so"), bytes)
}

/// Decodes and validates a manifest as the loader does with what `manifest()` wrote.
pub fn manifest(bytes: &[u8]) -> Result<UnitManifest, String> {
    crate::loader::read_manifest(bytes)
}

/// The configuration a unit of `manifest` would be constructed with, given its section.
pub fn unit_config(
    manifest: &UnitManifest,
    section: Option<&serde_json::Value>,
) -> Result<serde_json::Value, LoadError> {
    crate::loader::check_config(manifest, section)
}
