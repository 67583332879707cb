//! `swarm trust`: the trust file that `swarm up --trust FILE` loads libraries from.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use swarm_reactor::trust::TrustFile;

#[derive(Debug, Subcommand)]
pub(crate) enum TrustCommand {
    /// Add each library's SHA-256 digest to the trust file (created if missing). A running
    /// reactor reads the file again at its next load: deploy (or touch) the library after.
    Add(AddArgs),
    /// Print the digests the trust file allows, each with its name.
    List(FileArg),
}

#[derive(Debug, Args)]
pub(crate) struct FileArg {
    /// The trust file.
    #[arg(long = "trust", env = "SWARM_TRUST_FILE", value_name = "FILE")]
    file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    #[command(flatten)]
    file: FileArg,
    /// Unit libraries to trust.
    #[arg(required = true)]
    libraries: Vec<PathBuf>,
}

pub(crate) fn run(command: TrustCommand) -> anyhow::Result<ExitCode> {
    match command {
        TrustCommand::Add(args) => {
            for library in &args.libraries {
                let (digest, added) = TrustFile::add(&args.file.file, library)?;
                let what = if added { "trusted" } else { "already trusted" };
                println!("{what}: {digest}  {}", library.display());
            }
        }
        TrustCommand::List(args) => {
            for (digest, name) in TrustFile::read(&args.file)?.digests() {
                println!("{digest}  {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
