//! Watching the units directory: debounced file events become registry changes.
//!
//! Deployers should write `name.so.tmp` and `rename()` it over `name.so`; a plain copy works
//! too (the change is loaded once the file has been quiet for the debounce time, and a load of
//! a half-written file fails and keeps the old version until the next event).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::{mpsc, watch};

use crate::registry::{Registry, is_unit_file};

/// Everything that can wake the watch loop.
enum Event {
    /// Debounced changes to these paths.
    FilesChanged(Vec<PathBuf>),
    /// The watcher reported an error.
    WatchError(String),
}

/// Starts watching `dir`; changes are applied to `registry` until `shutdown` turns true.
/// Dropping the returned debouncer stops the watch.
pub(crate) fn spawn(
    dir: &Path,
    debounce: Duration,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<
    (
        Debouncer<notify::RecommendedWatcher>,
        tokio::task::JoinHandle<()>,
    ),
    notify::Error,
> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(debounce, move |result: DebounceEventResult| {
        let event = match result {
            Ok(events) => Event::FilesChanged(events.into_iter().map(|e| e.path).collect()),
            Err(error) => Event::WatchError(error.to_string()),
        };
        let _ = tx.send(event);
    })?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => return,
                event = rx.recv() => match event { Some(event) => event, None => return },
            };
            match event {
                Event::FilesChanged(mut paths) => {
                    paths.retain(|p| is_unit_file(p));
                    paths.sort();
                    paths.dedup();
                    if paths.is_empty() {
                        continue;
                    }
                    let registry = Arc::clone(&registry);
                    // Loading opens libraries and runs unit constructors: blocking work.
                    if let Err(error) =
                        tokio::task::spawn_blocking(move || registry.apply(paths)).await
                    {
                        tracing::error!(%error, "applying unit file changes failed");
                    }
                }
                Event::WatchError(error) => tracing::warn!(%error, "units directory watch error"),
            }
        }
    });
    Ok((debouncer, task))
}
