//! A running reactor: the registry, the directory watch and the dispatch loop together.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use dashmap::DashMap;
use swarm_memory::{AuditLog, AuditTrail, InProcAudit, Memory};
use swarm_mesh::Mesh;
use swarm_schemas::ExecutionRecord;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::controls::ControlSync;
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
    /// Someone other than this user could put code in the units directory.
    #[error("refusing the units directory: {0} (--insecure-units-dir loads from it anyway)")]
    InsecureUnitsDir(String),
    /// The host's capabilities could not be set up.
    #[error("cannot set up host capabilities: {0}")]
    Host(String),
}

/// Executions kept for watchers that fall behind before they lose the oldest.
const EXECUTIONS_BUFFER: usize = 4096;

/// What can be watched and changed of a running reactor from elsewhere (the inspector): its
/// units, their executions as they happen, its signals in flight. Cheap to clone.
#[derive(Clone)]
pub struct ReactorHandle {
    registry: Arc<Registry>,
    in_flight: Arc<crate::dispatch::InFlight>,
    executions: broadcast::Sender<Arc<ExecutionRecord>>,
    audit: AuditTrail,
}

impl ReactorHandle {
    /// The reactor's audit trail: record in it, read it.
    pub fn audit(&self) -> &AuditTrail {
        &self.audit
    }

    /// The registry of loaded units.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Every execution from now on, once recorded. A receiver that falls behind loses the
    /// oldest.
    pub fn executions(&self) -> broadcast::Receiver<Arc<ExecutionRecord>> {
        self.executions.subscribe()
    }

    /// Signals read and not yet settled, by kind.
    pub fn in_flight(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for entry in self.in_flight.iter() {
            *out.entry(entry.value().to_string()).or_default() += 1;
        }
        out
    }
}

/// What the inspector shows and changes of this reactor.
impl swarm_runtime::Runtime for ReactorHandle {
    fn units(&self) -> Vec<swarm_schemas::UnitStatus> {
        self.registry.status()
    }

    fn set_enabled(
        &self,
        unit: &str,
        enabled: bool,
    ) -> Result<swarm_schemas::UnitStatus, swarm_runtime::EnableError> {
        self.registry.set_enabled(unit, enabled)?;
        self.registry
            .status()
            .into_iter()
            .find(|u| u.name == unit)
            .ok_or_else(|| swarm_runtime::EnableError::UnknownUnit(unit.to_owned()))
    }

    fn executions(&self) -> broadcast::Receiver<Arc<ExecutionRecord>> {
        ReactorHandle::executions(self)
    }

    fn in_flight(&self) -> BTreeMap<String, u64> {
        ReactorHandle::in_flight(self)
    }
}

/// A running reactor. Stop it with [`Reactor::stop`].
pub struct Reactor {
    fatal: watch::Receiver<Option<String>>,
    registry: Arc<Registry>,
    handle: ReactorHandle,
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
    ///
    /// Its audit trail (loads, swaps, refusals, quarantines, trust changes) is kept in process
    /// memory; [`start_audited`](Self::start_audited) keeps it elsewhere.
    pub async fn start(
        config: ReactorConfig,
        mesh: Arc<dyn Mesh>,
        memory: Arc<dyn Memory>,
    ) -> Result<(Self, LoadReport), StartError> {
        Self::start_audited(config, mesh, memory, Arc::new(InProcAudit::new())).await
    }

