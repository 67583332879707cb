//! The host a [`Harness`](crate::Harness) gives a unit: its capabilities in memory, on a clock
//! the test moves, so a unit's own tests can use marks, kv and log without a reactor.
//!
//! It grants what the manifest declares (a reactor's configuration would grant it too);
//! anything undeclared is denied, as in the reactor. HTTP is not provided: a call fails.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use swarm_abi::{
    HOST_KV, HOST_LOG, HOST_MARKS, HOST_MARKS_PREFIX, HostOp, STATUS_BAD_INPUT, STATUS_DENIED,
    STATUS_ERROR, STATUS_OK, Status, capability_of,
};
use swarm_schemas::{
    Capabilities, Capability, EVAPORATED, KvReply, KvRequest, LogRecord, Mark, MarkOp,
    MarksPrefixReply, MarksPrefixRequest, MarksReply, MarksRequest, evaporated, kv_value_text,
    sort_strongest_first, validate_key, validate_mark_ops,
};

/// What the harness's host holds, shared by the versions of a unit across an upgrade.
#[derive(Debug)]
pub(crate) struct HostState {
    /// Milliseconds since the Unix epoch on the harness's clock.
    pub now_ms: f64,
    pub half_life_ms: f64,
    /// Value at the last deposit, and when.
    pub marks: HashMap<String, (f64, f64)>,
    /// Value, and when it expires.
    pub kv: HashMap<String, (serde_json::Value, Option<f64>)>,
    pub logs: Vec<LogRecord>,
}

impl Default for HostState {
    fn default() -> Self {
        Self {
            now_ms: 1_700_000_000_000.0,
            half_life_ms: 60_000.0,
            marks: HashMap::new(),
            kv: HashMap::new(),
            logs: Vec::new(),
        }
    }
}

impl HostState {
    /// The mark at `key` now.
    pub fn mark(&self, key: &str) -> f64 {
        self.marks.get(key).map_or(0.0, |&(v, at)| {
            evaporated(v, self.now_ms - at, self.half_life_ms)
        })
    }

    /// The value at `key`, unless it has expired.
    pub fn kv(&self, key: &str) -> Option<&serde_json::Value> {
        self.kv
            .get(key)
            .filter(|(_, expires)| expires.is_none_or(|at| at > self.now_ms))
            .map(|(v, _)| v)
    }
}

/// The host of one harness: what its unit declares, and the state it shares.
pub(crate) struct HarnessHost {
    pub declared: Capabilities,
    pub state: Arc<Mutex<HostState>>,
}

type Answer = Result<Vec<u8>, (Status, String)>;

fn bad(e: impl std::fmt::Display) -> (Status, String) {
    (STATUS_BAD_INPUT, format!("the request is not valid: {e}"))
}

fn json(value: &impl serde::Serialize) -> Answer {
    serde_json::to_vec(value).map_err(|e| (STATUS_ERROR, e.to_string()))
}

/// A request the reactor's stores would refuse is refused here too, with the same text.
fn refused(message: String) -> (Status, String) {
    (STATUS_BAD_INPUT, message)
}

fn check_key(key: &str) -> Result<(), (Status, String)> {
    validate_key(key).map_err(refused)
}

impl HarnessHost {
    pub(crate) fn call(&self, op: HostOp, request: &[u8]) -> (Status, Vec<u8>) {
        let Some(capability) = capability_of(op).and_then(|c| c.parse::<Capability>().ok()) else {
            return (
                STATUS_BAD_INPUT,
                format!("unknown host operation {op}").into_bytes(),
            );
        };
        let answer = if self.declared.declares(capability) {
            self.run(op, request)
        } else {
            Err((
                STATUS_DENIED,
                format!(
                    "the unit does not declare the `{capability}` capability in its manifest, so it is not granted"
                ),
            ))
        };
        match answer {
            Ok(bytes) => (STATUS_OK, bytes),
            Err((status, text)) => (status, text.into_bytes()),
        }
    }

    fn run(&self, op: HostOp, request: &[u8]) -> Answer {
        let mut state = self.state.lock();
        match op {
            HOST_LOG => {
                let record: LogRecord = serde_json::from_slice(request).map_err(bad)?;
                state.logs.push(record);
                Ok(Vec::new())
            }
            HOST_MARKS => {
                let request: MarksRequest = serde_json::from_slice(request).map_err(bad)?;
                validate_mark_ops(&request.ops).map_err(refused)?;
                let mut values = Vec::with_capacity(request.ops.len());
                for op in request.ops {
                    match op {
                        MarkOp::Deposit { key, amount } => {
                            let value = state.mark(&key) + amount;
                            let now = state.now_ms;
                            state.marks.insert(key, (value, now));
                            values.push(value);
                        }
                        MarkOp::Sense { key } => values.push(state.mark(&key)),
                    }
                }
                json(&MarksReply {
                    values,
                    at_ms: state.now_ms,
                })
            }
            HOST_MARKS_PREFIX => {
                let request: MarksPrefixRequest = serde_json::from_slice(request).map_err(bad)?;
                let mut marks: Vec<Mark> = state
                    .marks
                    .keys()
                    .filter(|k| k.starts_with(&request.prefix))
                    .map(|k| Mark {
                        key: k.clone(),
                        value: state.mark(k),
                    })
                    .filter(|m| m.value.abs() >= EVAPORATED)
                    .collect();
                sort_strongest_first(&mut marks);
                json(&MarksPrefixReply {
                    marks,
                    at_ms: state.now_ms,
                })
            }
            HOST_KV => match serde_json::from_slice(request).map_err(bad)? {
                KvRequest::Get { key } => {
                    check_key(&key)?;
                    json(&KvReply {
                        value: state.kv(&key).cloned(),
                        removed: false,
                    })
                }
                KvRequest::Set { key, value, ttl_ms } => {
                    check_key(&key)?;
                    kv_value_text(&value).map_err(refused)?;
                    let expires = ttl_ms.map(|ttl| state.now_ms + ttl as f64);
                    state.kv.insert(key, (value, expires));
                    json(&KvReply::default())
                }
                KvRequest::Delete { key } => {
                    check_key(&key)?;
                    let removed = state.kv(&key).is_some();
                    state.kv.remove(&key);
                    json(&KvReply {
                        value: None,
                        removed,
                    })
                }
            },
            _ => Err((
                STATUS_ERROR,
                "the harness makes no HTTP requests: test HTTP use in a reactor".into(),
            )),
        }
    }
}
