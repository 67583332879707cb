//! Test fixture: `crash` answers every `test.crash` signal with a `test.done` carrying the same
//! `n` and the process id that ran it, unless the payload's `how` asks for something a unit
//! must never do to the reactor: `segv` (a segmentation fault), `abort`, `stack` (a stack
//! overflow), `oom` (allocates `bytes`, 64 GiB by default), `hang` (never returns), `socket`
//! (opens a TCP connection to `addr`) or `exec` (runs `/bin/true`). The last two answer with
//! what happened, as `test.done`'s `error`, or fail if they succeed with `"strict": true`.

use std::time::Duration;

use serde_json::{Value, json};
use swarm_sdk::{Emit, Manifest, Signal, Unit, UnitError, export_unit};

/// The unit.
pub struct Crash;

/// Recurses until the stack runs out; `n` is never `u64::MAX` in practice.
fn deep(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 512]);
    if n == u64::MAX {
        return frame[0];
    }
    deep(n + 1).wrapping_add(frame[1])
}

impl Unit for Crash {
    fn manifest() -> Manifest {
        Manifest::new("crash", env!("CARGO_PKG_VERSION"))
            .subscribes(["test.crash"])
            .emits(["test.done"])
    }
    fn new(_: &Value) -> Result<Self, UnitError> {
        Ok(Self)
    }
    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {
        let payload = &signal.payload;
        let mut error = Value::Null;
        match payload["how"].as_str().unwrap_or_default() {
            "segv" => {
                // Safe code cannot fault, so the fault is sent. The first SIGSEGV goes to the
                // Rust runtime's handler (it watches for stack overflows), which finds no
                // guard-page fault and puts back the default action; the second ends the
                // process as a segmentation fault does.
                for _ in 0..2 {
                    let _ = rustix::process::kill_process(
                        rustix::process::getpid(),
                        rustix::process::Signal::SEGV,
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_secs(60));
            }
            "abort" => std::process::abort(),
            "stack" => {
                std::hint::black_box(deep(0));
            }
            "oom" => {
                let bytes = payload["bytes"].as_u64().unwrap_or(64 << 30);
                let held = vec![1u8; usize::try_from(bytes).unwrap_or(usize::MAX)];
                std::hint::black_box(&held);
            }
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "socket" => {
                let addr = payload["addr"].as_str().unwrap_or("127.0.0.1:9");
                error = match std::net::TcpStream::connect(addr) {
                    Ok(_) => Value::Null,
                    Err(e) => json!(e.to_string()),
                };
            }
            "exec" => {
                error = match std::process::Command::new("/bin/true").status() {
                    Ok(_) => Value::Null,
                    Err(e) => json!(e.to_string()),
                };
            }
            _ => {}
        }
        if error.is_null() && payload["strict"].as_bool() == Some(true) {
            return Err(UnitError::new("it was allowed"));
        }
        Ok(vec![Emit::new(
            "test.done",
            json!({ "n": payload["n"], "pid": std::process::id(), "error": error }),
        )])
    }
}

export_unit!(Crash);
