//! Unit controls shared on the mesh: whether each unit is enabled, and which version of it is
//! quarantined, kept on the mesh's medium so that they survive restarts and reach every
//! reactor on the mesh.
//!
//! One task per reactor polls the mesh's controls every [`POLL`]. A control that changed since
//! the last poll is applied here (another reactor changed it, or this one before a restart); a
//! unit whose state changed here since the last poll (enabled or disabled over HTTP,
//! quarantined for hanging, its quarantine lifted) is written to the mesh. The last write wins;
//! a change reaches every reactor within two polls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use swarm_mesh::UnitControls;
use swarm_schemas::UnitControl;
use tokio::sync::watch;

use crate::registry::Registry;

/// How often the controls on the mesh are read.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// A unit's state as this process has it: enabled, and the quarantined version's hash.
type Local = (bool, Option<String>);

/// Keeps the registry and the mesh's unit controls in step.
pub(crate) struct ControlSync {
    registry: Arc<Registry>,
    controls: Arc<dyn UnitControls>,
    /// This process, as written in the controls it changes.
    process: String,
    /// Each control as last read from (or written to) the mesh.
    seen: HashMap<String, UnitControl>,
    /// Each unit's local state after the last step: a difference is a change made here.
    local: HashMap<String, Local>,
    /// Whether the last read failed (logged once per outage).
    failing: bool,
}

impl ControlSync {
    pub(crate) fn new(
        registry: Arc<Registry>,
        controls: Arc<dyn UnitControls>,
        process: String,
    ) -> Self {
        Self {
            registry,
            controls,
            process,
            seen: HashMap::new(),
            local: HashMap::new(),
            failing: false,
        }
    }

    /// Reads the controls, applies those that changed on the mesh and writes the units that
    /// changed here.
    pub(crate) async fn step(&mut self) {
        let stored = match self.controls.all().await {
            Ok(stored) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("unit controls readable on the mesh again");
                }
                stored
            }
            Err(error) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, "cannot read the unit controls on the mesh; units keep their state here");
                }
                return;
            }
        };
        let changed: Vec<(String, UnitControl)> = stored
            .into_iter()
            .filter(|(unit, control)| self.seen.get(unit) != Some(control))
            .collect();
        if !changed.is_empty() {
            let registry = Arc::clone(&self.registry);
            let applied = changed.clone();
            // Enabling and disabling run unit hooks: off the async threads.
            let _ = tokio::task::spawn_blocking(move || {
                for (unit, control) in &applied {
                    if let Err(error) = registry.apply_control(unit, control) {
                        tracing::warn!(unit, %error, "cannot apply the unit's control from the mesh");
                    }
                }
            })
            .await;
            for (unit, control) in changed {
                if let Some(now) = self.registry.local_control(&unit) {
                    self.local.insert(unit.clone(), now);
                }
                self.seen.insert(unit, control);
            }
        }
        for unit in self.registry.names() {
            let Some(now) = self.registry.local_control(&unit) else {
                continue;
            };
            match self.local.get(&unit) {
                Some(before) if *before != now => self.write(&unit, &now).await,
                Some(_) => {}
                None if now.1.is_some() => self.write(&unit, &now).await,
                None => {
                    self.local.insert(unit, now);
                }
            }
        }
    }

    /// Writes the unit's local state to the mesh.
    async fn write(&mut self, unit: &str, (enabled, quarantined): &Local) {
        // A quarantine of a version this process no longer serves still holds for the
        // reactors that serve it.
        let serving = self.registry.serving_version(unit);
        let elsewhere = self
            .seen
            .get(unit)
            .and_then(|c| c.quarantined.clone())
            .filter(|hash| Some(hash) != serving.as_ref());
        let control = UnitControl {
            enabled: *enabled,
            quarantined: quarantined.clone().or(elsewhere),
            by: self.process.clone(),
            at: chrono::Utc::now(),
        };
        match self.controls.set(unit, &control).await {
            Ok(()) => {
                tracing::info!(
                    unit,
                    enabled,
                    quarantined = control.quarantined.is_some(),
                    "unit control written to the mesh"
                );
                self.local
                    .insert(unit.to_owned(), (*enabled, quarantined.clone()));
                self.seen.insert(unit.to_owned(), control);
            }
            // Tried again at the next step: the local state still differs.
            Err(error) => {
                tracing::warn!(unit, %error, "cannot write the unit's control to the mesh")
            }
        }
    }

    /// Steps every [`POLL`] until shutdown.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.step().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
