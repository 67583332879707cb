//! `swarm dev`: the reactor of `swarm up`, plus a watch on the workspace's unit crates. On a
//! save, only the crate that changed is rebuilt (cargo, incremental) and its library is renamed
//! into the units directory, where the reactor swaps it in; a build error is printed and the
//! version serving keeps serving. Each rebuild prints how long it took from the save to the new
//! generation serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use swarm_reactor::ReactorHandle;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// A unit crate of the workspace.
#[derive(Debug, Clone)]
pub(crate) struct UnitCrate {
    /// Package id, as cargo reports its artifacts.
    pub id: cargo_metadata::PackageId,
    /// Package name.
    pub package: String,
    /// Its directory (holding Cargo.toml).
    pub dir: PathBuf,
}

/// What `swarm dev` watches and builds.
pub(crate) struct DevLoop {
    workspace: PathBuf,
    units_dir: PathBuf,
    crates: Vec<UnitCrate>,
    profile: &'static str,
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace's unit crates: packages under its `units/` folder with a `cdylib` target that
/// depend on `swarm-sdk` (examples and test fixtures elsewhere are left alone).
fn unit_crates(workspace: &Path) -> anyhow::Result<Vec<UnitCrate>> {
    let units = workspace
        .canonicalize()
        .unwrap_or_else(|_| workspace.to_owned())
        .join("units");
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(cargo())
        .current_dir(workspace)
        .no_deps()
        .exec()
        .with_context(|| format!("cargo metadata failed in {}", workspace.display()))?;
    let mut crates: Vec<UnitCrate> = metadata
        .workspace_packages()
        .into_iter()
        .filter(|p| p.dependencies.iter().any(|d| d.name == "swarm-sdk"))
        .filter(|p| {
            p.targets
                .iter()
                .any(|t| t.kind.iter().any(|k| k.to_string() == "cdylib"))
        })
        .filter_map(|p| {
            let dir = p.manifest_path.parent()?.as_std_path().to_owned();
            let dir = dir.canonicalize().unwrap_or(dir);
            if !dir.starts_with(&units) {
                return None;
            }
            Some(UnitCrate {
                id: p.id.clone(),
                package: p.name.to_string(),
                dir,
            })
        })
        .collect();
    crates.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(crates)
}

/// How a build went: the libraries it made, by package, or the compiler's errors.
enum Built {
    /// The library of each package built, and whether cargo found it up to date (`fresh`).
    Libraries(BTreeMap<String, (PathBuf, bool)>),
    Failed(String),
}

impl DevLoop {
    /// Finds the unit crates of `workspace`; `units_dir` is where their libraries go.
    pub(crate) fn new(
        workspace: PathBuf,
        units_dir: PathBuf,
        release: bool,
    ) -> anyhow::Result<Self> {
        let crates = unit_crates(&workspace)?;
        // Named as the reactor names its files (absolute), to find the unit a library serves.
        let units_dir = units_dir
            .canonicalize()
            .with_context(|| format!("cannot find {}", units_dir.display()))?;
        if crates.is_empty() {
            bail!(
                "no unit crates under {}/units (packages with a cdylib target that depend on swarm-sdk); make one with `swarm new unit NAME`",
                workspace.display()
            );
        }
        Ok(Self {
            workspace,
            units_dir,
            crates,
            profile: if release { "release" } else { "dev" },
        })
    }

