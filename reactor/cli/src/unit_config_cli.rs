//! The unit configuration file (`--unit-config`): read at start, and watched while the reactor
//! runs, so that saving it reconfigures the units whose sections changed.
//!
//! A file that does not parse changes nothing (the error is printed and logged); a section that
//! its unit's config schema refuses refuses that unit's reload, with the offending fields, and
//! the unit keeps serving with the configuration it had.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use swarm_reactor::{Change, Registry, UnitConfig};

/// Reads and parses the file: a JSON object of sections by unit name.
pub(crate) fn read(path: &Path) -> anyhow::Result<UnitConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    swarm_reactor::parse_unit_config(&text).with_context(|| {
        format!(
            "{} is not a JSON object of unit configurations by unit name",
            path.display()
        )
    })
}

/// Watches `path` (through its directory, so editors that save by rename are seen); each
/// change that parses goes to `registry`. Stops when the returned debouncer is dropped.
pub(crate) fn watch(
    path: PathBuf,
    registry: Arc<Registry>,
) -> anyhow::Result<Debouncer<notify::RecommendedWatcher>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(ToOwned::to_owned);
    let runtime = tokio::runtime::Handle::current();
    let (first_path, first_registry) = (path.clone(), Arc::clone(&registry));
    let on_save = runtime.clone();
    let mut debouncer = new_debouncer(
        Duration::from_millis(100),
        move |result: DebounceEventResult| {
            let touched = match result {
                Ok(events) => events.iter().any(|e| e.path.file_name() == name.as_deref()),
                Err(error) => {
                    tracing::warn!(%error, "unit config watch error");
                    false
                }
            };
            if !touched {
                return;
            }
            let path = path.clone();
            let registry = Arc::clone(&registry);
            // Reloading runs unit code: blocking work, off the watcher's thread.
            on_save.spawn_blocking(move || reconfigure(&path, &registry));
        },
    )
    .context("cannot watch the unit config file")?;
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    // A save between the first read and the start of the watch would go unseen: read once more
    // now (nothing reloads if nothing changed).
    runtime.spawn_blocking(move || reconfigure(&first_path, &first_registry));
    Ok(debouncer)
}

fn reconfigure(path: &Path, registry: &Registry) {
    let config = match read(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("unit config not applied: {error:#}");
            tracing::warn!(error = %format!("{error:#}"), "unit config not applied; the units keep their configuration");
            return;
        }
    };
    let report = registry.set_unit_config(config);
    for (_, change) in &report.changes {
        if let Change::Swapped { name, generation } = change {
            eprintln!("reconfigured {name} (generation {generation})");
        }
    }
    for (file, error) in &report.failures {
        eprintln!("refused {}: {error}", file.display());
    }
}
