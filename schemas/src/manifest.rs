//! Unit manifests: what a unit is, what it reacts to, what it emits, what it needs.

use serde::{Deserialize, Serialize};

use crate::{KindError, KindPattern};

/// How the reactor picks among several units subscribed to the same signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum DispatchPolicy {
    /// Every matching unit fires.
    #[default]
    FanOut,
    /// Units are tried in rank order; the next fires only if the previous failed.
    FirstSuccess,
    /// The `k` best-ranked units fire.
    TopK {
        /// How many units fire.
        k: u32,
    },
}

impl DispatchPolicy {
    /// Short name recorded with each execution.
    pub fn name(&self) -> &'static str {
        match self {
            Self::FanOut => "fan_out",
            Self::FirstSuccess => "first_success",
            Self::TopK { .. } => "top_k",
        }
    }
}

/// The dispatch policy of the subscriptions that match a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PatternDispatch {
    /// Kinds this applies to.
    pub pattern: KindPattern,
    /// The policy for them.
    pub dispatch: DispatchPolicy,
}

/// A unit this unit needs loaded before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// The other unit's manifest name.
    pub name: String,
    /// Versions of it that will do (semver requirement, `*` for any).
    #[serde(default = "any_version")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub version: semver::VersionReq,
}

fn any_version() -> semver::VersionReq {
    semver::VersionReq::STAR
}

/// What a unit declares about itself; checked by the host before any other call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UnitManifest {
    /// Unique name: lowercase letters, digits and dashes, starting with a letter.
    pub name: String,
    /// Semantic version of the unit.
    pub version: semver::Version,
    /// Kind patterns of the signals it reacts to.
    pub subscribes: Vec<KindPattern>,
    /// Kind patterns of the signals it may emit; emitting anything else is a failure.
    #[serde(default)]
    pub emits: Vec<KindPattern>,
    /// Units that must be loaded before this one.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// JSON Schema of the unit's configuration, if it takes any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Value>,
    /// How the reactor picks among competing units for this unit's subscriptions.
    #[serde(default)]
    pub dispatch: DispatchPolicy,
    /// Policies for some kinds, overriding `dispatch` (the first pattern that matches wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dispatch_for: Vec<PatternDispatch>,
    /// Whether the unit carries state across a swap: the host drains the old version, takes
    /// its snapshot and restores it into the new one before the new one takes a signal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carries_state: bool,
    /// Host capabilities the unit uses beyond logging; the reactor's configuration grants them.
    #[serde(default, skip_serializing_if = "crate::Capabilities::is_empty")]
    pub capabilities: crate::Capabilities,
    /// Deadline of one call, in milliseconds, if the unit sets its own; otherwise the
    /// reactor's (`--call-timeout`). A call past it fails with `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The name breaks the naming rule.
    #[error(
        "name `{0}` is invalid: use 1-64 lowercase letters, digits and dashes, starting with a letter"
    )]
    BadName(String),
    /// The unit subscribes to nothing.
    #[error("unit `{0}` subscribes to no signal kinds")]
    NoSubscriptions(String),
    /// A pattern is malformed (only reachable when built without serde's checks).
    #[error("pattern {0}")]
    BadPattern(#[from] KindError),
    /// The unit lists itself as a dependency.
    #[error("unit `{0}` depends on itself")]
    SelfDependency(String),
    /// The config schema is not a JSON object or boolean.
    #[error("unit `{0}`: config_schema must be a JSON Schema object")]
    BadConfigSchema(String),
    /// `top_k` with k = 0.
    #[error("unit `{0}`: top_k dispatch needs k >= 1")]
    BadDispatch(String),
    /// `timeout_ms` of 0: no call could ever finish.
    #[error("unit `{0}`: timeout_ms must be at least 1")]
    ZeroTimeout(String),
    /// A declared capability is malformed (an HTTP allowlist entry).
    #[error("unit `{unit}`: capabilities: {message}")]
    BadCapabilities {
        /// The unit.
        unit: String,
        /// What is wrong.
        message: String,
    },
}

/// Checks a unit name: 1–64 of `[a-z0-9-]`, starting with a letter, not ending with a dash.
pub fn validate_unit_name(name: &str) -> Result<(), ManifestError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadName(name.to_owned()))
    }
}

