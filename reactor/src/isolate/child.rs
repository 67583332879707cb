//! The worker's side: `swarm-unit-worker` connects to the reactor, confines itself, opens the
//! unit's library and answers requests, one thread per socket.

use std::cell::RefCell;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use swarm_abi::{EVENT_LOAD, STATUS_ERROR, STATUS_OK, STATUS_PANIC, Status};

use super::{WorkerLimits, sandbox, wire};
use crate::LoadError;
use crate::host::HostCall;
use crate::loader::{self, Loaded, Opened};

/// What the worker was started with.
struct Args {
    socket: PathBuf,
    library: PathBuf,
    channels: usize,
    limits: WorkerLimits,
}

fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> Result<Args, String> {
    let mut socket = None;
    let mut library = None;
    let mut channels = 1;
    let mut limits = WorkerLimits {
        address_space: None,
        cpu_seconds: None,
        open_files: None,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
        let number = || {
            value
                .to_str()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{} takes a number", flag.to_string_lossy()))
        };
        match flag.to_str() {
            Some("--socket") => socket = Some(PathBuf::from(&value)),
            Some("--library") => library = Some(PathBuf::from(&value)),
            Some("--channels") => channels = usize::try_from(number()?).unwrap_or(1).max(1),
            Some("--address-space") => limits.address_space = Some(number()?),
            Some("--cpu-seconds") => limits.cpu_seconds = Some(number()?),
            Some("--open-files") => limits.open_files = Some(number()?),
            _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
        }
    }
    Ok(Args {
        socket: socket.ok_or("--socket is needed")?,
        library: library.ok_or("--library is needed")?,
        channels,
        limits,
    })
}

thread_local! {
    /// The socket of the request this thread is serving: the unit's capability calls during
    /// it go there.
    static CHANNEL: RefCell<Option<UnixStream>> = const { RefCell::new(None) };
}

/// The unit's capability calls, sent to the reactor: on the socket of the request being
/// served, or, from a thread of the unit's own, on the background socket.
struct Forward {
    background: Mutex<UnixStream>,
}

fn host_call(stream: &mut UnixStream, op: u32, request: &[u8]) -> (Status, Vec<u8>) {
    let answered = wire::write(stream, wire::HOST_CALL, op, request).and_then(|()| {
        let frame = wire::read(stream)?;
        Ok((frame.code, frame.body))
    });
    answered.unwrap_or_else(|e| {
        (
            STATUS_ERROR,
            format!("the reactor did not answer: {e}").into_bytes(),
        )
    })
}

impl HostCall for Forward {
    fn call(&self, op: u32, request: &[u8]) -> (Status, Vec<u8>) {
        let in_request = CHANNEL.with(|channel| {
            channel
                .borrow_mut()
                .as_mut()
                .map(|stream| host_call(stream, op, request))
        });
        in_request.unwrap_or_else(|| host_call(&mut self.background.lock(), op, request))
    }
}

/// The unit: its library until the instance is created, then the instance.
struct Unit {
    opened: Mutex<Option<Result<Opened, LoadError>>>,
    manifest: Result<Vec<u8>, String>,
    loaded: RwLock<Option<Loaded>>,
}

fn refusal_status(what: &str) -> Status {
    if what == "panicked" {
        STATUS_PANIC
    } else {
        STATUS_ERROR
    }
}

