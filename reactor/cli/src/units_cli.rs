//! `swarm units`: the units a directory holds and whether they load, or those a running
//! `swarm up` serves.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use swarm_reactor::Registry;
use swarm_schemas::UnitStatus;

use crate::args::{UnitsDir, check_dir, private_dir};

#[derive(Debug, Args)]
pub(crate) struct UnitsArgs {
    #[command(flatten)]
    units: UnitsDir,
    /// Ask the `swarm up` serving at this URL (`http://127.0.0.1:7077`) for its units as they
    /// run — quarantined, with calls stuck past their deadline — instead of loading the units
    /// directory here.
    #[arg(long, env = "SWARM_SERVER")]
    server: Option<String>,
    /// API token (scope `read`) for `--server`.
    #[arg(long, env = "SWARM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The units of the `swarm up` serving at `server`, as they run.
pub(crate) async fn served_units(
    server: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<UnitStatus>> {
    crate::api_client::get_json(server, "/v1/units", &[], token, "a list of units").await
}

pub(crate) async fn units(args: UnitsArgs) -> anyhow::Result<ExitCode> {
    let (units, failures) = match &args.server {
        Some(server) => (
            served_units(server, args.token.as_deref()).await?,
            Vec::new(),
        ),
        None => {
            check_dir(&args.units.dir)?;
            let private = private_dir()?;
            let policy = args.units.policy()?;
            if let Err(problem) = policy.check_owner(&args.units.dir) {
                bail!("refusing the units directory: {problem}");
            }
            let registry =
                Registry::new(private.path().to_owned(), Default::default()).with_trust(policy);
            registry
                .load_dir(&args.units.dir)
                .with_context(|| format!("cannot read {}", args.units.dir.display()))?;
            (registry.status(), registry.failures())
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "units": units, "refused": failures })
        );
    } else {
        println!(
            "{:<24} {:<10} {:>4} {:<9} SUBSCRIBES",
            "NAME", "VERSION", "GEN", "STATE"
        );
        for unit in &units {
            let subscribes: Vec<&str> = unit.subscribes.iter().map(|p| p.as_str()).collect();
            println!(
                "{:<24} {:<10} {:>4} {:<9} {}",
                unit.name,
                unit.version,
                unit.generation,
                unit.state,
                subscribes.join(", ")
            );
            if unit.timeouts > 0 || unit.stuck_calls > 0 {
                println!(
                    "  {} calls ran past their deadline; {} still stuck (their threads cannot be stopped)",
                    unit.timeouts, unit.stuck_calls
                );
            }
        }
        for failure in &failures {
            println!("refused {}: {}", failure.file.display(), failure.error);
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
