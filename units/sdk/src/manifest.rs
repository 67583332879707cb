//! A builder for the unit's manifest.
//!
//! The builder does not check anything: it writes what the author said, and the host checks it
//! when it loads the unit (the harness does the same checks, so a unit's own tests catch a bad
//! manifest first).

use serde_json::{Value, json};
use swarm_schemas::{Capabilities, DispatchPolicy, HttpCapability};

/// Builder for a unit's manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    name: String,
    version: String,
    subscribes: Vec<String>,
    emits: Vec<String>,
    dependencies: Vec<(String, String)>,
    config_schema: Option<Value>,
    dispatch: DispatchPolicy,
    dispatch_for: Vec<(String, DispatchPolicy)>,
    carries_state: bool,
    capabilities: Capabilities,
    timeout: Option<std::time::Duration>,
}

impl Manifest {
    /// A manifest with a name (`[a-z][a-z0-9-]*`) and a semver version; pass
    /// `env!("CARGO_PKG_VERSION")` to use the crate's version.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            subscribes: Vec::new(),
            emits: Vec::new(),
            dependencies: Vec::new(),
            config_schema: None,
            dispatch: DispatchPolicy::FanOut,
            dispatch_for: Vec::new(),
            carries_state: false,
            capabilities: Capabilities::default(),
            timeout: None,
        }
    }

    /// Kind patterns the unit reacts to (`order.placed`, `order.*`, `order.>`).
    pub fn subscribes<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.subscribes.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Kind patterns the unit may emit.
    pub fn emits<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.emits.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// A unit that must be loaded before this one, with a semver requirement (`"*"` for any).
    pub fn depends_on(mut self, name: &str, version: &str) -> Self {
        self.dependencies
            .push((name.to_owned(), version.to_owned()));
        self
    }

    /// JSON Schema of the unit's configuration.
    pub fn config_schema(mut self, schema: Value) -> Self {
        self.config_schema = Some(schema);
        self
    }

    /// How the reactor picks among competing units for this unit's subscriptions.
    pub fn dispatch(mut self, policy: DispatchPolicy) -> Self {
        self.dispatch = policy;
        self
    }

    /// The policy for the subscribed kinds matching `pattern`, overriding [`Self::dispatch`]
    /// for them (the first matching pattern wins).
    pub fn dispatch_for(mut self, pattern: &str, policy: DispatchPolicy) -> Self {
        self.dispatch_for.push((pattern.to_owned(), policy));
        self
    }

    /// The unit carries state across a swap: the host calls [`Unit::snapshot`] on the old
    /// version once its last call has returned, and [`Unit::restore`] on the new one before
    /// it takes a signal. Without this, neither is called.
    ///
    /// [`Unit::snapshot`]: crate::Unit::snapshot
    /// [`Unit::restore`]: crate::Unit::restore
    pub fn carries_state(mut self) -> Self {
        self.carries_state = true;
        self
    }

    /// The unit deposits on and senses the shared field of marks ([`crate::marks`]). The
    /// reactor's configuration must also grant it.
    pub fn uses_marks(mut self) -> Self {
        self.capabilities.marks = true;
        self
    }

    /// The unit uses its key-value store ([`crate::kv`]). The reactor's configuration must
    /// also grant it.
    pub fn uses_kv(mut self) -> Self {
        self.capabilities.kv = true;
        self
    }

    /// The unit makes HTTP requests ([`crate::http`]) to these hosts and no others: `host`,
    /// `host:port`, or `*.domain`. The reactor's configuration must also grant it.
    pub fn uses_http<S: Into<String>>(mut self, allow: impl IntoIterator<Item = S>) -> Self {
        self.capabilities
            .http
            .get_or_insert_with(HttpCapability::default)
            .allow
            .extend(allow.into_iter().map(Into::into));
        self
    }

    /// The deadline of one call of this unit, instead of the reactor's (`--call-timeout`, 5 s by
    /// default). A call past it fails with `timeout` and is retried like any failure; the
    /// thread running it cannot be stopped, so a unit whose calls keep timing out is
    /// quarantined. Rounded up to whole milliseconds.
    pub fn timeout(mut self, deadline: std::time::Duration) -> Self {
        self.timeout = Some(deadline);
        self
    }

    /// The manifest as the JSON the host reads.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "name": self.name,
            "version": self.version,
            "subscribes": self.subscribes,
            "emits": self.emits,
            "dependencies": self.dependencies.iter()
                .map(|(name, version)| json!({"name": name, "version": version}))
                .collect::<Vec<_>>(),
            "dispatch": self.dispatch,
        });
        if let Some(schema) = &self.config_schema {
            value["config_schema"] = schema.clone();
        }
        if !self.dispatch_for.is_empty() {
            value["dispatch_for"] = self
                .dispatch_for
                .iter()
                .map(|(pattern, dispatch)| json!({"pattern": pattern, "dispatch": dispatch}))
                .collect();
        }
        if self.carries_state {
            value["carries_state"] = Value::Bool(true);
        }
        if !self.capabilities.is_empty() {
            value["capabilities"] = serde_json::to_value(&self.capabilities).unwrap_or(Value::Null);
        }
        if let Some(timeout) = self.timeout {
            let ms = timeout.as_nanos().div_ceil(1_000_000);
            value["timeout_ms"] = json!(u64::try_from(ms).unwrap_or(u64::MAX));
        }
        value
    }
}