impl Unit {
    fn answer(&self, frame: wire::Frame) -> (Status, Vec<u8>) {
        let not_created = || (STATUS_ERROR, b"the unit has no instance".to_vec());
        match frame.tag {
            wire::MANIFEST => match &self.manifest {
                Ok(bytes) => (STATUS_OK, bytes.clone()),
                Err(why) => (STATUS_ERROR, why.clone().into_bytes()),
            },
            wire::CREATE => {
                let Some(Ok(opened)) = self.opened.lock().take() else {
                    return (STATUS_ERROR, b"the unit is already created".to_vec());
                };
                let config: Option<serde_json::Value> = serde_json::from_slice(&frame.body).ok();
                match opened.instantiate(config.as_ref().filter(|c| !c.is_null())) {
                    Ok(loaded) => {
                        *self.loaded.write() = Some(loaded);
                        (STATUS_OK, Vec::new())
                    }
                    Err(LoadError::Create { what, message, .. }) => {
                        (refusal_status(what), message.into_bytes())
                    }
                    Err(other) => (STATUS_ERROR, other.to_string().into_bytes()),
                }
            }
            wire::EVENT if frame.code == EVENT_LOAD => match self.loaded.write().as_mut() {
                Some(loaded) => refused(loaded.on_load()),
                None => not_created(),
            },
            wire::EVENT => match self.loaded.read().as_ref() {
                Some(loaded) => refused(loaded.event(frame.code, &frame.body)),
                None => not_created(),
            },
            wire::SNAPSHOT => match self.loaded.read().as_ref() {
                Some(loaded) => match loaded.snapshot() {
                    Ok(state) => (STATUS_OK, state),
                    Err(r) => (refusal_status(r.what), r.message.into_bytes()),
                },
                None => not_created(),
            },
            wire::RESTORE => match self.loaded.write().as_mut() {
                Some(loaded) => refused(loaded.restore(&frame.body)),
                None => not_created(),
            },
            wire::CALL => match self.loaded.read().as_ref() {
                Some(loaded) => {
                    let result = loaded.call(&frame.body);
                    (result.status, result.bytes)
                }
                None => not_created(),
            },
            other => (
                STATUS_ERROR,
                format!("unknown request {other}").into_bytes(),
            ),
        }
    }
}

fn refused(result: Result<(), loader::Refusal>) -> (Status, Vec<u8>) {
    match result {
        Ok(()) => (STATUS_OK, Vec::new()),
        Err(r) => (refusal_status(r.what), r.message.into_bytes()),
    }
}

/// Serves one socket until the reactor closes it; then the process exits.
fn serve(unit: &Unit, mut stream: UnixStream) -> ! {
    if let Ok(clone) = stream.try_clone() {
        CHANNEL.with(|channel| *channel.borrow_mut() = Some(clone));
    }
    while let Ok(frame) = wire::read(&mut stream) {
        if frame.tag == wire::SHUTDOWN {
            // `on_unload`, then the instance is destroyed.
            drop(unit.loaded.write().take());
            let _ = wire::write(&mut stream, wire::REPLY, STATUS_OK, &[]);
            std::process::exit(0);
        }
        let (status, bytes) = unit.answer(frame);
        if wire::write(&mut stream, wire::REPLY, status, &bytes).is_err() {
            break;
        }
    }
    // The reactor is gone, or dropped this unit: nothing is left to do.
    std::process::exit(0)
}

/// The worker's `main`.
pub fn worker_main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(why) => {
            eprintln!("swarm-unit-worker: {why} (it is started by the reactor, not by hand)");
            return ExitCode::from(2);
        }
    };
    if let Err(why) = sandbox::limit(&args.limits) {
        eprintln!("swarm-unit-worker: {why}");
        return ExitCode::from(3);
    }
    let mut streams = Vec::with_capacity(args.channels + 1);
    for _ in 0..=args.channels {
        match UnixStream::connect(&args.socket) {
            Ok(stream) => streams.push(stream),
            Err(e) => {
                eprintln!(
                    "swarm-unit-worker: cannot connect to {}: {e}",
                    args.socket.display()
                );
                return ExitCode::from(3);
            }
        }
    }
    if let Err(why) = sandbox::confine() {
        eprintln!("swarm-unit-worker: {why}");
        return ExitCode::from(3);
    }
    let background = streams.remove(0);
    let mut opened = loader::open_in_place(&args.library);
    let manifest = match &mut opened {
        Ok(opened) => {
            opened.bind_host(Box::new(Forward {
                background: Mutex::new(background),
            }));
            serde_json::to_vec(&opened.manifest).map_err(|e| e.to_string())
        }
        Err(error) => Err(error.to_string()),
    };
    let unit = Arc::new(Unit {
        opened: Mutex::new(Some(opened)),
        manifest,
        loaded: RwLock::new(None),
    });
    let last = streams.pop();
    for stream in streams {
        let unit = Arc::clone(&unit);
        let spawned = std::thread::Builder::new()
            .name("unit-call".into())
            .spawn(move || serve(&unit, stream));
        if spawned.is_err() {
            eprintln!("swarm-unit-worker: cannot start a thread");
            return ExitCode::from(3);
        }
    }
    match last {
        Some(stream) => serve(&unit, stream),
        None => ExitCode::from(2),
    }
}
