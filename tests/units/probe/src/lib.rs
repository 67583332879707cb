//! Test fixture: a unit that does what a `probe.run` signal asks of the host's capabilities and
//! emits `probe.result` with what came back. A capability error is emitted as data
//! (`{"error": …, "kind": …}`) so tests can look at it, unless the payload says `"fail": true`,
//! which returns it as the unit's error instead.

use std::time::Duration;

use serde_json::{Value, json};
use swarm_sdk::marks::MarkOp;
use swarm_sdk::{
    Emit, HostError, Manifest, Signal, Unit, UnitError, export_unit, http, kv, log, marks,
};

/// The probe.
pub struct Probe;

fn text<'a>(payload: &'a Value, field: &str) -> Result<&'a str, UnitError> {
    payload[field]
        .as_str()
        .ok_or_else(|| UnitError::new(format!("`{field}` is missing")))
}

fn run(payload: &Value) -> Result<Result<Value, HostError>, UnitError> {
    Ok(match text(payload, "do")? {
        "deposit" => {
            let key = text(payload, "key")?;
            let amount = payload["amount"].as_f64().unwrap_or(1.0);
            marks::apply(vec![MarkOp::Deposit {
                key: key.to_owned(),
                amount,
            }])
            .map(|r| json!({"value": r.values[0], "at_ms": r.at_ms}))
        }
        "sense" => {
            let key = text(payload, "key")?;
            marks::apply(vec![MarkOp::Sense {
                key: key.to_owned(),
            }])
            .map(|r| json!({"value": r.values[0], "at_ms": r.at_ms}))
        }
        "strongest" => marks::strongest(text(payload, "prefix")?)
            .map(|m| json!(m.map(|m| json!({"key": m.key, "value": m.value})))),
        "prefix" => marks::sense_prefix(text(payload, "prefix")?).map(|(marks, at)| {
            json!({
                "marks": marks.iter().map(|m| json!([m.key, m.value])).collect::<Vec<_>>(),
                "at_ms": at,
            })
        }),
        "deposits" => {
            // `n` deposits, one call each or one batch.
            let n = payload["n"].as_u64().unwrap_or(1);
            let key = text(payload, "key")?;
            if payload["batched"].as_bool().unwrap_or(false) {
                let ops = (0..n)
                    .map(|_| MarkOp::Deposit {
                        key: key.to_owned(),
                        amount: 1.0,
                    })
                    .collect();
                marks::apply(ops).map(|r| json!({"last": r.values.last()}))
            } else {
                let mut last = Ok(0.0);
                for _ in 0..n {
                    last = marks::deposit(key, 1.0);
                    if last.is_err() {
                        break;
                    }
                }
                last.map(|v| json!({"last": v}))
            }
        }
        "load" => {
            // `n` operations (`deposit` or `sense`) in calls of `batch` operations each, timed
            // here, in the unit: what a capability call costs the unit that makes it.
            let n = payload["n"].as_u64().unwrap_or(1);
            let batch = payload["batch"].as_u64().unwrap_or(1).max(1);
            let deposit = text(payload, "mode")? == "deposit";
            let key = text(payload, "key")?;
            let started = std::time::Instant::now();
            let mut done = 0;
            let mut failed = None;
            while done < n && failed.is_none() {
                let size = batch.min(n - done);
                let ops = (0..size)
                    .map(|_| {
                        if deposit {
                            MarkOp::Deposit {
                                key: key.to_owned(),
                                amount: 1.0,
                            }
                        } else {
                            MarkOp::Sense {
                                key: key.to_owned(),
                            }
                        }
                    })
                    .collect();
                failed = marks::apply(ops).err();
                done += size;
            }
            let seconds = started.elapsed().as_secs_f64();
            match failed {
                Some(e) => Err(e),
                None => Ok(json!({"ops": n, "calls": n.div_ceil(batch), "seconds": seconds})),
            }
        }
        "kv_set" => {
            let ttl = payload["ttl_ms"].as_u64().map(Duration::from_millis);
            kv::set(text(payload, "key")?, &payload["value"], ttl).map(|()| json!({}))
        }
        "kv_get" => kv::get::<Value>(text(payload, "key")?).map(|v| json!({"value": v})),
        "kv_delete" => kv::delete(text(payload, "key")?).map(|removed| json!({"removed": removed})),
        "http" => {
            let mut request = http::Request::new(
                payload["method"].as_str().unwrap_or("GET"),
                text(payload, "url")?,
            );
            if let Some(body) = payload["body"].as_str() {
                request = request.body(body.as_bytes().to_vec());
            }
            request.send().map(|r| {
                json!({
                    "status": r.status,
                    "len": r.body.len(),
                    "body": String::from_utf8_lossy(&r.body[..r.body.len().min(200)]),
                })
            })
        }
        "log" => {
            log::event(
                log::Level::Warn,
                text(payload, "message")?,
                [("probe", json!(true))],
            );
            Ok(json!({}))
        }
        other => return Err(UnitError::new(format!("unknown probe `{other}`"))),
    })
}

impl Unit for Probe {
    fn manifest() -> Manifest {
        Manifest::new("probe", "1.0.0")
            .subscribes(["probe.run"])
            .emits(["probe.result"])
            .uses_marks()
            .uses_kv()
            .uses_http(["127.0.0.1"])
    }

    fn new(_config: &Value) -> Result<Self, UnitError> {
        Ok(Probe)
    }

    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        let result = match run(&signal.payload)? {
            Ok(value) => json!({"ok": value}),
            Err(e) if signal.payload["fail"].as_bool() == Some(true) => return Err(e.into()),
            Err(e) => json!({"error": e.message(), "kind": format!("{:?}", e.kind())}),
        };
        Ok(vec![Emit::new("probe.result", result)])
    }
}

export_unit!(Probe);