impl UnitManifest {
    /// Checks what serde cannot: the naming rule, at least one subscription, sane dispatch.
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_unit_name(&self.name)?;
        if self.subscribes.is_empty() {
            return Err(ManifestError::NoSubscriptions(self.name.clone()));
        }
        for dependency in &self.dependencies {
            validate_unit_name(&dependency.name)?;
            if dependency.name == self.name {
                return Err(ManifestError::SelfDependency(self.name.clone()));
            }
        }
        if let Some(schema) = &self.config_schema {
            if !(schema.is_object() || schema.is_boolean()) {
                return Err(ManifestError::BadConfigSchema(self.name.clone()));
            }
        }
        let zero = DispatchPolicy::TopK { k: 0 };
        if self.dispatch == zero || self.dispatch_for.iter().any(|d| d.dispatch == zero) {
            return Err(ManifestError::BadDispatch(self.name.clone()));
        }
        if self.timeout_ms == Some(0) {
            return Err(ManifestError::ZeroTimeout(self.name.clone()));
        }
        self.capabilities
            .validate()
            .map_err(|message| ManifestError::BadCapabilities {
                unit: self.name.clone(),
                message,
            })?;
        Ok(())
    }

    /// Whether this unit subscribes to `kind`.
    pub fn subscribes_to(&self, kind: &str) -> bool {
        self.subscribes.iter().any(|p| p.matches(kind))
    }

    /// The dispatch policy of this unit's subscription to `kind`.
    pub fn policy_for(&self, kind: &str) -> DispatchPolicy {
        self.dispatch_for
            .iter()
            .find(|d| d.pattern.matches(kind))
            .map_or(self.dispatch, |d| d.dispatch)
    }

    /// The deadline of one call, if the unit sets its own.
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.timeout_ms.map(std::time::Duration::from_millis)
    }

    /// Whether this unit may emit `kind`.
    pub fn may_emit(&self, kind: &str) -> bool {
        self.emits.iter().any(|p| p.matches(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(value: serde_json::Value) -> Result<UnitManifest, String> {
        let m: UnitManifest = serde_json::from_value(value).map_err(|e| e.to_string())?;
        m.validate().map_err(|e| e.to_string())?;
        Ok(m)
    }

    #[test]
    fn a_minimal_manifest_is_accepted_with_defaults() {
        let m = manifest(
            json!({"name": "order-validate", "version": "1.2.3", "subscribes": ["order.placed"]}),
        )
        .expect("valid");
        assert_eq!(m.dispatch, DispatchPolicy::FanOut);
        assert!(m.subscribes_to("order.placed"));
        assert!(!m.may_emit("order.placed"));
    }

    #[test]
    fn a_policy_per_subscription_overrides_the_default() {
        let m = manifest(
            json!({"name": "a", "version": "1.0.0", "subscribes": ["order.>"],
            "dispatch": {"policy": "top_k", "k": 2},
            "dispatch_for": [
                {"pattern": "order.placed", "dispatch": {"policy": "first_success"}},
                {"pattern": "order.*", "dispatch": {"policy": "fan_out"}}
            ]}),
        )
        .expect("valid");
        assert_eq!(m.policy_for("order.placed"), DispatchPolicy::FirstSuccess);
        assert_eq!(m.policy_for("order.paid"), DispatchPolicy::FanOut);
        assert_eq!(
            m.policy_for("order.paid.late"),
            DispatchPolicy::TopK { k: 2 }
        );
        let err = manifest(json!({"name": "a", "version": "1.0.0", "subscribes": ["x"],
            "dispatch_for": [{"pattern": "x", "dispatch": {"policy": "top_k", "k": 0}}]}))
        .expect_err("must fail");
        assert!(err.contains("k >= 1"), "{err}");
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let err = manifest(json!({"name": "Bad Name", "version": "1.0.0", "subscribes": ["a"]}))
            .expect_err("must fail");
        assert!(err.contains("name `Bad Name` is invalid"), "{err}");
        let err = manifest(json!({"name": "a", "version": "one", "subscribes": ["a"]}))
            .expect_err("must fail");
        assert!(err.contains("version"), "{err}");
        let err = manifest(json!({"name": "a", "version": "1.0.0", "subscribes": []}))
            .expect_err("must fail");
        assert!(err.contains("subscribes to no signal kinds"), "{err}");
        let err = manifest(json!({"name": "a", "version": "1.0.0", "subscribes": ["x..y"]}))
            .expect_err("must fail");
        assert!(err.contains("empty segment"), "{err}");
        let err = manifest(json!({"name": "a", "version": "1.0.0", "subscribes": ["x"],
            "dependencies": [{"name": "a"}]}))
        .expect_err("must fail");
        assert!(err.contains("depends on itself"), "{err}");
        assert!(validate_unit_name("ends-").is_err());
        assert!(validate_unit_name("9lives").is_err());
        assert!(validate_unit_name(&"a".repeat(65)).is_err());
    }
}