    /// Builds `packages` and returns their libraries, or the rendered compiler errors.
    async fn build(&self, packages: &[&str]) -> anyhow::Result<Built> {
        let mut command = tokio::process::Command::new(cargo());
        command
            .current_dir(&self.workspace)
            .args([
                "build",
                "--message-format=json-diagnostic-rendered-ansi",
                "--profile",
                self.profile,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for package in packages {
            command.args(["-p", package]);
        }
        let mut child = command.spawn().context("cannot run cargo")?;
        let stdout = child.stdout.take().context("no cargo output")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut libraries = BTreeMap::new();
        let mut errors = String::new();
        // What cargo is at, on a terminal: the last crate compiled and how many so far.
        let spinner = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} building {msg}")?,
        );
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner.set_message(packages.join(", "));
        let mut compiled = 0;
        while let Some(line) = lines.next_line().await? {
            let Ok(message) = serde_json::from_str::<cargo_metadata::Message>(&line) else {
                continue;
            };
            if let cargo_metadata::Message::CompilerArtifact(artifact) = &message {
                compiled += 1;
                spinner.set_message(format!("{} ({compiled} crates)", artifact.target.name));
            }
            match message {
                cargo_metadata::Message::CompilerArtifact(artifact)
                    if artifact
                        .target
                        .kind
                        .iter()
                        .any(|k| k.to_string() == "cdylib") =>
                {
                    let library = artifact
                        .filenames
                        .iter()
                        .find(|f| f.as_str().ends_with(std::env::consts::DLL_SUFFIX));
                    if let Some(library) = library {
                        let package = self.crates.iter().find(|c| c.id == artifact.package_id);
                        if let Some(krate) = package {
                            libraries.insert(
                                krate.package.clone(),
                                (library.as_std_path().to_owned(), artifact.fresh),
                            );
                        }
                    }
                }
                cargo_metadata::Message::CompilerMessage(message) => {
                    if let Some(rendered) = &message.message.rendered {
                        if matches!(
                            message.message.level,
                            cargo_metadata::diagnostic::DiagnosticLevel::Error
                        ) {
                            errors.push_str(rendered);
                        }
                    }
                }
                _ => {}
            }
        }
        spinner.finish_and_clear();
        let status = child.wait().await?;
        if !status.success() {
            if errors.is_empty() {
                errors = format!("cargo build failed ({status})");
            }
            return Ok(Built::Failed(errors));
        }
        Ok(Built::Libraries(libraries))
    }

    /// Copies a built library into the units directory by rename, as `PACKAGE.so`.
    fn deploy(&self, package: &str, library: &Path) -> anyhow::Result<()> {
        let name = format!("{package}{}", std::env::consts::DLL_SUFFIX);
        let tmp = self.units_dir.join(format!("{name}.tmp"));
        std::fs::copy(library, &tmp).with_context(|| {
            format!(
                "cannot copy {} into {}",
                library.display(),
                self.units_dir.display()
            )
        })?;
        std::fs::rename(&tmp, self.units_dir.join(&name))
            .with_context(|| format!("cannot deploy {name}"))?;
        Ok(())
    }

    /// Builds every unit crate and deploys them, before the reactor starts.
    pub(crate) async fn build_all(&self) -> anyhow::Result<()> {
        let packages: Vec<&str> = self.crates.iter().map(|c| c.package.as_str()).collect();
        eprintln!("building {}", packages.join(", "));
        match self.build(&packages).await? {
            Built::Libraries(libraries) => {
                for (package, (library, _)) in &libraries {
                    self.deploy(package, library)?;
                }
                Ok(())
            }
            Built::Failed(errors) => {
                eprintln!("{errors}");
                bail!("the unit crates do not build; fix the errors above and run swarm dev again")
            }
        }
    }

