//! Enabling and disabling units, by hand or as the mesh's unit controls say.

use super::Registry;
use std::sync::atomic::Ordering;
use swarm_runtime::EnableError;
use swarm_schemas::UnitControl;

impl Registry {
    /// Enables or disables a unit without touching its file; the state survives swaps. Enabling
    /// also lifts a quarantine (and forgets the unit's timeouts). The unit's `on_enable` runs before it takes signals again, and a refusal keeps it disabled;
    /// `on_disable` runs after it stops taking them, and cannot keep it enabled (a refusal is
    /// logged and shown as the unit's last error). Blocking: runs unit code.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), EnableError> {
        let _changing = self.changing.lock();
        let slot = self
            .unit(name)
            .ok_or_else(|| EnableError::UnknownUnit(name.to_owned()))?;
        let was = slot.enabled.load(Ordering::Acquire);
        let generation = slot.current();
        if enabled && !was {
            if let Some(generation) = &generation {
                generation.loaded.on_enabled(true).map_err(|refusal| {
                    tracing::warn!(unit = %name, what = refusal.what, error = %refusal.message,
                        "on_enable refused: the unit stays disabled");
                    EnableError::Refused {
                        unit: name.to_owned(),
                        what: refusal.what,
                        message: refusal.message,
                    }
                })?;
            }
        }
        slot.enabled.store(enabled, Ordering::Release);
        if enabled && slot.health.is_quarantined() {
            tracing::info!(unit = %name, "quarantine lifted: the unit was enabled again");
        }
        if enabled {
            slot.health.clear();
        }
        if !enabled && was {
            if let Some(generation) = &generation {
                if let Err(refusal) = generation.loaded.on_enabled(false) {
                    tracing::warn!(unit = %name, what = refusal.what, error = %refusal.message,
                        "on_disable failed; the unit is disabled anyway");
                    slot.set_error(Some(format!(
                        "on_disable {}: {}",
                        refusal.what, refusal.message
                    )));
                }
            }
        }
        tracing::info!(unit = %name, enabled, "unit {}", if enabled { "enabled" } else { "disabled" });
        Ok(())
    }

    /// Applies a unit's control from the mesh (another reactor, or this one before a restart,
    /// changed it): enables or disables the unit, and quarantines it or lifts its quarantine
    /// if the version quarantined is the one serving. Remembered for a unit not loaded yet.
    /// Blocking: runs unit hooks.
    pub fn apply_control(&self, name: &str, control: &UnitControl) -> Result<(), EnableError> {
        self.desired.insert(name.to_owned(), control.clone());
        let Some(slot) = self.unit(name) else {
            return Ok(());
        };
        if slot.is_enabled() != control.enabled {
            self.set_enabled(name, control.enabled)?;
        }
        let serving = slot.current().map(|g| hex::encode(g.loaded.hash()));
        let quarantined = serving.is_some() && control.quarantined == serving;
        if quarantined && slot.health.quarantine() {
            tracing::warn!(unit = %name, by = %control.by, "unit quarantined on the mesh");
        } else if !quarantined && slot.is_quarantined() {
            slot.health.clear();
            tracing::info!(unit = %name, by = %control.by, "quarantine lifted on the mesh");
        }
        Ok(())
    }

    /// A unit's control as this process has it: enabled, and the hash (hex) of its serving
    /// version if that is quarantined. `None` if it is not loaded.
    pub fn local_control(&self, name: &str) -> Option<(bool, Option<String>)> {
        let slot = self.unit(name)?;
        let quarantined = slot
            .is_quarantined()
            .then(|| slot.current().map(|g| hex::encode(g.loaded.hash())))
            .flatten();
        Some((slot.is_enabled(), quarantined))
    }
}
