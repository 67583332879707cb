//! Host capabilities: what a unit declares it needs (in its manifest), the messages of its
//! calls to the host across the ABI, and the per-execution account of those calls.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A capability the host provides to units that are granted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Structured logging into the host's log. Every unit has it.
    Log,
    /// The shared field of evaporating marks.
    Marks,
    /// A key-value store of the unit's own.
    Kv,
    /// HTTP requests to the hosts the manifest allows.
    Http,
}

impl Capability {
    /// Every capability, in a fixed order.
    pub const ALL: [Capability; 4] = [Self::Log, Self::Marks, Self::Kv, Self::Http];

    /// Its name in manifests, configuration, metrics and records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Marks => "marks",
            Self::Kv => "kv",
            Self::Http => "http",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Capability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown capability `{s}` (known: log, marks, kv, http)"))
    }
}

/// The capabilities a unit declares in its manifest. Declaring is not having: the reactor's
/// configuration grants them per unit, and a call to one that is not both declared and granted
/// fails with an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Deposits on and senses the shared field of marks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marks: bool,
    /// Uses its key-value store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kv: bool,
    /// Makes HTTP requests, to these hosts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCapability>,
}

impl Capabilities {
    /// Whether the manifest declares `capability` (`log` is always declared).
    pub fn declares(&self, capability: Capability) -> bool {
        match capability {
            Capability::Log => true,
            Capability::Marks => self.marks,
            Capability::Kv => self.kv,
            Capability::Http => self.http.is_some(),
        }
    }

    /// Whether nothing beyond `log` is declared.
    pub fn is_empty(&self) -> bool {
        !self.marks && !self.kv && self.http.is_none()
    }

    /// Checks the HTTP allowlist's entries.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(http) = &self.http {
            for host in &http.allow {
                validate_host_pattern(host)?;
            }
        }
        Ok(())
    }
}

/// The hosts a unit may send HTTP requests to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpCapability {
    /// Host names or IP addresses, each optionally with `:port` (without one, any port), or
    /// `*.domain` for every subdomain of a domain. Everything else is refused.
    pub allow: Vec<String>,
}

/// Checks one allowlist entry: `host`, `host:port`, `*.domain` or `*.domain:port`, lowercase.
pub fn validate_host_pattern(pattern: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("allowlist entry `{pattern}` {why}"));
    let (host, port) = match pattern.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (pattern, None),
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return bad("has a port that is not a number from 0 to 65535");
        }
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return bad("names no host");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return bad("may hold only lowercase letters, digits, `.` and `-` (and a leading `*.`)");
    }
    Ok(())
}

/// Longest key of a mark or of the key-value store, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value of the key-value store, as JSON text, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most operations in one [`MarksRequest`].
pub const MAX_MARK_OPS: usize = 10_000;
/// Marks that have evaporated below this (in absolute value) count as gone: prefix reads leave
/// them out.
pub const EVAPORATED: f64 = 1e-9;

/// Checks a key of a mark or of the key-value store: non-empty, at most [`MAX_KEY_BYTES`].
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a key may not be empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "a key may have at most {MAX_KEY_BYTES} bytes; this one has {}",
            key.len()
        ));
    }
    Ok(())
}

/// Checks a batch of mark operations: its size, each key, each amount.
pub fn validate_mark_ops(ops: &[MarkOp]) -> Result<(), String> {
    if ops.len() > MAX_MARK_OPS {
        return Err(format!(
            "at most {MAX_MARK_OPS} mark operations at once; got {}",
            ops.len()
        ));
    }
    for op in ops {
        match op {
            MarkOp::Deposit { key, amount } => {
                validate_key(key)?;
                if !amount.is_finite() {
                    return Err(format!(
                        "a deposit must be a finite number; got {amount} for `{key}`"
                    ));
                }
            }
            MarkOp::Sense { key } => validate_key(key)?,
        }
    }
    Ok(())
}

/// The JSON text a key-value store keeps for `value`, checked against [`MAX_VALUE_BYTES`].
pub fn kv_value_text(value: &serde_json::Value) -> Result<String, String> {
    let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
    if text.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "a value may have at most {MAX_VALUE_BYTES} bytes of JSON; this one has {}",
            text.len()
        ));
    }
    Ok(text)
}