    /// Runs the loop on a task of its own until aborted; says so if it stops by itself.
    pub(crate) fn spawn(self, reactor: ReactorHandle) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(error) = self.run(reactor).await {
                eprintln!("error: the dev loop stopped: {error:#}");
            }
        })
    }

    /// Watches the crates' sources and rebuilds and redeploys the one that changed, until the
    /// process ends.
    async fn run(self, reactor: ReactorHandle) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, PathBuf)>();
        let mut debouncer = new_debouncer(
            Duration::from_millis(50),
            move |result: DebounceEventResult| {
                if let Ok(events) = result {
                    let now = Instant::now();
                    for event in events {
                        let _ = tx.send((now, event.path));
                    }
                }
            },
        )
        .context("cannot watch the unit crates")?;
        for krate in &self.crates {
            for watched in [krate.dir.join("src"), krate.dir.join("Cargo.toml")] {
                if watched.exists() {
                    debouncer
                        .watcher()
                        .watch(&watched, notify::RecursiveMode::Recursive)
                        .with_context(|| format!("cannot watch {}", watched.display()))?;
                }
            }
        }
        let this = Arc::new(self);
        eprintln!(
            "watching {} for changes",
            this.crates
                .iter()
                .map(|c| c.package.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        while let Some((saved, path)) = rx.recv().await {
            // Every change that arrived meanwhile goes into this rebuild.
            let mut changed: Vec<PathBuf> = vec![path];
            while let Ok((_, more)) = rx.try_recv() {
                changed.push(more);
            }
            let crates: Vec<&UnitCrate> = this
                .crates
                .iter()
                .filter(|c| changed.iter().any(|p| p.starts_with(&c.dir)))
                .collect();
            for krate in crates {
                this.rebuild(krate, saved, &reactor).await;
            }
        }
        drop(debouncer);
        Ok(())
    }

    async fn rebuild(&self, krate: &UnitCrate, saved: Instant, reactor: &ReactorHandle) {
        let file =
            self.units_dir
                .join(format!("{}{}", krate.package, std::env::consts::DLL_SUFFIX));
        let before = serving(reactor, &file);
        let Some((library, fresh)) = self.build_one(krate).await else {
            return;
        };
        let built_in = saved.elapsed();
        // Nothing rebuilt (an event that changed nothing, such as an editor's temporary file),
        // or rebuilt to the same bytes (a save that changed nothing): the library serving is
        // this one, and no new generation will come.
        if fresh || std::fs::read(&library).ok() == std::fs::read(&file).ok() {
            return;
        }
        if let Err(error) = self.deploy(&krate.package, &library) {
            eprintln!("{}: {error:#}", krate.package);
            return;
        }
        let timing = (saved, built_in);
        wait_swapped(reactor, &file, before, &krate.package, timing).await;
    }

    /// Builds `krate`: its library and whether cargo found it up to date, or `None` once it
    /// has said why there is none (the compiler's errors, for a failed build).
    async fn build_one(&self, krate: &UnitCrate) -> Option<(PathBuf, bool)> {
        let built = match self.build(&[&krate.package]).await {
            Ok(built) => built,
            Err(error) => {
                eprintln!("{}: cannot build: {error:#}", krate.package);
                return None;
            }
        };
        let library = match built {
            Built::Failed(errors) => {
                eprint!("{errors}");
                eprintln!(
                    "{}: build failed; the version serving keeps serving",
                    krate.package
                );
                return None;
            }
            Built::Libraries(mut libraries) => libraries.remove(&krate.package),
        };
        if library.is_none() {
            eprintln!("{}: cargo built no library for it", krate.package);
        }
        library
    }
}

/// The unit the reactor serves from `file`, if any.
fn serving(reactor: &ReactorHandle, file: &Path) -> Option<swarm_schemas::UnitStatus> {
    reactor
        .registry()
        .status()
        .into_iter()
        .find(|u| Path::new(&u.file) == file)
}

/// Waits until the reactor's watcher has swapped in a new generation from `file` (up to 10 s)
/// and says so, with the time since the save and the build's (`timing`); or says why not.
async fn wait_swapped(
    reactor: &ReactorHandle,
    file: &Path,
    before: Option<swarm_schemas::UnitStatus>,
    package: &str,
    (saved, built_in): (Instant, Duration),
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = serving(reactor, file);
        match &now {
            Some(unit)
                if before
                    .as_ref()
                    .is_none_or(|b| b.generation != unit.generation) =>
            {
                eprintln!(
                    "{package}: {} {} generation {} serving, {:.2} s after the save (build {:.2} s)",
                    unit.name,
                    unit.version,
                    unit.generation,
                    saved.elapsed().as_secs_f64(),
                    built_in.as_secs_f64()
                );
                return;
            }
            _ if Instant::now() >= deadline => {
                let why = now
                    .and_then(|u| u.last_error)
                    .or_else(|| {
                        reactor
                            .registry()
                            .failures()
                            .into_iter()
                            .find(|f| f.file == file)
                            .map(|f| f.error)
                    })
                    .unwrap_or_else(|| "the same library as before (nothing changed)".into());
                eprintln!("{package}: not swapped in: {why}");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