    /// Like [`start`](Self::start), recording the audit trail in `audit` (PostgreSQL, shared
    /// by the reactors of a swarm).
    pub async fn start_audited(
        mut config: ReactorConfig,
        mesh: Arc<dyn Mesh>,
        memory: Arc<dyn Memory>,
        audit: Arc<dyn AuditLog>,
    ) -> Result<(Self, LoadReport), StartError> {
        config.units_dir = checked_units_dir(&config)?;
        zero_metrics();
        let audit = AuditTrail::spawn(audit, &config.consumer);
        let ranker = Arc::new(Ranker::new(config.ranker.clone()));
        let registry = registry(&config, mesh.as_ref(), &audit, &ranker)?;
        let report = initial_load(&registry, &config.units_dir).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        // Units disabled or quarantined on the mesh (by any reactor, or this one before a
        // restart) are so before the first signal.
        sync_controls(
            &registry,
            mesh.as_ref(),
            &config.consumer,
            shutdown_rx.clone(),
        )
        .await;
        if let Some(trust_file) = config.trust.trust_file.clone() {
            tokio::spawn(crate::trust::audit_changes(
                trust_file,
                audit.clone(),
                shutdown_rx.clone(),
            ));
        }
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
        let handle = ReactorHandle {
            registry: Arc::clone(&registry),
            in_flight: Arc::new(DashMap::new()),
            executions: broadcast::channel(EXECUTIONS_BUFFER).0,
            audit: audit.clone(),
        };
        let watchdog = Arc::new(
            crate::quarantine::Watchdog::new(
                config.call_timeout,
                config.quarantine_after,
                config.max_stuck_calls,
            )
            .with_audit(audit),
        );
        let fatal = watchdog.fatal();
        let dispatcher = Arc::new(Dispatcher {
            watchdog,
            mesh,
            memory,
            registry: Arc::clone(&registry),
            ranker: Arc::clone(&ranker),
            config: Arc::new(config),
            in_flight: Arc::clone(&handle.in_flight),
            executions: handle.executions.clone(),
        });
        let dispatch = tokio::spawn(dispatcher.run(shutdown_rx));
        let reactor = Self {
            fatal,
            registry,
            handle,
            ranker,
            shutdown,
            dispatch,
            watch,
        };
        Ok((reactor, report))
    }

    /// The registry of loaded units: status, enable/disable.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A handle for watching this reactor from elsewhere.
    pub fn handle(&self) -> ReactorHandle {
        self.handle.clone()
    }

    /// Resolves, with the reason, once the reactor cannot go on safely in this process: more
    /// unit calls are stuck past their deadline than `max_stuck_calls` (their threads cannot be
    /// stopped). The process should then exit non-zero, for a supervisor to start a fresh one;
    /// their signals stay pending and are delivered again (and dead-lettered at
    /// `max_deliveries`).
    pub async fn fatal(&self) -> String {
        let mut fatal = self.fatal.clone();
        match fatal.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The watchdog is gone with the dispatch loop: nothing can get stuck any more.
            Err(_) => std::future::pending().await,
        }
    }

    /// The ranker: how competing units are ordered, and their circuit breakers.
    pub fn ranker(&self) -> &Arc<Ranker> {
        &self.ranker
    }

    /// Stops reading signals, waits for the running ones to settle, stops watching.
    pub async fn stop(self) {
        self.stop_within(Duration::MAX).await;
    }

    /// Like [`stop`](Self::stop), but waits at most `deadline` for the running signals. Those
    /// that have not settled by then are abandoned unacknowledged: they stay pending in the
    /// mesh and are delivered again (to this consumer when it restarts, or to another after
    /// `claim_idle`); nothing is lost. Returns whether everything settled in time.
    pub async fn stop_within(mut self, deadline: Duration) -> bool {
        let _ = self.shutdown.send(true);
        let waited = async {
            if deadline == Duration::MAX {
                Ok((&mut self.dispatch).await)
            } else {
                tokio::time::timeout(deadline, &mut self.dispatch).await
            }
        };
        let drained = match waited.await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::error!(%error, "dispatch loop ended abnormally");
                true
            }
            Err(_) => {
                let left = self.handle.in_flight.len();
                tracing::warn!(
                    left,
                    "shutdown deadline passed: {left} signals in flight stay pending and will be delivered again"
                );
                self.dispatch.abort();
                false
            }
        };
        if let Some((debouncer, task)) = self.watch {
            drop(debouncer);
            let _ = task.await;
        }
        drained
    }
}

