//! `swarm new unit`: a new unit crate in the workspace, ready to build, load and test.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use swarm_schemas::{KindPattern, validate_unit_name};

/// What to create.
#[derive(Debug, Subcommand)]
pub(crate) enum NewCommand {
    /// A unit crate under the units folder, added to the workspace, with a test that drives it
    /// through the SDK's harness.
    Unit(NewUnitArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NewUnitArgs {
    /// The unit's name: lowercase letters, digits and dashes, starting with a letter. It names
    /// the crate, its folder and the unit.
    name: String,
    /// Kinds (or patterns such as `order.*`) of the signals it reacts to (default
    /// `NAME.requested`).
    #[arg(long, num_args = 1.., value_name = "KIND")]
    subscribes: Vec<String>,
    /// Kinds (or patterns) of the signals it may emit.
    #[arg(long, num_args = 1.., value_name = "KIND")]
    emits: Vec<String>,
    /// The workspace to add it to (default: the nearest one above the current directory).
    #[arg(long)]
    workspace: Option<PathBuf>,
}

pub(crate) fn run(command: NewCommand) -> anyhow::Result<ExitCode> {
    match command {
        NewCommand::Unit(args) => new_unit(args),
    }
}

/// The nearest directory at or above `from` whose Cargo.toml has a `[workspace]`.
pub(crate) fn find_workspace(from: &Path) -> anyhow::Result<PathBuf> {
    for dir in from.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            if text
                .parse::<toml_edit::DocumentMut>()
                .is_ok_and(|doc| doc.contains_key("workspace"))
            {
                return Ok(dir.to_owned());
            }
        }
    }
    bail!(
        "no Cargo workspace at or above {} (run this in the swarm workspace or pass --workspace DIR)",
        from.display()
    )
}

fn patterns(kinds: &[String], what: &str) -> anyhow::Result<Vec<KindPattern>> {
    kinds
        .iter()
        .map(|k| KindPattern::parse(k).with_context(|| format!("{what} `{k}`")))
        .collect()
}

