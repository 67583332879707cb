//! The `swarm` command: run a reactor, emit signals, list units, search memory.

mod api_client;
mod args;
mod audit_cli;
mod cli;
mod config_cli;
mod dead_letters_cli;
mod dev_cli;
mod doctor_cli;
mod emit_cli;
mod explain_cli;
mod feed_cli;
mod host_cli;
mod isolate_cli;
mod memory_cli;
mod models_cli;
mod new_cli;
mod recording_cli;
mod serve_cli;
mod telemetry_cli;
mod trust_cli;
mod unit_config_cli;
mod units_cli;
mod up_cli;

use std::process::ExitCode;

/// mimalloc instead of the C library's allocator: the reactor allocates and frees a few small
/// objects per signal on many threads (decoded signals, records, replies), and the C library's
/// allocator spent a fifth of a drain's CPU on them. Units keep their own allocator: every
/// buffer crosses the ABI back to the side that made it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for the process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise. With them, memory mimalloc gives back to the kernel and takes again comes back
/// as fresh huge pages, which the kernel zeroes 2 MiB at a time: draining a stream, a sixth of
/// the reactor's CPU went to that, and it drained a fifth slower than with them off.
fn without_huge_pages() -> rustix::io::Result<()> {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return Ok(());
    }
    rustix::thread::disable_transparent_huge_pages(true)
}

fn main() -> ExitCode {
    // First, before the allocator has handed out much.
    let huge_pages = without_huge_pages();
    let args = config_cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(args.log_filter())),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = huge_pages {
        // The process runs as it would have; only slower where the allocator churns.
        tracing::debug!(%error, "transparent huge pages stay on");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // A unit call still running past the shutdown deadline sits on a blocking thread that
    // cannot be interrupted; dropping the runtime would wait for it. Its signal stays pending
    // in the mesh and is delivered again, so the process leaves it behind.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}