/// The units directory as an absolute path, checked for who may write it. The watcher reports
/// absolute paths: the initial load must name files the same way, or a relative directory
/// would hold every unit twice (and refuse the second).
fn checked_units_dir(config: &ReactorConfig) -> Result<std::path::PathBuf, StartError> {
    let dir = config
        .units_dir
        .canonicalize()
        .map_err(|source| StartError::UnitsDir {
            path: config.units_dir.clone(),
            source,
        })?;
    config
        .trust
        .check_owner(&dir)
        .map_err(StartError::InsecureUnitsDir)?;
    Ok(dir)
}

/// The registry `config` asks for, telling `ranker` of every new generation.
fn registry(
    config: &ReactorConfig,
    mesh: &dyn Mesh,
    audit: &AuditTrail,
    ranker: &Arc<Ranker>,
) -> Result<Arc<Registry>, StartError> {
    let host = crate::HostServices::new(mesh, config.host.clone()).map_err(StartError::Host)?;
    let ranker = Arc::clone(ranker);
    Ok(Arc::new(
        Registry::new(config.private_dir.clone(), config.unit_config.clone())
            .with_host(Arc::new(host))
            .with_trust(config.trust.clone())
            .with_audit(audit.clone())
            .with_isolation(config.isolation.clone(), config.unit_threads.max(1) * 2)
            .on_generation(Arc::new(move |unit, version| {
                ranker.unit_loaded(unit, version, chrono::Utc::now());
                zero_unit_metrics(unit, &ranker);
            })),
    ))
}

/// The process-wide series the shipped dashboard and alert rules read, at zero before anything
/// moves them: an alert on a series that does not exist yet never fires.
fn zero_metrics() {
    metrics::gauge!("swarm_stuck_calls").set(0.0);
    metrics::gauge!("swarm_in_flight").set(0.0);
    metrics::counter!("swarm_dead_letters_total").increment(0);
    metrics::counter!("swarm_settle_failures_total").increment(0);
    metrics::counter!("swarm_settles_fenced_total").increment(0);
}

/// The per-unit series of a unit just loaded, at their present value (zero, for counters not
/// yet moved).
fn zero_unit_metrics(unit: &str, ranker: &Ranker) {
    let open = ranker.breaker_state(unit) == crate::ranking::BreakerState::Open;
    metrics::gauge!("swarm_breaker_open", "unit" => unit.to_owned()).set(f64::from(u8::from(open)));
    metrics::counter!("swarm_breaker_opened_total", "unit" => unit.to_owned()).increment(0);
    metrics::counter!("swarm_unit_quarantines_total", "unit" => unit.to_owned()).increment(0);
    metrics::counter!("swarm_unit_swaps_total", "unit" => unit.to_owned()).increment(0);
}

/// Loads every unit file of `dir`, off the async workers (it runs unit constructors).
async fn initial_load(registry: &Arc<Registry>, dir: &Path) -> Result<LoadReport, StartError> {
    let (loading, path) = (Arc::clone(registry), dir.to_owned());
    tokio::task::spawn_blocking(move || loading.load_dir(&path))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|source| StartError::UnitsDir {
            path: dir.to_owned(),
            source,
        })
}

/// Applies the unit controls on the mesh once (waiting at most 2 s for them), then keeps them
/// in step until shutdown.
async fn sync_controls(
    registry: &Arc<Registry>,
    mesh: &dyn Mesh,
    consumer: &str,
    shutdown: watch::Receiver<bool>,
) {
    let mut controls = ControlSync::new(
        Arc::clone(registry),
        mesh.unit_controls(),
        consumer.to_owned(),
    );
    if tokio::time::timeout(Duration::from_secs(2), controls.step())
        .await
        .is_err()
    {
        tracing::warn!("the mesh did not answer with the unit controls in 2 s; going on");
    }
    tokio::spawn(controls.run(shutdown));
}
