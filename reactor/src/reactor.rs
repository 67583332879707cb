//! A running reactor: the registry, the directory watch and the dispatch loop together.

use std::sync::Arc;

use dashmap::DashSet;
use swarm_memory::Memory;
use swarm_mesh::Mesh;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dispatch::Dispatcher;
use crate::ranking::Ranker;
use crate::registry::Registry;
use crate::status::LoadReport;
use crate::{ReactorConfig, watcher};

/// Why a reactor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The units directory could not be read.
    #[error("cannot read the units directory {path}: {source}")]
    UnitsDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The units directory could not be watched.
    #[error("cannot watch the units directory: {0}")]
    Watch(#[from] notify::Error),
}

/// A running reactor. Stop it with [`Reactor::stop`].
pub struct Reactor {
    registry: Arc<Registry>,
    ranker: Arc<Ranker>,
    shutdown: watch::Sender<bool>,
    dispatch: JoinHandle<()>,
    watch: Option<(
        notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>,
        JoinHandle<()>,
    )>,
}

impl Reactor {
    /// Loads the units directory, starts watching it (if configured) and starts dispatching.
    /// Returns the running reactor and what the initial load did; units that fail to load are
    /// reported there and do not stop the others.
    pub async fn start(
        config: ReactorConfig,
        mesh: Arc<dyn Mesh>,
        memory: Arc<dyn Memory>,
    ) -> Result<(Self, LoadReport), StartError> {
        let registry = Arc::new(Registry::new(
            config.private_dir.clone(),
            config.unit_config.clone(),
        ));
        let report = {
            let registry = Arc::clone(&registry);
            let dir = config.units_dir.clone();
            tokio::task::spawn_blocking(move || registry.load_dir(&dir))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|source| StartError::UnitsDir {
                    path: config.units_dir.clone(),
                    source,
                })?
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let watch = if config.watch {
            Some(watcher::spawn(
                &config.units_dir,
                config.debounce,
                Arc::clone(&registry),
                shutdown_rx.clone(),
            )?)
        } else {
            None
        };
        let ranker = Arc::new(Ranker::new(config.ranker.clone()));
        let dispatcher = Arc::new(Dispatcher {
            mesh,
            memory,
            registry: Arc::clone(&registry),
            ranker: Arc::clone(&ranker),
            config: Arc::new(config),
            in_flight: DashSet::new(),
        });
        let dispatch = tokio::spawn(dispatcher.run(shutdown_rx));
        Ok((
            Self {
                registry,
                ranker,
                shutdown,
                dispatch,
                watch,
            },
            report,
        ))
    }

    /// The registry of loaded units: status, enable/disable.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The ranker: how competing units are ordered, and their circuit breakers.
    pub fn ranker(&self) -> &Arc<Ranker> {
        &self.ranker
    }

    /// Stops reading signals, waits for the running ones to settle, stops watching.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Err(error) = self.dispatch.await {
            tracing::error!(%error, "dispatch loop ended abnormally");
        }
        if let Some((debouncer, task)) = self.watch {
            drop(debouncer);
            let _ = task.await;
        }
    }
}
