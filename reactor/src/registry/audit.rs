//! What a load changed and refused, recorded in the audit trail.

use super::Registry;
use crate::status::{Change, LoadReport};
use swarm_schemas::AuditAction;

impl Registry {
    /// Records what `report` changed and refused in the audit trail.
    pub(super) fn audit_report(&self, report: &LoadReport) {
        let Some(audit) = &self.audit else {
            return;
        };
        let serving = |name: &str| {
            self.unit(name).and_then(|slot| slot.current()).map(|g| {
                (
                    g.manifest().version.to_string(),
                    hex::encode(g.loaded.hash()),
                )
            })
        };
        for (path, change) in &report.changes {
            let (action, name, what) = match change {
                Change::Loaded { name } => (AuditAction::Load, name, "loaded"),
                Change::Swapped { name, .. } => (AuditAction::Swap, name, "swapped in"),
                Change::Removed { name } => {
                    let detail = format!("{} is gone: unloaded", path.display());
                    audit.reactor(AuditAction::Remove, Some(name), "ok", detail);
                    continue;
                }
                Change::Unchanged => continue,
            };
            let (version, sha256) = serving(name).unwrap_or_default();
            let detail = format!(
                "version {version} {what} from {} (sha256 {sha256})",
                path.display()
            );
            audit.reactor(action, Some(name), "ok", detail);
        }
        for (path, error) in &report.failures {
            let unit = self
                .files
                .get(path)
                .map(|name| name.clone())
                .or_else(|| error.unit().map(str::to_owned));
            let still = unit.as_deref().and_then(serving);
            let (action, detail) = match still {
                Some((version, _)) => (
                    AuditAction::Rollback,
                    format!(
                        "{} refused: {error}; version {version} keeps serving",
                        path.display()
                    ),
                ),
                None => (
                    AuditAction::Refuse,
                    format!("{} refused: {error}", path.display()),
                ),
            };
            audit.reactor(action, unit.as_deref(), "refused", detail);
        }
    }
}
