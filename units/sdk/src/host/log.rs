//! Structured logging into the host's log, tagged by the host with the unit's name and version
//! and the signal being handled.
//!
//! ```no_run
//! swarm_sdk::log::info("order checked");
//! swarm_sdk::log::event(swarm_sdk::log::Level::Warn, "slow supplier", [("ms", 1200.into())]);
//! ```
//!
//! Logging never fails the unit: outside a reactor the record goes to stderr, and a record the
//! host cannot take is dropped.

use swarm_abi::HOST_LOG;
pub use swarm_schemas::LogLevel as Level;
/// A log record, as the host gets it ([`Harness::logs`](crate::Harness::logs) returns them).
pub use swarm_schemas::LogRecord as Record;
use swarm_schemas::LogRecord;

/// Logs `message` with structured `fields`.
pub fn event<K: Into<String>>(
    level: Level,
    message: impl Into<String>,
    fields: impl IntoIterator<Item = (K, serde_json::Value)>,
) {
    let record = LogRecord {
        level,
        message: message.into(),
        fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
    };
    let Ok(bytes) = serde_json::to_vec(&record) else {
        return;
    };
    if let Err(e) = super::call_raw(HOST_LOG, &bytes) {
        if e.kind() == super::HostErrorKind::NoHost {
            eprintln!(
                "[{:?}] {} {:?}",
                record.level, record.message, record.fields
            );
        }
    }
}

fn plain(level: Level, message: impl Into<String>) {
    event(
        level,
        message,
        std::iter::empty::<(String, serde_json::Value)>(),
    );
}

/// Logs at error level.
pub fn error(message: impl Into<String>) {
    plain(Level::Error, message);
}

/// Logs at warn level.
pub fn warn(message: impl Into<String>) {
    plain(Level::Warn, message);
}

/// Logs at info level.
pub fn info(message: impl Into<String>) {
    plain(Level::Info, message);
}

/// Logs at debug level.
pub fn debug(message: impl Into<String>) {
    plain(Level::Debug, message);
}

/// Logs at trace level.
pub fn trace(message: impl Into<String>) {
    plain(Level::Trace, message);
}