/// A mark's `value` after `elapsed_ms` of evaporation with `half_life_ms`:
/// `value × 2^(−elapsed/half_life)`. Time running backwards (a clock stepped back) evaporates
/// nothing.
pub fn evaporated(value: f64, elapsed_ms: f64, half_life_ms: f64) -> f64 {
    value * (-(elapsed_ms.max(0.0)) / half_life_ms).exp2()
}

/// Sorts marks strongest first, ties by key (the order of [`MarksPrefixReply`]).
pub fn sort_strongest_first(marks: &mut [Mark]) {
    marks.sort_by(|a, b| b.value.total_cmp(&a.value).then_with(|| a.key.cmp(&b.key)));
}

/// How loud a unit's log record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// What happened.
    Info,
    /// Detail for whoever debugs the unit.
    Debug,
    /// More detail still.
    Trace,
}

/// A log record a unit sends to the host (`HOST_LOG`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// The message.
    pub message: String,
    /// Structured fields, logged beside the unit, version and signal the host adds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// One operation on the shared field of marks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MarkOp {
    /// Adds `amount` to the mark at `key` (after evaporation so far) and reads the sum.
    Deposit {
        /// The mark's key.
        key: String,
        /// What to add; finite, may be negative.
        amount: f64,
    },
    /// Reads the mark at `key` (0 if there is none).
    Sense {
        /// The mark's key.
        key: String,
    },
}

/// Operations on the field of marks (`HOST_MARKS`), applied in order in one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarksRequest {
    /// The operations.
    pub ops: Vec<MarkOp>,
}

/// What a [`MarksRequest`] read: one value per operation, after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarksReply {
    /// The mark's value after each operation, in order.
    pub values: Vec<f64>,
    /// The field's clock when they were read: milliseconds since the Unix epoch.
    pub at_ms: f64,
}

/// Every mark whose key starts with `prefix` (`HOST_MARKS_PREFIX`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarksPrefixRequest {
    /// The key prefix (matched literally).
    pub prefix: String,
}

/// A mark and its value now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// Its key.
    pub key: String,
    /// Its value after evaporation.
    pub value: f64,
}

/// The marks a [`MarksPrefixRequest`] found, strongest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarksPrefixReply {
    /// The marks, by value, highest first (ties by key).
    pub marks: Vec<Mark>,
    /// The field's clock when they were read: milliseconds since the Unix epoch.
    pub at_ms: f64,
}

/// An operation on the unit's key-value store (`HOST_KV`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum KvRequest {
    /// Reads a key.
    Get {
        /// The key.
        key: String,
    },
    /// Writes a key, optionally expiring after `ttl_ms`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: serde_json::Value,
        /// Milliseconds until it expires; none keeps it until deleted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// Removes a key.
    Delete {
        /// The key.
        key: String,
    },
}

/// What a [`KvRequest`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvReply {
    /// `get`: the value, if the key is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// `delete`: whether the key was set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// The head of an HTTP request (`HOST_HTTP`); its body follows it on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Request headers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Milliseconds the whole request may take; capped by the host's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The head of an HTTP response; its body follows it on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Response headers, in order (values that are not UTF-8 are left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// How one execution used one capability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostCalls {
    /// The capability.
    pub capability: Capability,
    /// Calls made, whatever their outcome.
    pub calls: u32,
    /// Calls that failed (the host or the service refused or broke), denied ones excluded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u32,
    /// Calls refused because the unit was not granted the capability.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub denied: u32,
    /// Time spent in those calls, in microseconds.
    pub micros: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        for good in [
            "example.com",
            "127.0.0.1",
            "localhost:8080",
            "*.example.com",
            "*.a-b.io:443",
        ] {
            assert_eq!(validate_host_pattern(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "*.",
            "Example.com",
            "a b",
            "host:port",
            "host:70000",
            "http://x",
            "*",
        ] {
            assert!(validate_host_pattern(bad).is_err(), "{bad} passed");
        }
    }

    #[test]
    fn capability_names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(c.name().parse::<Capability>(), Ok(c));
            assert_eq!(
                serde_json::to_value(c).ok(),
                Some(serde_json::json!(c.name()))
            );
        }
        assert!("disk".parse::<Capability>().is_err());
    }
}