/// A concrete kind that `pattern` matches, for the generated test and emits.
fn example_kind(pattern: &KindPattern) -> String {
    pattern
        .as_str()
        .split('.')
        .map(|segment| match segment {
            "*" | ">" => "example",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// `order-audit` → `OrderAudit`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn quoted(patterns: &[KindPattern]) -> String {
    patterns
        .iter()
        .map(|p| format!("{:?}", p.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cargo_toml(name: &str, serde_json_in_workspace: bool) -> String {
    let serde_json = if serde_json_in_workspace {
        "serde_json.workspace = true"
    } else {
        "serde_json = \"1\""
    };
    format!(
        r#"[package]
name = "{name}"
description = "The {name} unit of a swarm."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the library the reactor loads; rlib: so `cargo test` can drive it through the harness.
crate-type = ["cdylib", "rlib"]

[dependencies]
{serde_json}
swarm-sdk.workspace = true
"#
    )
}

fn lib_rs(name: &str, subscribes: &[KindPattern], emits: &[KindPattern]) -> String {
    let ty = type_name(name);
    let takes = quoted(subscribes);
    let emitted: Vec<String> = emits.iter().map(example_kind).collect();
    let manifest_emits = if emits.is_empty() {
        String::new()
    } else {
        format!("\n            .emits([{}])", quoted(emits))
    };
    let (handle_body, expected) = if emitted.is_empty() {
        (
            "        // Replace with the unit's work. It emits nothing yet.\n        let _ = signal;\n        Ok(Vec::new())".to_owned(),
            "Vec::<&str>::new()".to_owned(),
        )
    } else {
        let emits_code: Vec<String> = emitted
            .iter()
            .map(|kind| {
                format!(
                    "            Emit::new({kind:?}, json!({{\"from\": signal.kind, \"payload\": signal.payload}})),"
                )
            })
            .collect();
        (
            format!(
                "        // Replace with the unit's work. It answers every signal with what it got.\n        Ok(vec![\n{}\n        ])",
                emits_code.join("\n")
            ),
            format!(
                "vec![{}]",
                emitted
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    let first = subscribes.first().map(example_kind).unwrap_or_default();
    format!(
        r#"//! The `{name}` unit: it takes {takes} signals.

use serde_json::{{Value, json}};
use swarm_sdk::{{Emit, Manifest, Signal, Unit, UnitError, export_unit}};

/// The unit. It is created once per load with its configuration, then handles signals; it is
/// called from several threads at once.
pub struct {ty};

impl Unit for {ty} {{
    fn manifest() -> Manifest {{
        Manifest::new("{name}", env!("CARGO_PKG_VERSION"))
            .subscribes([{takes}]){manifest_emits}
    }}

    fn new(_config: &Value) -> Result<Self, UnitError> {{
        Ok(Self)
    }}

    fn handle(&self, signal: &Signal) -> Result<Vec<Emit>, UnitError> {{
{handle_body}
    }}
}}

export_unit!({ty});

#[cfg(test)]
mod tests {{
    use super::*;
    use swarm_sdk::Harness;

    #[test]
    fn handles_a_signal() {{
        let unit = Harness::<{ty}>::new(Value::Null).expect("the unit loads");
        let emits = unit
            .send({first:?}, json!({{"hello": "world"}}))
            .expect("the signal is handled");
        let kinds: Vec<&str> = emits.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, {expected});
    }}
}}
"#
    )
}

fn new_unit(args: NewUnitArgs) -> anyhow::Result<ExitCode> {
    validate_unit_name(&args.name)?;
    let subscribes_text = if args.subscribes.is_empty() {
        vec![format!("{}.requested", args.name)]
    } else {
        args.subscribes.clone()
    };
    let subscribes = patterns(&subscribes_text, "--subscribes")?;
    let emits = patterns(&args.emits, "--emits")?;
    let root = match &args.workspace {
        Some(dir) => dir.clone(),
        None => find_workspace(&std::env::current_dir().context("no current directory")?)?,
    };
    let manifest_path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", manifest_path.display()))?;
    let deps = doc
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table_like());
    if deps.is_none_or(|d| !d.contains_key("swarm-sdk")) {
        bail!(
            "{} has no swarm-sdk in [workspace.dependencies]: add swarm-sdk = {{ path = \"…/units/sdk\" }}",
            manifest_path.display()
        );
    }
    let serde_json_in_workspace = deps.is_some_and(|d| d.contains_key("serde_json"));
    let member = format!("units/{}", args.name);
    let dir = root.join(&member);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let members = doc
        .get_mut("workspace")
        .and_then(|w| w.as_table_like_mut())
        .context("[workspace] is not a table")?
        .entry("members")
        .or_insert(toml_edit::value(toml_edit::Array::new()))
        .as_array_mut()
        .context("workspace.members is not a list")?;
    if !members.iter().any(|m| m.as_str() == Some(member.as_str())) {
        members.push(member.as_str());
    }

    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        cargo_toml(&args.name, serde_json_in_workspace),
    )
    .context("cannot write the crate's Cargo.toml")?;
    let lib = dir.join("src/lib.rs");
    std::fs::write(&lib, lib_rs(&args.name, &subscribes, &emits))
        .context("cannot write the crate's src/lib.rs")?;
    // Formatted as the author's `cargo fmt` would; a missing rustfmt leaves it as generated.
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(&lib)
        .stderr(std::process::Stdio::null())
        .status();
    std::fs::write(&manifest_path, doc.to_string())
        .with_context(|| format!("cannot update {}", manifest_path.display()))?;
    let library = format!(
        "lib{}{}",
        args.name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    println!("created unit `{}` in {}", args.name, dir.display());
    println!("  test:   cargo test -p {}", args.name);
    println!("  build:  cargo build --release -p {}", args.name);
    println!(
        "  deploy: cp target/release/{library} units/{}{} (the reactor loads it, or swaps it in, at once)",
        args.name,
        std::env::consts::DLL_SUFFIX
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds_become_code() {
        assert_eq!(type_name("order-audit"), "OrderAudit");
        assert_eq!(type_name("x2"), "X2");
        let pattern = KindPattern::parse("order.*").expect("pattern");
        assert_eq!(example_kind(&pattern), "order.example");
        let pattern = KindPattern::parse("audit.>").expect("pattern");
        assert!(pattern.matches(&example_kind(&pattern)));
    }
}
