//! `swarm audit`: the audit trail of a running swarm, read over its HTTP API.

use std::process::ExitCode;

use clap::Args;
use swarm_schemas::{AuditAction, AuditEntry};

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// The `swarm up` to ask (its inspector's URL).
    #[arg(long, env = "SWARM_SERVER", default_value = "http://127.0.0.1:7077")]
    server: String,
    /// API token with the `admin` scope.
    #[arg(long, env = "SWARM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only entries about this unit.
    #[arg(long)]
    unit: Option<String>,
    /// Only entries of this action: load, swap, refuse, rollback, remove, enable, disable,
    /// quarantine, trust, http.
    #[arg(long)]
    action: Option<AuditAction>,
    /// How many of the newest entries.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    if let Some(unit) = &args.unit {
        query.push(("unit", unit.clone()));
    }
    if let Some(action) = args.action {
        query.push(("action", action.as_str().to_owned()));
    }
    let entries: Vec<AuditEntry> = crate::api_client::get_json(
        &args.server,
        "/v1/audit",
        &query,
        args.token.as_deref(),
        "audit entries",
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Oldest first, as a log reads.
    for entry in entries.iter().rev() {
        println!(
            "{:>6}  {}  {:<10} {:<12} {:<16} {:<20} {}  [{}{}]",
            entry.seq,
            entry.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            entry.action.as_str(),
            entry.unit.as_deref().unwrap_or("-"),
            entry.actor,
            entry.outcome,
            entry.detail,
            entry.process,
            entry
                .client
                .as_deref()
                .map(|c| format!(", from {c}"))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}
