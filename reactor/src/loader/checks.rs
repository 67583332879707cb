//! What a library hands the loader, checked: its manifest, and the configuration its
//! constructor will get against the schema the manifest declares. No unsafe code.

#![deny(unsafe_code)]

use swarm_schemas::UnitManifest;

use crate::LoadError;

/// Decodes and validates the manifest a library's `manifest()` wrote.
pub(crate) fn manifest(bytes: &[u8]) -> Result<UnitManifest, String> {
    let manifest: UnitManifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    manifest.validate().map_err(|e| e.to_string())?;
    Ok(manifest)
}

/// The configuration the constructor gets: the unit's section, or, for a unit whose manifest
/// declares a config schema, `{}` when it has none; checked against that schema.
pub(crate) fn config(
    manifest: &UnitManifest,
    config: Option<&serde_json::Value>,
) -> Result<serde_json::Value, LoadError> {
    let unit = &manifest.name;
    let Some(schema) = &manifest.config_schema else {
        return Ok(config.cloned().unwrap_or(serde_json::Value::Null));
    };
    let config = config
        .cloned()
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let validator = jsonschema::validator_for(schema).map_err(|e| LoadError::ConfigSchema {
        unit: unit.clone(),
        message: e.to_string(),
    })?;
    let problems: Vec<String> = validator
        .iter_errors(&config)
        .map(|e| {
            let path = e.instance_path().to_string();
            format!("{}: {e}", if path.is_empty() { "/" } else { &path })
        })
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(LoadError::Config {
            unit: unit.clone(),
            problems,
        })
    }
}
